"""Content, style and fused spaces: named vectors in both stores, engine-side fusion as documented, CLI end to end."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from conftest import EMBEDDER, Cli
from dbtools import record_catalogue

from attribution_audit.domain.confidence import confidence
from attribution_audit.domain.params import TOP_RULES, AttributionParams
from attribution_audit.domain.points import WorkPoint, point_id_for
from attribution_audit.domain.projection import Projection, fit_lda, join_bases
from attribution_audit.domain.ranking import rrf_scores
from attribution_audit.domain.results import Outcome
from attribution_audit.domain.spaces import LearnedSpace, QueryVectors
from attribution_audit.errors import VectorStoreError
from attribution_audit.services.attribution import Attributor
from attribution_audit.sources.synthetic import DemoCatalogue, make_demo_catalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import WorkRecord
from attribution_audit.store.vectors import VectorStore
from attribution_audit.store.vectors.base import FusedQuery
from attribution_audit.store.vectors.qdrant_edge import EdgeStore
from attribution_audit.store.vectors.qdrant_server import ServerStore

CONTENT_DIM, STYLE_DIM, N = 16, 8, 240


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[WorkPoint]]:
    rng = np.random.default_rng(7)
    contents, styles = unit(rng.normal(size=(N, CONTENT_DIM))), unit(rng.normal(size=(N, STYLE_DIM)))
    points = [
        WorkPoint(
            point_id_for("c", f"w{i}"),
            contents[i],
            {"work_id": f"w{i}", "artist": f"a{i % 12}", "catalogue": "c"},
            styles[i],
        )
        for i in range(N)
    ]
    return contents, styles, points


@pytest.fixture(scope="module", params=["edge", "server"])
def store(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    data: tuple,  # type: ignore[type-arg]
) -> Iterator[VectorStore]:
    """Both stores holding the same points, built once per module (the tests using it only read)."""
    store: VectorStore = (
        EdgeStore(tmp_path_factory.mktemp("spaces"), "works_spaces")
        if request.param == "edge"
        else ServerStore(":memory:", "works_spaces")
    )
    yield _filled(store, data[2])
    store.close()


S = TypeVar("S", bound=VectorStore)


def _filled(store: S, points: list[WorkPoint]) -> S:
    """``store`` holding ``points`` in both base spaces, its index built."""
    store.ensure_collection(CONTENT_DIM, STYLE_DIM)
    store.upsert(points)
    store.build_index()
    return store


def _attributor(audit: AuditStore, store: VectorStore, tmp_path: Path, **extra: Any) -> Attributor:
    """An attributor of ``store`` logging to ``audit`` (embedder "t@0")."""
    return Attributor(
        audit,
        store,
        embedder_name="test",
        embedder_fingerprint="t@0",
        requester="pytest",
        exact_cache_dir=tmp_path / "x",
        **extra,
    )


def test_named_vectors_round_trip(store: VectorStore, data: tuple) -> None:  # type: ignore[type-arg]
    contents, styles, points = data
    assert store.spaces() == ("content", "style")
    stored = {p.point_id: p for p in store.iter_points()}
    for i in (0, 17, N - 1):
        np.testing.assert_allclose(stored[points[i].point_id].vector, contents[i], atol=1e-6)
        np.testing.assert_allclose(stored[points[i].point_id].style, styles[i], atol=1e-6)
    ids, matrix = store.fetch_all("style")
    assert len(ids) == N and matrix.shape == (N, STYLE_DIM)


@pytest.mark.parametrize("space", ["content", "style"])
def test_each_space_searches_its_own_vectors(store: VectorStore, data: tuple, space: str) -> None:  # type: ignore[type-arg]
    contents, styles, points = data
    matrix = contents if space == "content" else styles
    query = matrix[5] * 0.9 + matrix[6] * 0.1
    expected = [points[i].point_id for i in np.argsort(-(matrix @ unit(query)))[:10]]
    hits = store.search(unit(query), 10, space=space, with_vectors=True)
    assert [h.point_id for h in hits] == expected
    assert hits[0].vectors is not None and set(hits[0].vectors) == {"content", "style"}


def test_fused_search_is_weighted_rrf_of_both_spaces(store: VectorStore, data: tuple) -> None:  # type: ignore[type-arg]
    """The engine returns the union of both prefetches ranked by the weighted RRF score of attribution.rrf_fuse."""
    contents, styles, points = data
    rng = np.random.default_rng(3)
    weights, depth, rrf_k = {"content": 1.0, "style": 0.6}, 30, 60
    for _ in range(5):
        q_content, q_style = unit(rng.normal(size=CONTENT_DIM)), unit(rng.normal(size=STYLE_DIM))
        rankings = {
            "content": [points[i].point_id for i in np.argsort(-(contents @ q_content))[:depth]],
            "style": [points[i].point_id for i in np.argsort(-(styles @ q_style))[:depth]],
        }
        hits = store.search_fused(
            {"content": q_content, "style": q_style}, 2 * depth, prefetch=depth, weights=weights, rrf_k=rrf_k
        )
        assert {h.point_id for h in hits} <= set(rankings["content"]) | set(rankings["style"])
        scores = rrf_scores(rankings, weights, rrf_k)
        for hit in hits:
            assert hit.similarity == pytest.approx(scores[hit.point_id], rel=1e-5)
        # Same order as documented, up to exact ties in the fused score.
        assert [round(scores[h.point_id], 9) for h in hits] == sorted(
            (round(scores[h.point_id], 9) for h in hits), reverse=True
        )


def test_fused_attribution_is_checked_against_exact_fusion(
    tmp_path: Path,
    sqlite_audit: AuditStore,
    data: tuple,  # type: ignore[type-arg]
) -> None:
    contents, styles, points = data
    store = _filled(EdgeStore(tmp_path, "works_spaces"), points)
    _catalogued(sqlite_audit, points)  # (a request cites works the catalogue holds)
    attributor = _attributor(sqlite_audit, store, tmp_path)
    query = QueryVectors(contents[3], styles[3])
    for space in ("content", "style", "fused"):
        params = AttributionParams(k=5, space=space, fusion_weights=(1.0, 0.6))
        outcome = attributor.compute(query, params)
        assert outcome.overlap_at_k == 1.0
        record = attributor.record("/q.png", "00" * 32, query, params, outcome)
        assert record.parameters["space"] == space and record.parameters["fusion_weights"] == [1.0, 0.6]
        # Work 3 is itself in the index: rank 1 in every space.
        assert record.neighbours[0].work_id == "w3"
        before, after = attributor.replay(record.request_id)
        assert [n.work_id for n in after.neighbours] == [n.work_id for n in before.neighbours]
    with pytest.raises(ValueError, match="style vector"):
        attributor.compute(QueryVectors(contents[3]), AttributionParams(space="style"))
    store.close()


def test_works_tied_in_the_fused_score_are_kept_in_the_exact_fusion_order(
    tmp_path: Path, sqlite_audit: AuditStore
) -> None:
    """Two works swapping ranks 2 and 3 between the spaces tie in the fused score; the engine returns them in either
    order, the exact fusion puts the smaller id first: every request keeps that one and finds no miss."""
    basis_c, basis_s = np.eye(CONTENT_DIM, dtype=np.float32), np.eye(STYLE_DIM, dtype=np.float32)

    def near(basis: np.ndarray, cosine: float) -> np.ndarray:  # at this cosine of the query (basis row 0)
        return unit(cosine * basis[0] + np.sqrt(1 - cosine**2) * basis[1])

    cosines = {"w0": (1.0, 1.0), "wa": (0.9, 0.8), "wb": (0.8, 0.9), "w3": (0.1, 0.1)}
    points = [
        WorkPoint(
            point_id_for("c", w), near(basis_c, c), {"work_id": w, "artist": w, "catalogue": "c"}, near(basis_s, s)
        )
        for w, (c, s) in cosines.items()
    ]
    store = _filled(EdgeStore(tmp_path, "works_spaces"), points)
    attributor = _attributor(sqlite_audit, store, tmp_path)
    query, params = QueryVectors(basis_c[0], basis_s[0]), AttributionParams(k=2, space="fused")
    first = min(("wa", "wb"), key=lambda w: point_id_for("c", w))
    try:
        for _ in range(40):  # the engine's order of the tie varies from one query to the next
            outcome = attributor.compute(query, params)
            assert [n.work_id for n in outcome.neighbours] == ["w0", first] and outcome.overlap_at_k == 1.0
    finally:
        store.close()


class CountingEdgeStore(EdgeStore):
    """The real embedded shard, counting the engine queries it runs per space ("fused" for a fusion query)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queries: Counter[str] = Counter()

    def _query(self, vector: list[float], space: str, limit: int, *, exact: bool, with_vectors: bool) -> list[Any]:
        self.queries[space] += 1
        return super()._query(vector, space, limit, exact=exact, with_vectors=with_vectors)

    def _query_fused(self, query: FusedQuery, limit: int, *, with_vectors: bool) -> list[Any]:
        self.queries["fused"] += 1
        return super()._query_fused(query, limit, with_vectors=with_vectors)


