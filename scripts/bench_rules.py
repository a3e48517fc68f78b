"""The top-artist rules (``attribute --top share|nearest|centroid``) in the learned spaces on the font-family benchmark
(scripts/build_benchmark.py): artist hit@1 and hit@10 of each rule and the calibrated confidence of its top artist
(5-fold cross-validated AUROC and ECE of ``calibrate``'s own ``fit_and_score``, on the features a request under the
rule records); results go to docs/quality.md between this script's markers.

hit@10 is whether the right artist is among the rule's ten candidates: the artists of the K = 10 nearest works for
``share`` and ``nearest``, the ten artists of largest posterior among the centroids for ``centroid``. The queries are
attributed through the product's own Attributor (not logged), from their cached vectors.
"""

from __future__ import annotations

import numpy as np
from bench_confidence import FOLDS
from bench_quality import K
from benchlib import cached_query_vectors, provenance, publish, style_queries_parser

from attribution_audit.config import load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, confidence, feature_value
from attribution_audit.domain.params import CENTROID, TOP_RULES, AttributionParams
from attribution_audit.domain.spaces import LearnedSpace, QueryVectors
from attribution_audit.services.calibrate import fit_and_score
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.labelled import read_labelled

NAME = "bench_rules"


def centroid_candidates(space: LearnedSpace, vectors: list[QueryVectors], depth: int) -> list[list[str]]:
    """Each query's ``depth`` artists of largest posterior among the space's artist centroids."""
    assert space.centroids is not None, f"space {space.name} has no artist centroids"
    model = space.centroids
    logits = np.vstack([model.logits(row) for row in space.coordinates(vectors)])
    return [[model.artists[j] for j in np.argsort(-row, kind="stable")[:depth]] for row in logits]


def main() -> None:
    args = style_queries_parser(__doc__).parse_args()
    settings = load_settings(data_dir=args.data_dir)
    audit = open_audit(settings)
    queries = read_labelled(args.bench / "style_queries.csv")
    vectors = cached_query_vectors(args.vectors)
    table = [
        "| space (version) | rule | hit@1 | hit@10 | right top artist | calibrated CV AUROC | ECE | Brier | top "
        "artist not among the K works |",
        "|" + "---|" * 9,
    ]
    with open_attributor(settings, audit, settings.embedder) as attributor:
        truth = [attributor.canonical.get(q.artist, q.artist) for q in queries]
        for name in (s for s in args.learned.split(",") if s):
            for rule in TOP_RULES:
                params = attributor.space_of(AttributionParams(k=K, verify="off", space=name, top=rule))[1]
                found = [attributor.compute(v, params) for v in vectors]
                space = attributor.space_of(params)[0]
                assert isinstance(space, LearnedSpace), f"{name} is not a learned space"
                if rule == CENTROID:
                    candidates = centroid_candidates(space, vectors, K)
                else:
                    candidates = [[n.canonical_artist for n in o.neighbours] for o in found]
                right = [o.top_artist == t for o, t in zip(found, truth, strict=True)]
                x = np.array([[feature_value(o.features, f) for f in CALIBRATION_FEATURES] for o in found])
                formula = [confidence(None, o.features, rule)[0] for o in found]
                _, _, scores = fit_and_score(x, np.array(right, dtype=float), formula, FOLDS, name)
                hit10 = np.mean([t in c for t, c in zip(truth, candidates, strict=True)])
                outside = sum(o.top_artist not in {n.canonical_artist for n in o.neighbours} for o in found)
                table.append(
                    f"| {name} (v{params.space_version}) | {rule} | {np.mean(right):.3f} | {hit10:.3f} | "
                    f"{sum(right)} / {len(right)} | {scores['cv_auroc'] or 0:.3f} | {scores['cv_ece'] or 0:.3f} | "
                    f"{scores['cv_brier'] or 0:.3f} | "
                    f"{outside} |"
                )
                print(table[-1], flush=True)
    lines = [
        *provenance(("numpy",)),
        "",
        f"Style queries: {len(queries)} held-out pages ({len(set(truth))} artists), K = {K}, {FOLDS}-fold CV of "
        f"`calibrate`'s model ({len(CALIBRATION_FEATURES)} indicators) under each rule.",
        "",
        *table,
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
