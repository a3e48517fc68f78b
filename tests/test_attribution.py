"""The attribution pipeline in vector space (no image model): HNSW candidates re-ranked exactly against a NumPy
brute force, the K policy, verify modes, the audit record and its round trip, recall checks and replay; then the
CLI end to end with the real EfficientNet-Lite0 embedder on the demo catalogue."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDER, Cli
from dbtools import catalogue_points, make_attributor
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from attribution_audit.domain.indicators import artist_entropy, artist_margin, confidence_score
from attribution_audit.domain.params import AttributionParams, verify_rate
from attribution_audit.domain.points import Hit, WorkPoint, point_id_for
from attribution_audit.domain.ranking import apply_k_policy, by_score
from attribution_audit.domain.results import Attribution, Neighbour, Outcome, ReplayDiff, diff_attributions
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.errors import NotFoundError, VectorStoreError
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.audit_log import get_attribution
from attribution_audit.services.recall import verify_recall
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.models import AttributionRequest, RecallCheck
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

N, DIM, CLUSTERS = 300, 32, 6
CATALOGUE = "cat-test"
COLLECTION = "works_test"
SHA = "ab" * 32


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(rows).astype(np.float64)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class VectorCatalogue:
    """Works in vector space: an embedded Qdrant shard and the same vectors in NumPy."""

    store: EdgeStore
    vectors: np.ndarray
    work_ids: list[str]
    artists: list[str]

    @property
    def point_ids(self) -> list[str]:
        return [point_id_for(CATALOGUE, w) for w in self.work_ids]

    def brute_top(self, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        """Exact top-k point ids and cosine similarities over every vector."""
        q = np.asarray(query, dtype=np.float64)
        sims = self.vectors.astype(np.float64) @ (q / np.linalg.norm(q))
        order = np.argsort(-sims, kind="stable")[:k]
        return [self.point_ids[i] for i in order], sims[order]


def make_catalogue(root: Path, seed: int = 1234) -> VectorCatalogue:
    """300 seeded unit vectors around 6 centres; most works of a centre are by one artist, some by another."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((CLUSTERS, DIM)))
    cluster = rng.integers(0, CLUSTERS, N)
    vectors = unit(centres[cluster] + 0.35 * rng.standard_normal((N, DIM)) / np.sqrt(DIM))
    artists = [f"Artist {c if rng.random() > 0.2 else int(rng.integers(0, CLUSTERS))}" for c in cluster]
    work_ids = [f"W{i:04d}" for i in range(N)]
    store = EdgeStore(root / "qdrant", COLLECTION)
    store.ensure_collection(DIM)
    store.upsert(
        [
            WorkPoint(point_id_for(CATALOGUE, w), v, {"work_id": w, "artist": a, "catalogue": CATALOGUE})
            for w, v, a in zip(work_ids, vectors, artists, strict=True)
        ]
    )
    store.build_index()
    return VectorCatalogue(store, vectors, work_ids, artists)


def make_queries(catalogue: VectorCatalogue, n_near: int = 8, n_random: int = 2, seed: int = 99) -> np.ndarray:
    """Queries near (not on) catalogue works, and a few random directions."""
    rng = np.random.default_rng(seed)
    near = catalogue.vectors[rng.integers(0, N, n_near)] + 0.2 * rng.standard_normal((n_near, DIM)) / np.sqrt(DIM)
    return unit(np.vstack([near, rng.standard_normal((n_random, DIM))]))


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorCatalogue]:
    """A shared, read-only catalogue (tests that change the collection build their own)."""
    cat = make_catalogue(tmp_path_factory.mktemp("catalogue"))
    yield cat
    cat.store.close()


@pytest.fixture(scope="module")
def queries(catalogue: VectorCatalogue) -> np.ndarray:
    return make_queries(catalogue)


@pytest.fixture
def computer(sqlite_audit: AuditStore, catalogue: VectorCatalogue, tmp_path: Path) -> Attributor:
    """An Attributor over the shared catalogue, logging to SQLite (for tests of the attribution logic)."""
    return make_attributor(sqlite_audit, catalogue.store, tmp_path)


@pytest.fixture
def attributor(audit: AuditStore, catalogue: VectorCatalogue, tmp_path: Path) -> Attributor:
    """The same, logging once to SQLite and once to PostgreSQL (for what the database must keep exactly)."""
    return make_attributor(audit, catalogue.store, tmp_path)


