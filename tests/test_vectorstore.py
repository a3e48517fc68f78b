"""Both vector stores run the same calls and must agree with NumPy brute force and with each other (qdrant-client's
in-process mode stands in for a server), on filled, empty and never-created collections; then what only the embedded
shard does (persistence, the process lock), and point ids and collection names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attribution_audit.domain.points import HIT_FIELDS
from attribution_audit.errors import VectorStoreError
from attribution_audit.store.vectors import VectorStore, WorkPoint, collection_name, point_id_for
from attribution_audit.store.vectors.base import HnswParams
from attribution_audit.store.vectors.qdrant_edge import ANNOUNCE_WAIT_S, META_FILE, EdgeStore
from attribution_audit.store.vectors.qdrant_server import ServerStore

N, DIM, STYLE_DIM, K = 600, 32, 8, 10
COLLECTION = "works_test"
CATALOGUE = "cat-a"
KINDS = ["edge", "server"]

pytestmark = pytest.mark.filterwarnings(
    # qdrant-client's in-process mode warns that payload indexes and search params have no effect there.
    "ignore:Payload indexes have no effect:UserWarning",
    "ignore:Local mode performs exact:UserWarning",
)


def set_of_identities(store: VectorStore, point_ids: list[str]) -> set[str]:
    """The ids among ``point_ids`` that the store holds (those it gives an identity)."""
    return set(store.identities(point_ids))


def unit(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows / np.linalg.norm(rows, axis=-1, keepdims=True), dtype=np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """600 seeded unit content vectors scattered around 12 cluster centres."""
    rng = np.random.default_rng(1234)
    centres = unit(rng.standard_normal((12, DIM)))
    noise = 0.35 * rng.standard_normal((N, DIM)) / np.sqrt(DIM)
    return unit(centres[rng.integers(0, len(centres), N)] + noise)


@pytest.fixture(scope="module")
def styles() -> np.ndarray:
    """600 seeded unit style vectors, uniform on the sphere."""
    return unit(np.random.default_rng(4321).standard_normal((N, STYLE_DIM)))


@pytest.fixture(scope="module")
def queries(vectors: np.ndarray) -> np.ndarray:
    """20 queries near catalogue points (not equal to them) and 5 random directions."""
    rng = np.random.default_rng(99)
    near = vectors[rng.integers(0, N, 20)] + 0.2 * rng.standard_normal((20, DIM)) / np.sqrt(DIM)
    return unit(np.vstack([near, rng.standard_normal((5, DIM))]))


@pytest.fixture(scope="module")
def style_queries() -> np.ndarray:
    return unit(np.random.default_rng(7).standard_normal((25, STYLE_DIM)))


@pytest.fixture(scope="module")
def points(vectors: np.ndarray, styles: np.ndarray) -> list[WorkPoint]:
    return [
        WorkPoint(
            point_id_for(CATALOGUE, f"w{i:04d}"),
            vectors[i],
            {"work_id": f"w{i:04d}", "artist": f"Artist {i % 7}", "catalogue": CATALOGUE, "image_sha256": f"{i:064x}"},
            styles[i],
        )
        for i in range(N)
    ]


@dataclass(frozen=True)
class Truth:
    """The filled catalogue as NumPy sees it: every point, and per space its (N, size) unit matrix and 25 queries."""

    points: list[WorkPoint]
    matrix: dict[str, np.ndarray]
    queries: dict[str, np.ndarray]

    def top(self, space: str, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        """Ids and cosines of the k nearest points, best first."""
        rows, sims = ground_truth(self.matrix[space], query, k)
        return [self.points[r].point_id for r in rows], sims


@pytest.fixture(scope="module")
def truth(
    points: list[WorkPoint], vectors: np.ndarray, styles: np.ndarray, queries: np.ndarray, style_queries: np.ndarray
) -> Truth:
    return Truth(points, {"content": vectors, "style": styles}, {"content": queries, "style": style_queries})


def content_only(points: list[WorkPoint]) -> list[WorkPoint]:
    return [WorkPoint(p.point_id, p.vector, p.payload) for p in points]


def make_store(kind: str, root: Path) -> VectorStore:
    return EdgeStore(root, COLLECTION) if kind == "edge" else ServerStore(":memory:", COLLECTION)


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """A store whose collection is not created yet: once an embedded Qdrant Edge shard in tmp_path, once over
    qdrant-client (in-process mode)."""
    s = make_store(request.param, tmp_path)
    yield s
    s.close()


def fill(s: VectorStore, points: list[WorkPoint]) -> VectorStore:
    s.ensure_collection(DIM, STYLE_DIM)
    s.upsert(points)
    s.build_index()
    return s


@pytest.fixture(scope="module")
def edge_filled(tmp_path_factory: pytest.TempPathFactory, points: list[WorkPoint]) -> Iterator[VectorStore]:
    """The 600 points (content and style) in an embedded shard, built once for the read-only tests."""
    s = fill(EdgeStore(tmp_path_factory.mktemp("edge"), COLLECTION), points)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server_filled(points: list[WorkPoint]) -> Iterator[VectorStore]:
    s = fill(ServerStore(":memory:", COLLECTION), points)
    yield s
    s.close()


@pytest.fixture(params=KINDS)
def filled(request: pytest.FixtureRequest) -> VectorStore:
    """The 600 points in each store (shared: tests must not modify it)."""
    store: VectorStore = request.getfixturevalue(f"{request.param}_filled")
    return store


# -- NumPy ground truth ------------------------------------------------------------------------------------------
def ground_truth(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the k largest cosines (unit rows) and those cosines, best first."""
    sims = matrix.astype(np.float64) @ query.astype(np.float64)
    rows = np.argsort(-sims, kind="stable")[:k]
    return rows, sims[rows]


