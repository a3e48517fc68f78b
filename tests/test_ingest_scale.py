"""Ingestion at catalogue scale: the statements an ingest sends do not grow with the rows of a batch, and
concurrent ingests that share artist names both succeed on PostgreSQL."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import _create_pg_database, _drop_pg_database, _pg_url
from sqlalchemy import Engine, event, func, select, text

from attribution_audit.services.ingest import Ingestion, IngestReport, Prepared, ingest_source
from attribution_audit.sources.manifest import ManifestRow, open_source
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import create_db_engine
from attribution_audit.store.models import Artist, Work, WorkEmbedding, WorkVersion
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

DIM = 8
ARTISTS = ["Ada", "Bruno", "Chen"]


def catalogue(folder: Path, name: str, n: int, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A manifest of ``n`` works by ARTISTS (images not on this machine) and a unit vector for each."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{name}.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_id"])
        writer.writerows([f"img/{i}.png", ARTISTS[i % len(ARTISTS)], f"{name}-{i}"] for i in range(n))
    raw = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    return manifest, {f"{name}-{i}": raw[i] for i in range(n)}


def ingest(audit: AuditStore, store: EdgeStore, manifest: Path, table: dict[str, np.ndarray]) -> IngestReport:
    return ingest_source(
        open_source(manifest),
        audit=audit,
        store=store,
        embedder=None,
        embedder_fingerprint="precomputed:test",
        vectors=lambda row: table.get(row.work_id),
    )


def statements_of_ingest(audit: AuditStore, store: EdgeStore, manifest: Path, table: dict[str, np.ndarray]) -> int:
    """How many statements (an executemany counts once) one ingest sends to the audit DB."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, executemany: bool) -> None:
        sent.append(sql)

    event.listen(audit.engine, "before_cursor_execute", record)
    try:
        report = ingest(audit, store, manifest, table)
    finally:
        event.remove(audit.engine, "before_cursor_execute", record)
    assert report.added == len(table)
    return len(sent)


def test_the_statements_of_an_ingest_do_not_grow_with_its_rows(audit: AuditStore, tmp_path: Path) -> None:
    few = catalogue(tmp_path / "few", "few", 12)
    many = catalogue(tmp_path / "many", "many", 400, seed=1)
    stores = [EdgeStore(tmp_path / f"qdrant{i}", "works") for i in range(2)]
    try:
        counts = [statements_of_ingest(audit, s, *c) for s, c in zip(stores, (few, many), strict=True)]
    finally:
        for s in stores:
            s.close()
    assert counts[0] == counts[1]  # 12 or 400 rows: the same few bulk statements
    with audit.engine.connect() as connection:  # and every row is written: works, versions, embeddings
        for model in (Work, WorkVersion, WorkEmbedding):
            assert connection.scalar(select(func.count()).select_from(model)) == 412


@pytest.fixture
def postgres_audit(postgres_admin: Engine, postgres_template: str) -> Iterator[AuditStore]:
    name = _create_pg_database(postgres_admin, template=postgres_template)
    engine = create_db_engine(_pg_url(name))
    yield AuditStore(engine)
    engine.dispose()
    _drop_pg_database(postgres_admin, name)


def waiting_on_locks(engine: Engine) -> int:
    with engine.connect() as connection:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return int(connection.scalar(text(query)) or 0)


@pytest.mark.postgres
def test_concurrent_ingests_sharing_artists_both_succeed_on_postgres(
    postgres_audit: AuditStore, tmp_path: Path
) -> None:
    """Two ingests of different catalogues by the same artists, made to create those artists at the same moment:
    a transaction holds the names until both ingests wait on them, then gives them up, so both race to insert."""
    engine = postgres_audit.engine
    sources = [catalogue(tmp_path / name, name, 30, seed=i) for i, name in enumerate(("north", "south"))]
    reports: dict[str, IngestReport] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        store = EdgeStore(tmp_path / f"qdrant{index}", "works")
        try:
            reports[sources[index][0].stem] = ingest(postgres_audit, store, *sources[index])
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)
        finally:
            store.close()

    with engine.connect() as holder:
        holder.execute(text("INSERT INTO artists (name, created_at) VALUES ('Ada', now()), ('Bruno', now())"))
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while waiting_on_locks(engine) < 2 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert waiting_on_locks(engine) == 2, "both ingests should be waiting on the artist names"
        holder.rollback()  # both now insert the same names at once
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert {name: r.added for name, r in reports.items()} == {"north": 30, "south": 30}
    with engine.connect() as connection:
        assert sorted(connection.scalars(select(Artist.name))) == ARTISTS


def test_an_ingest_that_meets_works_another_ingest_just_recorded_records_each_once(
    audit: AuditStore, tmp_path: Path
) -> None:
    """Two ingests of one catalogue at the same time (two hosts on one server store and audit DB): both classified
    the works as new, the other recorded them first. The late one takes them as known and succeeds (it failed on the
    works' unique key: "refused the write ... retry when it is reachable")."""
    manifest, table = catalogue(tmp_path / "cat", "shared", 20)
    rows = [row for row in open_source(manifest) if isinstance(row, ManifestRow)]
    store = EdgeStore(tmp_path / "qdrant", "works")
    try:
        store.ensure_collection(DIM)
        runs = []
        for _ in range(2):
            run_id, catalogue_id = audit.catalogue.start_ingestion(
                "shared",
                source_format="csv",
                manifest_path=str(manifest),
                manifest_sha256="0" * 64,
                collection=store.collection,
                embedder_fingerprint="precomputed:test",
                requester="test",
            )
            report = IngestReport(run_id=run_id, catalogue="shared")
            ingestion = Ingestion(
                audit, store, "precomputed:test", report, catalogue_id, vectors=lambda r: table[r.work_id]
            )
            runs.append((ingestion, ingestion.classify(rows)))  # both find the catalogue without these works
        for ingestion, todo in reversed(runs):  # the second run records them first
            ingestion.write(
                [Prepared(row, ingestion.digest(row), table[row.work_id]) for row, _ in todo], ingestion.report.run_id
            )
    finally:
        store.close()
    late = runs[0][0].report
    assert (late.added + late.updated, runs[1][0].report.added) == (20, 20)
    with audit.engine.connect() as connection:
        for model in (Work, WorkVersion, WorkEmbedding):
            assert connection.scalar(select(func.count()).select_from(model)) == 20
