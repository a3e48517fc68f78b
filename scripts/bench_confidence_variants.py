"""What else could lift the calibrated confidence of a learned space (font-family benchmark, issue #16): variants of
the centroid log-odds indicators and of the calibrator, each scored like ``calibrate`` (5-fold cross-validated
logistic model over every recorded indicator, AUROC and ECE of "top artist right"); results go to docs/quality.md
between this script's markers.

Variants of the two log-odds indicators (the space's own and the mean over the other learned spaces; everything else
as recorded): a looser bound (100, none) instead of +-30; a temperature T (the artists' logits divided by T); the
centroids' model with its pooled covariance shrunk halfway to a multiple of the identity, or fitted on the unit
sphere the search uses. Added indicators: the Mahalanobis distance of the query to the nearest centroid (an
"unlike every work" signal) and the top artist's own rate of right answers (learned on the training folds only).
Other calibrators on the recorded indicators: squared terms, ranks. The queries are attributed through the
product's own Attributor (not logged).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from bench_confidence import FOLDS, cv_scores
from bench_quality import K
from benchlib import cached_query_vectors, provenance, publish, style_queries_parser

from attribution_audit.config import load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, feature_value, fit_logistic
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.projection import EPS, RIDGE, unit_rows
from attribution_audit.domain.spaces import LearnedSpace, QueryVectors
from attribution_audit.evaluation.calibration import cross_validated, expected_calibration_error
from attribution_audit.evaluation.metrics import auroc
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.labelled import read_labelled

NAME = "bench_confidence_variants"
OWN, OTHERS = CALIBRATION_FEATURES.index("centroid_log_odds"), CALIBRATION_FEATURES.index("centroid_log_odds_others")


class Centroids:
    """The artists' Gaussian model of a learned space (as ``ArtistCentroids``), with a covariance shrinkage and an
    option to fit and score on unit vectors."""

    def __init__(self, coordinates: np.ndarray, labels: list[str], shrink: float = 0.0, sphere: bool = False) -> None:
        self.sphere = sphere
        x = unit_rows(coordinates) if sphere else np.asarray(coordinates, dtype=np.float64)
        self.artists, y = np.unique(np.asarray(labels), return_inverse=True)
        self.centres = np.vstack([x[y == a].mean(axis=0) for a in range(len(self.artists))])
        covariance = np.cov((x - self.centres[y]).T, ddof=len(self.artists))
        scale = np.trace(covariance) / len(covariance)
        covariance = (1 - shrink) * covariance + (shrink * scale + RIDGE * (scale + EPS)) * np.eye(len(covariance))
        self.whitening = np.linalg.cholesky(np.linalg.inv(covariance))

    def logits(self, query: np.ndarray) -> np.ndarray:
        point = unit_rows(query[None])[0] if self.sphere else query
        found: np.ndarray = -0.5 * (((point - self.centres) @ self.whitening) ** 2).sum(axis=1)
        return found


def log_odds(logits: np.ndarray, index: int, temperature: float = 1.0, bound: float = 30.0) -> float:
    """The log-odds of artist ``index`` against all others under the softmax of ``logits / temperature``."""
    scaled = logits / temperature
    others = np.delete(scaled, index)
    rest = others.max() + np.log(np.exp(others - others.max()).sum())
    return float(np.clip(scaled[index] - rest, -bound, bound))


def rate_of_top_artist(x: np.ndarray, right: list[bool], tops: list[str]) -> tuple[float | None, float]:
    """CV AUROC / ECE with the top artist's rate of right answers as an added indicator, counted on the training
    folds only (each training query's own answer left out of its rate; Laplace-smoothed)."""
    names = tuple(f"f{i}" for i in range(x.shape[1] + 1))
    indexed = np.hstack([x, np.arange(len(x))[:, None]])

    def fitter(xs: np.ndarray, ys: np.ndarray) -> Callable[[np.ndarray], float]:
        counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for i, y in zip(xs[:, -1].astype(int), ys, strict=True):
            counts[tops[i]][0] += y
            counts[tops[i]][1] += 1
        own = [
            (counts[tops[int(i)]][0] - y + 1) / (counts[tops[int(i)]][1] + 1)
            for i, y in zip(xs[:, -1], ys, strict=True)
        ]
        model = fit_logistic(np.hstack([xs[:, :-1], np.array(own)[:, None]]), ys, names=names)

        def predict(row: np.ndarray) -> float:
            hits, n = counts[tops[int(row[-1])]]
            return model.predict(dict(zip(names, [*row[:-1].tolist(), (hits + 1) / (n + 2)], strict=True)))

        return predict

    predicted = cross_validated(indexed, np.array(right, dtype=float), fitter, FOLDS).tolist()
    return auroc(predicted, right), expected_calibration_error(predicted, right)


def main() -> None:
    parser = style_queries_parser(__doc__)
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    audit = open_audit(settings)
    queries = read_labelled(args.bench / "style_queries.csv")
    learned = [s for s in args.learned.split(",") if s]
    variants: dict[str, dict[str, Centroids]] = {}
    with open_attributor(settings, audit, settings.embedder) as attributor:
        vectors = cached_query_vectors(args.vectors)
        truth = [attributor.canonical.get(q.artist, q.artist) for q in queries]
        points = list(attributor.store.iter_points())
        labels = [attributor.canonical.get(str(p.payload["artist"]), str(p.payload["artist"])) for p in points]
        coordinates, places = {}, {}
        for name in learned:
            space = attributor.space_of(AttributionParams(space=name))[0]
            assert isinstance(space, LearnedSpace)
            works = space.coordinates([QueryVectors(p.vector, p.style) for p in points])
            coordinates[name], places[name] = works, space.coordinates(vectors)
            variants[name] = {
                "stored": Centroids(works, labels),
                "shrunk": Centroids(works, labels, shrink=0.5),
                "sphere": Centroids(works, labels, sphere=True),
            }
        answers = {}
        for name in ["content", *learned]:
            params = attributor.space_of(AttributionParams(k=K, verify="off", space=name))[1]
            answers[name] = [attributor.compute(vector, params) for vector in vectors]

    def odds_columns(x: np.ndarray, space: str, tops: list[str | None], model: str, **kw: float) -> np.ndarray:
        changed = x.copy()
        for i, top in enumerate(tops):
            values = {}
            for other in learned:
                centroids = variants[other][model]
                if top in centroids.artists:
                    index = int(np.flatnonzero(centroids.artists == top)[0])
                    values[other] = log_odds(centroids.logits(places[other][i]), index, **kw)
            floor = -kw.get("bound", 30.0)
            rest = [v for o, v in values.items() if o != space]
            changed[i, OWN] = values.get(space, floor) if space in learned else floor
            changed[i, OTHERS] = float(np.mean(rest)) if rest else floor
        return changed

    rows = [
        "| variant | " + " | ".join(["content", *learned]) + " |",
        "|---|" + "---|" * (1 + len(learned)),
    ]
    table: dict[str, list[str]] = defaultdict(list)
    for space in ["content", *learned]:
        found = answers[space]
        right = [o.top_artist == t for o, t in zip(found, truth, strict=True)]
        tops = [o.top_artist for o in found]
        x = np.array([[feature_value(o.features, f) for f in CALIBRATION_FEATURES] for o in found])
        z = (x - x.mean(axis=0)) / np.where(x.std(axis=0) == 0, 1.0, x.std(axis=0))
        distance = np.array(
            [
                np.sqrt(-2 * variants[space]["stored"].logits(places[space][i]).max()) if space in learned else 0.0
                for i in range(len(found))
            ]
        )
        tried = {
            "as recorded (bound 30)": x,
            "recomputed as stored (checks the recomputation)": odds_columns(x, space, tops, "stored"),
            "bound 100": odds_columns(x, space, tops, "stored", bound=100.0),
            "no bound": odds_columns(x, space, tops, "stored", bound=1e9),
            "temperature 3": odds_columns(x, space, tops, "stored", temperature=3.0),
            "temperature 10": odds_columns(x, space, tops, "stored", temperature=10.0),
            "covariance shrunk halfway to the identity": odds_columns(x, space, tops, "shrunk"),
            "centroids on the unit sphere": odds_columns(x, space, tops, "sphere"),
            "+ Mahalanobis distance to the nearest centroid": np.hstack([x, distance[:, None]]),
            "+ squared terms (quadratic calibrator)": np.hstack([z, z**2]),
            "ranks of the indicators": np.argsort(np.argsort(x, axis=0), axis=0) / len(x),
        }
        for variant, columns in tried.items():
            table[variant].append("{:.3f} / {:.3f}".format(*cv_scores(columns, right)))
        table["+ the top artist's rate of right answers (training folds)"].append(
            "{:.3f} / {:.3f}".format(*rate_of_top_artist(x, [bool(r) for r in right], [str(t) for t in tops]))
        )
    rows += [f"| {variant} | " + " | ".join(cells) + " |" for variant, cells in table.items()]
    lines = [
        *provenance(("numpy",)),
        "",
        f"Style queries: {len(queries)}, K = {K}; {FOLDS}-fold CV AUROC / ECE of `calibrate`'s model per space "
        "(the learned spaces' own and other-space log-odds recomputed per variant; in content only the other-space "
        "mean applies):",
        "",
        *rows,
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
