"""Attribution quality on the font-family benchmark (scripts/build_benchmark.py): artist hit@1/hit@10 per space
(learned spaces included), the artist decision rules, the confidence indicators' AUROC, and the fit time of a
learned space; results go to docs/quality.md between this script's markers.

The data dir must hold the benchmark's catalogue, ingested with ``--spaces content,style``, and the learned spaces
named by ``--learned`` (``spaces fit``); the queries are attributed through the product's own Attributor (not
logged: nothing is shown as attributed).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchlib import provenance, publish

from attribution_audit.config import load_settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.projection import fit_lda
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.evaluation.metrics import auroc
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.spaces import validate
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import LabelledQuery, read_labelled

NAME = "bench_quality"
K = 10


@dataclass(frozen=True)
class Answer:
    """One query's answer in one space: the true artist, the ranked (artist, similarity) and the indicators."""

    truth: str
    ranked: list[tuple[str, float]]
    reported: str | None
    features: dict[str, float | None]
    confidence: float


def embed_queries(attributor: Attributor, queries: Sequence[LabelledQuery], batch: int = 32) -> list[QueryVectors]:
    style = attributor.style_embedder
    if style is None:
        raise SystemExit(
            f"the data dir's embedder {attributor.embedder_fingerprint} has no style vectors; ingest the benchmark "
            "with efficientnet-lite0 and --spaces content,style"
        )
    vectors: list[QueryVectors] = []
    for start in range(0, len(queries), batch):
        images = [load_image(q.path, target_size=224).image for q in queries[start : start + batch]]
        contents, styles = style.embed_both(images)
        vectors += [QueryVectors(c, s) for c, s in zip(contents, styles, strict=True)]
    return vectors


def answers(
    attributor: Attributor, queries: Sequence[LabelledQuery], vectors: list[QueryVectors], space: str
) -> list[Answer]:
    from attribution_audit.domain.confidence import confidence

    params = AttributionParams(k=K, verify="off", space=space)
    found = []
    for query, vector in zip(queries, vectors, strict=True):
        outcome = attributor.compute(vector, params)
        ranked = [(n.canonical_artist, n.similarity) for n in outcome.neighbours]
        score, _ = confidence(None, outcome.features)
        truth = attributor.canonical.get(query.artist, query.artist)
        found.append(Answer(truth, ranked, outcome.top_artist, outcome.features, score))
    return found


def nearest_work(ranked: list[tuple[str, float]]) -> str | None:
    return ranked[0][0] if ranked else None


def similarity_sum(ranked: list[tuple[str, float]]) -> str | None:
    totals: dict[str, float] = defaultdict(float)
    for artist, sim in ranked:
        totals[artist] += sim
    return max(totals, key=lambda a: totals[a]) if totals else None


RULES: dict[str, Callable[[Answer], str | None]] = {
    "reported (largest share, ties to the closest)": lambda a: a.reported,
    "nearest work": lambda a: nearest_work(a.ranked),
    "similarity sum over K": lambda a: similarity_sum(a.ranked),
}


def space_rows(space: str, found: list[Answer]) -> dict[str, object]:
    right = [a.reported == a.truth for a in found]
    return {
        "space": space,
        "hit@1": np.mean(right),
        "hit@10": np.mean([any(artist == a.truth for artist, _ in a.ranked) for a in found]),
        **{rule: np.mean([pick(a) == a.truth for a in found]) for rule, pick in RULES.items()},
        "AUROC default": auroc([a.confidence for a in found], right),
        "AUROC NN distance": auroc([-(a.features["nn_distance"] or 1.0) for a in found], right),
        "AUROC agreement": auroc([a.features.get("agreement") or 0.0 for a in found], right),
    }


def fit_time(works: int, artists: int, dim: int) -> tuple[float, float]:
    """Seconds to fit one LDA, and to validate (4 shrinkages) then fit, on random works of ``dim``."""
    rng = np.random.default_rng(0)
    labels = [f"a{i % artists}" for i in range(works)]
    rows = rng.normal(size=(works, dim)) + rng.normal(size=(artists, dim))[np.arange(works) % artists] * 0.3
    started = time.perf_counter()
    fit_lda(rows, labels, 0.1)
    one = time.perf_counter() - started
    started = time.perf_counter()
    fit_lda(rows, labels, validate(rows, labels)["shrinkage"])
    return one, time.perf_counter() - started


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float | np.floating) else "n/a" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="folder written by scripts/build_benchmark.py")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--learned", default="", help="learned spaces to measure, comma-separated")
    parser.add_argument("--fit-works", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("docs/quality.md"))
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    audit = open_audit(settings)
    queries = read_labelled(args.bench / "style_queries.csv")
    spaces = ["content", "style", "fused", *[s for s in args.learned.split(",") if s]]
    rows = []
    with open_attributor(settings, audit, settings.embedder) as attributor:
        vectors = embed_queries(attributor, queries)
        for space in spaces:
            rows.append(space_rows(space, answers(attributor, queries, vectors, space)))
    columns = list(rows[0])
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
    one, full = fit_time(args.fit_works, 100, 1356)
    lines = [
        *provenance(("numpy", "scipy")),
        "",
        f"Style queries: {len(queries)} held-out pages ({len({q.artist for q in queries})} artists), K = {K}.",
        "",
        *table,
        "",
        f"Fit of a learned space on {args.fit_works} works x 1356-d (style), 100 artists: one LDA {one:.1f} s; "
        f"validation (content groups, 4 shrinkages) and the final fit {full:.1f} s.",
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
