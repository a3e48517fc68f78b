"""The artist decision rules on catalogues whose artists have unequal numbers of works: the benchmark's catalogue
subsampled so that artist i keeps ``counts[i % len(counts)]`` works (seeded), the style queries attributed in the
content space and in LDA spaces refitted on the subsample (from style, as ``fontstyle``, and from content and style,
as ``fontboth``, each with the shrinkage its validation chose on the whole benchmark); hit@1 of the top artist by
the largest share of the K works (equal shares, ties to the closest: ``--top share``), of the nearest work
(``--top nearest``), of the largest similarity sum over the K works and, in the LDA spaces, of the maximum posterior
among the artists' centroids fitted on the subsample (``--top centroid``). NumPy on the stored vectors and the
product's own ``request_indicators`` and ``ArtistCentroids``; results go to docs/quality.md.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from benchlib import provenance, publish, style_queries_parser

from attribution_audit.config import load_settings
from attribution_audit.domain.indicators import request_indicators
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import CONTENT, STYLE
from attribution_audit.domain.projection import ArtistCentroids, fit_lda, join_bases, unit_rows
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.labelled import read_labelled

NAME = "bench_imbalance"
RULES = ("largest share", "nearest work", "similarity sum", "centroid (max posterior)")
LEARNED = {"style LDA": ((STYLE,), 0.9), "content+style LDA": ((CONTENT, STYLE), 0.5)}  # bases, validated shrinkage


def decisions(sims: np.ndarray, labels: np.ndarray, params: AttributionParams) -> dict[str, list[str]]:
    """Each query's top artist under each rule, from its similarities to the catalogue's works."""
    order = np.argsort(-sims, axis=1, kind="stable")[:, : params.k * params.oversampling]
    chosen: dict[str, list[str]] = {rule: [] for rule in RULES[:3]}
    for row, ranked_ids in enumerate(order):
        ranked = [(str(labels[j]), float(sims[row, j])) for j in ranked_ids]
        chosen[RULES[0]].append(str(request_indicators(ranked, str, params)[4]))
        chosen[RULES[1]].append(ranked[0][0])
        totals: dict[str, float] = defaultdict(float)
        for artist, sim in ranked[: params.k]:
            totals[artist] += sim
        chosen[RULES[2]].append(max(totals, key=lambda a: totals[a]))
    return chosen


def main() -> None:
    parser = style_queries_parser(__doc__, learned=False)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    queries = read_labelled(args.bench / "style_queries.csv")
    cached = np.load(args.vectors)
    with open_attributor(settings, open_audit(settings), settings.embedder) as attributor:
        truth = np.array([attributor.canonical.get(q.artist, q.artist) for q in queries])
        points = list(attributor.store.iter_points())
        labels = np.array([attributor.canonical.get(a, a) for a in (str(p.payload.get("artist", "")) for p in points)])
    stored = [QueryVectors(p.vector, p.style) for p in points]
    works = {base: unit_rows(np.vstack([v.of(base) for v in stored])) for base in (CONTENT, STYLE)}
    asked = {CONTENT: unit_rows(cached["content"]), STYLE: unit_rows(cached["style"])}
    names = sorted(set(labels))
    params = AttributionParams()
    table = ["| works per artist (cycled over the artists) | space | works | " + " | ".join(RULES) + " |"]
    table.append("|" + "---|" * (3 + len(RULES)))
    for counts in ((20,), (1, 2, 3, 5, 10, 20), (2, 4, 8, 20)):
        hits: dict[str, dict[str, list[float]]] = {s: defaultdict(list) for s in ("content", *LEARNED)}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            keep = np.zeros(len(labels), dtype=bool)
            for i, name in enumerate(names):
                members = np.flatnonzero(labels == name)
                keep[rng.choice(members, min(counts[i % len(counts)], len(members)), replace=False)] = True
            kept = labels[keep]
            chosen = {"content": decisions(asked[CONTENT] @ works[CONTENT][keep].T, kept, params)}
            for space, (bases, shrinkage) in LEARNED.items():
                rows = join_bases([works[b][keep] for b in bases])
                queried = join_bases([asked[b] for b in bases])
                projection = fit_lda(rows, kept.tolist(), shrinkage)
                chosen[space] = decisions(projection.apply(queried) @ projection.apply(rows).T, kept, params)
                model = ArtistCentroids.fit(projection.coordinates(rows), kept.tolist())
                assert model is not None, "every subsample keeps artists with two works"
                chosen[space][RULES[3]] = [model.most_likely(row) for row in projection.coordinates(queried)]
            for space, by_rule in chosen.items():
                for rule, tops in by_rule.items():
                    hits[space][rule].append(float(np.mean(np.array(tops) == truth)))
        for space, scores in hits.items():
            cells = [f"{np.mean(scores[r]):.3f} ± {np.std(scores[r]):.3f}" if r in scores else "n/a" for r in RULES]
            table.append(f"| {', '.join(map(str, counts))} | {space} | {int(keep.sum())} | " + " | ".join(cells) + " |")
    lines = [
        *provenance(("numpy",)),
        "",
        f"Style queries: {len(queries)} held-out pages ({len(set(truth))} artists), K = {params.k}; hit@1, mean ± "
        f"standard deviation over {args.seeds} seeded subsamples (the LDA spaces and their centroids refitted on each; "
        f"shrinkage {', '.join(f'{s} {v[1]}' for s, v in LEARNED.items())}).",
        "",
        *table,
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
