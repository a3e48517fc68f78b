"""The exact index follows an ingest: the cache of the collection as it was is brought up to date from the points
the ingest wrote, so the next exact search reads no other vector of the collection."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attribution_audit.services.ingest import ingest_source
from attribution_audit.sources.manifest import open_source
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.exact import cache_folder, load_or_build, update_cache
from attribution_audit.store.vectors import VectorStore, point_id_for
from attribution_audit.store.vectors.qdrant_edge import EdgeStore
from attribution_audit.store.vectors.qdrant_server import ServerStore

DIM = 16


def manifest(path: Path, work_ids: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_id"])
        writer.writerows([f"img/{w}.png", f"artist {i % 3}", w] for i, w in enumerate(work_ids))
    return path


def unit_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ingester(
    audit: AuditStore, store: VectorStore, tmp_path: Path, vectors: dict[str, np.ndarray]
) -> Callable[[str, list[str]], None]:
    """Ingest the works of ``work_ids`` (a manifest called ``name``) into catalogue "museum" with their ``vectors``
    (looked up when ingested: change one to change the work), the exact caches under ``tmp_path / "exact"``."""

    def ingest(name: str, work_ids: list[str]) -> None:
        ingest_source(
            open_source(manifest(tmp_path / f"{name}.csv", work_ids)),
            audit=audit,
            store=store,
            embedder=None,
            embedder_fingerprint="precomputed:test",
            vectors=lambda row: vectors.get(row.work_id),
            catalogue="museum",
            exact_cache_dir=tmp_path / "exact",
        )

    return ingest


def no_scroll() -> tuple[list[str], np.ndarray]:
    raise AssertionError("the exact index read the whole collection")


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect", "ignore:Local mode performs exact")
@pytest.mark.parametrize(("method", "kind"), [("brute", "edge"), ("kdtree", "edge"), ("brute", "server")])
def test_an_ingest_brings_the_exact_cache_up_to_date_without_a_scroll(
    sqlite_audit: AuditStore, tmp_path: Path, method: str, kind: str
) -> None:
    store: VectorStore = EdgeStore(tmp_path / "qdrant", "works") if kind == "edge" else ServerStore(":memory:", "works")
    root = tmp_path / "exact"
    vectors = dict(zip([f"w{i}" for i in range(40)], unit_rows(40, 0), strict=True))
    ingest = ingester(sqlite_audit, store, tmp_path, vectors)

    try:
        ingest("first", [f"w{i}" for i in range(30)])
        folder = cache_folder(root, store.collection, method, "content")
        load_or_build(method, folder, store.content_version(), lambda: store.fetch_all())  # what a request builds
        vectors["w3"] = unit_rows(1, 1)[0]  # a changed work and ten new ones
        ingest("second", [f"w{i}" for i in range(40)])
        version = store.content_version()
        assert [p.name for p in folder.iterdir()] == [version]  # brought up to date, the old version removed
        index = load_or_build(method, folder, version, no_scroll)
        ids, matrix = store.fetch_all()
        assert sorted(index.ids) == sorted(ids) and len(ids) == 40
        queries = unit_rows(5, 2)
        rows, _ = index.search(queries, 5)
        expected = np.argsort(-(queries @ matrix.T), axis=1)[:, :5]
        assert [[index.ids[r] for r in row] for row in rows.tolist()] == [[ids[r] for r in row] for row in expected]
        found, _ = index.search(vectors["w3"][None, :], 1)
        assert index.ids[found[0][0]] == point_id_for("museum", "w3")  # the changed vector, not the old one
    finally:
        store.close()


def test_a_cache_is_not_brought_forward_past_a_write_the_run_did_not_make(
    sqlite_audit: AuditStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer (a withdrawal in another process, on a Qdrant server) removes a point during an ingest: the
    cache as it was plus the ingest's own points would still hold it, under the new version. It is left for the
    next search to build from the collection instead."""
    from attribution_audit.services import ingest as ingest_service

    store, root = EdgeStore(tmp_path / "qdrant", "works"), tmp_path / "exact"
    vectors = dict(zip([f"w{i}" for i in range(20)], unit_rows(20, 0), strict=True))
    ingest = ingester(sqlite_audit, store, tmp_path, vectors)
    write = ingest_service.Ingestion.write

    def write_then_other_writer(self: ingest_service.Ingestion, prepared: list[Any], run_id: int) -> None:
        write(self, prepared, run_id)
        store.delete([point_id_for("museum", "w0")])

    try:
        ingest("first", [f"w{i}" for i in range(10)])
        folder = cache_folder(root, store.collection, "brute", "content")
        load_or_build("brute", folder, store.content_version(), lambda: store.fetch_all())
        monkeypatch.setattr(ingest_service.Ingestion, "write", write_then_other_writer)
        ingest("second", [f"w{i}" for i in range(20)])
        assert store.content_version() not in [p.name for p in folder.iterdir()]
        index = load_or_build("brute", folder, store.content_version(), lambda: store.fetch_all())
        assert sorted(index.ids) == sorted(store.fetch_all()[0]) and len(index.ids) == 19
    finally:
        store.close()