def rrf_scores(rankings: dict[str, list[str]], weights: dict[str, float], k: int) -> dict[str, float]:
    """Qdrant's weighted reciprocal rank fusion: 1 / (k - 1 + r / w) at 1-based rank r, summed over the lists."""
    scores: dict[str, float] = {}
    for space, ids in rankings.items():
        for rank, point_id in enumerate(ids, start=1):
            scores[point_id] = scores.get(point_id, 0.0) + 1.0 / (k - 1 + rank / weights[space])
    return scores


# -- the same calls on both stores, against NumPy ------------------------------------------------------------------
def test_both_stores_derive_from_the_one_base() -> None:
    assert issubclass(EdgeStore, VectorStore) and issubclass(ServerStore, VectorStore)
    assert not EdgeStore.__abstractmethods__ and not ServerStore.__abstractmethods__
    with pytest.raises(TypeError, match="abstract"):
        type("Partial", (VectorStore,), {"close": lambda self: None})(COLLECTION)  # engine primitives missing


def test_hnsw_search_has_full_recall_at_10_best_first(filled: VectorStore, truth: Truth) -> None:
    # At 600 clustered points with m=16 and hnsw_ef=128 the HNSW search finds the exact top 10 (recall@10 = 1);
    # the in-process client is brute force.
    found = 0
    for query in truth.queries["content"]:
        ids, sims = truth.top("content", query, K)
        hits = filled.search(query, K)
        found += len({h.point_id for h in hits} & set(ids))
        assert [h.point_id for h in hits] == ids
        got = np.array([h.similarity for h in hits])
        np.testing.assert_allclose(got, sims, atol=1e-5)
        assert np.all(np.diff(got) <= 1e-7), "hits must be best first"
    assert found / (K * len(truth.queries["content"])) == 1.0


@pytest.mark.parametrize("space", ["content", "style"])
def test_exact_search_equals_brute_force(filled: VectorStore, truth: Truth, space: str) -> None:
    for query in truth.queries[space]:
        ids, sims = truth.top(space, query, K)
        hits = filled.search(query, K, exact=True, space=space)
        assert [h.point_id for h in hits] == ids
        np.testing.assert_allclose([h.similarity for h in hits], sims, atol=1e-5)


