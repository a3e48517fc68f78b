"""Ingestion as a data team uses it: every source format, precomputed vectors, bad rows and the failures file,
idempotent re-runs and work versions, and crash safety between the vector store and the audit DB."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EMBEDDER, Cli
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from attribution_audit.config import load_settings, read_record
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import ManifestError
from attribution_audit.services.catalogue import check
from attribution_audit.services.ingest import IngestReport, ingest_catalogue, ingest_source
from attribution_audit.sources.images import sha256_file
from attribution_audit.sources.manifest import open_source, sha256_of
from attribution_audit.sources.precomputed import load_vectors
from attribution_audit.sources.synthetic import DemoCatalogue, make_demo_catalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.models import (
    Artist,
    Catalogue,
    IngestionRun,
    LabelledQueryRecord,
    QuerySet,
    Work,
    WorkEmbedding,
    WorkVersion,
)
from attribution_audit.store.vectors import WorkPoint, point_id_for
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

DIM = 8
COLLECTION = "works_test"
FINGERPRINT = "precomputed:test"
# Two artists x three works of the demo catalogue: (demo file, artist, our work id, year, licence).
SMALL = [
    ("a0_w0.png", "Ada Vermeer", "ADA-0", 1901, "CC-BY"),
    ("a0_w1.png", "Ada Vermeer", "ADA-1", 1902, "CC0"),
    ("a0_w2.png", "Ada Vermeer", "ADA-2", 1903, "CC-BY"),
    ("a1_w0.png", "Bruno Kahlo", "BRU-0", 1911, "PD"),
    ("a1_w1.png", "Bruno Kahlo", "BRU-1", 1912, "CC-BY-SA"),
    ("a1_w2.png", "Bruno Kahlo", "BRU-2", 1913, "PD"),
]


# -- helpers ---------------------------------------------------------------------------------------------------
def count(engine: Engine, model: type, *where: Any) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def works_of(engine: Engine, catalogue: str) -> dict[str, Work]:
    """Work id -> Work row (artist loaded) of one catalogue."""
    with Session(engine) as session:
        rows = session.scalars(
            select(Work).join(Catalogue, Work.catalogue_id == Catalogue.id).where(Catalogue.name == catalogue)
        ).all()
        for row in rows:
            _ = row.artist.name  # load before the session closes
        return {row.work_id: row for row in rows}


def point_of(store: EdgeStore, catalogue: str, work_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The stored vector and payload of a work's point."""
    pid = point_id_for(catalogue, work_id)
    (point,) = [p for p in store.iter_points() if p.point_id == pid]
    return point.vector, point.payload


def tiny_png(path: Path, seed: int) -> Path:
    """A small unique PNG (seeded noise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def raw_vectors(n: int, seed: int = 7) -> np.ndarray:
    """Non-unit vectors (random lengths 0.5..10), so that normalisation on the way in is visible."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, DIM)) * rng.uniform(0.5, 10, (n, 1))).astype(np.float32)


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def copy_small(demo: DemoCatalogue, folder: Path) -> list[Path]:
    """Copy the SMALL demo works into ``folder/images`` as ``<work id>.png``."""
    works = demo.manifest.parent / "works"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    return [
        Path(shutil.copy(works / name, folder / "images" / f"{work_id.lower()}.png")) for name, _, work_id, *_ in SMALL
    ]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def precomputed(table: dict[str, np.ndarray], **options: Any) -> dict[str, Any]:
    """ingest_source options for precomputed vectors (no model)."""
    return {
        "embedder": None,
        "embedder_fingerprint": FINGERPRINT,
        "vectors": lambda row: table.get(row.work_id),
        **options,
    }


# -- fixtures --------------------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "qdrant", COLLECTION)
    yield s
    s.close()


@pytest.fixture
def vector_catalogue(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """``vc.csv``: five works by two artists with tiny real images, and a precomputed (unit) vector for each."""
    rows = [{"path": f"img/v{i}.png", "artist": "Ada" if i < 3 else "Bruno", "work_id": f"V{i}"} for i in range(5)]
    for i in range(5):
        tiny_png(tmp_path / "img" / f"v{i}.png", seed=i)
    raw = raw_vectors(5)
    return write_csv(tmp_path / "vc.csv", rows), {f"V{i}": unit(raw[i]) for i in range(5)}


# -- every format ------------------------------------------------------------------------------------------------
def build_formats(demo: DemoCatalogue, root: Path) -> dict[str, Path]:
    """The SMALL catalogue as a CSV, a JSONL, a folder per artist and a Wang et al. JSON file."""
    images = copy_small(demo, root)
    records = [
        {
            "path": f"images/{image.name}",
            "artist": artist,
            "work_id": work_id,
            "title": f"Work {work_id}",
            "year": year,
            "licence": licence,
            "source_url": f"https://example.org/{work_id}",
        }
        for image, (_, artist, work_id, year, licence) in zip(images, SMALL, strict=True)
    ]
    csv_path = write_csv(root / "csvcat.csv", records)
    jsonl_path = root / "jsonlcat.jsonl"
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    for image, (_, artist, *_) in zip(images, SMALL, strict=True):
        (root / "tree" / artist).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / "tree" / artist / image.name)
    wang: dict[str, Any] = {}
    for index, artist in enumerate(("Ada Vermeer", "Bruno Kahlo")):
        for subset in ("gpt", "object"):
            shutil.copy(demo.queries[index].path, root / "images" / f"gen_{index}_{subset}.png")
        wang[artist] = {
            "exemplar": [r["path"] for r in records if r["artist"] == artist],
            "synth": {"gpt": [f"images/gen_{index}_gpt.png"], "object": [f"images/gen_{index}_object.png"]},
        }
    wang_path = root / "wangcat.json"
    wang_path.write_text(json.dumps(wang))
    return {"csv": csv_path, "jsonl": jsonl_path, "folder": root / "tree", "wang": wang_path}