def _catalogued(audit: AuditStore, points: list[WorkPoint]) -> None:
    """``points`` recorded as catalogue "c" of collection works_spaces (embedder "t@0"), in both base spaces."""
    works = [
        WorkRecord(p.payload["work_id"], p.payload["artist"], None, f"/img/{i}.png", f"{i:064x}", {}, 1, p.point_id)
        for i, p in enumerate(points)
    ]
    record_catalogue(audit, works, name="c", collection="works_spaces", embedder="t@0", spaces="content,style")


def test_a_request_searches_each_base_space_once(
    tmp_path: Path,
    sqlite_audit: AuditStore,
    data: tuple,  # type: ignore[type-arg]
) -> None:
    """The agreement indicators and the copy candidates read the searches the request made anyway: one engine query
    per base space, whatever K, and one fusion query (a fused request's own; the agreement of spaces' otherwise)."""
    contents, styles, points = data
    store = _filled(CountingEdgeStore(tmp_path, "works_spaces"), points)
    _catalogued(sqlite_audit, points)
    attributor = _attributor(sqlite_audit, store, tmp_path, copy_depth=30)
    query = QueryVectors(contents[3] * 0.8 + contents[4] * 0.2, styles[3])
    expected_copies = {
        space: [(h.payload["catalogue"], h.payload["work_id"]) for h in store.search(query.of(space), 30, space=space)]
        for space in ("content", "style")
    }
    for space, k, searched in (
        ("content", 2, {"content": 1, "style": 1, "fused": 1}),  # candidates at 8, the agreement at 2: one each
        ("content", 12, {"content": 1, "style": 1, "fused": 1}),  # candidates at 48, deeper than the copy depth
        ("style", 5, {"content": 1, "style": 1, "fused": 1}),
        ("fused", 5, {"fused": 1, "content": 1, "style": 1}),
    ):
        params = AttributionParams(k=k, space=space, fusion_weights=(1.0, 0.6))
        other = "style" if space == "content" else "content"
        top_other = store.search(query.of(other), k, space=other)
        store.queries.clear()
        outcome = attributor.compute(query, params, copies=True)
        copies = attributor.copy_candidates(outcome, query)
        assert store.queries == searched, (space, k)
        # the values are those of separate searches at each depth
        shared = sum(
            attributor.canonical.get(h.payload["artist"], h.payload["artist"]) == outcome.top_artist for h in top_other
        )
        assert outcome.features["agreement"] == pytest.approx(shared / len(top_other))
        neighbours = [(n.catalogue, n.work_id) for n in outcome.neighbours]
        assert copies == list(dict.fromkeys(neighbours + expected_copies["content"] + expected_copies["style"]))
    store.queries.clear()
    attributor.compute(query, AttributionParams(k=5, space="content"))  # no copy check: the agreements' depths only
    assert store.queries == {"content": 1, "style": 1, "fused": 1}
    store.close()