def test_search_of_a_stored_vector_finds_itself(filled: VectorStore, points: list[WorkPoint]) -> None:
    for p in points[::97]:
        best = filled.search(p.vector, 1)[0]
        assert best.point_id == p.point_id
        assert best.similarity == pytest.approx(1.0, abs=1e-5)


def test_hits_carry_their_stored_vectors_on_request(filled: VectorStore, truth: Truth) -> None:
    by_id = {p.point_id: p for p in truth.points}
    query = truth.queries["style"][0]
    for hit in filled.search(query, 5, space="style", with_vectors=True):
        assert hit.vectors is not None and set(hit.vectors) == {"content", "style"}
        np.testing.assert_allclose(hit.vectors["content"], by_id[hit.point_id].vector, atol=1e-6)
        np.testing.assert_allclose(hit.vector, by_id[hit.point_id].style, atol=1e-6)  # type: ignore[arg-type]
        assert hit.payload == {k: v for k, v in by_id[hit.point_id].payload.items() if k in HIT_FIELDS}
    assert all(h.vector is None and h.vectors is None for h in filled.search(query, 5, space="style"))


@pytest.mark.parametrize("space", ["content", "style"])
def test_fetch_all_is_every_vector_in_id_order(filled: VectorStore, truth: Truth, space: str) -> None:
    ids, matrix = filled.fetch_all(space)
    order = sorted(range(N), key=lambda i: truth.points[i].point_id)
    assert ids == [truth.points[i].point_id for i in order]
    assert matrix.dtype == np.float32 and matrix.shape == truth.matrix[space].shape
    np.testing.assert_allclose(matrix, truth.matrix[space][order], atol=1e-6)


def test_iter_points_and_image_hashes_give_back_what_was_stored(filled: VectorStore, points: list[WorkPoint]) -> None:
    stored = {p.point_id: p for p in filled.iter_points()}
    assert stored.keys() == {p.point_id for p in points}
    for p in points[::50]:
        got = stored[p.point_id]
        assert got.payload == p.payload
        np.testing.assert_allclose(got.vector, p.vector, atol=1e-6)
        np.testing.assert_allclose(got.style, p.style, atol=1e-6)  # type: ignore[arg-type]
    assert filled.image_hashes() == {p.point_id: p.payload["image_sha256"] for p in points}


def test_fused_search_is_weighted_rrf_of_the_numpy_rankings(filled: VectorStore, truth: Truth) -> None:
    weights, depth, rrf_k = {"content": 1.0, "style": 0.6}, 30, 60
    for i in range(5):
        query = {space: truth.queries[space][i] for space in ("content", "style")}
        scores = rrf_scores({space: truth.top(space, q, depth)[0] for space, q in query.items()}, weights, rrf_k)
        hits = filled.search_fused(query, 20, prefetch=depth, weights=weights, rrf_k=rrf_k)
        assert len(hits) == 20 and {h.point_id for h in hits} <= scores.keys()
        for hit in hits:
            assert hit.similarity == pytest.approx(scores[hit.point_id], rel=1e-5)
        # The best 20 fused scores, best first (ids may swap within exact ties of the fused score).
        assert [round(h.similarity, 7) for h in hits] == [round(s, 7) for s in sorted(scores.values())[::-1][:20]]