def qv(vector: np.ndarray) -> QueryVectors:
    """A content-space query."""
    return QueryVectors(vector)


def ids_of(outcome: Outcome | Attribution) -> list[str]:
    return [point_id_for(n.catalogue, n.work_id) for n in outcome.neighbours]


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# -- pure helpers ------------------------------------------------------------------------------------------------------
def test_candidates_rank_by_score_with_ties_by_point_id() -> None:
    hits = [Hit("p-c", 0.6, {}), Hit("p-b", 0.6, {}), Hit("p-a", 0.0, {}), Hit("p-d", 0.99, {})]
    assert [(h.point_id, s) for h, s in by_score(hits)] == [("p-d", 0.99), ("p-b", 0.6), ("p-c", 0.6), ("p-a", 0.0)]
    assert by_score([]) == []


def test_apply_k_policy_takes_k_then_filters_by_distance() -> None:
    ranked = [("a", 0.95), ("b", 0.9), ("c", 0.8), ("d", 0.7)]
    assert apply_k_policy(ranked, AttributionParams(k=3)) == ranked[:3]
    assert apply_k_policy(ranked, AttributionParams(k=10)) == ranked
    assert apply_k_policy(ranked, AttributionParams(k=10, max_distance=0.15)) == ranked[:2]
    assert apply_k_policy(ranked, AttributionParams(k=1, max_distance=0.15)) == ranked[:1]
    assert apply_k_policy(ranked, AttributionParams(k=4, max_distance=0.01)) == []


@pytest.mark.parametrize(
    ("ranked", "expected"),
    [
        ([("a", 0.9), ("b", 0.7), ("a", 0.8), ("c", 0.6)], 0.2),  # best a 0.9 - best b 0.7
        ([("b", 0.7), ("a", 0.9)], 0.2),  # order does not matter
        ([("a", 0.9), ("b", 0.9), ("a", 0.1)], 0.0),
        ([("a", 0.9), ("a", 0.8), ("a", 0.5)], 0.4),  # one artist: against the last candidate
        ([("a", 0.9)], None),
        ([], None),
    ],
)
def test_artist_margin_hand_cases(ranked: list[tuple[str, float]], expected: float | None) -> None:
    margin = artist_margin(ranked)
    assert margin == (None if expected is None else pytest.approx(expected, abs=1e-12))


# -- parameters --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "rate"), [("always", 1.0), ("off", 0.0), ("sample:0.25", 0.25), ("sample:1", 1.0)])
def test_verify_rate(mode: str, rate: float) -> None:
    assert verify_rate(mode) == rate


@pytest.mark.parametrize("mode", ["sometimes", "sample:2", "sample:-0.1", "sample:", "sample:abc", "sample:nan", "ON"])
def test_invalid_verify_modes_are_rejected(mode: str) -> None:
    with pytest.raises(ValueError, match="verify mode"):
        AttributionParams(verify=mode)