def test_style_space_missing_is_a_clear_error(tmp_path: Path) -> None:
    store = ServerStore(":memory:", "content_only")
    store.ensure_collection(CONTENT_DIM)
    with pytest.raises(VectorStoreError, match="--spaces content,style"):
        store.search(np.ones(STYLE_DIM, dtype=np.float32), 3, space="style")
    with pytest.raises(VectorStoreError, match="style vectors"):
        store.ensure_collection(CONTENT_DIM, STYLE_DIM)
    edge = EdgeStore(tmp_path, "grow")
    edge.ensure_collection(CONTENT_DIM)
    assert edge.spaces() == ("content",)
    edge.ensure_collection(CONTENT_DIM, STYLE_DIM)  # an embedded collection gains a style space in place
    assert edge.spaces() == ("content", "style")
    edge.close()


@pytest.mark.slow
def test_cli_spaces_end_to_end(cli: Cli, tmp_path: Path, demo_catalogue: DemoCatalogue) -> None:
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    again = cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style").stdout
    assert "48 unchanged" in again
    image = str(demo_catalogue.queries[2].path)
    for space in ("content", "style", "fused"):
        (record,) = json.loads(cli("attribute", image, "--space", space, "--k", "5", "--json", *embedder).stdout)
        assert record["parameters"]["space"] == space and record["overlap_at_k"] == 1.0
        assert len(record["neighbours"]) == 5
    assert "chain OK" in cli("audit", "verify").stdout
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("path,artist\n" + "".join(f"{q.path},{q.artist}\n" for q in demo_catalogue.queries))
    table = cli(
        "evaluate",
        "compare-spaces",
        str(labelled),
        "--k-max",
        "8",
        "--k",
        "3",
        *embedder,
        "--out",
        str(tmp_path / "cmp"),
    ).stdout
    for space in ("content", "style", "fused"):
        assert space in table
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["space"] for r in rows] == ["content", "style", "fused"]
    assert all(0 <= r["hit_rate@3"] <= 1 for r in rows)