def test_the_two_stores_answer_alike(edge_filled: VectorStore, server_filled: VectorStore, truth: Truth) -> None:
    """Every read, called the same way on both stores, gives the same answer."""
    points, queries = truth.points, truth.queries
    some = [points[3].point_id, point_id_for(CATALOGUE, "absent"), points[500].point_id]
    fused = {"content": queries["content"][0], "style": queries["style"][0]}
    calls: dict[str, Callable[[VectorStore], Any]] = {
        "spaces": lambda s: s.spaces(),
        "count": lambda s: s.count(),
        "identities of ids": lambda s: s.identities(some),
        "image_hashes": lambda s: s.image_hashes(),
        "iter_points": lambda s: [(p.point_id, p.payload) for p in s.iter_points()],
        "fetch_all ids": lambda s: (s.fetch_all()[0], s.fetch_all("style")[0]),
        "search": lambda s: [[h.point_id for h in s.search(q, K)] for q in queries["content"]],
        "search style": lambda s: [[h.point_id for h in s.search(q, K, space="style")] for q in queries["style"]],
        "search_fused": lambda s: [
            round(h.similarity, 7) for h in s.search_fused(fused, 15, prefetch=20, weights={"content": 1, "style": 1})
        ],
        "index_info": lambda s: {
            k: v for k, v in s.index_info().items() if k not in ("store", "index", "indexed_vectors")
        },
    }
    for name, call in calls.items():
        assert call(edge_filled) == call(server_filled), name
    for space in ("content", "style"):
        np.testing.assert_allclose(edge_filled.fetch_all(space)[1], server_filled.fetch_all(space)[1], atol=1e-6)
    assert edge_filled.index_info().keys() == server_filled.index_info().keys()


def test_index_info_describes_store_and_parameters(filled: VectorStore) -> None:
    info = filled.index_info()
    assert info["store"] == filled.kind
    assert info["collection"] == COLLECTION
    assert (info["m"], info["ef_construct"], info["hnsw_ef"]) == (16, 128, 128)
    assert info["points"] == N
    assert info["spaces"] == ["content", "style"]
    assert info["index"] == ("exact" if filled.kind == "qdrant-local" else "hnsw")


# -- writes on both stores -----------------------------------------------------------------------------------------
def test_limit_larger_than_collection_returns_everything(store: VectorStore, points: list[WorkPoint]) -> None:
    fill(store, points[:7])
    hits = store.search(points[0].vector, 50)
    assert {h.point_id for h in hits} == {p.point_id for p in points[:7]}


def test_payload_round_trips_and_hits_carry_only_what_a_request_reads(store: VectorStore, vectors: np.ndarray) -> None:
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
    # a catalogue's own metadata (title, year, licence) stays in the store: a request reads none of it
    assert hit.payload == {k: v for k, v in payload.items() if k in HIT_FIELDS}
    fused = store.search_fused({"content": vectors[0]}, 1, prefetch=1, weights={"content": 1.0})
    assert fused[0].payload == hit.payload
    (point,) = store.iter_points()
    assert point.payload == payload


def test_upsert_is_idempotent_and_replaces(store: VectorStore, points: list[WorkPoint], vectors: np.ndarray) -> None:
    store.ensure_collection(DIM)
    store.upsert(content_only(points))
    store.upsert(content_only(points))
    assert store.count() == N
    # Re-upserting an id replaces its vector and payload instead of adding a point.
    moved = WorkPoint(points[0].point_id, vectors[300], {**points[0].payload, "artist": "replaced"})
    store.upsert([moved])
    store.build_index()
    assert store.count() == N
    hits = store.search(vectors[300], 2)
    assert {h.point_id for h in hits} == {points[0].point_id, points[300].point_id}
    assert next(h for h in hits if h.point_id == points[0].point_id).payload["artist"] == "replaced"


def test_delete_removes_points_and_ignores_absent_ids(store: VectorStore, points: list[WorkPoint]) -> None:
    fill(store, points[:20])
    store.delete([points[0].point_id, points[1].point_id, point_id_for(CATALOGUE, "absent")])
    assert store.count() == 18
    assert set_of_identities(store, [p.point_id for p in points[:3]]) == {points[2].point_id}
    assert points[0].point_id not in {h.point_id for h in store.search(points[0].vector, 20)}
    assert points[0].point_id not in store.fetch_all()[0]


def test_content_version_changes_with_every_write_and_only_then(store: VectorStore, points: list[WorkPoint]) -> None:
    fill(store, points[:10])
    first = store.content_version()
    store.search(points[0].vector, 3)
    store.fetch_all()
    assert store.content_version() == first
    store.upsert(points[10:12])
    added = store.content_version()
    store.delete([point_id_for(CATALOGUE, "absent"), points[20].point_id])  # deletes nothing: changes nothing
    assert store.content_version() == added  # (at a million works, a new version rebuilds the exact cache)
    store.delete([points[10].point_id])
    assert len({first, added, store.content_version()}) == 3