def test_the_caches_of_one_space_are_brought_forward_from_one_read_of_the_written_points(
    sqlite_audit: AuditStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EdgeStore(tmp_path / "qdrant", "works")
    vectors = dict(zip([f"w{i}" for i in range(20)], unit_rows(20, 0), strict=True))
    ingest = ingester(sqlite_audit, store, tmp_path, vectors)
    try:
        ingest("first", [f"w{i}" for i in range(10)])
        folders = [cache_folder(tmp_path / "exact", store.collection, m, "content") for m in ("brute", "kdtree")]
        for method, folder in zip(("brute", "kdtree"), folders, strict=True):
            load_or_build(method, folder, store.content_version(), lambda: store.fetch_all())
        fetched: list[str] = []
        fetch = store.fetch
        monkeypatch.setattr(store, "fetch", lambda ids, space: fetched.append(space) or fetch(ids, space))
        ingest("second", [f"w{i}" for i in range(20)])
        assert fetched == ["content"]
        for method, folder in zip(("brute", "kdtree"), folders, strict=True):
            assert len(load_or_build(method, folder, store.content_version(), no_scroll).ids) == 20
    finally:
        store.close()


def test_a_write_of_no_cached_vector_moves_the_cache_on_whole(tmp_path: Path) -> None:
    """A run that wrote only vectors the cache does not hold (layouts) renames the cache to the new version: the
    KD-tree is kept, nothing is copied, and the next search reads no vector of the collection."""
    ids, vectors = [f"p{i}" for i in range(50)], unit_rows(50, 3)
    built = load_or_build("kdtree", tmp_path, "v1", lambda: (ids, vectors))
    files = sorted(p.name for p in (tmp_path / "v1").iterdir())
    assert "kdtree.pkl" in files
    assert update_cache(tmp_path, "v1", "v2", [], np.zeros((0, DIM), np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["v2"]
    assert sorted(p.name for p in (tmp_path / "v2").iterdir()) == files
    again = load_or_build("kdtree", tmp_path, "v2", no_scroll)
    np.testing.assert_array_equal(again.search(vectors[:3], 5)[0], built.search(vectors[:3], 5)[0])


@pytest.mark.parametrize("method", ["brute", "kdtree"])
def test_a_tie_with_an_appended_row_goes_to_the_lower_id(tmp_path: Path, method: str) -> None:
    """The same image ingested again under a work whose id sorts first: the updated cache holds it last, and the
    exact search still ranks the tied pair by id (as the HNSW side does), so no disagreement is recorded."""
    vectors = unit_rows(3, seed=5)
    load_or_build(method, tmp_path, "v1", lambda: (["b", "c", "d"], vectors))
    assert update_cache(tmp_path, "v1", "v2", ["a"], vectors[:1])  # a twin of "b"
    index = load_or_build(method, tmp_path, "v2", no_scroll)
    assert index.ids == ["b", "c", "d", "a"]
    rows, _ = index.search(vectors[:1], 2)
    assert [index.ids[r] for r in rows[0]] == ["a", "b"]
    if method == "brute":  # the KD-tree keeps whichever tied rows it visits first (module docstring)
        rows, _ = index.search(vectors[:1], 1)
        assert [index.ids[r] for r in rows[0]] == ["a"]