@pytest.mark.parametrize(
    "values",
    [
        {"k": 0},
        {"oversampling": 0},
        {"max_distance": -0.1},
        {"max_distance": 2.5},
        {"exact_method": "faiss"},
        {"shares": "softmax"},
        {"temperature": 0.0},
    ],
)
def test_invalid_parameters_are_rejected(values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AttributionParams(**values)  # type: ignore[arg-type]


# -- compute: HNSW + exact re-rank against NumPy -----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["brute", "kdtree"])
def test_neighbours_equal_numpy_brute_force(
    computer: Attributor, catalogue: VectorCatalogue, queries: np.ndarray, method: str
) -> None:
    by_id = dict(zip(catalogue.point_ids, catalogue.artists, strict=True))
    for query in queries:
        outcome = computer.compute(qv(query), AttributionParams(k=10, exact_method=method))
        expected_ids, expected_sims = catalogue.brute_top(query, 10)
        assert ids_of(outcome) == expected_ids
        sims = np.array([n.similarity for n in outcome.neighbours])
        np.testing.assert_allclose(sims, expected_sims, atol=1e-6)
        assert [n.distance for n in outcome.neighbours] == [1.0 - n.similarity for n in outcome.neighbours]
        assert [n.rank for n in outcome.neighbours] == list(range(1, 11))
        assert [n.artist for n in outcome.neighbours] == [by_id[i] for i in expected_ids]
        assert {n.catalogue for n in outcome.neighbours} == {CATALOGUE}
        assert outcome.overlap_at_k == 1.0
        assert outcome.exact_method == method
        assert outcome.catalogue_version == catalogue.store.content_version()
        assert sum(round(n.share * 1e6) for n in outcome.neighbours) == 1_000_000


def test_indicators_match_the_neighbours(computer: Attributor, queries: np.ndarray) -> None:
    for query in queries:
        outcome = computer.compute(qv(query), AttributionParams(k=10, shares="similarity"))
        artists = [n.artist for n in outcome.neighbours]
        assert outcome.features["entropy"] == artist_entropy(artists)
        assert outcome.features["nn_distance"] == outcome.neighbours[0].distance
        assert outcome.features["margin"] == artist_margin(outcome.candidates)
        assert outcome.top_artist == max(
            outcome.artist_shares, key=lambda a: (outcome.artist_shares[a], -artists.index(a))
        )
        assert outcome.top_artist_share == outcome.artist_shares[outcome.top_artist]
        assert sum(round(s * 1e6) for s in outcome.artist_shares.values()) == 1_000_000


# -- the K policy ------------------------------------------------------------------------------------------------------
def test_max_distance_keeps_only_close_works_and_at_most_k(
    computer: Attributor, catalogue: VectorCatalogue, queries: np.ndarray
) -> None:
    query = queries[0]
    _, sims = catalogue.brute_top(query, 10)
    distances = 1.0 - sims
    cut = float(distances[3] + distances[4]) / 2  # between the 4th and the 5th nearest work
    assert distances[4] - distances[3] > 1e-5, "pick a query whose 4th and 5th distances differ"

    within = computer.compute(qv(query), AttributionParams(k=10, max_distance=cut))
    assert len(within.neighbours) == 4
    assert all(n.distance <= cut for n in within.neighbours)
    assert ids_of(within) == catalogue.brute_top(query, 4)[0]
    assert within.overlap_at_k == 1.0  # the exact top-K gets the same policy
    assert sum(round(n.share * 1e6) for n in within.neighbours) == 1_000_000

    capped = computer.compute(qv(query), AttributionParams(k=3, max_distance=cut))
    assert ids_of(capped) == catalogue.brute_top(query, 3)[0]
    loose = computer.compute(qv(query), AttributionParams(k=5, max_distance=2.0))
    assert len(loose.neighbours) == 5


def test_no_work_within_max_distance_is_recorded_with_zero_confidence(
    computer: Attributor, queries: np.ndarray
) -> None:
    params = AttributionParams(k=5, max_distance=0.0)
    outcome = computer.compute(qv(queries[-1]), params)  # a random direction: no work at distance 0
    assert outcome.neighbours == [] and outcome.overlap_at_k == 1.0
    result = computer.record("empty.png", SHA, qv(queries[-1]), params, outcome)
    assert result.neighbours == [] and result.artist_shares == {}
    assert result.top_artist is None and result.top_artist_share is None and result.nn_distance is None
    assert result.confidence == 0.0 and result.confidence_model == "default-v1"
    assert computer.audit.requests.verify_chain().ok


# -- verify modes ------------------------------------------------------------------------------------------------------
def test_verify_off_records_no_overlap(computer: Attributor, queries: np.ndarray) -> None:
    params = AttributionParams(k=10, verify="off")
    outcome = computer.compute(qv(queries[0]), params)
    assert outcome.overlap_at_k is None and outcome.exact_method is None
    assert outcome.catalogue_version == computer.store.content_version()
    result = computer.record("q.png", SHA, qv(queries[0]), params, outcome)
    assert get_attribution(computer.audit, result.request_id).overlap_at_k is None


def test_verify_sample_checks_some_requests_reproducibly(
    sqlite_audit: AuditStore, catalogue: VectorCatalogue, queries: np.ndarray, tmp_path: Path
) -> None:
    def verified(mode: str, seed: int) -> list[bool]:
        attributor = make_attributor(sqlite_audit, catalogue.store, tmp_path, seed=seed)
        params = AttributionParams(k=5, verify=mode)
        return [attributor.compute(qv(queries[i % len(queries)]), params).overlap_at_k is not None for i in range(40)]

    pattern = verified("sample:0.5", seed=3)
    assert 0 < sum(pattern) < 40
    assert verified("sample:0.5", seed=3) == pattern  # the same seed samples the same requests
    assert not any(verified("sample:0", seed=3))
    assert all(verified("sample:1", seed=3))


# -- the audit record --------------------------------------------------------------------------------------------------
def stored_query_vector(engine: Engine, request_id: str) -> np.ndarray:
    """The query vector as written in the request row."""
    with Session(engine) as session:
        raw = session.scalar(select(AttributionRequest.query_vector).where(AttributionRequest.id == request_id))
    assert raw is not None
    return np.frombuffer(raw, "<f4")


def test_record_round_trips_through_the_audit_log(attributor: Attributor, queries: np.ndarray) -> None:
    """Every value of a request reads back exactly as recorded (types, floats, JSON, timestamps: both databases)."""
    audit = attributor.audit
    params = AttributionParams(k=7, shares="similarity", temperature=0.05)
    outcome = attributor.compute(qv(queries[1]), params)
    result = attributor.record("gen/q1.png", SHA, qv(queries[1]), params, outcome)

    stored = get_attribution(audit, result.request_id)
    assert stored == result
    recorded = audit.requests.get_with_vectors(result.request_id)
    assert recorded.attribution == result
    assert stored.seq == 1 and re.fullmatch(r"[0-9a-f]{64}", stored.record_hash)
    assert stored.image == "gen/q1.png" and stored.image_sha256 == SHA
    assert stored.neighbours == outcome.neighbours
    assert stored.as_json()["shares"] == [n.share for n in outcome.neighbours]
    assert list(stored.artist_shares.items()) == list(outcome.artist_shares.items())
    assert stored.entropy == outcome.features["entropy"] == artist_entropy([n.artist for n in stored.neighbours])
    assert stored.nn_distance == outcome.features["nn_distance"]
    assert stored.margin == outcome.features["margin"] and stored.margin is not None
    assert stored.top_artist == outcome.top_artist and stored.top_artist_share == outcome.top_artist_share
    assert stored.overlap_at_k == 1.0
    assert stored.confidence_model == "default-v1"
    assert stored.confidence == confidence_score(stored.entropy, stored.nn_distance)
    assert stored.embedder_fingerprint == "test@0"
    assert stored.catalogue_version == attributor.store.content_version()
    assert stored.index_params == attributor.store.index_info()
    assert AttributionParams(**stored.parameters) == params
    assert stored.k == 7 and stored.replay_of is None
    assert np.array_equal(stored_query_vector(audit.engine, result.request_id), queries[1])
    assert np.array_equal(recorded.vectors.content, queries[1]) and recorded.vectors.style is None
    json.dumps(stored.as_json())  # the --json form is serialisable

    second = attributor.record("gen/q2.png", SHA, qv(queries[2]), params, attributor.compute(qv(queries[2]), params))
    assert second.seq == 2
    report = audit.requests.verify_chain()
    assert report.ok and report.checked == 2 and report.head_hash == second.record_hash


def test_get_attribution_of_unknown_id_raises(sqlite_audit: AuditStore) -> None:
    with pytest.raises(NotFoundError, match="no attribution request"):
        get_attribution(sqlite_audit, "00000000-0000-0000-0000-000000000000")


def hand_store(root: Path, works: list[tuple[str, str, float]]) -> EdgeStore:
    """Works (work_id, artist, cosine similarity with the query e0), each in its own orthogonal direction."""
    store = EdgeStore(root / "qdrant", "works_hand")
    store.ensure_collection(DIM)
    points = []
    for i, (work_id, artist, sim) in enumerate(works, start=1):
        vector = np.zeros(DIM, dtype=np.float32)
        vector[0], vector[i] = sim, math.sqrt(1 - sim**2)
        points.append(
            WorkPoint(
                point_id_for(CATALOGUE, work_id), vector, {"work_id": work_id, "artist": artist, "catalogue": CATALOGUE}
            )
        )
    store.upsert(points)
    store.build_index()
    return store


def test_hand_case_top_artist_margin_and_entropy(sqlite_audit: AuditStore, tmp_path: Path) -> None:
    store = hand_store(
        tmp_path,
        [
            ("z1", "Zed", 0.90),
            ("m1", "Amy", 0.89),
            ("m2", "Amy", 0.88),
            ("m3", "Amy", 0.87),
            ("c1", "Cat", 0.30),
            ("z2", "Zed", 0.20),
        ],
    )
    try:
        attributor = make_attributor(sqlite_audit, store, tmp_path)
        query = qv(np.eye(DIM, dtype=np.float32)[0])

        params = AttributionParams(k=4)
        result = attributor.record("hand.png", SHA, query, params, attributor.compute(query, params))
        assert [n.work_id for n in result.neighbours] == ["z1", "m1", "m2", "m3"]
        assert [n.similarity for n in result.neighbours] == pytest.approx([0.90, 0.89, 0.88, 0.87], abs=1e-6)
        assert result.nn_distance == pytest.approx(0.10, abs=1e-6)
        # Amy has three of four equal shares: she is the top artist although Zed made the nearest work.
        assert result.artist_shares == {"Amy": 0.75, "Zed": 0.25}
        assert result.top_artist == "Amy" and result.top_artist_share == 0.75
        # Margin over every re-ranked candidate: best Zed 0.90 - best Amy 0.89.
        assert result.margin == pytest.approx(0.01, abs=1e-6)
        assert result.entropy == artist_entropy(["Zed", "Amy", "Amy", "Amy"])
        assert result.entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4))
        assert result.confidence == pytest.approx((1 - result.entropy) * 0.9, abs=1e-6)

        # Equal artist shares: the artist of the nearest work is on top (the dict is ordered by name on ties).
        params = AttributionParams(k=2)
        tie = attributor.record("hand.png", SHA, query, params, attributor.compute(query, params))
        assert list(tie.artist_shares.items()) == [("Amy", 0.5), ("Zed", 0.5)]
        assert tie.top_artist == "Zed" and tie.top_artist_share == 0.5
        assert tie.entropy == 1.0
        assert sqlite_audit.requests.verify_chain().ok
    finally:
        store.close()