def test_every_format_ingests_the_same_works(
    audit: AuditStore, store: EdgeStore, embedder: Embedder, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    sources = build_formats(demo_catalogue, tmp_path / "src")
    expected_ids = {
        "csv": [w for *_, w, _, _ in SMALL],
        "jsonl": [w for *_, w, _, _ in SMALL],
        "folder": [f"{artist}/{w.lower()}" for _, artist, w, _, _ in SMALL],
        "wang": [f"images/{w.lower()}.png" for *_, w, _, _ in SMALL],
    }
    names = {"csv": "csvcat", "jsonl": "jsonlcat", "folder": "tree", "wang": "wangcat"}
    contents: dict[str, set[tuple[str, str]]] = {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for fmt, path in sources.items():
        source = open_source(path)
        assert source.format == fmt
        report = ingest_source(source, audit=audit, store=store, embedder=embedder)
        assert report.catalogue == names[fmt]
        assert (report.added, report.updated, report.unchanged, report.failed) == (6, 0, 0, 0), report.failures
        works = works_of(audit.engine, names[fmt])
        assert sorted(works) == sorted(expected_ids[fmt])
        artists = {w.work_id: w.artist.name for w in works.values()}
        assert artists == {wid: artist for wid, (_, artist, *_) in zip(expected_ids[fmt], SMALL, strict=True)}
        contents[fmt] = {(w.artist.name, w.image_sha256) for w in works.values()}
        stored_ids, stored = store.fetch_all()
        vectors[fmt] = {
            w.image_sha256: stored[stored_ids.index(point_id_for(names[fmt], w.work_id))] for w in works.values()
        }
    # The same six images under the same artists, whichever the format, with the same vectors.
    assert contents["csv"] == contents["jsonl"] == contents["folder"] == contents["wang"]
    assert len(contents["csv"]) == 6
    for fmt in ("jsonl", "folder", "wang"):
        for sha, vector in vectors["csv"].items():
            np.testing.assert_allclose(vectors[fmt][sha], vector, atol=1e-6)
    assert store.count() == 24 == count(audit.engine, WorkEmbedding)
    assert count(audit.engine, Artist) == 2


def test_wang_import_stores_labelled_queries_once(
    audit: AuditStore, store: EdgeStore, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    path = build_formats(demo_catalogue, tmp_path)["wang"]
    table = {f"images/{w.lower()}.png": unit(v) for (*_, w, _, _), v in zip(SMALL, raw_vectors(6), strict=True)}
    for run in (1, 2):
        source = open_source(path)
        report = ingest_source(source, audit=audit, store=store, **precomputed(table))
        assert report.labelled_queries == 4
        if run == 1:
            assert report.added == 6
        else:
            assert (report.added, report.unchanged) == (0, 6)
        with Session(audit.engine) as session:
            (query_set,) = session.scalars(select(QuerySet)).all()
            assert query_set.name == "wangcat" and query_set.source_path == str(path.resolve())
            records = session.scalars(select(LabelledQueryRecord).order_by(LabelledQueryRecord.path)).all()
            got = [(Path(r.path).name, r.artist, r.work_ids, r.subset) for r in records]
    ada = [f"images/ada-{i}.png" for i in range(3)]
    bruno = [f"images/bru-{i}.png" for i in range(3)]
    assert got == [
        ("gen_0_gpt.png", "Ada Vermeer", ada, "gpt"),
        ("gen_0_object.png", "Ada Vermeer", ada, "object"),
        ("gen_1_gpt.png", "Bruno Kahlo", bruno, "gpt"),
        ("gen_1_object.png", "Bruno Kahlo", bruno, "object"),
    ]
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in records)
    assert count(audit.engine, LabelledQueryRecord) == 4


def test_jsonl_bad_line_is_a_row_failure_with_its_line_number(
    sqlite_audit: AuditStore, store: EdgeStore, tmp_path: Path
) -> None:
    for i in range(3):
        tiny_png(tmp_path / f"j{i}.png", seed=i)
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"path": "j0.png", "artist": "Ada", "work_id": "J0"}\n'
        '{"path": "j1.png", "artist": "Ada", "work_id": \n'
        "\n"
        '["not", "an", "object"]\n'
        '{"path": "j2.png", "artist": "Ada", "work_id": "J2"}\n'
    )
    source = open_source(path)
    table = {"J0": unit(raw_vectors(2)[0]), "J2": unit(raw_vectors(2)[1])}
    report = ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    assert report.added == 2
    assert [(f.line, f.work_id) for f in report.failures] == [(2, ""), (4, "")]
    assert report.failures[0].reason.startswith("invalid JSON (")
    assert report.failures[1].reason == "not a JSON object"
    assert sorted(works_of(sqlite_audit.engine, "bad")) == ["J0", "J2"]


