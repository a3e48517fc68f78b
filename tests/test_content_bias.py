"""``evaluate content-bias`` (the note's Figure 8): the statistics by hand, then the real pipeline with the packaged
embedder (content from the image space) and with a tiny CLIP whose text tower embeds captions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDER as MODEL
from conftest import Cli, Ingested, ingest_once, save_tiny_clip, save_tiny_clip_tokenizer
from PIL import Image
from scipy.stats import mannwhitneyu
from sqlalchemy import select
from sqlalchemy.orm import Session

from attribution_audit.embedding import get_embedder
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import EmbedderError
from attribution_audit.evaluation.content_bias import ContentPairs, compare_distributions, content_bias
from attribution_audit.sources.synthetic import DemoCatalogue, make_demo_catalogue
from attribution_audit.store.models import AttributionNeighbour, AttributionRequest, EvaluationRun

CAPTIONS = ["boat at sea", "vase of flowers", "a red barn", "portrait of a woman"]


def test_compare_distributions_by_hand() -> None:
    attributed, inspiration = [0.9, 0.8, 0.85, 0.7], [0.2, 0.4, 0.75]
    result = compare_distributions(attributed, inspiration)
    test = mannwhitneyu(attributed, inspiration, alternative="two-sided")
    assert result["u"] == pytest.approx(test.statistic) and result["p_value"] == pytest.approx(test.pvalue)
    assert result["attributed"] == {"n": 4, "mean": pytest.approx(0.8125), "median": 0.825, "values": attributed}
    assert result["inspiration"]["n"] == 3 and result["inspiration"]["median"] == 0.4
    # No test without two sides, or when every value is the same.
    assert compare_distributions([0.5], [])["p_value"] is None
    assert compare_distributions([0.5, 0.5], [0.5])["p_value"] is None


def test_content_bias_pools_pairs_overall_and_per_subset() -> None:
    pairs = [
        ContentPairs("gpt", [0.9, 0.8], [0.1]),
        ContentPairs("object", [0.3], [0.6, 0.7]),
        ContentPairs(None, [], []),
    ]
    result = content_bias(pairs)
    assert result["overall"]["queries"] == 3 and result["overall"]["attributed"]["values"] == [0.9, 0.8, 0.3]
    assert result["overall"]["inspiration"]["values"] == [0.1, 0.6, 0.7]
    assert set(result["subsets"]) == {"gpt", "object"}
    assert result["subsets"]["object"]["attributed"]["values"] == [0.3]


def labelled_csv(catalogue: DemoCatalogue, folder: Path, captions: bool) -> Path:
    """Every generated image with its artist's 4 works as true works, subset by query number, and a caption."""
    path = folder / ("labelled.csv" if captions else "uncaptioned.csv")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_ids", "subset", *(["caption"] if captions else [])])
        for n, query in enumerate(catalogue.queries):
            a = int(query.path.name.split("_")[1][1:])
            works = ";".join(f"A{a}-W{w:03d}" for w in range(4))
            subset = "gpt" if n % 2 == 0 else "object"
            writer.writerow([str(query.path), query.artist, works, subset, *([CAPTIONS[n % 4]] if captions else [])])
    return path


@pytest.fixture(scope="module")
def small_catalogue(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalogue:
    """3 artists x 4 works, 2 generated images each; the manifest also has a caption column."""
    catalogue = make_demo_catalogue(
        tmp_path_factory.mktemp("bias-demo"), artists=3, works_per_artist=4, queries_per_artist=2
    )
    rows = list(csv.DictReader(catalogue.manifest.open()))
    with catalogue.manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [*rows[0], "caption"])
        writer.writeheader()
        writer.writerows({**row, "caption": CAPTIONS[i % 4]} for i, row in enumerate(rows))
    return catalogue


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, small_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("bias-ingested"), sqlite_template, small_catalogue.manifest)


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 0
        image.verify()