@pytest.mark.parametrize("version", ["3", 2.0, True])
def test_a_work_version_in_the_payload_that_is_no_integer_is_refused(
    sqlite_audit: AuditStore, tmp_path: Path, version: object
) -> None:
    """A payload written by something other than ingest: refused with what to do, nothing logged (the log cannot
    name a version that is not one, nor hash one it would store converted)."""
    store = EdgeStore(tmp_path / "qdrant", "works_versions")
    store.ensure_collection(DIM)
    axis = np.eye(DIM, dtype=np.float32)

    def work(work_id: str, at: int, work_version: object) -> WorkPoint:
        payload = {"work_id": work_id, "catalogue": CATALOGUE, "artist": "Amy", "version": work_version}
        return WorkPoint(point_id_for(CATALOGUE, work_id), axis[0] + at * axis[at], payload)

    store.upsert([work("odd", 1, version), work("fine", 2, 4)])
    store.build_index()
    try:
        attributor = make_attributor(sqlite_audit, store, tmp_path)
        query = qv(axis[0])
        expected = rf"^work {CATALOGUE}/odd holds version {re.escape(repr(version))} in the vector store, not an int"
        with pytest.raises(VectorStoreError, match=expected) as refused:
            attributor.compute(query, AttributionParams(k=2))
        assert "nothing was recorded" in str(refused.value) and "\n" not in str(refused.value)
        assert count(sqlite_audit.engine, AttributionRequest) == 0
        store.upsert([work("odd", 1, 3)])  # as ingest writes it
        params = AttributionParams(k=2)
        result = attributor.record("v.png", SHA, query, params, attributor.compute(query, params))
        assert [(n.work_id, n.work_version) for n in result.neighbours] == [("odd", 3), ("fine", 4)]
        assert get_attribution(sqlite_audit, result.request_id) == result and sqlite_audit.requests.verify_chain().ok
    finally:
        store.close()