def test_identities_of_given_ids_are_those_of_present_points_only(store: VectorStore, points: list[WorkPoint]) -> None:
    absent = [point_id_for(CATALOGUE, "nope-1"), point_id_for("other-catalogue", "w0000")]
    present = [p.point_id for p in points[:5]]
    assert set_of_identities(store, present) == set()  # never created: empty, not an error
    fill(store, points[:5])
    assert set_of_identities(store, [*present[:3], *absent]) == set(present[:3])
    assert set_of_identities(store, absent) == set()
    assert set_of_identities(store, []) == set()


def test_ensure_collection_with_same_dim_keeps_points(store: VectorStore, points: list[WorkPoint]) -> None:
    store.ensure_collection(DIM)
    store.upsert(content_only(points[:10]))
    store.ensure_collection(DIM)
    assert store.count() == 10


def test_dimension_mismatch_on_open_store_raises(store: VectorStore) -> None:
    store.ensure_collection(DIM)
    with pytest.raises(VectorStoreError, match=r"32-d.*16-d") as info:
        store.ensure_collection(16)
    assert "\n" not in str(info.value)


def test_a_style_space_is_added_in_place_only_to_an_embedded_collection(
    store: VectorStore, points: list[WorkPoint]
) -> None:
    store.ensure_collection(DIM)
    store.upsert(content_only(points[:5]))
    assert store.spaces() == ("content",)
    if isinstance(store, EdgeStore):
        store.ensure_collection(DIM, STYLE_DIM)
        assert store.spaces() == ("content", "style")
        assert store.fetch_all("style")[1].shape == (0, STYLE_DIM)  # the old points have no style vector yet
        store.upsert(points[:2])
        assert store.fetch_all("style")[0] == sorted(p.point_id for p in points[:2])
    else:
        with pytest.raises(VectorStoreError, match="holds no style vectors but the embedder gives 8-d"):
            store.ensure_collection(DIM, STYLE_DIM)


# -- edge cases, the same on both stores ---------------------------------------------------------------------------
Q = unit(np.ones((1, DIM)))[0]
QS = unit(np.ones((1, STYLE_DIM)))[0]
WEIGHTS = {"content": 1.0, "style": 1.0}

# Every operation that needs the collection, as one call.
NEEDS_COLLECTION: dict[str, Callable[[VectorStore, list[WorkPoint]], Any]] = {
    "search": lambda s, p: s.search(Q, 5),
    "search_fused": lambda s, p: s.search_fused({"content": Q}, 5, prefetch=5, weights=WEIGHTS),
    "fetch_all": lambda s, p: s.fetch_all(),
    "iter_points": lambda s, p: s.iter_points(),
    "content_version": lambda s, p: s.content_version(),
    "upsert": lambda s, p: s.upsert(p[:1]),
    "upsert nothing": lambda s, p: s.upsert([]),
    "build_index": lambda s, p: s.build_index(),
}


@pytest.mark.parametrize("operation", NEEDS_COLLECTION)
def test_operations_before_ingest_raise_one_line_error(
    store: VectorStore, operation: str, points: list[WorkPoint]
) -> None:
    with pytest.raises(VectorStoreError) as info:
        NEEDS_COLLECTION[operation](store, points)
    message = str(info.value)
    assert "\n" not in message
    assert "attribution-audit ingest" in message
    assert COLLECTION in message
    assert store.count() == 0  # and nothing was created on the way


def test_reads_of_a_never_created_collection_are_empty(store: VectorStore, points: list[WorkPoint]) -> None:
    assert store.count() == 0
    assert store.spaces() == ()
    assert store.image_hashes() == {}
    assert set_of_identities(store, [points[0].point_id]) == set()
    store.delete([points[0].point_id])
    info = store.index_info()
    assert (info["points"], info["indexed_vectors"], info["spaces"]) == (0, 0, [])
    with pytest.raises(VectorStoreError, match="attribution-audit ingest"):
        store.search(Q, 1)  # still not created