@pytest.mark.slow
def test_noise_experiment_in_the_style_space(cli: Cli, tmp_path: Path, demo_catalogue: DemoCatalogue) -> None:
    embedder = ["--embedder", EMBEDDER]
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("path,artist\n" + "".join(f"{q.path},{q.artist}\n" for q in demo_catalogue.queries))
    noise = make_demo_catalogue(tmp_path / "noise", artists=2, works_per_artist=12, queries_per_artist=0)
    args = ["evaluate", "noise", str(labelled), "--noise", str(noise.manifest), "--levels", "0.25", "--k", "5"]
    cli("ingest", str(demo_catalogue.manifest), *embedder)
    refused = cli(*args, "--space", "style", *embedder, "--out", str(tmp_path / "o"), code=1)
    assert "--spaces content,style" in refused.stderr
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli(*args, "--space", "style", *embedder, "--out", str(tmp_path / "o"))
    metrics = json.loads((tmp_path / "o" / "noise.json").read_text())
    # Levels are fractions of the reference index: half the 48 works by default (--reference-fraction 0.5).
    assert metrics["space"] == "style" and metrics["levels"][0]["noise_works"] == round(0.25 * 24)
    assert 0 <= metrics["levels"][0]["mean_overlap"] <= 1
    # The content space of a collection that also holds style vectors: its scratch copy keeps both spaces.
    cli(*args, "--space", "content", *embedder, "--out", str(tmp_path / "c"))
    assert json.loads((tmp_path / "c" / "noise.json").read_text())["space"] == "content"


def test_a_request_projects_its_query_once_into_each_learned_space_with_the_same_outcome(
    tmp_path: Path,
    sqlite_audit: AuditStore,
    data: tuple,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request in a learned space projected its query for the centroid rule, the search, the recall check and the
    centroid log-odds, and the agreement of spaces once more per other learned space for each of its rule and
    search: now once into each learned space, with the outcome of separate projections."""
    contents, styles, points = data
    store = _filled(EdgeStore(tmp_path / "shard", "works_spaces"), points)
    _catalogued(sqlite_audit, points)
    labels = [p.payload["artist"] for p in points]
    for name, base, rows in (("mixed", "content+style", [contents, styles]), ("tones", "style", [styles])):
        sqlite_audit.spaces.add(
            name,
            fit_lda(join_bases(rows), labels, 0.5),
            base=base,
            method="lda",
            embedder_fingerprint="t@0",
            collection="works_spaces",
            n_works=N,
            n_artists=12,
            validation={"artists": sorted(set(labels))},
        )
    attributor = _attributor(sqlite_audit, store, tmp_path)
    rng = np.random.default_rng(11)
    queries = [
        QueryVectors(
            unit(contents[i] + 0.3 * rng.normal(size=CONTENT_DIM)), unit(styles[i] + 0.3 * rng.normal(size=STYLE_DIM))
        )
        for i in rng.choice(N, 8, replace=False)
    ]
    requests = [AttributionParams(k=5, space=space, top=top) for space in ("mixed", "tones") for top in TOP_RULES]
    projected: Counter[int] = Counter()  # single queries projected, by the projection's input dimension
    project = Projection.coordinates

    def counting(projection: Projection, rows: np.ndarray) -> np.ndarray:
        projected[projection.matrix.shape[0]] += len(rows) == 1
        return project(projection, rows)

    def recorded(outcome: Outcome, params: AttributionParams) -> tuple[Any, ...]:
        score = confidence(attributor.calibration_for(params), outcome.features, params.top)
        kept = (outcome.neighbours, outcome.candidates, outcome.features, outcome.top_artist, outcome.overlap_at_k)
        return (*kept, outcome.top_artist_share, outcome.artist_shares, score)

    monkeypatch.setattr(Projection, "coordinates", counting)
    found = {}
    for (i, query), params in itertools.product(enumerate(queries), requests):
        projected.clear()
        found[i, params] = recorded(attributor.compute(query, params), params)
        assert projected == {CONTENT_DIM + STYLE_DIM: 1, STYLE_DIM: 1}, params  # its space's and the other's
    monkeypatch.setattr(LearnedSpace, "placed", lambda _, query: query)  # each measure projects the query itself
    for (i, query), params in itertools.product(enumerate(queries), requests):
        assert recorded(attributor.compute(query, params), params) == found[i, params]
