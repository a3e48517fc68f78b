"""Metrics of an evaluation, computed from per-query outcomes only (so a past run can be recomputed from SQL).

Definitions follow the research note: hit rate@K (at least one of the K neighbours is by the true artist),
work-level precision@K / recall@K against the true inspiration works, artist-level precision@K (share of the K
neighbours by the true artist) and recall@K (share of the true artist's catalogue works among the K), per-image
K = number of true works (precision = recall), Mann-Whitney U tests of artist entropy and nearest-neighbour
distance between classes (Table 1), and the quality of the confidence score.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribution_audit.domain.confidence import LOGGED_INDICATORS, LogisticModel, confidence, default_model_name
from attribution_audit.domain.indicators import artist_entropy, request_indicators
from attribution_audit.domain.params import AttributionParams

ECE_BINS = 10
# the logged indicators that depend on the query and the reported artist only
OF_THE_ARTIST = ("centroid_log_odds", "centroid_log_odds_others", "crop_log_odds")


@dataclass(frozen=True)
class QueryOutcome:
    """One labelled query's ranked neighbours (canonical artists) and, when measured, HNSW vs exact ids/times."""

    query_id: int
    path: str
    true_artist: str
    true_works: tuple[str, ...]
    subset: str | None
    artists: list[str]
    work_ids: list[str]
    similarities: list[float]
    hnsw_ids: list[str] = field(default_factory=list)
    exact_ids: list[str] = field(default_factory=list)
    hnsw_ms: float | None = None
    exact_ms: float | None = None
    artist_works: int | None = None  # works by the true artist in the catalogue when the run started
    top_artist: str | None = None  # the logged request's reported artist: the ``centroid`` rule's does not depend on K
    recorded_k: int | None = None  # the logged request's K
    logged: dict[str, float | None] = field(default_factory=dict)  # its indicators of ``LOGGED_INDICATORS``

    def k_for(self, fixed_k: int) -> int:
        """Per-image K: the number of true works when known, else ``fixed_k``."""
        return len(self.true_works) if self.true_works else fixed_k


def hit_rate(outcomes: Sequence[QueryOutcome], k: int) -> float:
    return float(np.mean([o.true_artist in o.artists[:k] for o in outcomes])) if outcomes else math.nan


def artist_precision(outcomes: Sequence[QueryOutcome], k: int) -> float:
    values = [sum(a == o.true_artist for a in o.artists[:k]) / k for o in outcomes]
    return float(np.mean(values)) if values else math.nan


def artist_recall(outcomes: Sequence[QueryOutcome], k: int) -> float:
    """Mean share of the true artist's catalogue works among the first K neighbours, over the queries whose artist
    has works in the catalogue."""
    counted = [o for o in outcomes if o.artist_works]
    values = [
        min(sum(a == o.true_artist for a in o.artists[:k]), o.artist_works or 0) / (o.artist_works or 1)
        for o in counted
    ]
    return float(np.mean(values)) if values else math.nan


def work_precision_recall(outcomes: Sequence[QueryOutcome], k: int) -> tuple[float, float]:
    """Mean work-level precision@K and recall@K over the queries that have true works."""
    labelled = [o for o in outcomes if o.true_works]
    if not labelled:
        return math.nan, math.nan
    hits = [len(set(o.work_ids[:k]) & set(o.true_works)) for o in labelled]
    precision = np.mean([h / k for h in hits])
    recall = np.mean([h / len(o.true_works) for h, o in zip(hits, labelled, strict=True)])
    return float(precision), float(recall)


def per_image_k(outcomes: Sequence[QueryOutcome]) -> dict[str, float]:
    """K = number of true works of each image: precision = recall (the note's Figure 13), and artist precision."""
    labelled = [o for o in outcomes if o.true_works]
    short = sum(1 for o in labelled if len(o.work_ids) < len(o.true_works))
    if not labelled or short:  # a run recorded fewer neighbours than a query has true works: no honest value
        nan = math.nan
        return {"queries": len(labelled), "short": short, "precision": nan, "artist_precision": nan, "hit_rate": nan}
    precision = [len(set(o.work_ids[: len(o.true_works)]) & set(o.true_works)) / len(o.true_works) for o in labelled]
    artists = [sum(a == o.true_artist for a in o.artists[: len(o.true_works)]) / len(o.true_works) for o in labelled]
    hits = [o.true_artist in o.artists[: len(o.true_works)] for o in labelled]
    return {
        "queries": len(labelled),
        "short": 0,
        "precision": float(np.mean(precision)),
        "artist_precision": float(np.mean(artists)),
        "hit_rate": float(np.mean(hits)),
    }