# -- recall checks -----------------------------------------------------------------------------------------------------
def test_verify_recall_checks_each_unverified_request_once(attributor: Attributor, queries: np.ndarray) -> None:
    """Which requests are still unverified is one SQL query (a join and NOT EXISTS): both databases."""
    audit = attributor.audit
    unverified = []
    for i, params in enumerate(
        [AttributionParams(k=10, verify="off")] * 3 + [AttributionParams(k=5, verify="off", shares="similarity")] * 2
    ):
        unverified.append(
            attributor.record(f"q{i}.png", SHA, qv(queries[i]), params, attributor.compute(qv(queries[i]), params))
        )
    params = AttributionParams(k=10)
    attributor.record("v.png", SHA, qv(queries[6]), params, attributor.compute(qv(queries[6]), params))

    summary = verify_recall(attributor)
    assert summary.checked == 5 and summary.mean_overlap == 1.0 and summary.below_one == 0
    again = verify_recall(attributor)
    assert again.checked == 0 and again.mean_overlap is None

    with Session(audit.engine) as session:
        checks = session.scalars(select(RecallCheck)).all()
    assert sorted(c.request_id for c in checks) == sorted(r.request_id for r in unverified)
    assert {c.overlap_at_k for c in checks} == {1.0}
    assert {c.exact_method for c in checks} == {"brute"}
    assert {c.catalogue_version for c in checks} == {attributor.store.content_version()}
    # The audit rows themselves are not modified, and the chain still verifies.
    assert all(get_attribution(audit, r.request_id) == r for r in unverified)
    report = audit.requests.verify_chain()
    assert report.ok and report.checked == 6


