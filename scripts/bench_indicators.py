"""Indicators tried for the learned spaces' confidence and not built: what each adds to the six that ``calibrate``
fits on (5-fold cross-validated AUROC and ECE, as ``calibrate``), on the font-family benchmark's style queries.

- reliability of the reported artist: how often the space was right when it named that artist, from a
  cross-validation over the catalogue's content groups (each group's works attributed against the others, the
  projection refitted without them; Laplace-smoothed);
- competence of the neighbourhood: the share of the query's K nearest works whose own cross-validated answer was
  right;
- one 0/1 agreement per other space instead of the share of agreeing spaces (``agreement_spaces``);
- the share of agreeing spaces weighted by each space's hit@1 on these very queries (an oracle no request has).

The queries are attributed through the product's own Attributor (not logged); results go to docs/quality.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_confidence import FOLDS, cv_scores
from bench_quality import K
from benchlib import provenance, publish

from attribution_audit.config import load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, feature_value
from attribution_audit.domain.indicators import request_indicators
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import CONTENT, STYLE
from attribution_audit.domain.projection import content_groups, fit_lda, join_bases
from attribution_audit.domain.results import Outcome
from attribution_audit.domain.spaces import LEARNED_BASES, QueryVectors
from attribution_audit.evaluation.metrics import auroc
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.labelled import read_labelled

NAME = "bench_indicators"
BASE_SPACES = ("content", "style", "fused")


def answers_by_group(rows: np.ndarray, labels: np.ndarray, shrinkage: float) -> np.ndarray:
    """Each catalogue work's top artist when its content group is held out (the projection refitted without it)."""
    params = AttributionParams(k=K)
    groups = content_groups(rows, labels.tolist())
    found = np.empty(len(labels), dtype=object)
    for group in np.unique(groups):
        held = groups == group
        projection = fit_lda(rows[~held], labels[~held].tolist(), shrinkage)
        sims = projection.apply(rows[held]) @ projection.apply(rows[~held]).T
        order = np.argsort(-sims, axis=1, kind="stable")[:, : params.k * params.oversampling]
        train = labels[~held]
        for row, work in enumerate(np.flatnonzero(held)):
            ranked = [(str(train[j]), float(sims[row, j])) for j in order[row]]
            found[work] = request_indicators(ranked, str, params)[4]
    return found


def _cells(x: np.ndarray, right: list[bool]) -> str:
    cv_auroc, ece = cv_scores(x, right)
    return f"{cv_auroc or 0:.3f} / {ece:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="folder written by scripts/build_benchmark.py")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--learned", required=True, help="learned spaces to measure, comma-separated")
    parser.add_argument("--vectors", type=Path, required=True, help="the queries' vectors (bench_confidence --vectors)")
    parser.add_argument("--out", type=Path, default=Path("docs/quality.md"))
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    audit = open_audit(settings)
    queries = read_labelled(args.bench / "style_queries.csv")
    learned = [s for s in args.learned.split(",") if s]
    cached = np.load(args.vectors)
    vectors = [QueryVectors(c, s) for c, s in zip(cached["content"], cached["style"], strict=True)]
    found: dict[str, list[Outcome]] = {}
    with open_attributor(settings, audit, settings.embedder) as attributor:
        truth = [attributor.canonical.get(q.artist, q.artist) for q in queries]
        for space in (*BASE_SPACES, *learned):
            params = attributor.space_of(AttributionParams(k=K, verify="off", space=space))[1]
            found[space] = [attributor.compute(v, params) for v in vectors]
        points = list(attributor.store.iter_points())
        labels = np.array([attributor.canonical.get(a, a) for a in (str(p.payload.get("artist", "")) for p in points)])
        stored = [QueryVectors(p.vector, p.style) for p in points]
        bases = {base: np.vstack([v.of(base) for v in stored]) for base in (CONTENT, STYLE)}
    spaces = list(found)
    tops = {s: np.array([o.top_artist for o in found[s]], dtype=object) for s in spaces}
    hit1 = {s: float(np.mean(tops[s] == np.array(truth, dtype=object))) for s in spaces}
    table = [
        "| space | right top artist | the six (`calibrate` now): CV AUROC / ECE | + reliability of the reported artist "
        "(alone: AUROC) | + competence of the 10 nearest works (alone) | + one agreement per other space | "
        "agreement share weighted by hit@1 on the queries (oracle), instead of the share |",
        "|" + "---|" * 7,
    ]
    for space in learned:
        info = audit.spaces.load(space)
        assert info is not None, f"no learned space {space}"
        rows = join_bases([bases[b] for b in LEARNED_BASES[info[0].base]])
        shrinkage = float(info[0].validation["shrinkage"])
        answered = answers_by_group(rows, labels, shrinkage)
        right_there = answered == labels
        reliability = {
            a: (int((right_there & (answered == a)).sum()) + 1) / (int((answered == a).sum()) + 2) for a in set(labels)
        }
        right = [o.top_artist == t for o, t in zip(found[space], truth, strict=True)]
        six = np.array([[feature_value(o.features, f) for f in CALIBRATION_FEATURES] for o in found[space]])
        trust = np.array([[reliability.get(str(o.top_artist), 0.5)] for o in found[space]])
        projection = fit_lda(rows, labels.tolist(), shrinkage)
        queried = join_bases([np.vstack([v.of(b) for v in vectors]) for b in LEARNED_BASES[info[0].base]])
        nearest = np.argsort(-(projection.apply(queried) @ projection.apply(rows).T), axis=1)[:, :K]
        competence = right_there[nearest].mean(axis=1, keepdims=True).astype(float)
        others = [s for s in spaces if s != space]
        agree = np.array([[float(tops[s][i] == tops[space][i]) for s in others] for i in range(len(truth))])
        weights = np.array([hit1[s] for s in others])
        weighted = six.copy()
        weighted[:, CALIBRATION_FEATURES.index("agreement_spaces")] = agree @ weights / weights.sum()
        table.append(
            f"| {space} | {sum(right)} / {len(right)} | {_cells(six, right)} | {_cells(np.hstack([six, trust]), right)}"
            f" ({auroc(trust[:, 0].tolist(), right):.3f}) | {_cells(np.hstack([six, competence]), right)} "
            f"({auroc(competence[:, 0].tolist(), right):.3f}) | {_cells(np.hstack([six, agree]), right)} | "
            f"{_cells(weighted, right)} |"
        )
    lines = [
        *provenance(("numpy",)),
        "",
        f"Style queries: {len(queries)} held-out pages ({len(set(truth))} artists), K = {K}, {FOLDS}-fold CV; "
        f"spaces attributed: {', '.join(spaces)}.",
        "",
        *table,
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