def test_extra_columns_are_kept_in_the_payload_and_the_work_row(
    audit: AuditStore, store: EdgeStore, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    sources = build_formats(demo_catalogue, tmp_path)
    table = {w: unit(v) for (*_, w, _, _), v in zip(SMALL, raw_vectors(6), strict=True)}
    for fmt, year in (("csv", "1901"), ("jsonl", 1901)):  # CSV values are text, JSON keeps its types
        source = open_source(sources[fmt])
        ingest_source(source, audit=audit, store=store, **precomputed(table))
        name = source.path.stem
        expected = {"year": year, "licence": "CC-BY", "source_url": "https://example.org/ADA-0"}
        _, payload = point_of(store, name, "ADA-0")
        assert {k: payload[k] for k in expected} == expected
        assert payload["work_id"] == "ADA-0" and payload["artist"] == "Ada Vermeer"
        assert payload["title"] == "Work ADA-0" and payload["catalogue"] == name and payload["version"] == 1
        assert payload["image_sha256"] == sha256_file(tmp_path / "images" / "ada-0.png")
        work = works_of(audit.engine, name)["ADA-0"]
        assert work.payload == expected and work.title == "Work ADA-0"


# -- precomputed vectors -----------------------------------------------------------------------------------------
def write_embeddings(kind: str, folder: Path, work_ids: list[str], matrix: np.ndarray) -> Path:
    if kind == "npy":
        np.save(folder / "vectors.npy", matrix)
        return folder / "vectors.npy"
    if kind == "npz":
        np.savez(folder / "vectors.npz", work_ids=np.array(work_ids), vectors=matrix)
        return folder / "vectors.npz"
    table = pa.table({"work_id": work_ids, "vector": [list(map(float, row)) for row in matrix]})
    pq.write_table(table, folder / "vectors.parquet")
    return folder / "vectors.parquet"


@pytest.mark.parametrize("kind", ["npy", "npz", "parquet"])
def test_precomputed_vectors_ingest_unit_normalised(
    kind: str, sqlite_audit: AuditStore, store: EdgeStore, tmp_path: Path
) -> None:
    for i in range(3):
        tiny_png(tmp_path / f"p{i}.png", seed=i)
    # Line 4 repeats P0: a failing row, which still has its slot in an aligned .npy.
    manifest = tmp_path / "pre.csv"
    manifest.write_text("path,artist,work_id\np0.png,Ada,P0\np1.png,Ada,P1\np0.png,Ada,P0\np2.png,Bruno,P2\n")
    raw = raw_vectors(4)
    if kind == "npy":
        path = write_embeddings(kind, tmp_path, [], raw)
        expected = {"P0": raw[0], "P1": raw[1], "P2": raw[3]}
    else:
        path = write_embeddings(kind, tmp_path, ["P2", "P0", "P1"], raw[[3, 0, 1]])  # keyed: any order
        expected = {"P0": raw[0], "P1": raw[1], "P2": raw[3]}
    source = open_source(manifest)
    table = load_vectors(path, source)
    assert sorted(table) == ["P0", "P1", "P2"]
    for work_id, vector in table.items():
        np.testing.assert_allclose(vector, unit(expected[work_id]), atol=1e-6)

    report = ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    assert (report.added, report.failed) == (3, 1)
    assert report.failures[0].line == 4 and "duplicate work_id" in report.failures[0].reason
    for work_id, vector in expected.items():
        top = store.search(vector, 1, with_vectors=True)[0]  # the raw, non-unit vector finds its own work
        assert top.payload["work_id"] == work_id
        assert top.similarity == pytest.approx(1.0, abs=1e-5)
        assert top.vector is not None
        np.testing.assert_allclose(top.vector, unit(vector), atol=1e-5)
    with Session(sqlite_audit.engine) as session:
        assert set(session.scalars(select(WorkEmbedding.embedder_fingerprint))) == {FINGERPRINT}
        run = session.get_one(IngestionRun, report.run_id)
        assert (run.embedder_fingerprint, run.status) == (FINGERPRINT, "partial")


@pytest.mark.parametrize(
    ("kind", "work_ids", "matrix", "message"),
    [
        ("npy", [], np.ones((3, DIM)), "3 vectors for 2 manifest rows; they must align row by row"),
        ("npy", [], np.vstack([np.ones(DIM), np.zeros(DIM)]), "row 1 is an all-zero vector"),
        ("npz", ["Q0", "Q1"], np.vstack([np.ones(DIM), np.zeros(DIM)]), "row 1 is an all-zero vector"),
        ("npz", ["Q0", "Q0"], np.ones((2, DIM)), "duplicate work ids in the embeddings file"),
        ("npy", [], np.vstack([np.ones(DIM), np.full(DIM, np.nan)]), "row 1 has NaN or infinite values"),
        ("npz", ["Q0", "Q1"], np.vstack([np.full(DIM, np.inf), np.ones(DIM)]), "row 0 has NaN or infinite values"),
        ("parquet", ["Q1", "Q1"], np.ones((2, DIM)), "duplicate work ids in the embeddings file"),
    ],
)
def test_bad_embeddings_files_raise_one_line_errors(
    kind: str, work_ids: list[str], matrix: np.ndarray, message: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,artist,work_id\na.png,Ada,Q0\nb.png,Ada,Q1\n")
    path = write_embeddings(kind, tmp_path, work_ids, matrix.astype(np.float32))
    with pytest.raises(ManifestError) as info:
        load_vectors(path, open_source(manifest))
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_npz_with_more_ids_than_vectors_is_a_manifest_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,artist,work_id\na.png,Ada,Q0\nb.png,Ada,Q1\n")
    path = write_embeddings("npz", tmp_path, ["Q0", "Q1", "Q2"], np.ones((2, DIM), dtype=np.float32))
    with pytest.raises(ManifestError) as info:
        load_vectors(path, open_source(manifest))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_cli_ingests_precomputed_vectors_without_loading_a_model(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vector_catalogue: tuple[Path, Any]
) -> None:
    import attribution_audit.embedding

    def no_model(*args: object, **kwargs: object) -> Embedder:
        raise AssertionError("a model was loaded for precomputed vectors")

    monkeypatch.setattr(attribution_audit.embedding, "get_embedder", no_model)
    manifest, table = vector_catalogue
    embeddings = write_embeddings("parquet", tmp_path, list(table), np.vstack(list(table.values())) * 3)
    args = ["ingest", str(manifest), "--embedder", "vec8", "--embeddings", str(embeddings)]
    first = cli(*args)
    assert "catalogue vc: 5 added, 0 updated, 0 unchanged, 0 withdrawn (skipped), 0 failed" in first.stdout
    again = cli(*args)
    assert "0 added, 0 updated, 5 unchanged, 0 withdrawn (skipped), 0 failed" in again.stdout
    store = EdgeStore(cli.data_dir / "qdrant", "works_vec8")
    try:
        assert store.count() == 5
        assert store.search(table["V3"], 1)[0].payload["work_id"] == "V3"
    finally:
        store.close()


def test_precomputed_vectors_of_another_size_are_refused_before_anything_is_written(
    cli: Cli, tmp_path: Path, vector_catalogue: tuple[Path, dict[str, np.ndarray]]
) -> None:
    manifest, table = vector_catalogue
    eight = write_embeddings("npz", tmp_path, list(table), np.vstack(list(table.values())))
    # No collection yet: the embedder named gives 1280-d vectors, these are 8-d.
    refused = cli("ingest", str(manifest), "--embedder", "efficientnet-lite0", "--embeddings", str(eight), code=1)
    line = f"{eight}: the vectors are 8-d but the embedder gives 1280-d vectors (efficientnet-lite0)"
    assert line in refused.output and len(refused.output.strip().splitlines()) == 1
    assert count(cli.engine(), IngestionRun) == 0  # no ingestion was started in the log
    assert not (cli.data_dir / "qdrant").exists() and not (cli.data_dir / "attribution-audit.json").exists()
    # A collection of 8-d vectors: 4-d ones are refused, nothing is added to the log or the shard.
    cli("ingest", str(manifest), "--embedder", "vec8", "--embeddings", str(eight))
    runs = count(cli.engine(), IngestionRun)
    four = write_embeddings("npy", tmp_path, list(table), np.eye(5, 4, dtype=np.float32) + 0.1)
    refused = cli("ingest", str(manifest), "--embedder", "vec8", "--embeddings", str(four), code=1)
    assert f"{four}: the vectors are 4-d but the collection holds 8-d vectors (vec8)" in refused.output
    assert count(cli.engine(), IngestionRun) == runs
    store = EdgeStore(cli.data_dir / "qdrant", "works_vec8")
    try:
        assert store.count() == 5 and store.sizes() == {"content": 8}  # the first run's, unchanged
    finally:
        store.close()


def test_a_first_ingest_stopped_after_its_first_points_has_recorded_its_embedder(
    tmp_path: Path, vector_catalogue: tuple[Path, dict[str, np.ndarray]]
) -> None:
    manifest, table = vector_catalogue
    embeddings = write_embeddings("npz", tmp_path, list(table), np.vstack(list(table.values())))
    settings = load_settings(data_dir=tmp_path / "data", embedder="vec8")

    def killed(done: int, total: int | None) -> None:
        if done:  # the first rows are written: stop as a kill would, before the run finishes
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_catalogue(settings, manifest, embeddings=embeddings, progress=killed)
    store = EdgeStore(settings.data_dir / "qdrant", "works_vec8")
    try:
        assert store.count() > 0  # points were written ...
    finally:
        store.close()
    record = read_record(settings.data_dir)  # ... and the data dir says which embedder wrote them
    assert record is not None and record.embedder == "vec8" and record.collections == {"vec8": ["content"]}


# -- bad rows ----------------------------------------------------------------------------------------------------
def bad_rows_catalogue(demo: DemoCatalogue, folder: Path) -> Path:
    works = demo.manifest.parent / "works"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(works / "a0_w0.png", folder / "ok1.png")
    shutil.copy(works / "a1_w0.png", folder / "ok2.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    data = (works / "a2_w0.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    manifest = folder / "bad.csv"
    manifest.write_text(
        "path,artist,work_id\n"
        "ok1.png,Ada,G1\n"  # line 2
        "corrupt.png,Ada,B1\n"  # 3
        "ok2.png,Bruno,G2\n"  # 4
        "ok1.png,Ada,G1\n"  # 5: duplicate work id
        "../escape.png,Ada,B2\n"  # 6: leaves the folder
        "truncated.png,Ada,B3\n"  # 7
        "empty.png,Ada,B4\n"  # 8
        "absent.png,Ada,B5\n"  # 9
    )
    return manifest


EXPECTED_FAILURES = {
    3: ("B1", "corrupt.png"),
    5: ("G1", "duplicate work_id (first seen on line 2)"),
    6: ("B2", "leaves the catalogue folder"),
    7: ("B3", "truncated image data"),
    8: ("B4", "file is empty"),
    9: ("B5", "file not found"),
}


def test_bad_rows_are_reported_per_row_and_good_rows_ingested(
    sqlite_audit: AuditStore, store: EdgeStore, embedder: Embedder, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    manifest = bad_rows_catalogue(demo_catalogue, tmp_path / "cat")
    failures_path = tmp_path / "out" / "failures.csv"
    report = ingest_source(
        open_source(manifest), audit=sqlite_audit, store=store, embedder=embedder, failures_path=failures_path
    )
    assert (report.added, report.failed) == (2, 6)
    by_line = {f.line: f for f in report.failures}
    assert sorted(by_line) == sorted(EXPECTED_FAILURES)
    for line, (work_id, reason) in EXPECTED_FAILURES.items():
        assert by_line[line].work_id == work_id and reason in by_line[line].reason, by_line[line]
        assert "\n" not in by_line[line].reason
    assert report.failures_path == failures_path
    with failures_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "work_id", "reason"]
    assert sorted(rows[1:]) == sorted([str(f.line), f.work_id, f.reason] for f in report.failures)
    assert sorted(works_of(sqlite_audit.engine, "bad")) == ["G1", "G2"]
    assert store.count() == 2
    with Session(sqlite_audit.engine) as session:
        run = session.get_one(IngestionRun, report.run_id)
        assert (run.status, run.added, run.failed, run.failures_path) == ("partial", 2, 6, str(failures_path))


def test_missing_columns_fail_the_whole_file_before_any_row(tmp_path: Path, sqlite_audit: AuditStore) -> None:
    manifest = tmp_path / "nocols.csv"
    manifest.write_text("path,artist\na.png,Ada\n")
    with pytest.raises(ManifestError, match=r"missing column\(s\) work_id") as info:
        open_source(manifest)
    assert "\n" not in str(info.value)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match=r"missing column\(s\) path, artist, work_id"):
        open_source(empty)
    assert count(sqlite_audit.engine, IngestionRun) == 0


def test_cli_exit_code_and_failures_file(
    cli: Cli, tmp_path: Path, vector_catalogue: tuple[Path, dict[str, np.ndarray]]
) -> None:
    manifest, table = vector_catalogue
    # Three more rows that fail: V9 has no vector (found after the others), a duplicate work id, a path outside the
    # folder; they are reported in the manifest's order whatever step found them.
    manifest.write_text(
        manifest.read_text() + "img/v4.png,Bruno,V9\nimg/v0.png,Ada,V0\n../x.png,Ada,V8\n", encoding="utf-8"
    )
    embeddings = write_embeddings("npz", tmp_path, list(table), np.vstack(list(table.values())))
    args = ["ingest", str(manifest), "--embedder", "vec8", "--embeddings", str(embeddings)]

    failed = cli(*args, code=1)
    assert "5 added, 0 updated, 0 unchanged, 0 withdrawn (skipped), 3 failed" in failed.stdout
    shown = [line.split(" work_id=")[0] for line in failed.stderr.splitlines() if line.startswith("failed: ")]
    assert shown == [f"failed: {manifest}:{line}" for line in (7, 8, 9)]
    assert f"{manifest}:7 work_id='V9': no precomputed vector for this row" in failed.stderr
    assert f"{manifest}:8 work_id='V0': duplicate work_id (first seen on line 2)" in failed.stderr
    assert f"{manifest}:9 work_id='V8'" in failed.stderr and "leaves the catalogue folder" in failed.stderr
    (written,) = (cli.data_dir / "failures").glob("vc-*.csv")  # the default place: the data dir
    assert f"failed rows written to {written}" in failed.stdout
    assert [r[:2] for r in csv.reader(written.open(newline=""))] == [
        ["line", "work_id"],
        ["7", "V9"],
        ["8", "V0"],
        ["9", "V8"],
    ]

    chosen = tmp_path / "mine.csv"
    allowed = cli(*args, "--allow-failures", "--failures", str(chosen))
    assert "0 added, 0 updated, 5 unchanged, 0 withdrawn (skipped), 3 failed" in allowed.stdout
    assert f"failed rows written to {chosen}" in allowed.stdout
    assert len(chosen.read_text().splitlines()) == 4


def test_a_catalogue_name_the_audit_db_cannot_hold_is_refused_before_anything_is_written(
    cli: Cli, tmp_path: Path, vector_catalogue: tuple[Path, dict[str, np.ndarray]]
) -> None:
    """PostgreSQL refused a name over 200 characters at the first write (saying to retry); SQLite kept it, then the
    failures file named after it was too long for the file system (a traceback, the run left "running"). A ``/`` in
    the name made the failures file's name a folder."""
    manifest, table = vector_catalogue
    manifest.write_text(manifest.read_text() + "../x.png,Ada,V8\n", encoding="utf-8")
    embeddings = write_embeddings("npz", tmp_path, list(table), np.vstack(list(table.values())))
    args = ["ingest", str(manifest), "--embedder", "vec8", "--embeddings", str(embeddings)]

    refused = cli(*args, "--catalogue", "x" * 201, code=2)
    assert "1 to 200 printable characters; pass --catalogue NAME" in " ".join(refused.output.split())
    assert count(cli.engine(), IngestionRun) == 0
    slashed = cli(*args, "--catalogue", "Museum/2024", code=1)
    assert "catalogue Museum/2024: 5 added" in slashed.stdout
    (written,) = (cli.data_dir / "failures").glob("*.csv")
    assert written.name.startswith("Museum_2024-") and f"failed rows written to {written}" in slashed.stdout


def test_a_work_whose_names_join_into_another_catalogues_work_fails_instead_of_taking_its_point(
    cli: Cli, tmp_path: Path, vector_catalogue: tuple[Path, dict[str, np.ndarray]]
) -> None:
    """A point id is derived from "<catalogue>/<work_id>": work '2024/V0' of catalogue 'Museum' and work 'V0' of
    catalogue 'Museum/2024' are the same text, so the same point, which the second ingest replaced (the first
    catalogue's work then searched as the second's). The second fails its row, naming the first."""
    manifest, table = vector_catalogue
    embeddings = write_embeddings("npz", tmp_path, list(table), np.vstack(list(table.values())))
    cli("ingest", str(manifest), "--embedder", "vec8", "--embeddings", str(embeddings), "--catalogue", "Museum/2024")
    joined = write_csv(tmp_path / "joined.csv", [{"path": "img/v0.png", "artist": "Ada", "work_id": "2024/V0"}])
    (tmp_path / "joined").mkdir()
    vectors = write_embeddings("npz", tmp_path / "joined", ["2024/V0"], table["V4"][None, :])
    args = ("ingest", str(joined), "--embedder", "vec8", "--embeddings", str(vectors), "--catalogue", "Museum")
    failed = cli(*args, code=1)
    assert (
        f"{joined}:2 work_id='2024/V0': work '2024/V0' of catalogue 'Museum' would take the point of work 'V0' of "
        "catalogue 'Museum/2024' (the two names join into the same text at a '/')"
    ) in failed.stderr
    checked = json.loads(cli("catalogue", "check", "--embedder", "vec8", "--format", "json").stdout)
    assert checked["clean"] is True  # the first catalogue's point as it was


# -- idempotence and versions --------------------------------------------------------------------------------------
def test_reingest_is_a_noop_and_a_changed_image_is_a_new_version(
    audit: AuditStore, store: EdgeStore, embedder: Embedder, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    manifest = build_formats(demo_catalogue, tmp_path)["csv"]

    def ingest() -> IngestReport:
        return ingest_source(open_source(manifest), audit=audit, store=store, embedder=embedder)

    first = ingest()
    assert (first.added, first.updated, first.unchanged) == (6, 0, 0)
    assert count(audit.engine, WorkVersion) == 6

    again = ingest()
    assert (again.added, again.updated, again.unchanged, again.failed) == (0, 0, 6, 0)
    assert count(audit.engine, WorkVersion) == 6 and store.count() == 6

    old_sha = sha256_file(tmp_path / "images" / "ada-0.png")
    shutil.copy(demo_catalogue.manifest.parent / "works" / "a2_w0.png", tmp_path / "images" / "ada-0.png")
    new_sha = sha256_file(tmp_path / "images" / "ada-0.png")
    changed = ingest()
    assert (changed.added, changed.updated, changed.unchanged) == (0, 1, 5)
    work = works_of(audit.engine, "csvcat")["ADA-0"]
    assert (work.version, work.image_sha256) == (2, new_sha)
    with Session(audit.engine) as session:
        versions = session.execute(
            select(WorkVersion.version, WorkVersion.image_sha256, WorkVersion.ingestion_run_id)
            .where(WorkVersion.work_pk == work.id)
            .order_by(WorkVersion.version)
        ).all()
        embedding = session.scalars(select(WorkEmbedding).where(WorkEmbedding.work_pk == work.id)).one()
    assert [tuple(v) for v in versions] == [(1, old_sha, first.run_id), (2, new_sha, changed.run_id)]
    assert (embedding.version, embedding.image_sha256) == (2, new_sha)
    vector, payload = point_of(store, "csvcat", "ADA-0")
    assert (payload["version"], payload["image_sha256"]) == (2, new_sha)
    expected = embedder.embed([Image.open(tmp_path / "images" / "ada-0.png").convert("RGB")])[0]
    assert float(vector @ expected) == pytest.approx(1.0, abs=1e-4)  # the new image's embedding
    assert store.count() == 6 and count(audit.engine, WorkVersion) == 7

    last = ingest()
    assert (last.added, last.updated, last.unchanged) == (0, 0, 6)
    assert count(audit.engine, WorkVersion) == 7

    with Session(audit.engine) as session:
        runs = session.scalars(select(IngestionRun).order_by(IngestionRun.id)).all()
    assert [(r.added, r.updated, r.unchanged, r.failed, r.status) for r in runs] == [
        (6, 0, 0, 0, "completed"),
        (0, 0, 6, 0, "completed"),
        (0, 1, 5, 0, "completed"),
        (0, 0, 6, 0, "completed"),
    ]
    for run in runs:
        assert run.manifest_sha256 == sha256_of(manifest) and run.manifest_path == str(manifest.resolve())
        assert run.finished_at is not None and run.finished_at >= run.started_at
        assert (run.source_format, run.collection, run.embedder_fingerprint) == (
            "csv",
            COLLECTION,
            embedder.fingerprint,
        )


def test_reingest_of_precomputed_vectors_without_local_images_is_a_noop(
    sqlite_audit: AuditStore, store: EdgeStore, tmp_path: Path
) -> None:
    manifest = tmp_path / "remote.csv"
    manifest.write_text("path,artist,work_id\nfar/a.png,Ada,R0\nfar/b.png,Bruno,R1\n")  # images elsewhere
    table = {"R0": unit(raw_vectors(2)[0]), "R1": unit(raw_vectors(2)[1])}
    source = open_source(manifest)
    first = ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    assert (first.added, first.failed) == (2, 0)
    again = ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    assert (again.unchanged, again.failed) == (2, 0), again.failures


def test_a_run_that_raises_is_not_recorded_as_completed(
    sqlite_audit: AuditStore, store: EdgeStore, vector_catalogue: tuple[Path, dict[str, np.ndarray]]
) -> None:
    manifest, table = vector_catalogue
    source = open_source(manifest)
    ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    wider = {k: np.concatenate([v, v]) / np.sqrt(2) for k, v in table.items()}  # 16-d into the 8-d collection
    other = manifest.with_name("other.csv")
    shutil.copy(manifest, other)
    source = open_source(other)
    with pytest.raises(Exception, match="8-d content vectors but the embedder gives 16-d"):
        ingest_source(source, audit=sqlite_audit, store=store, **precomputed(wider))
    with Session(sqlite_audit.engine) as session:
        run = session.scalars(select(IngestionRun).order_by(IngestionRun.id.desc())).first()
        assert run is not None and run.status != "completed"


def test_corrected_metadata_with_the_same_image_is_applied(
    sqlite_audit: AuditStore, store: EdgeStore, vector_catalogue: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    manifest, table = vector_catalogue
    source = open_source(manifest)
    ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    other = EdgeStore(tmp_path / "qdrant-other", "other")  # the catalogue also embedded by another embedder
    ingest_source(open_source(manifest), audit=sqlite_audit, store=other, **precomputed(table))
    manifest.write_text(manifest.read_text().replace("img/v0.png,Ada,V0", "img/v0.png,Ada Lovelace,V0"))
    # A row that would give a known work another artist is refused unless the change is asked for...
    refused = ingest_source(open_source(manifest), audit=sqlite_audit, store=store, **precomputed(table))
    assert [f.work_id for f in refused.failures] == ["V0"]
    assert "is by 'Ada', this row says 'Ada Lovelace'" in refused.failures[0].reason
    assert "--allow-artist-changes" in refused.failures[0].reason
    assert works_of(sqlite_audit.engine, "vc")["V0"].artist.name == "Ada"
    # ...and then applied and listed.
    source = open_source(manifest)
    report = ingest_source(source, audit=sqlite_audit, store=store, allow_artist_changes=True, **precomputed(table))
    assert works_of(sqlite_audit.engine, "vc")["V0"].artist.name == "Ada Lovelace"
    assert point_of(store, "vc", "V0")[1]["artist"] == "Ada Lovelace"
    assert report.unchanged == 4
    assert report.artist_changes == [("V0", "Ada", "Ada Lovelace")]
    assert check(sqlite_audit, store).clean
    # The other collection's point still names Ada: stale (requests citing it are refused), and its ingest, where
    # the catalogue's row is as the manifest's, rewrites it.
    assert check(sqlite_audit, other).stale == [point_id_for("vc", "V0")]
    rewritten = ingest_source(open_source(manifest), audit=sqlite_audit, store=other, **precomputed(table))
    assert (rewritten.updated, rewritten.new_images, rewritten.unchanged) == (1, 0, 4)
    assert point_of(other, "vc", "V0")[1]["artist"] == "Ada Lovelace" and check(sqlite_audit, other).clean
    other.close()


# -- crash safety --------------------------------------------------------------------------------------------------
def test_point_without_db_row_is_an_orphan_adopted_or_repaired(
    sqlite_audit: AuditStore, store: EdgeStore, vector_catalogue: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    manifest, table = vector_catalogue
    source = open_source(manifest)
    ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    assert check(sqlite_audit, store).clean

    # A run that crashed between the store write and the DB commit leaves V5's point but no row.
    tiny_png(tmp_path / "img" / "v5.png", seed=5)
    manifest.write_text(manifest.read_text() + "img/v5.png,Bruno,V5\n")
    table["V5"] = unit(raw_vectors(6)[5])
    crashed = point_id_for("vc", "V5")
    payload = {"work_id": "V5", "artist": "Bruno", "catalogue": "vc", "version": 1}
    store.upsert([WorkPoint(crashed, table["V5"], {**payload, "image_sha256": sha256_file(tmp_path / "img/v5.png")})])
    report = check(sqlite_audit, store)
    assert (report.orphans, report.missing, report.stale) == ([crashed], [], [])
    assert (report.points, report.expected) == (6, 5)

    # The next ingest writes the same deterministic point id: adopted, not duplicated.
    source = open_source(manifest)
    rerun = ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    assert (rerun.added, rerun.updated, rerun.unchanged) == (1, 0, 5)
    assert store.count() == 6 == count(sqlite_audit.engine, Work) == count(sqlite_audit.engine, WorkEmbedding)
    assert check(sqlite_audit, store).clean

    # An orphan no manifest names (its work is gone from the catalogue) stays until check --repair deletes it.
    stray = point_id_for("vc", "GONE")
    store.upsert([WorkPoint(stray, table["V0"], {**payload, "work_id": "GONE", "image_sha256": "ff" * 32})])
    rerun = ingest_source(source, audit=sqlite_audit, store=store, **precomputed(table))
    assert rerun.unchanged == 6
    assert check(sqlite_audit, store).orphans == [stray]
    repaired = check(sqlite_audit, store, repair=True)
    assert repaired.repaired and repaired.orphans == [stray]
    assert check(sqlite_audit, store).clean and store.count() == 6


CRASH_WORKS = 192
KILL_AFTER = 64  # works committed (four batches of 16) before the SIGKILL
# Bounds on the subprocess, not on the test's speed: generous, and scaled on slow machines.
TIMEOUT_FACTOR = float(os.environ.get("ATTRIBUTION_AUDIT_TEST_TIMEOUT_FACTOR", "1"))
PROCESS_TIMEOUT = 600 * TIMEOUT_FACTOR


def works_committed(database: Path) -> int:
    """Works rows, read without taking the SQLite write lock."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return int(connection.execute("SELECT count(*) FROM works").fetchone()[0])
    except sqlite3.OperationalError:  # the table or the file does not exist yet
        return 0
    finally:
        connection.close()


@pytest.mark.slow
def test_sigkilled_ingest_recovers_on_rerun(cli: Cli, tmp_path: Path) -> None:
    """A real process is SIGKILLed mid-ingest; the reruns (in-process CLI) find and repair what it left."""
    demo = make_demo_catalogue(tmp_path / "big", artists=6, works_per_artist=CRASH_WORKS // 6)
    database = Path(str(make_url(cli.database_url).database))
    ingest = ["ingest", str(demo.manifest), "--embedder", EMBEDDER]
    command = [
        sys.executable,
        "-m",
        "attribution_audit",
        "--data-dir",
        str(cli.data_dir),
        "--database-url",
        cli.database_url,
        *ingest,
        "--batch-size",
        "16",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + PROCESS_TIMEOUT
    try:
        while victim.poll() is None and time.monotonic() < deadline:
            if works_committed(database) >= KILL_AFTER:
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if victim.poll() is None and time.monotonic() >= deadline:
            victim.kill()
        _, stderr = victim.communicate(timeout=PROCESS_TIMEOUT)
    assert victim.returncode == -signal.SIGKILL, f"ingest ended before it could be killed: {stderr[-2000:]}"
    at_kill = works_committed(database)
    assert KILL_AFTER <= at_kill < CRASH_WORKS

    # Between the kill and the rerun the store may hold points of the uncommitted batch (orphans), never less.
    crashed = cli("catalogue", "check", "--embedder", EMBEDDER, code=None)
    assert ", 0 missing, 0 stale" in crashed.stdout, crashed.stdout + crashed.stderr

    rerun = cli(*ingest)
    added, updated, unchanged = (int(x) for x in _counts(rerun.stdout))
    assert updated == 0 and added + unchanged == CRASH_WORKS and unchanged >= at_kill

    checked = cli("catalogue", "check", "--embedder", EMBEDDER)
    assert f"{CRASH_WORKS} points, {CRASH_WORKS} expected; 0 orphan, 0 missing, 0 stale" in checked.stdout
    engine = cli.engine()
    try:
        assert count(engine, Work) == CRASH_WORKS == count(engine, WorkEmbedding)
        assert count(engine, WorkVersion) == CRASH_WORKS
        with Session(engine) as session:
            runs = session.scalars(select(IngestionRun).order_by(IngestionRun.id)).all()
        # The killed run's lease was free when the rerun started: marked interrupted (it used to stay running).
        assert [(r.status, r.finished_at is None) for r in runs] == [("interrupted", False), ("completed", False)]
    finally:
        engine.dispose()
    store = EdgeStore(cli.data_dir / "qdrant", "works_efficientnet_lite0")
    try:
        assert store.count() == CRASH_WORKS
    finally:
        store.close()

    third = cli(*ingest)
    assert f"0 added, 0 updated, {CRASH_WORKS} unchanged, 0 withdrawn (skipped), 0 failed" in third.stdout


def _counts(stdout: str) -> tuple[str, str, str]:
    match = re.search(r"(\d+) added, (\d+) updated, (\d+) unchanged", stdout)
    assert match, stdout
    return match.group(1), match.group(2), match.group(3)


def test_a_work_whose_image_duplicates_another_is_flagged(
    cli: Cli, tmp_path: Path, demo_catalogue: DemoCatalogue
) -> None:
    """Real catalogues hold the same image under two ids: ingest keeps both and warns, naming the pair."""
    image = demo_catalogue.manifest.parent / "works" / "a0_w0.png"
    shutil.copy(image, tmp_path / "one.png")
    shutil.copy(image, tmp_path / "two.png")
    manifest = tmp_path / "dupes.csv"
    manifest.write_text("path,artist,work_id\none.png,Ada,D1\ntwo.png,Ada,D2\n")
    result = cli("ingest", str(manifest), "--embedder", EMBEDDER)
    assert "2 added" in result.stdout
    assert "warning: 1 work(s) have the same image file as another work" in result.stderr
    assert "D2 = D1" in result.stderr


# -- progress -------------------------------------------------------------------------------------------------------
def test_progress_reports_a_total_and_reaches_it(
    sqlite_audit: AuditStore, store: EdgeStore, vector_catalogue: tuple[Path, dict[str, np.ndarray]]
) -> None:
    manifest, table = vector_catalogue
    seen: list[tuple[int, int | None]] = []
    ingest_source(
        open_source(manifest),
        audit=sqlite_audit,
        store=store,
        progress=lambda d, t: seen.append((d, t)),
        **precomputed(table),
    )
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    seen.clear()
    ingest_source(  # a re-run settles every row without embedding: still counted
        open_source(manifest),
        audit=sqlite_audit,
        store=store,
        progress=lambda d, t: seen.append((d, t)),
        **precomputed(table),
    )
    assert seen[-1] == (5, 5)


def test_progress_outside_a_terminal_is_a_periodic_line_with_total_and_eta(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from attribution_audit.cli import progress

    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    with progress.ProgressDisplay("ingest works.csv") as show:
        assert not show.terminal  # pytest captures stderr: not a terminal
        for done in (0, 32, 64, 100):
            show(done, 100)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("ingest works.csv: 32/100 works (32%),") and "ETA" in lines[0]
    assert lines[-1].startswith("ingest works.csv: 100/100 works (100%)")
    assert sum("100/100" in line for line in lines) == 1  # the final count once


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_vectors_of_extreme_magnitude_are_normalised_not_zeroed(scale: float, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,artist,work_id\na.png,Ada,Q0\nb.png,Ada,Q1\n")
    matrix = (raw_vectors(2) * scale).astype(np.float32)  # finite in float32; its squares are not
    table = load_vectors(write_embeddings("npy", tmp_path, [], matrix), open_source(manifest))
    for work_id, row in zip(("Q0", "Q1"), raw_vectors(2), strict=True):
        np.testing.assert_allclose(table[work_id], unit(row), atol=1e-5)


def test_complex_embeddings_are_refused_not_cut_to_their_real_part(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,artist,work_id\na.png,Ada,Q0\nb.png,Ada,Q1\n")
    path = tmp_path / "complex.npy"
    np.save(path, np.ones((2, DIM)) + 1j)
    with pytest.raises(ManifestError, match="complex128") as info:
        load_vectors(path, open_source(manifest))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_first_ingest_on_a_qdrant_server_opens_its_store_once(
    tmp_path: Path,
    sqlite_audit: AuditStore,
    monkeypatch: pytest.MonkeyPatch,
    vector_catalogue: tuple[Path, dict[str, np.ndarray]],
) -> None:
    """The checks before a first ingest (is the collection new, what size does it hold) read the store that the
    ingest then writes: one connection to the server, not one per check (qdrant-client's in-process mode)."""
    from attribution_audit.store.vectors.qdrant_server import ServerStore

    opened: list[ServerStore] = []
    server_store = ServerStore.__init__

    def counted(self: ServerStore, *args: Any, **kwargs: Any) -> None:
        server_store(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(ServerStore, "__init__", counted)
    manifest, table = vector_catalogue
    embeddings = write_embeddings("npz", tmp_path, list(table), np.vstack(list(table.values())))
    settings = load_settings(data_dir=tmp_path / "data", embedder="vec8", qdrant_url=":memory:")
    report = ingest_catalogue(settings, manifest, audit=sqlite_audit, embeddings=embeddings)
    assert (report.added, report.failed) == (5, 0)
    assert len(opened) == 1