def test_verify_recall_skips_requests_whose_collection_changed_since(sqlite_audit: AuditStore, tmp_path: Path) -> None:
    """A work added after a request would count as a miss of its search: such requests are counted, not checked."""
    catalogue = make_catalogue(tmp_path / "own")
    try:
        store, queries = catalogue.store, make_queries(catalogue)
        attributor = make_attributor(sqlite_audit, store, tmp_path)
        params = AttributionParams(k=5, verify="off")
        before = attributor.record("q0.png", SHA, qv(queries[0]), params, attributor.compute(qv(queries[0]), params))
        close = unit(queries[0] + 0.01 * np.random.default_rng(5).standard_normal(DIM) / np.sqrt(DIM))[0]
        payload = {"work_id": "NEW-1", "artist": "Newcomer", "catalogue": CATALOGUE}
        store.upsert([WorkPoint(point_id_for(CATALOGUE, "NEW-1"), close, payload)])
        store.build_index()
        after = attributor.record("q1.png", SHA, qv(queries[1]), params, attributor.compute(qv(queries[1]), params))

        summary = verify_recall(attributor)
        assert (summary.checked, summary.below_one, summary.changed) == (1, 0, 1)
        with Session(sqlite_audit.engine) as session:
            checks = session.scalars(select(RecallCheck)).all()
        assert [c.request_id for c in checks] == [after.request_id] and before.request_id != after.request_id
    finally:
        catalogue.store.close()


# -- replay ------------------------------------------------------------------------------------------------------------
def test_replay_on_an_unchanged_index_has_no_differences(computer: Attributor, queries: np.ndarray) -> None:
    params = AttributionParams(k=8, shares="similarity")
    original = computer.record("q.png", SHA, qv(queries[3]), params, computer.compute(qv(queries[3]), params))
    before, after = computer.replay(original.request_id)
    assert before == original
    assert after.replay_of == original.request_id and after.request_id != original.request_id
    assert after.seq == 2 and after.parameters == original.parameters
    assert diff_attributions(before, after) == ReplayDiff([], {})
    assert diff_attributions(before, after).verdict == "no differences"
    with pytest.raises(NotFoundError):
        computer.replay("no-such-request")
    # A newer confidence model is a difference an auditor must see, not only the number it changed.
    recalibrated = dataclasses.replace(after, confidence=0.99, confidence_model="logistic-v1")
    assert "~ confidence_model: default-v1 -> logistic-v1" in diff_attributions(before, recalibrated).changed
    # So is a neighbour whose image a later ingest replaced (a new version of the work), even at the same rank.
    first = before.neighbours[0]
    replaced = dataclasses.replace(
        first, work_version=(first.work_version or 0) + 1, similarity=first.similarity - 0.01
    )
    revised = dataclasses.replace(after, neighbours=[replaced, *after.neighbours[1:]])
    assert diff_attributions(before, revised).lines == [
        f"~ {first.work_id} ({first.artist}): version {first.work_version} -> {replaced.work_version}, "
        f"similarity {first.similarity:.4f} -> {replaced.similarity:.4f}"
    ]
    # And a changed agreement with the exact search, where both were checked (a sampled check is not a difference).
    checked, rechecked = (dataclasses.replace(r, overlap_at_k=o) for r, o in ((before, 0.5), (after, 1.0)))
    assert diff_attributions(checked, rechecked).lines == ["~ overlap@K with the exact search: 0.5 -> 1.0"]
    assert diff_attributions(checked, dataclasses.replace(after, overlap_at_k=None)).lines == []


