"""The HNSW search ef: a search-time setting (option > environment > the collection's recorded one), used by the
engine's searches without a re-ingest, recorded in each request's ``index_params``, and reproduced by a replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli, Ingested, ingest_once

from attribution_audit.config import Settings, load_settings
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import AttributionAuditError, VectorStoreError
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store.vectors import HnswParams, WorkPoint, point_id_for, search_ef_of
from attribution_audit.store.vectors.qdrant_edge import EdgeStore
from attribution_audit.store.vectors.qdrant_server import ServerStore

DIM, N, K = 48, 3000, 50


def unit_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def sparse_graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A real embedded shard of 3,000 random 48-d vectors on a deliberately sparse graph (m=8, ef_construct=16), so
    that a shallow search misses some of the exact top K."""
    root = tmp_path_factory.mktemp("sparse")
    vectors = unit_rows(N, 0)
    store = EdgeStore(root, "works", HnswParams(m=8, ef_construct=16, hnsw_ef=8))
    try:
        store.ensure_collection(DIM)
        store.upsert([WorkPoint(point_id_for("c", str(i)), vectors[i], {"work_id": str(i)}) for i in range(N)])
        store.build_index()
    finally:
        store.close()
    return root, vectors


def recall_at_k(root: Path, vectors: np.ndarray, search_ef: int | None) -> tuple[float, int]:
    """Mean recall@K of 30 queries against the exact top K, and the ef the store recorded, at ``search_ef``."""
    store = EdgeStore(root, "works", search_ef=search_ef)
    try:
        found = []
        for query in unit_rows(30, 1):
            exact = {point_id_for("c", str(i)) for i in np.argsort(-(vectors @ query))[:K]}
            found.append(len({h.point_id for h in store.search(query, K)} & exact) / K)
        return float(np.mean(found)), store.index_info()["hnsw_ef"]
    finally:
        store.close()


def test_a_larger_search_ef_raises_recall_on_the_same_shard_without_reingest(
    sparse_graph: tuple[Path, np.ndarray],
) -> None:
    root, vectors = sparse_graph
    recorded, recorded_ef = recall_at_k(root, vectors, None)  # the shard's own ef (8; the engine searches K deep)
    middle, middle_ef = recall_at_k(root, vectors, 100)
    deeper, deeper_ef = recall_at_k(root, vectors, 400)
    assert (recorded_ef, middle_ef, deeper_ef) == (8, 100, 400)
    assert recorded < 0.9, "the sparse graph should miss some of the exact top K at a shallow ef"
    assert recorded < middle <= deeper and deeper >= 0.95
    assert recall_at_k(root, vectors, None) == (recorded, 8)  # the setting changed nothing recorded in the shard


def test_a_new_shard_records_the_ef_it_was_created_with_as_its_default(tmp_path: Path) -> None:
    created = EdgeStore(tmp_path, "works", search_ef=300)
    try:
        created.ensure_collection(DIM)
    finally:
        created.close()
    for search_ef, used in ((None, 300), (64, 64)):
        reopened = EdgeStore(tmp_path, "works", search_ef=search_ef)
        try:
            assert reopened.index_info()["hnsw_ef"] == used
        finally:
            reopened.close()


def test_the_setting_comes_from_options_or_the_environment_and_bad_values_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert search_ef_of(load_settings()) is None
    monkeypatch.setenv("ATTRIBUTION_AUDIT_HNSW_EF", "256")
    assert search_ef_of(load_settings()) == 256
    assert search_ef_of(load_settings(hnsw_ef=512)) == 512  # an option wins over the environment
    server = ServerStore(":memory:", "works", search_ef=512)  # a server's searches take it too
    try:
        assert server.index_info()["hnsw_ef"] == 512
    finally:
        server.close()
    with pytest.raises(VectorStoreError, match=r"^hnsw_ef must be a whole number of at least 1, not 0; fix --ef or "):
        search_ef_of(Settings(hnsw_ef=0))
    monkeypatch.setenv("ATTRIBUTION_AUDIT_HNSW_EF", "many")
    with pytest.raises(AttributionAuditError, match=r"^ATTRIBUTION_AUDIT_HNSW_EF='many' is not a whole number"):
        load_settings()


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("ef-ingested"), sqlite_template, demo_catalogue.manifest)


def test_attribute_records_the_ef_it_searched_with_and_replay_reuses_it(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.restore(ingested)
    query = str(demo_catalogue.queries[0].path)

    def attribute(*options: str) -> dict[str, object]:
        [record] = json.loads(cli("attribute", query, "--k", "5", "--format", "json", *options).stdout)
        return record

    assert attribute()["index_params"]["hnsw_ef"] == 128  # type: ignore[index]
    monkeypatch.setenv("ATTRIBUTION_AUDIT_HNSW_EF", "200")
    assert attribute()["index_params"]["hnsw_ef"] == 200  # type: ignore[index]
    deep = attribute("--ef", "300")
    assert deep["index_params"]["hnsw_ef"] == 300  # type: ignore[index]

    # a replay searches with the ef its request recorded, not the one configured now (200)
    replayed = json.loads(cli("audit", "replay", str(deep["request_id"]), "--format", "json").stdout)
    assert replayed["replay"]["index_params"]["hnsw_ef"] == 300 and replayed["differences"] == []

    usage = cli("attribute", query, "--ef", "0", code=2)
    assert "Invalid value for '--ef'" in usage.output
    monkeypatch.setenv("ATTRIBUTION_AUDIT_HNSW_EF", "0")
    failed = cli("attribute", query, code=1)
    assert failed.output.strip() == (
        "error: hnsw_ef must be a whole number of at least 1, not 0; fix --ef or ATTRIBUTION_AUDIT_HNSW_EF"
    )


def test_serve_takes_the_option(cli: Cli) -> None:
    assert "--ef" in cli("serve", "--help").output
    assert "Invalid value for '--ef'" in cli("serve", "--ef", "-1", code=2).output
