"""Indicators tried for the learned spaces' confidence: what each adds to the six that ``calibrate`` fitted on before
revision 0016 (5-fold cross-validated AUROC and ECE, as ``calibrate``), on the font-family benchmark's style queries.
The centroid log-odds was built (revision 0016); the others were not.

- reliability of the reported artist: how often the space was right when it named that artist, from a
  cross-validation over the catalogue's content groups (each group's works attributed against the others, the
  projection refitted without them; Laplace-smoothed);
- competence of the neighbourhood: the share of the query's K nearest works whose own cross-validated answer was
  right;
- one 0/1 agreement per other space instead of the share of agreeing spaces (``agreement_spaces``);
- the share of agreeing spaces weighted by each space's hit@1 on these very queries (an oracle no request has);
- class centroids, which use all of an artist's works rather than the K nearest (second table, every space): per
  artist the mean of its catalogue works' unit vectors in the space (in ``fused``, the weighted mean of the cosines
  to the content and style centroids, as a fused similarity); for a query, the cosine to the reported artist's
  centroid, its margin over the best other artist's, and 0/1 "the nearest centroid is the reported artist's"; in a
  learned space also the reported artist's log-odds under a softmax of ``-||r - mu||^2 / 2`` over the centroids
  ``mu`` of the works' projected coordinates ``r`` (before they are made unit), taking the projection's own
  whitening (of the shrunk within-artist scatter) as the covariance, and the centroid log-odds that requests record
  since revision 0016 and ``calibrate`` fits on (the same with the pooled within-artist covariance measured in the
  projected coordinates: ``ArtistCentroids``).

The queries are attributed through the product's own Attributor (not logged); results go to docs/quality.md.
"""

from __future__ import annotations

import numpy as np
from bench_confidence import FOLDS, cv_scores
from bench_quality import K
from benchlib import cached_query_vectors, provenance, publish, style_queries_parser

from attribution_audit.config import load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, feature_value
from attribution_audit.domain.indicators import request_indicators
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import CONTENT, STYLE
from attribution_audit.domain.projection import content_groups, fit_lda, join_bases, unit_rows
from attribution_audit.domain.results import Outcome
from attribution_audit.domain.spaces import LEARNED_BASES, LearnedSpace, QueryVectors, Space
from attribution_audit.evaluation.metrics import auroc
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.labelled import read_labelled

NAME = "bench_indicators"
BASE_SPACES = ("content", "style", "fused")
SIX = CALIBRATION_FEATURES[: CALIBRATION_FEATURES.index("centroid_log_odds")]  # what ``calibrate`` fitted before it


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


def centroid_columns(sims: np.ndarray, artists: list[str], tops: list[str | None]) -> np.ndarray:
    """Per query (rows of ``sims``, its similarity to each artist's centroid, columns in ``artists``' order): the
    similarity to the reported artist's centroid, its margin over the best other centroid's and 0/1 "the nearest
    centroid is the reported artist's"; a reported artist without a centroid scores -1, -2 and 0."""
    out = np.tile([-1.0, -2.0, 0.0], (len(tops), 1))
    for i, top in enumerate(tops):
        if top in artists:
            t = artists.index(top)
            other = float(np.delete(sims[i], t).max()) if len(artists) > 1 else -1.0
            out[i] = sims[i, t], sims[i, t] - other, float(int(np.argmax(sims[i])) == t)
    return out


def centroids(vectors: np.ndarray, labels: np.ndarray, artists: list[str]) -> np.ndarray:
    """Each artist's mean vector (rows in ``artists``' order)."""
    return np.vstack([vectors[labels == a].mean(axis=0) for a in artists])