def curves(outcomes: Sequence[QueryOutcome], k_max: int) -> list[dict[str, float]]:
    """One row per K = 1..k_max: hit rate, artist precision and recall, work precision and recall."""
    rows = []
    for k in range(1, k_max + 1):
        precision, recall = work_precision_recall(outcomes, k)
        rows.append(
            {
                "k": k,
                "hit_rate": hit_rate(outcomes, k),
                "artist_precision": artist_precision(outcomes, k),
                "artist_recall": artist_recall(outcomes, k),
                "work_precision": precision,
                "work_recall": recall,
            }
        )
    return rows


def _indicators(o: QueryOutcome, k: int) -> tuple[float, float]:
    return artist_entropy(o.artists[:k]), 1.0 - o.similarities[0]


def _mann_whitney(values: list[float], positive: list[bool]) -> dict[str, float | int | None]:
    """Two-sided Mann-Whitney U between the positive and negative class, and the AUROC of a *low* value for the
    positive class (1.0: every positive is below every negative)."""
    from scipy.stats import mannwhitneyu

    pos = [v for v, p in zip(values, positive, strict=True) if p]
    neg = [v for v, p in zip(values, positive, strict=True) if not p]
    cell: dict[str, float | int | None] = {"n_positive": len(pos), "n_negative": len(neg), "p_value": None}
    cell["auroc"] = auroc([-v for v in values], positive)
    if pos and neg and len(set(values)) > 1:
        test = mannwhitneyu(pos, neg, alternative="two-sided")
        cell["u"], cell["p_value"] = float(test.statistic), float(test.pvalue)
    return cell


TABLE1_CLASSES: dict[str, Callable[[QueryOutcome, int], bool]] = {
    "true_artist_present": lambda o, k: o.true_artist in o.artists[:k],
    "nn_by_true_artist": lambda o, k: bool(o.artists) and o.artists[0] == o.true_artist,
    "only_true_artist": lambda o, k: bool(o.artists[:k]) and set(o.artists[:k]) == {o.true_artist},
}


def table1(outcomes: Sequence[QueryOutcome], fixed_k: int) -> dict[str, dict[str, Any]]:
    """The note's Table 1: for each hypothesis (row) and class split (column), Mann-Whitney p and AUROC.

    K is per image (number of true works) when known, else ``fixed_k``. Diversity against "only the true artist"
    is N/A: that class has entropy 0 by definition.
    """
    usable = [o for o in outcomes if o.artists]
    ks = [o.k_for(fixed_k) for o in usable]
    entropy = [_indicators(o, k)[0] for o, k in zip(usable, ks, strict=True)]
    distance = [_indicators(o, k)[1] for o, k in zip(usable, ks, strict=True)]
    table: dict[str, dict[str, Any]] = {"diversity": {}, "distance": {}}
    for name, rule in TABLE1_CLASSES.items():
        labels = [rule(o, k) for o, k in zip(usable, ks, strict=True)]
        table["diversity"][name] = None if name == "only_true_artist" else _mann_whitney(entropy, labels)
        table["distance"][name] = _mann_whitney(distance, labels)
    return table


def features_at(
    o: QueryOutcome, k: int, shares: str = "equal", temperature: float = 0.05, top: str = "share"
) -> tuple[dict[str, float | None], str | None, tuple[str, ...]]:
    """The confidence features and the top artist of the first k neighbours under the ``top`` rule, measured as a
    request with those parameters measures them (:func:`request_indicators`; margin over all recorded candidates),
    and the indicators that read other spaces or centroids (``LOGGED_INDICATORS``) which the logged request does
    not tell at K: unknown, left out of the features. The others are the logged request's, exactly what a request
    at K records: the centroid log-odds (in its space and in the other learned spaces) of the query and the
    reported artist, when the top artist at K is the logged one; the agreements, which read the other spaces'
    answers at K, when K is the logged request's K too."""
    params = AttributionParams(k=k, shares=shares, temperature=temperature, top=top)
    ranked = list(zip(o.artists, o.similarities, strict=True))
    _, _, features, _, chosen = request_indicators(ranked, str, params, o.top_artist)
    if chosen is None:  # no top artist: a request measures none of them
        return {**features, **dict.fromkeys(LOGGED_INDICATORS)}, chosen, ()
    known = {
        name: chosen == o.top_artist and (name in OF_THE_ARTIST or k == o.recorded_k) for name in LOGGED_INDICATORS
    }
    features.update({name: o.logged.get(name) for name, logged in known.items() if logged})
    return features, chosen, tuple(name for name, logged in known.items() if not logged)


def scored_confidence(
    o: QueryOutcome, k: int, model: LogisticModel | None, shares: str, temperature: float, top: str
) -> tuple[float | None, str | None, tuple[str, ...]]:
    """The confidence at K that a request under the ``top`` rule records (the model, else the rule's default
    formula) and the top artist it scores; no confidence, and the indicators it lacks, when the model reads one
    that :func:`features_at` does not know (the default formulas read none)."""
    features, chosen, unknown = features_at(o, k, shares, temperature, top)
    lacking = tuple(name for name in unknown if model is not None and model.weight(name) != 0.0)
    return (None if lacking else confidence(model, features, top)[0]), chosen, lacking


