"""Both vector stores against a NumPy brute-force ground truth, plus the embedded shard's persistence and lock."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from attribution_audit.errors import VectorStoreError
from attribution_audit.vectorstore import VectorStore, WorkPoint, collection_name, point_id_for
from attribution_audit.vectorstore.base import HnswParams
from attribution_audit.vectorstore.qdrant_edge import EdgeStore
from attribution_audit.vectorstore.qdrant_server import ServerStore

N, DIM, K = 600, 32, 10
COLLECTION = "works_test"
CATALOGUE = "cat-a"

pytestmark = pytest.mark.filterwarnings(
    # qdrant-client's in-process mode warns that payload indexes and search params have no effect there.
    "ignore:Payload indexes have no effect:UserWarning",
    "ignore:Local mode performs exact:UserWarning",
)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """600 seeded unit vectors scattered around 12 cluster centres."""
    rng = np.random.default_rng(1234)
    centres = unit(rng.standard_normal((12, DIM)))
    noise = 0.35 * rng.standard_normal((N, DIM)) / np.sqrt(DIM)
    return unit(centres[rng.integers(0, len(centres), N)] + noise)


@pytest.fixture(scope="module")
def queries(vectors: np.ndarray) -> np.ndarray:
    """20 queries near catalogue points (not equal to them) and 5 random directions."""
    rng = np.random.default_rng(99)
    near = vectors[rng.integers(0, N, 20)] + 0.2 * rng.standard_normal((20, DIM)) / np.sqrt(DIM)
    return unit(np.vstack([near, rng.standard_normal((5, DIM))]))


@pytest.fixture(scope="module")
def points(vectors: np.ndarray) -> list[WorkPoint]:
    return [
        WorkPoint(
            point_id_for(CATALOGUE, f"w{i:04d}"),
            vectors[i],
            {"work_id": f"w{i:04d}", "artist": f"Artist {i % 7}", "catalogue": CATALOGUE},
        )
        for i in range(N)
    ]


def make_store(kind: str, root: Path) -> VectorStore:
    return EdgeStore(root, COLLECTION) if kind == "edge" else ServerStore(":memory:", COLLECTION)


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """An empty store, once embedded (Qdrant Edge shard) and once over qdrant-client (in-process mode)."""
    s = make_store(request.param, tmp_path)
    yield s
    s.close()


def fill(s: VectorStore, points: list[WorkPoint]) -> VectorStore:
    s.ensure_collection(DIM)
    s.upsert(points)
    s.build_index()
    return s


@pytest.fixture(scope="module")
def edge_filled(tmp_path_factory: pytest.TempPathFactory, points: list[WorkPoint]) -> Iterator[VectorStore]:
    """The 600 points in an embedded shard, built once for the read-only tests."""
    s = fill(EdgeStore(tmp_path_factory.mktemp("edge"), COLLECTION), points)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server_filled(points: list[WorkPoint]) -> Iterator[VectorStore]:
    s = fill(ServerStore(":memory:", COLLECTION), points)
    yield s
    s.close()


@pytest.fixture(params=["edge", "server"])
def filled(request: pytest.FixtureRequest) -> VectorStore:
    """The 600 points in each store (shared: tests must not modify it)."""
    return request.getfixturevalue(f"{request.param}_filled")


def ground_truth(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = vectors.astype(np.float64) @ query.astype(np.float64)
    rows = np.argsort(-sims, kind="stable")[:k]
    return rows, sims[rows]


# -- congruence with brute force ---------------------------------------------------------------------------------


def test_search_returns_exact_top_k_best_first(
    filled: VectorStore, vectors: np.ndarray, queries: np.ndarray, points: list[WorkPoint]
) -> None:
    # At 600 points with m=16 and hnsw_ef=128 the HNSW search is exact (the in-process client is brute force).
    for query in queries:
        rows, sims = ground_truth(vectors, query, K)
        hits = filled.search(query, K)
        assert [h.point_id for h in hits] == [points[r].point_id for r in rows]
        got = np.array([h.similarity for h in hits])
        np.testing.assert_allclose(got, sims, atol=1e-5)
        assert np.all(np.diff(got) <= 1e-7), "hits must be best first"


def test_exact_search_matches_brute_force(
    filled: VectorStore, vectors: np.ndarray, queries: np.ndarray, points: list[WorkPoint]
) -> None:
    for query in queries[:5]:
        rows, sims = ground_truth(vectors, query, K)
        hits = filled.search(query, K, exact=True)
        assert [h.point_id for h in hits] == [points[r].point_id for r in rows]
        np.testing.assert_allclose([h.similarity for h in hits], sims, atol=1e-5)


def test_search_of_a_stored_vector_finds_itself(filled: VectorStore, points: list[WorkPoint]) -> None:
    for p in points[::97]:
        best = filled.search(p.vector, 1)[0]
        assert best.point_id == p.point_id
        assert best.similarity == pytest.approx(1.0, abs=1e-5)


def test_limit_larger_than_collection_returns_everything(store: VectorStore, points: list[WorkPoint]) -> None:
    store.ensure_collection(DIM)
    store.upsert(points[:7])
    store.build_index()
    hits = store.search(points[0].vector, 50)
    assert {h.point_id for h in hits} == {p.point_id for p in points[:7]}


def test_payload_round_trips(store: VectorStore, vectors: np.ndarray) -> None:
    payload = {
        "work_id": "w-é-1",
        "artist": "Claude Monet é",
        "title": "Impression, soleil levant",
        "catalogue": CATALOGUE,
        "image_sha256": "ab" * 32,
        "year": "1872",
        "licence": "CC-BY",
    }
    store.ensure_collection(DIM)
    store.upsert([WorkPoint(point_id_for(CATALOGUE, "w-é-1"), vectors[0], payload)])
    store.build_index()
    (hit,) = store.search(vectors[0], 1)
    assert hit.point_id == point_id_for(CATALOGUE, "w-é-1")
    assert hit.payload == payload


def test_upsert_is_idempotent_and_replaces(store: VectorStore, points: list[WorkPoint], vectors: np.ndarray) -> None:
    store.ensure_collection(DIM)
    store.upsert(points)
    store.upsert(points)
    assert store.count() == N
    # Re-upserting an id replaces its vector and payload instead of adding a point.
    moved = WorkPoint(points[0].point_id, vectors[300], {**points[0].payload, "title": "replaced"})
    store.upsert([moved])
    store.build_index()
    assert store.count() == N
    hits = store.search(vectors[300], 2)
    assert {h.point_id for h in hits} == {points[0].point_id, points[300].point_id}
    assert next(h for h in hits if h.point_id == points[0].point_id).payload["title"] == "replaced"


def test_existing_ids_returns_only_present_ids(store: VectorStore, points: list[WorkPoint]) -> None:
    absent = [point_id_for(CATALOGUE, "nope-1"), point_id_for("other-catalogue", "w0000")]
    present = [p.point_id for p in points[:5]]
    assert store.existing_ids(present) == set()  # never created: empty, not an error
    store.ensure_collection(DIM)
    store.upsert(points[:5])
    assert store.existing_ids([*present[:3], *absent]) == set(present[:3])
    assert store.existing_ids(absent) == set()
    assert store.existing_ids([]) == set()


def test_count_of_never_created_collection_is_zero(store: VectorStore) -> None:
    assert store.count() == 0


def test_search_before_ingest_raises_one_line_error(store: VectorStore) -> None:
    with pytest.raises(VectorStoreError) as info:
        store.search(np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), 5)
    message = str(info.value)
    assert "\n" not in message
    assert "attribution-audit ingest" in message
    assert COLLECTION in message


def test_edge_dimension_mismatch_on_reopen_raises(tmp_path: Path) -> None:
    # A fresh object on the same shard, as each CLI call makes.
    edge = EdgeStore(tmp_path, COLLECTION)
    edge.ensure_collection(DIM)
    edge.close()
    reopened = EdgeStore(tmp_path, COLLECTION)
    try:
        with pytest.raises(VectorStoreError, match=r"32-d.*16-d") as info:
            reopened.ensure_collection(16)
        assert "\n" not in str(info.value)
    finally:
        reopened.close()


@pytest.mark.parametrize(
    "kind",
    [
        "edge",
        "server",
    ],
)
def test_dimension_mismatch_on_open_store_raises(kind: str, tmp_path: Path) -> None:
    s = make_store(kind, tmp_path)
    try:
        s.ensure_collection(DIM)
        with pytest.raises(VectorStoreError, match=r"32-d.*16-d"):
            s.ensure_collection(16)
    finally:
        s.close()


def test_ensure_collection_with_same_dim_keeps_points(store: VectorStore, points: list[WorkPoint]) -> None:
    store.ensure_collection(DIM)
    store.upsert(points[:10])
    store.ensure_collection(DIM)
    assert store.count() == 10


def test_index_info_describes_store_and_parameters(filled: VectorStore) -> None:
    info = filled.index_info()
    assert info["store"] == filled.kind
    assert info["collection"] == COLLECTION
    assert (info["m"], info["ef_construct"], info["hnsw_ef"]) == (16, 128, 128)
    assert info["points"] == N


# -- embedded shard only -----------------------------------------------------------------------------------------


def test_edge_builds_the_hnsw_graph(edge_filled: VectorStore) -> None:
    info = edge_filled.index_info()
    assert info["index"] == "hnsw"
    assert info["indexed_vectors"] == N


def test_edge_data_and_params_persist_after_reopen(
    tmp_path: Path, points: list[WorkPoint], vectors: np.ndarray, queries: np.ndarray
) -> None:
    n = 200
    params = HnswParams(m=12, ef_construct=100, hnsw_ef=150)
    first = fill(EdgeStore(tmp_path, COLLECTION, params), points[:n])
    before = [h.point_id for h in first.search(queries[0], K)]
    first.close()

    second = EdgeStore(tmp_path, COLLECTION)  # default params: the shard's recorded ones must win
    try:
        assert second.count() == n
        assert second.existing_ids([points[5].point_id, points[n].point_id]) == {points[5].point_id}
        assert [h.point_id for h in second.search(queries[0], K)] == before
        rows, _ = ground_truth(vectors[:n], queries[0], K)
        assert before == [points[r].point_id for r in rows]
        info = second.index_info()
        assert (info["m"], info["ef_construct"], info["hnsw_ef"]) == (12, 100, 150)
        assert info["indexed_vectors"] == n
    finally:
        second.close()


def test_edge_second_object_can_open_after_close(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path, COLLECTION, lock_timeout=0.5)
    first.ensure_collection(DIM)
    first.close()
    second = EdgeStore(tmp_path, COLLECTION, lock_timeout=0.5)
    try:
        second.ensure_collection(DIM)
        assert second.count() == 0
    finally:
        second.close()


def test_edge_dimension_error_releases_the_lock(tmp_path: Path) -> None:
    created = EdgeStore(tmp_path, COLLECTION)
    created.ensure_collection(DIM)
    created.close()
    wrong = EdgeStore(tmp_path, COLLECTION, lock_timeout=0.3)
    with pytest.raises(VectorStoreError, match="16-d"):
        wrong.ensure_collection(16)
    right = EdgeStore(tmp_path, COLLECTION, lock_timeout=0.3)
    try:
        right.ensure_collection(DIM)
    finally:
        right.close()
        wrong.close()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from attribution_audit.vectorstore.qdrant_edge import EdgeStore
    store = EdgeStore(sys.argv[1], sys.argv[2])
    store.ensure_collection(int(sys.argv[3]))
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_edge_shard_busy_in_another_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), COLLECTION, str(DIM)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.strip() == "ready", f"holder failed: {line!r} {holder.stderr.read() if holder.stderr else ''}"
        blocked = EdgeStore(tmp_path, COLLECTION, lock_timeout=0.5)
        with pytest.raises(VectorStoreError, match="busy") as info:
            blocked.ensure_collection(DIM)
        assert "\n" not in str(info.value)
        blocked.close()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        for stream in (holder.stdout, holder.stderr):
            if stream is not None:
                stream.close()

    again = EdgeStore(tmp_path, COLLECTION, lock_timeout=5)
    try:
        again.ensure_collection(DIM)
        assert again.count() == 0
    finally:
        again.close()


# -- ids and names -----------------------------------------------------------------------------------------------


def test_point_id_for_is_deterministic_and_catalogue_scoped() -> None:
    a = point_id_for("louvre", "w1")
    assert a == point_id_for("louvre", "w1")
    assert a != point_id_for("orsay", "w1")
    assert a != point_id_for("louvre", "w2")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", a)


@pytest.mark.parametrize(
    ("embedder", "expected"),
    [("clip:/x/y", "works_clip_x_y"), ("CLIP-ViT-B/32", "works_clip_vit_b_32"), ("dinov2", "works_dinov2")],
)
def test_collection_name_is_safe(embedder: str, expected: str) -> None:
    name = collection_name(embedder)
    assert name == expected
    assert re.fullmatch(r"works_[a-z0-9_]+", name)