def projection_posterior(raw: np.ndarray, means: np.ndarray, artists: list[str], tops: list[str | None]) -> np.ndarray:
    """The reported artist's log-odds under a softmax of ``-||r - mu||^2 / 2`` over the centroids, taking the
    projection's own whitening (of the shrunk within-artist scatter) as the covariance, clipped to +-30, per query
    (``raw``: the projected coordinates)."""
    logits = -0.5 * ((raw[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    out = np.full((len(tops), 1), -30.0)
    for i, top in enumerate(tops):
        if top in artists:
            t = artists.index(top)
            others = np.delete(logits[i], t)
            out[i] = np.clip(logits[i, t] - others.max() - np.log(np.exp(others - others.max()).sum()), -30, 30)
    return out


def centroid_features(
    space: Space, bases: dict[str, np.ndarray], labels: np.ndarray, queries: list[QueryVectors], tops: list[str | None]
) -> np.ndarray:
    """The centroid columns of each query in a space: :func:`centroid_columns`, and in a learned space
    :func:`projection_posterior` too."""
    artists = sorted(set(labels.tolist()))
    if isinstance(space, LearnedSpace):
        rows = join_bases([bases[b] for b in space.bases])
        asked = join_bases([np.vstack([q.of(b) for q in queries]) for b in space.bases])
        raw = space.projection.coordinates(rows)
        sims = space.project(queries) @ unit_rows(centroids(unit_rows(raw), labels, artists)).T
        posterior = projection_posterior(
            space.projection.coordinates(asked), centroids(raw, labels, artists), artists, tops
        )
        return np.hstack([centroid_columns(sims, artists, tops), posterior])
    weights = AttributionParams().weights
    total = np.zeros((len(queries), len(artists)))
    for base in space.bases:
        means = unit_rows(centroids(unit_rows(bases[base]), labels, artists))
        total += weights[base] * (unit_rows(np.vstack([q.of(base) for q in queries])) @ means.T)
    return centroid_columns(total / sum(weights[b] for b in space.bases), artists, tops)


def _cells(x: np.ndarray, right: list[bool]) -> str:
    cv_auroc, ece = cv_scores(x, right)
    return f"{cv_auroc or 0:.3f} / {ece:.3f}"


def main() -> None:
    args = style_queries_parser(__doc__).parse_args()
    settings = load_settings(data_dir=args.data_dir)
    audit = open_audit(settings)
    queries = read_labelled(args.bench / "style_queries.csv")
    learned = [s for s in args.learned.split(",") if s]
    vectors = cached_query_vectors(args.vectors)
    found: dict[str, list[Outcome]] = {}
    searched: dict[str, Space] = {}
    with open_attributor(settings, audit, settings.embedder) as attributor:
        truth = [attributor.canonical.get(q.artist, q.artist) for q in queries]
        for space in (*BASE_SPACES, *learned):
            params = attributor.space_of(AttributionParams(k=K, verify="off", space=space))[1]
            found[space] = [attributor.compute(v, params) for v in vectors]
            searched[space] = attributor.space_of(params)[0]
        points = list(attributor.store.iter_points())
        labels = np.array([attributor.canonical.get(a, a) for a in (str(p.payload.get("artist", "")) for p in points)])
        stored = [QueryVectors(p.vector, p.style) for p in points]
        bases = {base: np.vstack([v.of(base) for v in stored]) for base in (CONTENT, STYLE)}
    spaces = list(found)
    tops = {s: np.array([o.top_artist for o in found[s]], dtype=object) for s in spaces}
    hit1 = {s: float(np.mean(tops[s] == np.array(truth, dtype=object))) for s in spaces}
    table = [
        "| space | right top artist | the six (`calibrate` before revision 0016): CV AUROC / ECE | + reliability of "
        "the reported artist (alone: AUROC) | + competence of the 10 nearest works (alone) | + one agreement per "
        "other space | agreement share weighted by hit@1 on the queries (oracle), instead of the share |",
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
        six = np.array([[feature_value(o.features, f) for f in SIX] for o in found[space]])
        trust = np.array([[reliability.get(str(o.top_artist), 0.5)] for o in found[space]])
        projection = fit_lda(rows, labels.tolist(), shrinkage)
        queried = join_bases([np.vstack([v.of(b) for v in vectors]) for b in LEARNED_BASES[info[0].base]])
        nearest = np.argsort(-(projection.apply(queried) @ projection.apply(rows).T), axis=1)[:, :K]
        competence = right_there[nearest].mean(axis=1, keepdims=True).astype(float)
        others = [s for s in spaces if s != space]
        agree = np.array([[float(tops[s][i] == tops[space][i]) for s in others] for i in range(len(truth))])
        weights = np.array([hit1[s] for s in others])
        weighted = six.copy()
        weighted[:, SIX.index("agreement_spaces")] = agree @ weights / weights.sum()
        table.append(
            f"| {space} | {sum(right)} / {len(right)} | {_cells(six, right)} | {_cells(np.hstack([six, trust]), right)}"
            f" ({auroc(trust[:, 0].tolist(), right):.3f}) | {_cells(np.hstack([six, competence]), right)} "
            f"({auroc(competence[:, 0].tolist(), right):.3f}) | {_cells(np.hstack([six, agree]), right)} | "
            f"{_cells(weighted, right)} |"
        )
    centred = [
        "| space | right top artist | the six: CV AUROC / ECE | + similarity to the reported artist's centroid "
        "(alone: AUROC) | + its margin over the best other centroid (alone) | + nearest centroid is the reported "
        "artist's, 0/1 (alone) | + log-odds of the reported artist, the projection's whitening as covariance "
        "(alone) | + centroid log-odds, pooled within-artist covariance (built: `calibrate` now; alone) | + all of "
        "these |",
        "|" + "---|" * 9,
    ]
    for space in spaces:
        right = [o.top_artist == t for o, t in zip(found[space], truth, strict=True)]
        reported = [o.top_artist for o in found[space]]
        six = np.array([[feature_value(o.features, f) for f in SIX] for o in found[space]])
        columns = centroid_features(searched[space], bases, labels, vectors, reported)
        if isinstance(searched[space], LearnedSpace):  # the product's own, recorded by the request
            built = [[feature_value(o.features, "centroid_log_odds")] for o in found[space]]
            columns = np.hstack([columns, built])
        cells = [space, f"{sum(right)} / {len(right)}", _cells(six, right)]
        for j in range(5):
            if j >= columns.shape[1]:
                cells.append("n/a")
                continue
            alone = auroc(columns[:, j].tolist(), right)
            cells.append(f"{_cells(np.hstack([six, columns[:, [j]]]), right)} ({alone or 0:.3f})")
        cells.append(_cells(np.hstack([six, columns]), right))
        centred.append("| " + " | ".join(cells) + " |")
    lines = [
        *provenance(("numpy",)),
        "",
        f"Style queries: {len(queries)} held-out pages ({len(set(truth))} artists), K = {K}, {FOLDS}-fold CV; "
        f"spaces attributed: {', '.join(spaces)}.",
        "",
        *table,
        "",
        "Class centroids (every space; the last two columns in the learned spaces' projected coordinates):",
        "",
        *centred,
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