def test_an_empty_collection_answers_empty(store: VectorStore) -> None:
    store.ensure_collection(DIM, STYLE_DIM)
    store.build_index()
    assert store.count() == 0
    assert store.spaces() == ("content", "style")
    for space, size in (("content", DIM), ("style", STYLE_DIM)):
        ids, matrix = store.fetch_all(space)
        assert ids == [] and matrix.shape == (0, size) and matrix.dtype == np.float32
    assert store.search(Q, 5) == [] and store.search(QS, 5, space="style") == []
    assert store.search_fused({"content": Q, "style": QS}, 5, prefetch=5, weights=WEIGHTS) == []
    assert list(store.iter_points()) == []
    assert store.image_hashes() == {}
    assert set_of_identities(store, [point_id_for(CATALOGUE, "w0000")]) == set()
    assert store.content_version() == store.content_version()
    info = store.index_info()
    assert (info["points"], info["indexed_vectors"]) == (0, 0)


def test_spaces_the_collection_lacks_are_refused(store: VectorStore, points: list[WorkPoint]) -> None:
    store.ensure_collection(DIM)
    store.upsert(content_only(points[:5]))
    lacking: list[Callable[[], Any]] = [
        lambda: store.search(QS, 3, space="style"),
        lambda: store.fetch_all("style"),
        lambda: store.search_fused({"content": Q, "style": QS}, 3, prefetch=3, weights=WEIGHTS),
        lambda: store.upsert(points[:1]),  # carries a style vector
    ]
    for call in lacking:
        with pytest.raises(VectorStoreError, match="has no style vectors; ingest with --spaces content,style"):
            call()
    for call in (lambda: store.search(Q, 3, space="bogus"), lambda: store.fetch_all("bogus")):
        with pytest.raises(VectorStoreError, match="unknown vector space 'bogus'"):
            call()
    assert store.count() == 5


def test_vectors_of_the_wrong_size_are_refused(store: VectorStore, points: list[WorkPoint]) -> None:
    store.ensure_collection(DIM)
    with pytest.raises(VectorStoreError, match="holds 32-d content vectors but the query is 33-d") as info:
        store.search(np.ones(DIM + 1, dtype=np.float32), 3)
    assert "\n" not in str(info.value)
    with pytest.raises(VectorStoreError, match=f"holds 32-d content vectors but point {points[0].point_id} is 16-d"):
        store.upsert([WorkPoint(points[0].point_id, points[0].vector[:16])])
    assert store.count() == 0


def test_empty_id_lists_change_nothing(store: VectorStore, points: list[WorkPoint]) -> None:
    fill(store, points[:4])
    version = store.content_version()
    store.upsert([])
    store.delete([])
    assert set_of_identities(store, []) == set()
    assert (store.count(), store.content_version()) == (4, version)


@pytest.mark.parametrize("bad", ["nope", "", point_id_for(CATALOGUE, "w0000").upper()])
def test_ids_that_are_not_point_ids_are_refused(store: VectorStore, points: list[WorkPoint], bad: str) -> None:
    fill(store, points[:2])
    for call in (
        lambda: set_of_identities(store, [points[0].point_id, bad]),
        lambda: store.delete([bad]),
        lambda: store.upsert([WorkPoint(bad, points[0].vector)]),
    ):
        with pytest.raises(ValueError, match="not a point id"):
            call()
    assert store.count() == 2


def test_a_limit_below_one_finds_nothing(store: VectorStore, points: list[WorkPoint]) -> None:
    fill(store, points[:4])
    assert store.search(Q, 0) == []
    assert store.search_fused({"content": Q}, 0, prefetch=5, weights=WEIGHTS) == []
    assert store.search_fused({"content": Q}, 5, prefetch=0, weights=WEIGHTS) == []


