"""Content, style and fused spaces: named vectors in both stores, engine-side fusion as documented, CLI end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attribution_audit.attribution import AttributionParams, Attributor, rrf_scores
from attribution_audit.cli import app
from attribution_audit.demo import DemoCatalogue
from attribution_audit.errors import VectorStoreError
from attribution_audit.vectorstore import VectorStore, WorkPoint, point_id_for
from attribution_audit.vectorstore.qdrant_edge import EdgeStore
from attribution_audit.vectorstore.qdrant_server import ServerStore

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


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path, data: tuple) -> Iterator[VectorStore]:  # type: ignore[type-arg]
    store: VectorStore = (
        EdgeStore(tmp_path, "works_spaces") if request.param == "edge" else ServerStore(":memory:", "works_spaces")
    )
    store.ensure_collection(CONTENT_DIM, STYLE_DIM)
    store.upsert(data[2])
    store.build_index()
    yield store
    store.close()


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


def test_fused_attribution_is_checked_against_exact_fusion(tmp_path: Path, fresh_db, data: tuple) -> None:  # type: ignore[no-untyped-def]
    contents, styles, points = data
    store = EdgeStore(tmp_path, "works_spaces")
    store.ensure_collection(CONTENT_DIM, STYLE_DIM)
    store.upsert(points)
    store.build_index()
    attributor = Attributor(
        fresh_db,
        store,
        embedder_name="test",
        embedder_fingerprint="t@0",
        requester="pytest",
        exact_cache_dir=tmp_path / "x",
    )
    for space in ("content", "style", "fused"):
        params = AttributionParams(k=5, space=space, fusion_weights=(1.0, 0.6))
        outcome = attributor.compute(contents[3], params, styles[3])
        assert outcome.overlap_at_k == 1.0
        record = attributor.record("/q.png", "00" * 32, contents[3], params, outcome, style=styles[3])
        assert record.parameters["space"] == space and record.parameters["fusion_weights"] == [1.0, 0.6]
        # Work 3 is itself in the index: rank 1 in every space.
        assert record.neighbours[0].work_id == "w3"
        before, after = attributor.replay(record.request_id)
        assert [n.work_id for n in after.neighbours] == [n.work_id for n in before.neighbours]
    with pytest.raises(ValueError, match="style vector"):
        attributor.compute(contents[3], AttributionParams(space="style"))
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
def test_cli_spaces_end_to_end(tmp_path: Path, database_url: str, demo_catalogue: DemoCatalogue) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == code, result.output + str(result.exception)
        return result.stdout

    embedder = ["--embedder", "efficientnet-lite0"]
    run("db", "upgrade")
    run("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    again = run("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    assert "48 unchanged" in again
    image = str(demo_catalogue.queries[2].path)
    for space in ("content", "style", "fused"):
        (record,) = json.loads(run("attribute", image, "--space", space, "--k", "5", "--json", *embedder))
        assert record["parameters"]["space"] == space and record["overlap_at_k"] == 1.0
        assert len(record["neighbours"]) == 5
    assert "chain OK" in run("audit", "verify")
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("path,artist\n" + "".join(f"{q.path},{q.artist}\n" for q in demo_catalogue.queries))
    table = run(
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
    )
    for space in ("content", "style", "fused"):
        assert space in table
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["space"] for r in rows] == ["content", "style", "fused"]
    assert all(0 <= r["hit_rate@3"] <= 1 for r in rows)


@pytest.mark.slow
def test_noise_experiment_in_the_style_space(tmp_path: Path, demo_catalogue: DemoCatalogue) -> None:
    from attribution_audit.demo import make_demo_catalogue

    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data")]
    embedder = ["--embedder", "efficientnet-lite0"]
    assert runner.invoke(app, [*base, "db", "upgrade"]).exit_code == 0
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("path,artist\n" + "".join(f"{q.path},{q.artist}\n" for q in demo_catalogue.queries))
    noise = make_demo_catalogue(tmp_path / "noise", artists=2, works_per_artist=12, queries_per_artist=0)
    args = ["evaluate", "noise", str(labelled), "--noise", str(noise.manifest), "--levels", "0.25", "--k", "5"]
    assert runner.invoke(app, [*base, "ingest", str(demo_catalogue.manifest), *embedder]).exit_code == 0
    refused = runner.invoke(app, [*base, *args, "--space", "style", *embedder, "--out", str(tmp_path / "o")])
    assert refused.exit_code == 1 and "--spaces content,style" in refused.stderr
    ingested = runner.invoke(
        app, [*base, "ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style"]
    )
    assert ingested.exit_code == 0, ingested.output
    result = runner.invoke(app, [*base, *args, "--space", "style", *embedder, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "noise.json").read_text())
    assert metrics["space"] == "style" and metrics["levels"][0]["noise_works"] == 12
    assert 0 <= metrics["levels"][0]["mean_overlap"] <= 1