def test_a_later_indicator_measured_as_none_then_valued_in_the_replay_is_shown_not_hidden(
    computer: Attributor, queries: np.ndarray
) -> None:
    """None is a measured value too (no other learned space held the top artist's centroid): a replay that values it
    (after a refit) is not "no differences", nor a change of what the record holds (it may predate the column)."""
    params = AttributionParams(k=8)
    original = computer.record("q.png", SHA, qv(queries[3]), params, computer.compute(qv(queries[3]), params))
    before, after = computer.replay(original.request_id)
    assert before.intact is not False and before.centroid_log_odds_others is None
    refitted = dataclasses.replace(after, centroid_log_odds_others=30.0)
    diff = diff_attributions(before, refitted)
    assert diff.changed == [] and diff.not_recorded == {"centroid_log_odds_others": 30.0}
    assert diff.lines == [
        "~ centroid_log_odds_others: not recorded -> 30.0 (null in the record: measured as none then, or the record "
        "predates revision 0017)"
    ]
    assert diff.verdict == "no differences in what the record holds; 1 indicator(s) not recorded then: " + (
        "centroid_log_odds_others"
    )
    # A None written over a value by hand (the record no longer matches its hash) is a change.
    tampered = dataclasses.replace(before, intact=False)
    assert diff_attributions(tampered, refitted).changed == ["~ centroid_log_odds_others: None -> 30.0"]


def test_a_replays_summary_says_whether_the_top_artist_and_the_works_changed(
    computer: Attributor, queries: np.ndarray
) -> None:
    """Under the lines of a replay that differs, one line says what a reader asks first: counted from the
    neighbours, whatever the works and artists are named."""
    params = AttributionParams(k=2)
    base = computer.record("q.png", SHA, qv(queries[0]), params, computer.compute(qv(queries[0]), params))

    def answered(top: str, *works: tuple[str, int]) -> Attribution:
        near = [
            Neighbour(rank, work, "c", top, 0.9, 0.1, 0.5, top, version)
            for rank, (work, version) in enumerate(works, 1)
        ]
        return dataclasses.replace(base, neighbours=near, top_artist=top)

    before = answered("~ top_artist: x", ("moved from rank 1 to 2", 1), ("W2", 1))
    assert diff_attributions(before, before).verdict == "no differences"
    index = dataclasses.replace(before, catalogue_version="another")
    assert diff_attributions(before, index).verdict == "top artist unchanged; the same works"
    order = answered("~ top_artist: x", ("W2", 1), ("moved from rank 1 to 2", 1))
    assert diff_attributions(before, order).verdict == "top artist unchanged; the same works in another order"
    swapped = answered("Bob", ("moved from rank 1 to 2", 2), ("W9", 1))
    assert diff_attributions(before, swapped).verdict == (
        "top artist changed; 1 work(s) out, 1 in (1 with a new image version)"
    )