def confidence_quality(
    outcomes: Sequence[QueryOutcome],
    k: int,
    model: LogisticModel | None,
    shares: str = "equal",
    temperature: float = 0.05,
    top: str = "share",
) -> dict[str, Any]:
    """How well confidence at K predicts "top artist correct": AUROC, Brier score, expected calibration error, over
    the queries whose confidence at K is known; ``unavailable`` counts the others (left out, not scored with a
    made-up value) and ``unavailable_indicators`` how many lacked each indicator."""
    scores, correct, lacked = [], [], Counter[str]()
    for o in outcomes:
        if o.artists:
            score, chosen, lacking = scored_confidence(o, k, model, shares, temperature, top)
            lacked.update(lacking)
            if score is None:
                continue
            scores.append(score)
            correct.append(chosen == o.true_artist)
    missing: dict[str, Any] = {
        "unavailable": sum(1 for o in outcomes if o.artists) - len(scores),
        "unavailable_indicators": dict(sorted(lacked.items())),
    }
    if not scores:
        return {"queries": 0, "auroc": None, "brier": None, "ece": None, "accuracy": None, **missing}
    s, y = np.array(scores), np.array(correct, dtype=float)
    bins = np.minimum((s * ECE_BINS).astype(int), ECE_BINS - 1)
    ece = sum(
        abs(s[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean()
        for b in range(ECE_BINS)
        if (bins == b).any()
    )
    return {
        "queries": len(s),
        "accuracy": float(y.mean()),
        "auroc": auroc(scores, correct),
        "brier": float(np.mean((s - y) ** 2)),
        "ece": float(ece),
        **missing,
    }


def ann_vs_exact(outcomes: Sequence[QueryOutcome], ks: Sequence[int]) -> dict[str, Any]:
    """Recall@K of HNSW against exact search, and per-query latency of each (the note's appendix 1)."""
    measured = [o for o in outcomes if o.exact_ids and o.hnsw_ms is not None and o.exact_ms is not None]
    if not measured:
        return {"queries": 0}
    recall = {
        str(k): float(
            np.mean([len(set(o.hnsw_ids[:k]) & set(o.exact_ids[:k])) / min(k, len(o.exact_ids)) for o in measured])
        )
        for k in ks
    }
    hnsw = np.array([o.hnsw_ms for o in measured])
    exact = np.array([o.exact_ms for o in measured])
    return {
        "queries": len(measured),
        "recall_at_k": recall,
        "hnsw_ms": {"p50": float(np.median(hnsw)), "mean": float(hnsw.mean())},
        "exact_ms": {"p50": float(np.median(exact)), "mean": float(exact.mean())},
        "exact_over_hnsw_p50": float(np.median(exact) / max(np.median(hnsw), 1e-9)),
    }


def evaluate(
    outcomes: Sequence[QueryOutcome],
    k_max: int,
    k: int,
    model: LogisticModel | None,
    shares: str = "equal",
    top: str = "share",
) -> dict[str, Any]:
    """All metrics, overall and per subset."""

    def block(group: Sequence[QueryOutcome]) -> dict[str, Any]:
        return {
            "queries": len(group),
            "curves": curves(group, k_max),
            "per_image_k": per_image_k(group),
            "table1": table1(group, k),
            "confidence": confidence_quality(group, k, model, shares, top=top),
        }

    subsets = sorted({o.subset for o in outcomes if o.subset})
    result: dict[str, Any] = finite(
        {
            "k_max": k_max,
            "k": k,
            "confidence_model": model.name if model else default_model_name(top),
            "overall": block(outcomes),
            "subsets": {s: block([o for o in outcomes if o.subset == s]) for s in subsets},
            "ann_vs_exact": ann_vs_exact(outcomes, sorted({1, min(10, k_max), k_max})),
        }
    )
    return result


def finite(value: Any) -> Any:
    """NaN and infinities become None, so the metrics are valid JSON (PostgreSQL rejects NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (probability a positive scores above a negative; ties count half)."""
    from scipy.stats import rankdata

    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def rate_upper_bound(hits: int, trials: int, level: float = 0.95) -> float | None:
    """The one-sided exact (Clopper-Pearson) upper confidence bound of a rate of ``hits`` in ``trials``: 0 of 320
    bounds the true rate by 0.0093 at 95 %. None without trials."""
    from scipy.stats import beta

    if trials == 0:
        return None
    return 1.0 if hits >= trials else float(beta.ppf(level, hits + 1, trials - hits))
