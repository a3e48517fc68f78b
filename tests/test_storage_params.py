"""Storage of large catalogues: int8 scalar quantisation (rescored by the engine, so results and scores stay exact)
on the embedded shard, and a server collection's shards and replication, recorded with every attribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attribution_audit.config import Settings, load_settings, with_options
from attribution_audit.errors import AttributionAuditError, VectorStoreError
from attribution_audit.store.vectors import StorageParams, WorkPoint, point_id_for, storage_of
from attribution_audit.store.vectors.qdrant_edge import EdgeStore
from attribution_audit.store.vectors.qdrant_server import ServerStore

DIM, N = 64, 3000


def unit_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_an_int8_shard_answers_with_exact_scores_and_records_its_quantisation(tmp_path: Path) -> None:
    vectors = unit_rows(N, 0)
    ids = [point_id_for("c", str(i)) for i in range(N)]
    store = EdgeStore(tmp_path, "works", storage=StorageParams(quantization="int8"))
    try:
        store.ensure_collection(DIM)
        store.upsert([WorkPoint(ids[i], vectors[i], {"work_id": str(i)}) for i in range(N)])
        store.build_index()
        queries = unit_rows(10, 1)
        recall = []
        for query in queries:
            hits = store.search(query, 10)
            exact = np.argsort(-(vectors @ query))[:10]
            recall.append(len({h.point_id for h in hits} & {ids[i] for i in exact}) / 10)
            for hit in hits:  # rescored on the original vectors: the exact cosine, not an int8 estimate
                assert hit.similarity == pytest.approx(float(vectors[ids.index(hit.point_id)] @ query), abs=1e-5)
        assert np.mean(recall) >= 0.9
        assert store.index_info()["quantization"] == "int8"
    finally:
        store.close()
    reopened = EdgeStore(tmp_path, "works")  # the shard's own record wins over the (default) settings
    try:
        assert reopened.index_info()["quantization"] == "int8"
    finally:
        reopened.close()


def test_a_server_collection_records_its_shards_and_replication() -> None:
    storage = StorageParams(quantization="int8", shard_number=3, replication_factor=2, write_consistency_factor=2)
    store = ServerStore(":memory:", "works", storage=storage)  # qdrant-client's in-process mode
    try:
        store.ensure_collection(DIM)
        vectors = unit_rows(20, 2)
        store.upsert([WorkPoint(point_id_for("c", str(i)), vectors[i], {"work_id": str(i)}) for i in range(20)])
        info = store.index_info()
        assert {k: info[k] for k in storage.as_dict()} == storage.as_dict()
        assert store.search(vectors[4], 1)[0].point_id == point_id_for("c", "4")
    finally:
        store.close()


def test_storage_settings_come_from_options_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTRIBUTION_AUDIT_QUANTIZATION", "int8")
    monkeypatch.setenv("ATTRIBUTION_AUDIT_SHARD_NUMBER", "4")
    settings = load_settings(qdrant_url="http://qdrant:6333")
    assert storage_of(settings) == StorageParams("int8", 4, None, None)
    given = with_options(settings, quantization="none", replication_factor=2)
    assert storage_of(given) == StorageParams("none", 4, 2, None)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_SHARD_NUMBER", "four")
    with pytest.raises(AttributionAuditError, match="ATTRIBUTION_AUDIT_SHARD_NUMBER='four' is not a whole number"):
        load_settings()


def test_cluster_settings_without_a_server_and_bad_values_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VectorStoreError, match="need a Qdrant server or cluster: pass --qdrant-url"):
        storage_of(Settings(shard_number=2))
    # a bad value names the option and the variable to fix, whichever of them set it
    monkeypatch.setenv("ATTRIBUTION_AUDIT_QUANTIZATION", "int4")
    monkeypatch.setenv("ATTRIBUTION_AUDIT_REPLICATION_FACTOR", "0")
    with pytest.raises(
        VectorStoreError,
        match=r"^quantization must be one of none, int8, not 'int4'; fix --quantization or "
        r"ATTRIBUTION_AUDIT_QUANTIZATION$",
    ):
        storage_of(load_settings(qdrant_url="http://qdrant:6333"))
    monkeypatch.delenv("ATTRIBUTION_AUDIT_QUANTIZATION")
    with pytest.raises(VectorStoreError, match=r"fix --replication-factor or ATTRIBUTION_AUDIT_REPLICATION_FACTOR$"):
        storage_of(load_settings(qdrant_url="http://qdrant:6333"))