def test_replay_after_a_new_close_work_shows_it(sqlite_audit: AuditStore, tmp_path: Path) -> None:
    catalogue = make_catalogue(tmp_path / "own")
    try:
        store = catalogue.store
        attributor = make_attributor(sqlite_audit, store, tmp_path)
        query = make_queries(catalogue)[0]
        params = AttributionParams(k=5)
        original = attributor.record("q.png", SHA, qv(query), params, attributor.compute(qv(query), params))
        old_version = original.catalogue_version
        assert original.top_artist != "Newcomer"

        rng = np.random.default_rng(5)
        close = unit(query + 0.01 * rng.standard_normal(DIM) / np.sqrt(DIM))[0]
        store.upsert(
            [
                WorkPoint(
                    point_id_for(CATALOGUE, "NEW-1"),
                    close,
                    {"work_id": "NEW-1", "artist": "Newcomer", "catalogue": CATALOGUE},
                )
            ]
        )
        store.build_index()
        catalogue_points(sqlite_audit, store)  # (ingested)

        before, after = attributor.replay(original.request_id)
        assert before == original
        assert after.replay_of == before.request_id
        assert after.neighbours[0].work_id == "NEW-1" and after.neighbours[0].artist == "Newcomer"
        assert [n.work_id for n in after.neighbours[1:]] == [n.work_id for n in before.neighbours[:4]]
        assert after.catalogue_version == store.content_version() != old_version
        assert after.overlap_at_k == 1.0  # checked against an exact index of the new content

        diff = diff_attributions(before, after)
        differences = diff.changed
        assert "+ added NEW-1 (Newcomer) at rank 1" in differences
        removed = before.neighbours[-1]
        assert f"- removed {removed.work_id} ({removed.artist}), was rank 5" in differences
        assert f"~ catalogue version: {old_version} -> {after.catalogue_version}" in differences
        assert diff.verdict.endswith("; 1 work(s) out, 1 in")  # under the lines: what a reader asks first
        # The exact-index cache was rebuilt for the new content and the stale version dropped.
        cached = tmp_path / "exact" / COLLECTION / "brute"
        assert sorted(p.name for p in cached.iterdir()) == [after.catalogue_version]
        assert sqlite_audit.requests.verify_chain().ok
    finally:
        catalogue.store.close()


# -- the CLI end to end, real embedder ---------------------------------------------------------------------------------
def test_cli_attribute_verify_replay_recall(cli: Cli, demo_catalogue: DemoCatalogue) -> None:
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder)

    query = str(demo_catalogue.queries[0].path)
    printed = cli("attribute", query, "--json", "--k", "5", "--shares", "similarity", *embedder).stdout
    [record] = json.loads(printed)
    assert record["overlap_at_k"] == 1.0
    assert isinstance(record["margin"], float) and record["margin"] >= 0
    assert isinstance(record["shares"], list) and len(record["shares"]) == len(record["neighbours"]) == 5
    assert record["shares"] == [n["share"] for n in record["neighbours"]]
    assert math.fsum(record["shares"]) == pytest.approx(1.0, abs=1e-9)
    assert math.fsum(record["artist_shares"].values()) == pytest.approx(1.0, abs=1e-9)
    assert record["confidence_model"] == "default-v1"
    assert re.fullmatch(r"[0-9a-f]{64}", record["record_hash"]) and record["seq"] == 1
    assert record["parameters"]["shares"] == "similarity"

    assert "chain OK: 1 record," in cli("audit", "verify").stdout
    replayed = cli("audit", "replay", record["request_id"]).stdout
    assert f"of {record['request_id']}" in replayed and "no differences" in replayed
    assert record["parameters"]["top"] == "share"  # the default rule, recorded

    [nearest] = json.loads(cli("attribute", query, "--json", "--k", "5", "--top", "nearest", *embedder).stdout)
    assert nearest["parameters"]["top"] == "nearest"
    assert nearest["top_artist"] == nearest["neighbours"][0]["canonical_artist"]
    assert "no differences" in cli("audit", "replay", nearest["request_id"]).stdout  # replayed with its own rule

    cli("attribute", str(demo_catalogue.queries[1].path), "--verify", "off", *embedder)
    assert "efficientnet-lite0: 1 checked, mean overlap@K 1.0000, 0 below 1.0" in cli("audit", "verify-recall").stdout
    assert "nothing to check" in cli("audit", "verify-recall").stdout
    assert "chain OK: 5 records" in cli("audit", "verify").stdout  # replays are logged too

    engine = cli.engine()
    try:
        assert count(engine, AttributionRequest) == 5 and count(engine, RecallCheck) == 1
    finally:
        engine.dispose()


def test_max_distance_zero_keeps_an_identical_image_despite_float32_rounding() -> None:
    """An exact copy's cosine similarity computes in float32 as a hair below 1 (distance ~1e-7): ``--max-distance 0``
    keeps it, and drops a work that is merely close."""
    ranked = [("copy", float(np.float32(0.99999994))), ("close", 0.999)]
    assert apply_k_policy(ranked, AttributionParams(k=5, max_distance=0.0)) == ranked[:1]
