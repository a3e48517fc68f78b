"""Helpers shared by test modules that need to act like a database superuser."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from attribution_audit.services.attribution import Attributor
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import WorkRecord
from attribution_audit.store.database import MIGRATIONS_DIR
from attribution_audit.store.models import (
    AttributionArtistShare,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
)
from attribution_audit.store.vectors import VectorStore


def request_row(label: str, **fields: Any) -> AttributionRequest:
    """An attribution request row with plausible values (no children); ``fields`` override any column."""
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "requester": label,
        "image_path": f"/images/{label}.png",
        "image_sha256": "ab" * 32,
        "query_vector": b"\x00\x00\x80?" * 4,
        "embedder_name": "test",
        "embedder_fingerprint": "test@sha256:0",
        "store_kind": "qdrant-edge",
        "collection": "works_test",
        "catalogue_version": "v1",
        "index_params": {"m": 16, "hnsw_ef": 128},
        "parameters": {"k": 2, "temperature": 0.05},
        "k": 2,
    }
    return AttributionRequest(**(values | fields))


def record_catalogue(
    audit: AuditStore,
    works: list[WorkRecord],
    *,
    name: str = "museum",
    collection: str = "works_x",
    embedder: str = "x",
    spaces: str = "content",
) -> tuple[int, int]:
    """``works`` recorded as the catalogue ``name``, embedded in ``collection`` by ``embedder`` in ``spaces`` (a
    request's neighbours must be works the catalogue holds). Its ingestion run and catalogue ids."""
    source = {"source_format": "csv", "manifest_path": "/m.csv", "manifest_sha256": "0" * 64}
    run, catalogue_id = audit.catalogue.start_ingestion(
        name, **source, collection=collection, embedder_fingerprint=embedder, requester="t"
    )
    audit.catalogue.record_works(
        catalogue_id, collection, run_id=run, embedder_fingerprint=embedder, spaces=spaces, works=works
    )
    return run, catalogue_id


def catalogue_with(audit: AuditStore, works: dict[str, str]) -> tuple[int, int]:
    """The catalogue "museum" holding ``works`` (work id -> artist, version 1): :func:`record_catalogue`."""
    digest = {work_id: hashlib.sha256(work_id.encode()).hexdigest() for work_id in works}
    return record_catalogue(
        audit,
        [WorkRecord(w, artist, None, f"/img/{w}.png", digest[w], {}, 1, f"p-{w}") for w, artist in works.items()],
    )


def make_attributor(audit: AuditStore, store: VectorStore, tmp_path: Path, seed: int | None = None) -> Attributor:
    """An Attributor over ``store``, whose works ``audit``'s catalogue holds (as after an ingest)."""
    catalogue_points(audit, store)
    return Attributor(
        audit,
        store,
        embedder_name="test",
        embedder_fingerprint="test@0",
        requester="pytest",
        exact_cache_dir=tmp_path / "exact",
        seed=seed,
    )


def catalogue_points(audit: AuditStore, store: VectorStore) -> None:
    """Record the store's points whose works the audit DB does not hold yet as the catalogues their payloads name
    (version and image digest from the payload where it has them), as an ingest would have: requests may cite
    only works the catalogue holds."""
    points = [p for p in store.iter_points()]
    unknown = audit.catalogue.unknown_work_ids([str(p.payload["work_id"]) for p in points])
    by_catalogue: dict[str, list[WorkRecord]] = {}
    for point in points:
        payload = point.payload
        work_id = str(payload["work_id"])
        if work_id not in unknown:
            continue
        version = payload.get("version")
        digest = str(payload.get("image_sha256") or hashlib.sha256(work_id.encode()).hexdigest())
        record = WorkRecord(
            work_id,
            str(payload["artist"]),
            None,
            f"/img/{work_id}.png",
            digest,
            {},
            version if isinstance(version, int) and not isinstance(version, bool) else 1,
            point.point_id,
        )
        by_catalogue.setdefault(str(payload["catalogue"]), []).append(record)
    for name, works in by_catalogue.items():
        record_catalogue(audit, works, name=name, collection=store.collection)


def superuser_edit(engine: Engine, statement: str) -> None:
    """What a superuser can still do: switch the append-only triggers off for one statement."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(statement))
        else:
            triggers = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
            for name, _ in triggers:
                connection.execute(text(f"DROP TRIGGER {name}"))
            connection.execute(text(statement))
            for _, sql in triggers:
                connection.execute(text(sql))


def two_neighbours(artist: str = "A") -> list[AttributionNeighbour]:
    """Ranks 1 and 2 by one artist, each with half of the shares."""
    return [
        AttributionNeighbour(
            rank=r,
            catalogue="c",
            work_id=f"w{r}",
            artist=artist,
            canonical_artist=artist,
            similarity=0.9 - r / 10,
            distance=0.1 + r / 10,
            share=0.5,
        )
        for r in (1, 2)
    ]


def complete_request(label: str) -> AttributionRequest:
    """A request with two neighbours, shares and metrics, as the Attributor builds one."""
    request = request_row(label)
    request.neighbours = two_neighbours()
    request.artist_shares = [AttributionArtistShare(artist="A", share=1.0)]
    request.metrics = AttributionMetrics(
        entropy=0.0,
        nn_distance=0.2,
        margin=0.1,
        top_artist="A",
        top_artist_share=1.0,
        confidence=0.8,
        confidence_model="default-v1",
    )
    return request


def fill_chain(engine: Engine, n: int, neighbours: int = 10) -> None:
    """Append ``n`` requests (``neighbours`` each, shares and metrics) that form a valid chain, in one transaction of
    a few bulk inserts: a long log in seconds, each record hashed exactly as ``chain.append`` hashes it."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, inspect, select

    from attribution_audit.domain.chain import GENESIS_HASH
    from attribution_audit.store.chain import StoredRequest, record_hash

    tables = [AttributionRequest, AttributionNeighbour, AttributionArtistShare, AttributionMetrics]
    rows: dict[type, list[dict[str, Any]]] = {table: [] for table in tables}
    with engine.begin() as connection:
        last = connection.execute(
            select(AttributionRequest.seq, AttributionRequest.record_hash).order_by(AttributionRequest.seq.desc())
        ).first()
        seq, prev = (0, GENESIS_HASH) if last is None else (last.seq, last.record_hash)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for _ in range(n):
            seq += 1
            columns: dict[str, Any] = {c.key: None for c in AttributionRequest.__table__.columns}
            request = request_row(f"r{seq}")
            columns |= {c: getattr(request, c) for c in columns if getattr(request, c) is not None}
            columns |= {"seq": seq, "prev_hash": prev, "created_at": start + timedelta(seconds=seq)}
            key = columns["id"]
            near = [
                {
                    "request_id": key,
                    "rank": r,
                    "work_pk": None,
                    "catalogue": "c",
                    "work_id": f"w{(seq + r) % 997}",
                    "work_version": 1,
                    "artist": f"artist {r % 4}",
                    "canonical_artist": f"artist {r % 4}",
                    "similarity": 0.9 - r / 100,
                    "distance": 0.1 + r / 100,
                    "share": 1 / neighbours,
                }
                for r in range(1, neighbours + 1)
            ]
            shares = [{"request_id": key, "artist": f"artist {a}", "share": 0.25} for a in range(4)]
            metrics: dict[str, Any] = {c.key: None for c in AttributionMetrics.__table__.columns}
            metrics |= {"request_id": key, "entropy": 1.0, "nn_distance": 0.11, "margin": 0.0, "top_artist": "artist 1"}
            metrics |= {"top_artist_share": 0.25, "confidence": 0.5, "confidence_model": "default-v1"}
            stored = StoredRequest(
                columns | {"query_vector": "sha256:" + hashlib.sha256(columns["query_vector"]).hexdigest()},
                near,
                shares,
                metrics,
            )
            columns["record_hash"] = prev = record_hash(prev, stored)
            batches: tuple[list[dict[str, Any]], ...] = ([columns], near, shares, [metrics])
            for table, values in zip(tables, batches, strict=True):
                rows[table] += values
        for table in tables:
            # only the columns the database has at its revision (a later one's columns are unset here: not hashed)
            present = {c["name"] for c in inspect(connection).get_columns(table.__tablename__)}
            connection.execute(insert(table), [{k: v for k, v in row.items() if k in present} for row in rows[table]])


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the audit schema to ``revision`` with Alembic (the CLI has no downgrade)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
