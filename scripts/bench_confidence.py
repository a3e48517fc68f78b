"""Confidence on the font-family benchmark (scripts/build_benchmark.py): the default confidence of each space before
(the formula ``default-v1``) and after (a learned space's own model, fitted by ``spaces fit`` on its held-out
works), and what further indicators add to the calibrated model (5-fold cross-validated AUROC and ECE, as
``calibrate``), with the cost of each per request; results go to docs/quality.md between this script's markers.

The indicators compared: the five ``calibrate`` fitted on before the agreement of spaces (entropy, NN distance,
margin, top share, agreement between the two base spaces), the agreement of spaces (the share of the shard's other
spaces whose top artist is the request's, recorded since revision 0013), the centroid log-odds (the top artist's
log-odds among a learned space's artist centroids, recorded since revision 0016) and its mean over the shard's other
learned spaces (recorded since revision 0017). The queries are attributed through the product's own Attributor (not
logged); the two indicators that read the other spaces are timed apart.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_quality import K, embed_queries
from benchlib import provenance, publish

from attribution_audit.config import load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, LogisticModel, confidence, feature_value
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import STYLE
from attribution_audit.domain.results import Outcome
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.evaluation.calibration import cross_validated, expected_calibration_error
from attribution_audit.evaluation.metrics import auroc
from attribution_audit.services.calibrate import fit_and_score
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.labelled import read_labelled

NAME = "bench_confidence"
FOLDS = 5


def cv_scores(x: np.ndarray, right: list[bool]) -> tuple[float | None, float]:
    """Out-of-fold AUROC and ECE of the logistic model over the columns of ``x`` (as ``calibrate`` fits it)."""
    from attribution_audit.domain.confidence import fit_logistic

    names = tuple(f"f{i}" for i in range(x.shape[1]))

    def fitter(xs: np.ndarray, ys: np.ndarray) -> Callable[[np.ndarray], float]:
        model = fit_logistic(xs, ys, names=names)
        return lambda row: model.predict(dict(zip(names, row.tolist(), strict=True)))

    predicted = cross_validated(x, np.array(right, dtype=float), fitter, FOLDS).tolist()
    return auroc(predicted, right), expected_calibration_error(predicted, right)


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float | np.floating) else "n/a" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="folder written by scripts/build_benchmark.py")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--learned", default="", help="learned spaces to measure, comma-separated")
    parser.add_argument("--vectors", type=Path, help="an .npz cache of the queries' vectors (written when absent)")
    parser.add_argument("--out", type=Path, default=Path("docs/quality.md"))
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    audit = open_audit(settings)
    queries = read_labelled(args.bench / "style_queries.csv")
    spaces = ["content", "style", "fused", *[s for s in args.learned.split(",") if s]]
    outcomes: dict[str, list[Outcome]] = {}
    ms: dict[str, tuple[float, float]] = {}
    own: dict[str, tuple[int, LogisticModel | None]] = {}
    with open_attributor(settings, audit, settings.embedder) as attributor:
        if args.vectors is not None and args.vectors.exists():
            cached = np.load(args.vectors)
            vectors = [QueryVectors(c, s) for c, s in zip(cached["content"], cached["style"], strict=True)]
        else:
            vectors = embed_queries(attributor, queries)
            if args.vectors is not None:
                np.savez(args.vectors, content=[v.content for v in vectors], style=[v.of(STYLE) for v in vectors])
        truth = [attributor.canonical.get(q.artist, q.artist) for q in queries]
        for space in spaces:
            params = attributor.space_of(AttributionParams(k=K, verify="off", space=space))[1]
            attributor.compute(vectors[0], params)  # a learned space projects the catalogue once per process
            searching = attributor.space_of(params)[0]
            times, extra, found = [], [], []
            for vector in vectors:
                started = time.perf_counter()
                found.append(attributor.compute(vector, params))
                times.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                others = attributor.other_spaces(searching, vector, params)
                attributor.agreement_of_spaces(attributor.store, others, vector, found[-1].top_artist, params)
                attributor.centroid_log_odds_others(others, vector, found[-1].top_artist)
                extra.append((time.perf_counter() - started) * 1000)
            outcomes[space], ms[space] = found, (statistics.median(times), statistics.median(extra))
            if params.space_version is not None:
                info = audit.spaces.load(space, params.space_version)
                name = info[0].validation.get("confidence", {}).get("model") if info else None
                own[space] = params.space_version, audit.evaluations.calibration(name) if name else None

    before_after = [
        "| space | version: own model | right top artist | default-v1 AUROC | default-v1 ECE | default-v1 mean / max "
        "on a wrong artist | own model AUROC | own model ECE | own model mean / max on a wrong artist |",
        "|" + "---|" * 9,
    ]
    calibrated = [
        "| space | compute ms (median) | of which the other spaces (agreement, log-odds there) | 5 indicators "
        "(before): CV AUROC / ECE | + agreement of spaces | + centroid log-odds | + centroid log-odds in the other "
        "learned spaces (`calibrate` now) | agreement of spaces alone, AUROC | centroid log-odds alone, AUROC | "
        "log-odds in the other learned spaces alone, AUROC |",
        "|" + "---|" * 10,
    ]
    for space in spaces:
        found = outcomes[space]
        right = [o.top_artist == t for o, t in zip(found, truth, strict=True)]
        wrong = [not r for r in right]
        formula = [confidence(None, o.features)[0] for o in found]
        if space in own:
            version, model = own[space]
            fitted = [confidence(model, o.features)[0] for o in found] if model else formula
            name = f"{space} v{version}"
            before_after.append(
                "| "
                + " | ".join(
                    [
                        space,
                        f"{name}: {model.name if model else 'none (formula)'}",
                        f"{sum(right)} / {len(right)}",
                        _fmt(auroc(formula, right)),
                        _fmt(expected_calibration_error(formula, right)),
                        f"{_fmt(float(np.mean(np.array(formula)[wrong])))} / {_fmt(max(np.array(formula)[wrong]))}",
                        _fmt(auroc(fitted, right)),
                        _fmt(expected_calibration_error(fitted, right)),
                        f"{_fmt(float(np.mean(np.array(fitted)[wrong])))} / {_fmt(max(np.array(fitted)[wrong]))}",
                    ]
                )
                + " |"
            )
        now = np.array([[feature_value(o.features, f) for f in CALIBRATION_FEATURES] for o in found])
        before = now[:, : CALIBRATION_FEATURES.index("agreement_spaces")]
        agreeing = now[:, : CALIBRATION_FEATURES.index("centroid_log_odds")]
        own_odds = now[:, : CALIBRATION_FEATURES.index("centroid_log_odds_others")]
        cells = [space, f"{ms[space][0]:.1f}", f"{ms[space][1]:.1f}"]
        for x in (before, agreeing, own_odds, now):
            cells.append("{} / {}".format(*map(_fmt, cv_scores(x, right))))
        cells.append(_fmt(auroc([o.features["agreement_spaces"] or 0.0 for o in found], right)))
        for name in ("centroid_log_odds", "centroid_log_odds_others"):
            odds = [o.features[name] for o in found]
            cells.append("n/a" if None in odds else _fmt(auroc([float(v or 0.0) for v in odds], right)))
        calibrated.append("| " + " | ".join(cells) + " |")
        _, _, scores = fit_and_score(now, np.array(right, dtype=float), formula, FOLDS, space)
        assert abs((scores["cv_auroc"] or 0) - (cv_scores(now, right)[0] or 0)) < 1e-9  # the same as `calibrate`
    lines = [
        *provenance(("numpy",)),
        "",
        f"Style queries: {len(queries)} held-out pages ({len(set(truth))} artists), K = {K}; spaces measured: "
        f"{', '.join(spaces)}.",
        "",
        "Default confidence (no `calibrate` model), before (`default-v1`) and after (the space's own model):",
        "",
        *before_after,
        "",
        f"Calibrated confidence ({FOLDS}-fold cross-validated logistic model, as `calibrate` fits it):",
        "",
        *calibrated,
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