def test_content_bias_from_the_content_image_space(
    cli: Cli, ingested: Ingested, small_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = labelled_csv(small_catalogue, tmp_path, captions=True)
    out = tmp_path / "out"
    printed = cli("evaluate", "content-bias", str(labelled), "--embedder", MODEL, "--out", str(out)).stdout
    assert "content from the content image space: the embedder efficientnet-lite0 has no text tower" in printed
    metrics = json.loads((out / "content_bias.json").read_text())
    assert metrics["content_source"] == "content image space" and metrics["overall"]["queries"] == 6
    assert set(metrics["subsets"]) == {"gpt", "object"}
    # K = number of true works (4): 4 attributed and 4 inspiration pairs per image.
    assert metrics["overall"]["attributed"]["n"] == 24 and metrics["overall"]["inspiration"]["n"] == 24
    engine = cli.engine()
    try:
        with Session(engine) as session:
            run = session.get_one(EvaluationRun, metrics["run_id"])
            assert run.kind == "content_bias" and run.status == "completed" and run.metrics == metrics
            logged = session.scalars(
                select(AttributionNeighbour.similarity)
                .join(AttributionRequest, AttributionRequest.id == AttributionNeighbour.request_id)
                .where(AttributionRequest.evaluation_run_id == metrics["run_id"])
                .order_by(AttributionRequest.labelled_query_id, AttributionNeighbour.rank)
            ).all()
    finally:
        engine.dispose()
    # In the content space the attributed side is exactly the logged neighbours' similarities.
    assert metrics["overall"]["attributed"]["values"] == pytest.approx(list(logged), abs=1e-5)
    overall = metrics["overall"]
    test = mannwhitneyu(overall["attributed"]["values"], overall["inspiration"]["values"], alternative="two-sided")
    assert overall["p_value"] == pytest.approx(test.pvalue)
    report = (out / "content_bias.md").read_text()
    assert "Content from the content image space" in report and "does not formally prove" in report
    # Measured in the space that chose the attributed works, the comparison is circular: said, not implied.
    assert metrics["caveat"] and "by construction" in metrics["caveat"]
    assert f"caveat: {metrics['caveat']}" in printed and metrics["caveat"] in report
    table = [n for n, line in enumerate(report.splitlines()) if line.startswith("|")]
    assert len(table) == 2 + 3 and table == list(range(table[0], table[0] + 5))  # one table, no image inside it
    for group in ("overall", "gpt", "object"):
        assert_png(out / f"content_bias_{group}.png")
        assert f"![{group}](content_bias_{group}.png)" in report
    assert "chain OK: 6 records" in cli("audit", "verify").stdout
    refused = cli("evaluate", "report", "--run", str(metrics["run_id"]), "--out", str(tmp_path / "x"), code=1)
    assert "is a content_bias run" in refused.stderr and len(refused.stderr.splitlines()) == 1


@pytest.mark.slow
def test_content_bias_from_captions_with_the_clip_text_tower(
    cli: Cli, small_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    model = tmp_path / "clip"
    save_tiny_clip(model)
    save_tiny_clip_tokenizer(model)
    spec = f"clip:{model}"
    cli("ingest", str(small_catalogue.manifest), "--embedder", spec)
    out = tmp_path / "out"
    labelled = labelled_csv(small_catalogue, tmp_path, captions=True)
    printed = cli("evaluate", "content-bias", str(labelled), "--embedder", spec, "--out", str(out)).stdout
    assert "content from the captions: captions embedded with the text tower of clip" in printed
    metrics = json.loads((out / "content_bias.json").read_text())
    assert metrics["content_source"] == "captions"
    # Each image's inspiration works are A<a>-W000..3, whose captions are CAPTIONS[0..3]: recomputed here.
    text = get_embedder(spec, device="cpu").embed_text(CAPTIONS)  # type: ignore[attr-defined]
    expected = [float(text[n % 4] @ text[w]) for n in range(6) for w in range(4)]
    assert metrics["overall"]["inspiration"]["values"] == pytest.approx(expected, abs=1e-5)
    assert np.isfinite(metrics["overall"]["p_value"])
    # Without a caption column, the same embedder falls back to the image space and says so.
    plain = labelled_csv(small_catalogue, tmp_path, captions=False)
    printed = cli("evaluate", "content-bias", str(plain), "--embedder", spec, "--out", str(out)).stdout
    assert "content from the content image space: the labelled queries have no caption column" in printed


def test_content_bias_needs_true_works(
    cli: Cli, ingested: Ingested, small_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = tmp_path / "q.csv"
    labelled.write_text(f"path,artist\n{small_catalogue.queries[0].path},Ada\n")
    result = cli("evaluate", "content-bias", str(labelled), "--embedder", MODEL, "--out", str(tmp_path / "o"), code=1)
    assert "work_ids" in result.stderr and len(result.stderr.splitlines()) == 1


def test_captions_without_tokenizer_files_are_refused_in_one_line(tmp_path: Path) -> None:
    save_tiny_clip(tmp_path)
    embedder = get_embedder(f"clip:{tmp_path}", device="cpu")
    with pytest.raises(EmbedderError, match="has no tokenizer") as refused:
        embedder.embed_text(["a boat"])  # type: ignore[attr-defined]
    assert "\n" not in str(refused.value)