def test_fused_search_needs_a_vector_and_a_weight_per_space(store: VectorStore, points: list[WorkPoint]) -> None:
    fill(store, points[:4])
    with pytest.raises(ValueError, match="at least one space"):
        store.search_fused({}, 3, prefetch=3, weights=WEIGHTS)
    with pytest.raises(ValueError, match="weight for every space; none for style"):
        store.search_fused({"content": Q, "style": QS}, 3, prefetch=3, weights={"content": 1.0})


# -- embedded shard only -------------------------------------------------------------------------------------------
def test_edge_builds_the_hnsw_graph(edge_filled: VectorStore) -> None:
    info = edge_filled.index_info()
    assert info["index"] == "hnsw"
    assert info["indexed_vectors"] == N * len(info["spaces"])  # every vector of every space


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


def test_edge_data_and_params_persist_after_reopen(
    tmp_path: Path, points: list[WorkPoint], vectors: np.ndarray, queries: np.ndarray
) -> None:
    n = 200
    params = HnswParams(m=12, ef_construct=100, hnsw_ef=150)
    first = fill(EdgeStore(tmp_path, COLLECTION, params), points[:n])
    before = [h.point_id for h in first.search(queries[0], K)]
    version = first.content_version()
    first.close()

    second = EdgeStore(tmp_path, COLLECTION)  # default params: the shard's recorded ones must win
    try:
        assert second.count() == n
        assert second.spaces() == ("content", "style")
        assert second.content_version() == version
        assert set_of_identities(second, [points[5].point_id, points[n].point_id]) == {points[5].point_id}
        assert [h.point_id for h in second.search(queries[0], K)] == before
        rows, _ = ground_truth(vectors[:n], queries[0], K)
        assert before == [points[r].point_id for r in rows]
        info = second.index_info()
        assert (info["m"], info["ef_construct"], info["hnsw_ef"]) == (12, 100, 150)
        assert info["indexed_vectors"] == 2 * n
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


def test_edge_reads_of_a_missing_shard_keep_one_lock(tmp_path: Path) -> None:
    # Repeated reads before ingestion reuse the lock they took instead of queueing behind it.
    edge = EdgeStore(tmp_path, COLLECTION, lock_timeout=0.3)
    try:
        assert (edge.count(), edge.count(), edge.spaces(), edge.image_hashes()) == (0, 0, (), {})
    finally:
        edge.close()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from attribution_audit.store.vectors.qdrant_edge import EdgeStore
    store = EdgeStore(sys.argv[1], sys.argv[2])
    store.ensure_collection(int(sys.argv[3]))
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_edge_shard_busy_in_another_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
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
        assert "\n" not in str(info.value) and "`serve`" in str(info.value)
        blocked.close()
        assert not caplog.records  # a short wait is not announced
        patient = EdgeStore(tmp_path, COLLECTION, lock_timeout=ANNOUNCE_WAIT_S + 1.0)
        with pytest.raises(VectorStoreError, match="busy"):
            patient.ensure_collection(DIM)
        patient.close()
        waits = [r.getMessage() for r in caplog.records]  # a longer one is, once, so that it does not look hung
        assert len(waits) == 1 and "busy in another process; waiting up to" in waits[0], waits
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


def test_edge_hand_edited_write_counter_still_opens_and_keeps_the_seal(tmp_path: Path, points: list[WorkPoint]) -> None:
    """The write counter only names the exact cache's version: a hand-edited value (not a number) opens and searches
    as before, and the shard is sealed again on close."""
    first = fill(EdgeStore(tmp_path, COLLECTION), points[:20])
    first.close()
    meta_path = tmp_path / COLLECTION / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "epoch": "abc"}))

    second = EdgeStore(tmp_path, COLLECTION)
    try:
        assert "-epochabc-n20" in second.content_version()
        assert second.count() == 20 and len(second.search(points[0].vector, 3)) == 3
    finally:
        second.close()
    assert "seal" in json.loads(meta_path.read_text())
