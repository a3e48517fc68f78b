"""The evaluation: every metric on a small hand-made set of outcomes against hand computations, then the real
pipeline end to end (``evaluate run`` -> outputs and tagged audit records -> ``evaluate report`` = run), the noise
experiment on a scratch collection (the production collection untouched), and query set imports."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import EMBEDDER as MODEL
from conftest import Cli, Ingested, ingest_once
from PIL import Image
from scipy.stats import mannwhitneyu
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from attribution_audit.config import load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, LOGGED_INDICATORS, LogisticModel
from attribution_audit.domain.indicators import artist_entropy, confidence_score
from attribution_audit.domain.params import MAX_K
from attribution_audit.domain.shares import DEFAULT_TEMPERATURE
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import AttributionAuditError, ManifestError, NotFoundError
from attribution_audit.evaluation.content_bias import ContentPairs, content_bias
from attribution_audit.evaluation.metrics import (
    QueryOutcome,
    ann_vs_exact,
    artist_precision,
    artist_recall,
    confidence_quality,
    curves,
    evaluate,
    features_at,
    finite,
    hit_rate,
    per_image_k,
    scored_confidence,
    table1,
    work_precision_recall,
)
from attribution_audit.evaluation.outputs import write_content_bias_outputs, write_outputs
from attribution_audit.services.evaluate import import_query_set, load_outcomes
from attribution_audit.sources.synthetic import DemoCatalogue, draw_work, make_demo_catalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.evaluations import CalibrationEvidence
from attribution_audit.store.models import (
    Artist,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
    Catalogue,
    EvaluationResult,
    EvaluationRun,
    LabelledQueryRecord,
    QuerySet,
    Work,
)
from attribution_audit.store.vectors import open_store
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

# -- a hand-made labelled set ------------------------------------------------------------------------------------
# Per-image K (number of true works, else the fixed K = 3) and what the first K neighbours say:
#   o1  A, works a1 a2 -> K 2: [A, A]     present, NN by A, only A   entropy 0     NN distance 0.10
#   o2  A, works a2 a4 -> K 2: [B, A]     present                    entropy 1     NN distance 0.15
#   o3  B, no works    -> K 3: [B, A, B]  present, NN by B           entropy H3    NN distance 0.20
#   o4  C, works c1 c2 -> K 2: [A, B]     -                          entropy 1     NN distance 0.50
#   o5  B, works b1    -> K 1: [B]        present, NN by B, only B   entropy 0     NN distance 0.30
O1 = QueryOutcome(1, "q1.png", "A", ("a1", "a2"), "s1", ["A", "A", "B"], ["a1", "a3", "b1"], [0.9, 0.8, 0.7])
O2 = QueryOutcome(2, "q2.png", "A", ("a2", "a4"), "s1", ["B", "A", "A"], ["b1", "a2", "a1"], [0.85, 0.55, 0.5])
O3 = QueryOutcome(3, "q3.png", "B", (), "s2", ["B", "A", "B"], ["b1", "a1", "b2"], [0.8, 0.7, 0.6])
O4 = QueryOutcome(4, "q4.png", "C", ("c1", "c2"), "s2", ["A", "B", "A"], ["a1", "b2", "a3"], [0.5, 0.4, 0.3])
O5 = QueryOutcome(5, "q5.png", "B", ("b1",), None, ["B", "B", "A"], ["b2", "b1", "a1"], [0.7, 0.65, 0.6])
OUTCOMES = [O1, O2, O3, O4, O5]
H3 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3)  # entropy of [B, A, B]
ENTROPY = [0.0, 1.0, H3, 1.0, 0.0]
DISTANCE = [0.1, 0.15, 0.2, 0.5, 0.3]
CLASSES = {  # which of o1..o5 are in the positive class of each Table 1 column
    "true_artist_present": [True, True, True, False, True],
    "nn_by_true_artist": [True, False, True, False, True],
    "only_true_artist": [True, False, False, False, True],
}


def low_value_auroc(values: Sequence[float], positive: Sequence[bool]) -> float:
    """Share of (positive, negative) pairs where the positive value is the lower one; ties count half."""
    pos = [v for v, p in zip(values, positive, strict=True) if p]
    neg = [v for v, p in zip(values, positive, strict=True) if not p]
    wins = sum(1.0 if p < n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_hit_rate_by_hand() -> None:
    # A true artist among the first K: @1 o1 o3 o5; @2 also o2; @3 the same (o4's C never appears).
    assert hit_rate(OUTCOMES, 1) == pytest.approx(3 / 5)
    assert hit_rate(OUTCOMES, 2) == pytest.approx(4 / 5)
    assert hit_rate(OUTCOMES, 3) == pytest.approx(4 / 5)
    assert math.isnan(hit_rate([], 1))


def test_artist_precision_by_hand() -> None:
    # @1: 1, 0, 1, 0, 1; @2: 1, 1/2, 1/2, 0, 1; @3: 2/3, 2/3, 2/3, 0, 2/3
    assert artist_precision(OUTCOMES, 1) == pytest.approx(3 / 5)
    assert artist_precision(OUTCOMES, 2) == pytest.approx(3 / 5)
    assert artist_precision(OUTCOMES, 3) == pytest.approx((4 * 2 / 3) / 5)
    assert math.isnan(artist_precision([], 2))


def test_work_precision_recall_by_hand_and_without_true_works() -> None:
    # o3 has no true works and is left out. True works hit among the first K (o1, o2, o4, o5):
    #   @1: a1 | - | - | -            -> precision (1 + 0 + 0 + 0) / 4, recall (1/2 + 0 + 0 + 0) / 4
    #   @2: a1 | a2 | - | b1          -> precision (1/2 + 1/2 + 0 + 1/2) / 4, recall (1/2 + 1/2 + 0 + 1) / 4
    #   @3: a1 | a2 | - | b1          -> precision (1/3 + 1/3 + 0 + 1/3) / 4, recall as @2
    assert work_precision_recall(OUTCOMES, 1) == pytest.approx((1 / 4, 1 / 8))
    assert work_precision_recall(OUTCOMES, 2) == pytest.approx((3 / 8, 1 / 2))
    assert work_precision_recall(OUTCOMES, 3) == pytest.approx((1 / 4, 1 / 2))
    # A query without true works changes nothing; only such queries give no value at all.
    assert work_precision_recall([*OUTCOMES, O3, O3], 2) == work_precision_recall(OUTCOMES, 2)
    assert all(math.isnan(v) for v in work_precision_recall([O3], 2))


def test_per_image_k_precision_equals_recall() -> None:
    # K = number of true works: o1 K 2 [a1, a3] -> 1/2; o2 K 2 [b1, a2] -> 1/2; o4 K 2 -> 0; o5 K 1 [b2] -> 0.
    # Artist precision at that K: o1 [A, A] 1, o2 [B, A] 1/2, o4 0, o5 [B] 1. Hit rate: o1 o2 o5.
    result = per_image_k(OUTCOMES)
    expected = {"queries": 4, "short": 0, "precision": 1 / 4, "artist_precision": 5 / 8, "hit_rate": 3 / 4}
    assert result == pytest.approx(expected)
    for o in (O1, O2, O4, O5):  # per image, precision@K = recall@K when K = |true works|
        precision, recall = work_precision_recall([o], len(o.true_works))
        assert precision == pytest.approx(recall)
    assert per_image_k([O3])["queries"] == 0 and math.isnan(per_image_k([O3])["precision"])
    # A run that recorded fewer neighbours than a query's true works gives no per-image-K value, not a wrong one.
    short = QueryOutcome(6, "q6.png", "A", ("a1", "a2", "a3", "a4"), None, ["A", "A"], ["a1", "a2"], [0.9, 0.8])
    result = per_image_k([*OUTCOMES, short])
    assert result["short"] == 1 and math.isnan(result["precision"]) and math.isnan(result["hit_rate"])


def test_artist_recall_by_hand() -> None:
    # The true artist's catalogue works: A has 4, B has 2, C has 3; o3 (B) leaves out: its count is unknown.
    counted = [replace(o, artist_works=n) for o, n in zip(OUTCOMES, [4, 4, None, 3, 2], strict=True)]
    # By the true artist among the first K: o1 [A, A, B], o2 [B, A, A], o4 none, o5 [B, B, A].
    assert artist_recall(counted, 1) == pytest.approx((1 / 4 + 0 + 0 + 1 / 2) / 4)
    assert artist_recall(counted, 3) == pytest.approx((2 / 4 + 2 / 4 + 0 + 2 / 2) / 4)
    assert math.isnan(artist_recall(OUTCOMES, 3))  # no counts at all: no value
    assert curves(counted, 3)[2]["artist_recall"] == pytest.approx(0.5)


def test_curves_rows() -> None:
    rows = [{k: v for k, v in row.items() if k != "artist_recall"} for row in curves(OUTCOMES, 3)]
    assert [row["k"] for row in rows] == [1, 2, 3]
    assert rows[0] == pytest.approx(
        {"k": 1, "hit_rate": 3 / 5, "artist_precision": 3 / 5, "work_precision": 1 / 4, "work_recall": 1 / 8}
    )
    assert rows[1] == pytest.approx(
        {"k": 2, "hit_rate": 4 / 5, "artist_precision": 3 / 5, "work_precision": 3 / 8, "work_recall": 1 / 2}
    )
    assert rows[2] == pytest.approx(
        {"k": 3, "hit_rate": 4 / 5, "artist_precision": 8 / 15, "work_precision": 1 / 4, "work_recall": 1 / 2}
    )


def test_table1_classes_p_values_and_auroc() -> None:
    table = table1(OUTCOMES, fixed_k=3)
    assert set(table) == {"diversity", "distance"}
    assert table["diversity"]["only_true_artist"] is None  # N/A: that class has entropy 0 by definition
    counts = {"true_artist_present": (4, 1), "nn_by_true_artist": (3, 2), "only_true_artist": (2, 3)}
    # Hand AUROCs of a low value for the positive class. Distance:
    #   present: {.1 .15 .2 .3} vs {.5} -> 1; NN: {.1 .2 .3} vs {.15 .5} -> 4/6; only: {.1 .3} vs {.15 .2 .5} -> 4/6
    # Entropy: present: {0 1 H3 0} vs {1} -> (1 + 1/2 + 1 + 1) / 4; NN: {0 H3 0} vs {1 1} -> 1
    hand = {
        ("distance", "true_artist_present"): 1.0,
        ("distance", "nn_by_true_artist"): 2 / 3,
        ("distance", "only_true_artist"): 2 / 3,
        ("diversity", "true_artist_present"): 3.5 / 4,
        ("diversity", "nn_by_true_artist"): 1.0,
    }
    values = {"distance": DISTANCE, "diversity": ENTROPY}
    for (hypothesis, name), expected in hand.items():
        cell = table[hypothesis][name]
        labels = CLASSES[name]
        assert (cell["n_positive"], cell["n_negative"]) == counts[name]
        assert cell["auroc"] == pytest.approx(expected)
        assert cell["auroc"] == pytest.approx(low_value_auroc(values[hypothesis], labels))
        pos = [v for v, p in zip(values[hypothesis], labels, strict=True) if p]
        neg = [v for v, p in zip(values[hypothesis], labels, strict=True) if not p]
        test = mannwhitneyu(pos, neg, alternative="two-sided")
        assert cell["p_value"] == pytest.approx(float(test.pvalue))
        assert cell["u"] == pytest.approx(float(test.statistic))


def test_table1_degenerate_cells() -> None:
    # One class empty: no test, no AUROC. All values equal: no test, AUROC 1/2 (every pair a tie).
    everyone = table1([O1, O5], fixed_k=3)["distance"]["nn_by_true_artist"]
    assert everyone == {"n_positive": 2, "n_negative": 0, "p_value": None, "auroc": None}
    same = QueryOutcome(9, "q9.png", "A", (), None, ["B", "A"], ["b1", "a1"], [0.9, 0.8])
    tied = table1([O1, same], fixed_k=2)["distance"]["nn_by_true_artist"]  # both NN distances are 0.1
    assert tied["n_positive"] == 1 and tied["n_negative"] == 1
    assert tied["p_value"] is None and tied["auroc"] == pytest.approx(0.5)
    assert table1([], fixed_k=3)["distance"]["true_artist_present"]["n_positive"] == 0


def test_features_at_by_hand() -> None:
    """As a request measures them: the top artist (equal shares, ties to the closest work) and its share too; the
    indicators of other spaces and centroids are unknown without a logged request that tells them."""
    o2, top, unknown = features_at(O2, 2)
    assert top == "B" and o2 == pytest.approx(
        {"entropy": 1.0, "nn_distance": 0.15, "margin": 0.3, "top_share": 0.5, "top_distance": 0.15}
    )
    assert unknown == LOGGED_INDICATORS
    o1, top, _ = features_at(O1, 2)
    assert top == "A" and o1 == pytest.approx(
        {"entropy": 0.0, "nn_distance": 0.1, "margin": 0.2, "top_share": 1.0, "top_distance": 0.1}
    )
    empty = QueryOutcome(9, "q9.png", "A", (), None, [], [], [])
    none = {"entropy": 1.0, "nn_distance": None, "margin": None, "top_share": None, "top_distance": None}
    # no artist at K nor logged: a request records none of the others either
    assert features_at(empty, 3) == ({**none, **dict.fromkeys(LOGGED_INDICATORS)}, None, ())


LOGGED = {
    "agreement": 0.5,
    "agreement_spaces": 0.75,
    "centroid_log_odds": 2.0,
    "centroid_log_odds_others": None,
    "crop_log_odds": -1.5,
}
SAME_ARTIST = ("centroid_log_odds", "centroid_log_odds_others", "crop_log_odds")  # of the query and artist only


@pytest.mark.parametrize(
    ("logged_top", "recorded_k", "k", "top", "known"),
    [
        ("A", 3, 3, "share", LOGGED_INDICATORS),  # the logged request itself
        ("A", 3, 2, "share", SAME_ARTIST),  # same artist, another K
        ("B", 3, 2, "share", ()),  # at K = 2 the share rule names A, not the logged B
        ("B", 3, 3, "centroid", LOGGED_INDICATORS),  # the centroid rule's artist is the logged one at every K
        ("B", 3, 1, "centroid", SAME_ARTIST),
        ("A", None, 3, "share", SAME_ARTIST),  # K not logged
    ],
)
def test_features_at_takes_the_logged_indicators_only_where_a_request_at_k_records_the_same(
    logged_top: str, recorded_k: int | None, k: int, top: str, known: tuple[str, ...]
) -> None:
    """The centroid log-odds depend on the query and the reported artist, the agreements on K too: the logged values
    stand where both (or the artist alone) are the logged request's; the rest are unknown, not a made-up value
    (None logged stays None: a request records none either)."""
    logged = replace(O1, top_artist=logged_top, recorded_k=recorded_k, logged=LOGGED)  # A A B at 0.9 0.8 0.7
    features, top_artist, unknown = features_at(logged, k, top=top)
    assert top_artist == (logged_top if top == "centroid" else "A")
    assert {name: features[name] for name in known} == {name: LOGGED[name] for name in known}
    assert unknown == tuple(name for name in LOGGED_INDICATORS if name not in known)
    assert not set(unknown) & set(features)


def test_confidence_quality_leaves_out_and_counts_the_queries_whose_model_inputs_are_unknown() -> None:
    """Evaluation logs its requests at K = --k-max and scores at --k: a model reading the agreement, which a request
    measures at its K, used to score every query with agreement 0 (its least confident value)."""
    names = ("entropy", "nn_distance", "margin", "agreement")
    by_agreement = LogisticModel("logistic-v9", [0.0] * 4, [1.0] * 4, [0.0, 0.0, 0.0, 4.0], 0.0, names)
    right = replace(O1, top_artist="A", recorded_k=3, logged={"agreement": 1.0})  # top artist A at K = 1..3
    wrong = replace(O4, top_artist="A", recorded_k=3, logged={"agreement": 0.0})
    at_logged_k = confidence_quality([right, wrong], 3, by_agreement)
    assert at_logged_k["queries"] == 2 and at_logged_k["auroc"] == 1.0
    assert at_logged_k["brier"] == pytest.approx((1 - 1 / (1 + math.exp(-4.0))) ** 2 / 2 + 0.5**2 / 2)
    assert (at_logged_k["unavailable"], at_logged_k["unavailable_indicators"]) == (0, {})
    at_two = confidence_quality([right, wrong], 2, by_agreement)
    assert at_two == {
        "queries": 0,
        "auroc": None,
        "brier": None,
        "ece": None,
        "accuracy": None,
        "unavailable": 2,
        "unavailable_indicators": {"agreement": 2},
    }
    # the default formula and a model without the agreement read nothing unknown: every query is scored at K = 2
    assert confidence_quality([right, wrong], 2, None)["queries"] == 2
    flat = LogisticModel("logistic-v7", [0.0] * 3, [1.0] * 3, [0.0] * 3, 0.0)
    assert confidence_quality([right, wrong], 2, flat)["unavailable"] == 0
    # nor does a model that lists the agreement but gives it no weight (constant at its fit: a space's own model)
    unweighted = replace(by_agreement, name="logistic-v8", coef=[1.0, -1.0, 0.5, 0.0])
    assert confidence_quality([right, wrong], 2, unweighted)["queries"] == 2


def test_confidence_quality_default_score_by_hand() -> None:
    # At K = 2 (equal shares, ties to the closest work): top artists A, B, B, A, B -> correct 1, 0, 1, 0, 1.
    # Default score (1 - entropy)(1 - NN distance): 0.9, 0, 0, 0, 0.7.
    scores = [confidence_score(features_at(o, 2)[0]["entropy"], features_at(o, 2)[0]["nn_distance"]) for o in OUTCOMES]
    assert scores == pytest.approx([0.9, 0.0, 0.0, 0.0, 0.7])
    correct = [1.0, 0.0, 1.0, 0.0, 1.0]
    quality = confidence_quality(OUTCOMES, 2, None)
    assert quality["queries"] == 5
    assert quality["accuracy"] == pytest.approx(3 / 5)
    # Brier: (0.1^2 + 0 + 1 + 0 + 0.3^2) / 5
    assert quality["brier"] == pytest.approx(1.1 / 5)
    assert quality["brier"] == pytest.approx(float(np.mean((np.array(scores) - correct) ** 2)))
    # AUROC of the score for "correct": {0.9, 0, 0.7} vs {0, 0}: 2 + 2 x 1/2 + 2 wins of 6
    assert quality["auroc"] == pytest.approx(5 / 6)
    # ECE, bins of width 0.1: bin 0 {0, 0, 0} vs accuracy 1/3 (weight 3/5), bin 7 {0.7} vs 1, bin 9 {0.9} vs 1
    assert quality["ece"] == pytest.approx(1 / 3 * 3 / 5 + 0.3 / 5 + 0.1 / 5)


def test_confidence_quality_ece_with_two_bins() -> None:
    # o1, o2, o3 at K = 2: scores 0.9, 0, 0; correct 1, 0, 1. Bin 0: |0 - 1/2| x 2/3; bin 9: |0.9 - 1| x 1/3.
    quality = confidence_quality([O1, O2, O3], 2, None)
    assert quality["accuracy"] == pytest.approx(2 / 3)
    assert quality["ece"] == pytest.approx(0.5 * 2 / 3 + 0.1 / 3)
    assert quality["brier"] == pytest.approx((0.01 + 0 + 1) / 3)


def test_confidence_quality_under_the_centroid_rule_scores_the_logged_artist_and_its_log_odds() -> None:
    """The centroid rule's artist is not among the neighbours' counts: the logged request's is scored, at every K,
    with its centroid log-odds (a model fitted under the rule weighs them)."""
    names = ("entropy", "nn_distance", "margin", "centroid_log_odds")
    by_odds = LogisticModel("logistic-v8", [0.0] * 4, [1.0] * 4, [0.0, 0.0, 0.0, 1.0], 0.0, names)
    logged = [
        replace(O2, top_artist="A", logged={"centroid_log_odds": 3.0}),
        replace(O4, top_artist="A", logged={"centroid_log_odds": -3.0}),
    ]
    for k in (1, 3):
        quality = confidence_quality(logged, k, by_odds, top="centroid")
        assert quality["accuracy"] == 0.5 and quality["auroc"] == 1.0  # O2 right (its true artist A), O4 wrong


def test_confidence_quality_uses_the_model_and_skips_empty_outcomes() -> None:
    # A model with zero coefficients predicts 1/2 for everyone: Brier 1/4, AUROC 1/2, one bin: |0.5 - 0.6|.
    flat = LogisticModel("logistic-v7", [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], 0.0)
    empty = QueryOutcome(9, "q9.png", "A", (), None, [], [], [])
    quality = confidence_quality([*OUTCOMES, empty], 2, flat)
    none = {"unavailable": 0, "unavailable_indicators": {}}
    assert quality.pop("unavailable_indicators") == {}
    assert quality == pytest.approx(
        {"queries": 5, "accuracy": 0.6, "auroc": 0.5, "brier": 0.25, "ece": 0.1, "unavailable": 0}
    )
    assert confidence_quality([empty], 2, None) == {
        "queries": 0,
        "auroc": None,
        "brier": None,
        "ece": None,
        "accuracy": None,
        **none,
    }


def test_ann_vs_exact_by_hand() -> None:
    def measured(o: QueryOutcome, hnsw: list[str], exact: list[str], hnsw_ms: float, exact_ms: float) -> QueryOutcome:
        return QueryOutcome(
            o.query_id, o.path, o.true_artist, o.true_works, o.subset, o.artists, o.work_ids, o.similarities,
            hnsw, exact, hnsw_ms, exact_ms,
        )  # fmt: skip

    outcomes = [
        measured(O1, ["p1", "p2", "p3"], ["p1", "p3", "p2"], 1.0, 4.0),  # recall @1 1, @2 1/2, @3 1
        measured(O2, ["p1", "p4", "p5"], ["p1", "p2", "p3"], 3.0, 6.0),  # recall @1 1, @2 1/2, @3 1/3
        measured(O3, ["p9"], ["p9"], 2.0, 5.0),  # one exact neighbour: recall over min(K, 1) = 1
        O4,  # not measured: left out
    ]
    result = ann_vs_exact(outcomes, [1, 2, 3])
    assert result["queries"] == 3
    assert result["recall_at_k"] == pytest.approx({"1": 1.0, "2": 2 / 3, "3": 7 / 9})
    assert result["hnsw_ms"] == pytest.approx({"p50": 2.0, "mean": 2.0})
    assert result["exact_ms"] == pytest.approx({"p50": 5.0, "mean": 5.0})
    assert result["exact_over_hnsw_p50"] == pytest.approx(2.5)
    assert ann_vs_exact(OUTCOMES, [1]) == {"queries": 0}


def test_evaluate_groups_per_subset_and_is_valid_json() -> None:
    result = evaluate(OUTCOMES, k_max=3, k=3, model=None)
    assert result["k_max"] == 3 and result["k"] == 3 and result["confidence_model"] == "default-v1"
    assert set(result["subsets"]) == {"s1", "s2"}  # o5 has no subset: only in "overall"
    assert result["overall"]["queries"] == 5
    assert result["overall"]["curves"] == finite(curves(OUTCOMES, 3))
    assert result["overall"]["table1"] == finite(table1(OUTCOMES, 3))
    for name, group in {"s1": [O1, O2], "s2": [O3, O4]}.items():
        block = result["subsets"][name]
        assert block["queries"] == 2
        assert block["curves"] == finite(curves(group, 3))
        assert block["per_image_k"] == finite(per_image_k(group))
        assert block["confidence"] == finite(confidence_quality(group, 3, None))
    assert result["ann_vs_exact"] == {"queries": 0}
    # NaN (no true works in a group, one class only) become null: strict JSON works.
    only_o3 = evaluate([O3], k_max=2, k=2, model=None)
    assert only_o3["overall"]["curves"][0]["work_precision"] is None
    assert only_o3["overall"]["per_image_k"]["precision"] is None
    json.dumps(result, allow_nan=False)
    json.dumps(only_o3, allow_nan=False)
    json.dumps(evaluate([], k_max=2, k=2, model=None), allow_nan=False)


def test_finite_turns_nan_and_infinities_into_none() -> None:
    value = {"a": math.nan, "b": [math.inf, 1.5, (-math.inf, 2)], "c": {"d": float("nan"), "e": "x"}, "f": None}
    assert finite(value) == {"a": None, "b": [None, 1.5, [None, 2]], "c": {"d": None, "e": "x"}, "f": None}
    assert finite(0.0) == 0.0 and finite(3) == 3 and finite("nan") == "nan"
    json.dumps(finite(value), allow_nan=False)


def test_entropy_constant_matches_the_library() -> None:
    assert artist_entropy(["B", "A", "B"]) == pytest.approx(H3)


# -- the real pipeline end to end --------------------------------------------------------------------------------
EMBEDDER = ["--embedder", MODEL]
TABLE1_HEADER = "| | Real artist present | Nearest neighbour from the real artist | Real artist only |"


@pytest.fixture(scope="module")
def eval_catalogue(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalogue:
    """6 artists x 8 works, two generated queries per artist."""
    return make_demo_catalogue(tmp_path_factory.mktemp("eval-demo"), queries_per_artist=2)


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, eval_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    ingested = ingest_once(tmp_path_factory.mktemp("eval-ingested"), sqlite_template, eval_catalogue.manifest)
    assert "48 added, 0 updated, 0 unchanged, 0 withdrawn (skipped), 0 failed" in ingested.printed
    return ingested


@pytest.fixture(scope="module")
def noise_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 noise works (3 styles x 10) unlike any catalogue work: new palettes, motifs and seeds."""
    root = tmp_path_factory.mktemp("noise")
    manifest = root / "noise.csv"
    styles = [
        {"palette": [(20, 20, 20), (240, 240, 240), (200, 30, 30)], "motif": "circles", "stroke": 3},
        {"palette": [(250, 240, 200), (30, 90, 30), (120, 60, 10)], "motif": "triangles", "stroke": 5},
        {"palette": [(10, 30, 90), (250, 200, 0), (0, 200, 200)], "motif": "dots", "stroke": 6},
    ]
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_id"])
        for a, style in enumerate(styles):
            for w in range(10):
                draw_work(style, seed=77_000 + a * 100 + w).save(root / f"n{a}_{w}.png")
                writer.writerow([f"n{a}_{w}.png", f"Noise Artist {a}", f"N{a}-W{w:03d}"])
    return manifest


def write_labelled(catalogue: DemoCatalogue, folder: Path) -> Path:
    """labelled.csv: the 12 queries (subset alpha / beta by query number; artists 0, 2, 4 with their 8 works as
    true works) and one unreadable image."""
    folder.mkdir(parents=True, exist_ok=True)
    broken = folder / "broken.png"
    broken.write_bytes(catalogue.queries[0].path.read_bytes()[:200])
    path = folder / "labelled.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_ids", "subset"])
        for query in catalogue.queries:
            a, q = (int(v) for v in re.fullmatch(r"gen_a(\d+)_(\d+)\.png", query.path.name).groups())  # type: ignore[union-attr]
            works = ";".join(f"A{a}-W{w:03d}" for w in range(8)) if a % 2 == 0 else ""
            writer.writerow([str(query.path), query.artist, works, "alpha" if q == 0 else "beta"])
        writer.writerow(["broken.png", catalogue.queries[0].artist, "", "alpha"])
    return path


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 0 and image.height > 0
        image.verify()


def test_evaluate_run_then_report_end_to_end(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    out = tmp_path / "run"
    printed = cli("evaluate", "run", str(labelled), "--k-max", "12", "--k", "4", *EMBEDDER, "--out", str(out)).stdout
    match = re.search(r"evaluation run (\d+): 13 queries \(1 unreadable\)", printed)
    assert match, printed
    run_id = int(match.group(1))

    # The outputs.
    names = ["metrics.json", "report.md", "curves.csv", "table1.csv", "hit_rate.png", "precision_recall.png"]
    assert all((out / name).is_file() for name in names)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run_id"] == run_id and metrics["k_max"] == 12 and metrics["k"] == 4
    assert set(metrics["subsets"]) == {"alpha", "beta"}
    assert metrics["overall"]["queries"] == 12  # the unreadable image has no outcome
    assert metrics["subsets"]["alpha"]["queries"] == 6 and metrics["subsets"]["beta"]["queries"] == 6
    assert metrics["overall"]["per_image_k"]["queries"] == 6  # artists 0, 2, 4 have true works
    assert metrics["ann_vs_exact"]["queries"] == 12
    assert set(metrics["ann_vs_exact"]["recall_at_k"]) == {"1", "10", "12"}
    with (out / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for group in ("overall", "alpha", "beta"):
        assert [int(r["k"]) for r in rows if r["group"] == group] == list(range(1, 13))
    assert len(rows) == 36
    with (out / "table1.csv").open() as handle:
        cells = list(csv.DictReader(handle))
    assert len(cells) == 3 * 5  # per group: 2 hypotheses x 3 classes, less diversity / only-true-artist (N/A)
    assert {(c["hypothesis"], c["class"]) for c in cells if c["group"] == "beta"} == {
        ("diversity", "true_artist_present"),
        ("diversity", "nn_by_true_artist"),
        ("distance", "true_artist_present"),
        ("distance", "nn_by_true_artist"),
        ("distance", "only_true_artist"),
    }
    for c in cells:
        assert int(c["n_positive"]) + int(c["n_negative"]) == (12 if c["group"] == "overall" else 6)
    report = (out / "report.md").read_text()
    assert report.count(TABLE1_HEADER) == 3  # overall, alpha, beta
    assert f"# Evaluation run {run_id}" in report
    assert_png(out / "hit_rate.png")
    assert_png(out / "precision_recall.png")

    # Every request of the run is in the audit log, tagged with the run and its labelled query.
    engine = cli.engine()
    try:
        with Session(engine) as session:
            results = session.scalars(select(EvaluationResult).where(EvaluationResult.run_id == run_id)).all()
            assert len(results) == 13
            failed = [r for r in results if r.request_id is None]
            assert len(failed) == 1 and "broken.png" in (failed[0].error or "")
            requests = session.scalars(select(AttributionRequest)).all()
            assert len(requests) == 12
            by_id = {r.id: r for r in requests}
            for result in results:
                if result.request_id is not None:
                    request = by_id[result.request_id]
                    assert request.evaluation_run_id == run_id
                    assert request.labelled_query_id == result.labelled_query_id
                    assert len(result.exact_ids) == 12 and len(result.hnsw_ids) == 12
            assert len({r.labelled_query_id for r in requests}) == 12
            run = session.get_one(EvaluationRun, run_id)
            assert run.kind == "attribution" and run.status == "completed" and run.finished_at is not None
            assert run.metrics == metrics

            # Hit rate@1 from SQL: the rank-1 neighbour's canonical artist against the label.
            pairs = session.execute(
                select(LabelledQueryRecord.artist, LabelledQueryRecord.subset, AttributionNeighbour.canonical_artist)
                .join(AttributionRequest, AttributionRequest.labelled_query_id == LabelledQueryRecord.id)
                .join(AttributionNeighbour, AttributionNeighbour.request_id == AttributionRequest.id)
                .where(AttributionRequest.evaluation_run_id == run_id, AttributionNeighbour.rank == 1)
            ).all()
            ranks = session.execute(
                select(AttributionNeighbour.request_id, func.count()).group_by(AttributionNeighbour.request_id)
            ).all()
            assert all(n == 12 for _, n in ranks) and len(ranks) == 12  # logged with K = k-max
    finally:
        engine.dispose()
    assert len(pairs) == 12
    assert metrics["overall"]["curves"][0]["hit_rate"] == pytest.approx(np.mean([a == nn for a, _, nn in pairs]))
    for subset in ("alpha", "beta"):
        hits = [a == nn for a, s, nn in pairs if s == subset]
        assert metrics["subsets"][subset]["curves"][0]["hit_rate"] == pytest.approx(np.mean(hits))
    assert "chain OK: 12 records" in cli("audit", "verify").stdout

    # report = run: recomputed purely from the audit DB, the same outputs.
    again = tmp_path / "report"
    cli("evaluate", "report", "--run", str(run_id), "--out", str(again))
    assert json.loads((again / "metrics.json").read_text()) == metrics
    for name in ("report.md", "curves.csv", "table1.csv"):
        assert (again / name).read_text() == (out / name).read_text()
    assert_png(again / "hit_rate.png")
    assert f"{run_id},attribution,completed," in cli("evaluate", "list", "--format", "csv").stdout
    assert "no evaluation run 999" in cli("evaluate", "report", "--run", "999", "--out", str(again), code=1).stderr


def logged_rows(cli: Cli, statement: Any, run_id: int) -> list[Any]:
    """``statement`` over the run's logged neighbours joined with their requests and labelled queries."""
    engine = cli.engine()
    try:
        with Session(engine) as session:
            return list(
                session.execute(
                    statement.select_from(AttributionRequest)
                    .join(LabelledQueryRecord, LabelledQueryRecord.id == AttributionRequest.labelled_query_id)
                    .join(AttributionNeighbour, AttributionNeighbour.request_id == AttributionRequest.id)
                    .where(AttributionRequest.evaluation_run_id == run_id)
                ).all()
            )
    finally:
        engine.dispose()


def test_per_image_k_records_as_many_neighbours_as_the_most_true_works(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """--k-max 3 but 8 true works per labelled query: 8 neighbours are logged, and per-image-K precision is the
    share of the 8 true works among the 8 logged neighbours (recomputed here from SQL)."""
    cli.restore(ingested)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    out = tmp_path / "run"
    printed = cli("evaluate", "run", str(labelled), "--k-max", "3", "--k", "2", *EMBEDDER, "--out", str(out)).stdout
    assert "8 neighbours recorded per query" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recorded_k"] == 8 and len(metrics["overall"]["curves"]) == 3
    rows = logged_rows(
        cli,
        select(LabelledQueryRecord.work_ids, AttributionNeighbour.request_id, AttributionNeighbour.work_id),
        metrics["run_id"],
    )
    logged: dict[str, tuple[list[str], list[str]]] = {}
    for true_works, request_id, work_id in rows:
        logged.setdefault(request_id, (list(true_works or []), []))[1].append(work_id)
    assert {len(works) for _, works in logged.values()} == {8}
    listed = csv.DictReader(cli("audit", "list", "--format", "csv").stdout.splitlines())
    assert {row["evaluation_run"] for row in listed} == {str(metrics["run_id"])}  # marked as evaluation requests
    precisions = [len(set(works) & set(true)) / len(true) for true, works in logged.values() if true]
    assert len(precisions) == 6
    assert metrics["overall"]["per_image_k"]["precision"] == pytest.approx(np.mean(precisions))


def test_per_image_k_beyond_the_request_limit_is_refused_in_one_line(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = tmp_path / "many.csv"
    works = ";".join(f"W{i}" for i in range(MAX_K + 1))
    labelled.write_text(f"path,artist,work_ids\n{eval_catalogue.queries[0].path},Ada,{works}\n")
    args = ["evaluate", "run", str(labelled), "--k-max", "3", "--k", "2", *EMBEDDER, "--out", str(tmp_path / "o")]
    result = cli(*args, code=1)
    # No catalogue here holds that many works: the file is refused for its first unknown true work.
    assert result.stderr == (
        f"error: {labelled}:2: true work 'W0' is in no ingested catalogue ({MAX_K + 1} unknown work id(s) in the "
        "file); fix its work_ids column, or ingest the catalogue that holds it first\n"
    )
    assert not (tmp_path / "o").exists()
    # --k-max itself beyond the limit: said of --k-max (it blamed the queries' 8 true works).
    args = ["evaluate", "run", str(eval_catalogue.labelled), "--k-max", str(MAX_K + 1), *EMBEDDER]
    refused = cli(*args, "--out", str(tmp_path / "o"), code=2)
    assert "--k-max" in refused.output and str(MAX_K) in refused.output and "true works" not in refused.output


def test_true_works_in_no_catalogue_are_refused_naming_the_file_line_and_id(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """A typo in work_ids would count every hit of that query as a miss: refused before anything is imported."""
    cli.restore(ingested)
    first, second = eval_catalogue.queries[:2]
    labelled = tmp_path / "typo.csv"
    labelled.write_text(
        f"path,artist,work_ids\n{first.path},{first.artist},A0-W000\n{second.path},{second.artist},A0-W001;A0-W0O2\n"
    )
    args = ["evaluate", "run", str(labelled), "--k-max", "3", "--k", "2", *EMBEDDER, "--out", str(tmp_path / "o")]
    assert cli(*args, code=1).stderr == (
        f"error: {labelled}:3: true work 'A0-W0O2' is in no ingested catalogue (1 unknown work id(s) in the file); "
        "fix its work_ids column, or ingest the catalogue that holds it first\n"
    )
    assert json.loads(cli("evaluate", "list", "--format", "json").stdout) == []  # no run, no query set used


def test_true_artists_with_no_work_in_the_catalogue_are_named_once_the_run_ends(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """A true artist with no work in the catalogue (a misspelt name, an alias never declared) makes the query a
    miss whatever the search finds; it may be deliberate (an unseen artist), so the run goes on and names them."""
    cli.restore(ingested)
    first, second, third = eval_catalogue.queries[:3]
    labelled = tmp_path / "typo.csv"
    labelled.write_text(
        f"path,artist\n{first.path},Ada Vermer\n{second.path},{second.artist}\n{third.path},Ada Vermer\n"
        f"{eval_catalogue.queries[3].path},  Unseen Painter \n"
    )
    args = ["evaluate", "run", str(labelled), "--k-max", "3", "--k", "2", *EMBEDDER, "--out", str(tmp_path / "o")]
    result = cli(*args)
    assert result.stdout.startswith("evaluation run ") and "4 queries (0 unreadable)" in result.stdout
    assert result.stderr == (
        f"note: 3 of 4 labelled queries in {labelled} name an artist with no work in the catalogue: 'Ada Vermer' "
        "(2), 'Unseen Painter' (1); they count as wrong: check the spelling (`attribution-audit artists list`), "
        "unless the artists are left out on purpose\n"
    )
    # the same queries with their artists spelt as the catalogue does: nothing to say
    spelt = tmp_path / "spelt.csv"
    spelt.write_text(f"path,artist\n{first.path},{first.artist}\n{second.path},{second.artist}\n")
    args[2], args[-1] = str(spelt), str(tmp_path / "o2")
    assert not cli(*args).stderr


def test_a_run_whose_every_image_is_unreadable_fails_in_one_line(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    (tmp_path / "a.png").write_bytes(b"not an image")
    (tmp_path / "b.png").write_bytes(eval_catalogue.queries[0].path.read_bytes()[:100])  # cut short
    labelled = tmp_path / "unreadable.csv"
    labelled.write_text("path,artist\na.png,Ada\nb.png,Ada\n")
    args = ["evaluate", "run", str(labelled), "--k-max", "3", "--k", "2", *EMBEDDER, "--out", str(tmp_path / "o")]
    result = cli(*args, code=1)
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: none of the 2 labelled images could be read (the first: {tmp_path / 'a.png'}")
    [run] = json.loads(cli("evaluate", "list", "--format", "json").stdout)
    assert run["status"] == "failed" and f"evaluation run {run['id']} is marked failed" in line
    assert not (tmp_path / "o").exists()


def store_snapshot(cli: Cli) -> dict[str, object]:
    store = open_store(load_settings(data_dir=cli.data_dir, database_url=cli.database_url), "efficientnet-lite0")
    try:
        points = list(store.iter_points())
        return {
            "count": store.count(),
            "version": store.content_version(),
            "hashes": store.image_hashes(),
            "catalogues": sorted({str(p.payload.get("catalogue")) for p in points}),
            "vectors": {p.point_id: np.asarray(p.vector).tobytes() for p in points},
        }
    finally:
        store.close()


@pytest.mark.slow
def test_noise_experiment_as_the_note_runs_it(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """Reference index = a seeded half of the catalogue; homogeneous noise = the held-out half, added at each level;
    every query's ranked works per level are stored and the metrics recompute from the DB; production is only
    read."""
    cli.restore(ingested)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    before = store_snapshot(cli)
    assert before["count"] == 48 and before["catalogues"] == ["catalogue"]

    out = tmp_path / "noise-out"
    args = ["evaluate", "noise", str(labelled), "--reference-fraction", "0.5", "--k", "5", *EMBEDDER]
    printed = cli(*args, "--levels", "0.25,0.5,1", "--seed", "3", "--out", str(out)).stdout
    assert "reference index: 24 of 48 works (seed 3); noise: the held-out rest of the catalogue" in printed
    assert "homogeneous 25% (6 works)" in printed and "homogeneous 100% (24 works)" in printed

    after = store_snapshot(cli)
    assert after == before  # same points, vectors, image hashes and content version: only read
    assert not [p for p in cli.data_dir.rglob("noise-*")]  # the scratch copy is gone

    assert all((out / name).is_file() for name in ("noise.json", "noise.csv", "noise.png"))
    assert_png(out / "noise.png")
    metrics = json.loads((out / "noise.json").read_text())
    assert metrics["kind"] == "homogeneous" and metrics["k"] == 5 and metrics["seed"] == 3
    assert metrics["index_size"] == 24 and metrics["catalogue_size"] == 48
    assert metrics["queries"] == 12  # the unreadable query is skipped
    levels = metrics["levels"]
    assert [(row["level"], row["noise_works"]) for row in levels] == [(0.25, 6), (0.5, 12), (1.0, 24)]
    with (out / "noise.csv").open() as handle:
        assert [int(r["noise_works"]) for r in csv.DictReader(handle)] == [6, 12, 24]

    audit = cli.audit()
    try:
        run = audit.evaluations.run(metrics["run_id"], kind="noise")
        stored = audit.evaluations.noise_neighbours(metrics["run_id"])
        assert run.status == "completed" and run.settings["reference_size"] == 24
    finally:
        audit.engine.dispose()
    # The reference index and the noise are disjoint halves of the catalogue; noise is the held-out works.
    noise = run.settings["noise_keys"]
    catalogue_keys = {f"catalogue/A{a}-W{w:03d}" for a in range(6) for w in range(8)}
    assert len(noise) == 24 and set(noise) <= catalogue_keys
    assert sorted(stored) == [0.0, 0.25, 0.5, 1.0] and all(len(v) == 12 for v in stored.values())
    clean_works = {key for keys in stored[0.0].values() for key in keys}
    assert not clean_works & set(noise)  # the clean attribution only sees the reference half
    # Recomputed here from the stored lists: overlap with the clean top 5, share of noise in the noisy top 5.
    for row in levels:
        noisy = stored[row["level"]]
        added = set(noise[: row["noise_works"]])
        overlap = np.mean([len(set(stored[0.0][q]) & set(keys)) / 5 for q, keys in noisy.items()])
        assert row["mean_overlap"] == pytest.approx(overlap)
        assert row["noise_in_top_k"] == pytest.approx(np.mean([sum(k in added for k in v) / 5 for v in noisy.values()]))
        assert not {key for keys in noisy.values() for key in keys} - clean_works - added
    overlaps = [row["mean_overlap"] for row in levels]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(overlaps))  # noise is added cumulatively
    assert levels[-1]["noise_in_top_k"] > 0

    # The seed decides the reference subset: the same seed repeats the run, another draws other works.
    cli(*args, "--levels", "0.25,0.5,1", "--seed", "3", "--out", str(tmp_path / "b"))
    again = json.loads((tmp_path / "b" / "noise.json").read_text())
    assert {k: v for k, v in again.items() if k != "run_id"} == {k: v for k, v in metrics.items() if k != "run_id"}
    other = cli(*args, "--levels", "0.5", "--seed", "4", "--out", str(tmp_path / "c"))
    audit = cli.audit()
    try:
        other_run = audit.evaluations.runs()[-1]
    finally:
        audit.engine.dispose()
    assert other.exit_code == 0 and other_run.settings["noise_keys"] != noise[:12]

    # `evaluate report` recomputes the noise run from the stored neighbour lists: the same outputs.
    cli("evaluate", "report", "--run", str(metrics["run_id"]), "--out", str(tmp_path / "again"))
    assert json.loads((tmp_path / "again" / "noise.json").read_text()) == metrics
    assert (tmp_path / "again" / "noise.csv").read_text() == (out / "noise.csv").read_text()


def test_a_noise_level_that_cannot_be_reached_is_refused_not_capped(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, noise_manifest: Path, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    base = ["evaluate", "noise", str(labelled), "--k", "5", *EMBEDDER, "--out", str(tmp_path / "out")]
    # 30 noise works; 75 % of the whole 48-work catalogue needs 36.
    refused = cli(
        *base,
        "--noise",
        str(noise_manifest),
        "--kind",
        "heterogeneous",
        "--reference-fraction",
        "1",
        "--levels",
        "0.5,0.75",
        code=2,
    )
    assert "noise level 75% of the 48-work reference index needs 36 noise works" in refused.output
    # The held-out rest of the catalogue: 12 works when the reference index is 36 of 48; 50 % needs 18.
    refused = cli(*base, "--reference-fraction", "0.75", "--levels", "0.5", code=2)
    assert "needs 18 noise works; the held-out rest of the catalogue has 12" in refused.output
    # Heterogeneous noise is another domain: a manifest is required.
    assert "--noise" in cli(*base, "--kind", "heterogeneous", code=2).output
    # A level that adds no work at all (1 % of 24 rounds to 0) is not reached either; nor is a seed below 0.
    refused = cli(*base, "--levels", "0.01,0.5", code=2)
    assert "noise level 1% of the 24-work reference index adds no noise work" in refused.output
    assert "--seed" in cli(*base, "--seed", "-1", code=2).output
    engine = cli.engine()
    try:
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(EvaluationRun)) == 0
    finally:
        engine.dispose()
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def ingested_with_style(
    tmp_path_factory: pytest.TempPathFactory, eval_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    root = tmp_path_factory.mktemp("eval-style")
    database = root / "audit.sqlite"
    database.write_bytes(sqlite_template.read_bytes())
    cli = Cli(root / "data", f"sqlite:///{database}", CliRunner())
    printed = cli("ingest", str(eval_catalogue.manifest), *EMBEDDER, "--spaces", "content,style").stdout
    return Ingested(cli.data_dir, database, printed)


@pytest.mark.slow
def test_evaluate_run_scores_a_calibrated_confidence_with_the_logged_agreements_or_says_it_cannot(
    cli: Cli, ingested_with_style: Ingested, eval_catalogue: DemoCatalogue, embedder: Embedder, tmp_path: Path
) -> None:
    """A model reading the agreement (as ``calibrate`` fits now) was scored with agreement 0, its least confident
    value, whatever the requests had recorded. At the logged K it is scored on the logged values (the confidence
    the requests record); at another K the agreement is unknown: the queries are left out and counted."""
    cli.restore(ingested_with_style)
    names = CALIBRATION_FEATURES
    # not the margin: requests measure it over more candidates
    coef = [-1.0, -1.0, 0.0, 1.0, 2.0, 2.0, 0.01, 0.01, 0.01]
    engine = cli.engine()
    try:
        audit = AuditStore(engine)
        evidence = CalibrationEvidence(embedder.fingerprint, "/labelled.csv", "0" * 64, 400, 200, {})
        model = audit.evaluations.add_calibration(
            LogisticModel("m", [0.0] * len(names), [1.0] * len(names), coef, 0.0, names), evidence
        )
        labelled = write_labelled(eval_catalogue, tmp_path / "queries")  # 8 true works: 8 neighbours logged
        at_logged_k = tmp_path / "at8"
        cli("evaluate", "run", str(labelled), "--k-max", "8", "--k", "8", *EMBEDDER, "--out", str(at_logged_k))
        metrics = json.loads((at_logged_k / "metrics.json").read_text())
        assert metrics["confidence_model"] == model and metrics["recorded_k"] == 8
        assert (
            metrics["overall"]["confidence"]["queries"] == 12 and metrics["overall"]["confidence"]["unavailable"] == 0
        )
        with Session(engine) as session:
            rows = session.execute(select(AttributionMetrics.request_id, AttributionMetrics.confidence)).tuples()
            recorded = dict(rows.all())
            agreements = set(session.scalars(select(AttributionMetrics.agreement)))
        assert agreements - {0.0, None}  # some request's agreement is not the default's
        outcomes = load_outcomes(audit, metrics["run_id"])
        requests = [r.result.request_id for r in audit.evaluations.logged_results(metrics["run_id"])]
        calibrated = audit.evaluations.calibration(model)
        scored = [scored_confidence(o, 8, calibrated, "equal", DEFAULT_TEMPERATURE, "share")[0] for o in outcomes]
        assert scored == pytest.approx([recorded[r] for r in requests]) and len(set(scored)) > 1

        at_four = tmp_path / "at4"
        cli("evaluate", "run", str(labelled), "--k-max", "8", "--k", "4", *EMBEDDER, "--out", str(at_four))
        quality = json.loads((at_four / "metrics.json").read_text())["overall"]["confidence"]
        assert (quality["queries"], quality["auroc"], quality["unavailable"]) == (0, None, 12)
        assert quality["unavailable_indicators"]["agreement"] == 12
        report = (at_four / "report.md").read_text()
        assert "AUROC n/a (no query's confidence at K is known)" in report
        assert "12 queries are left out: the model reads agreement (12), agreement_spaces (12)" in report
        assert "a run with --k-max and --k 8 scores every query" in report
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("space", ["content", "style", "fused"])
def test_heterogeneous_noise_in_every_space_of_a_collection_with_style_vectors(
    cli: Cli,
    ingested_with_style: Ingested,
    eval_catalogue: DemoCatalogue,
    noise_manifest: Path,
    tmp_path: Path,
    space: str,
) -> None:
    cli.restore(ingested_with_style)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    out = tmp_path / "out"
    args = ["evaluate", "noise", str(labelled), "--noise", str(noise_manifest), "--kind", "heterogeneous"]
    printed = cli(*args, "--space", space, "--levels", "0.5,1", "--k", "4", *EMBEDDER, "--out", str(out)).stdout
    assert "heterogeneous 100% (24 works)" in printed
    metrics = json.loads((out / "noise.json").read_text())
    assert metrics["space"] == space and metrics["queries"] == 12
    for row in metrics["levels"]:
        assert 0.0 <= row["mean_overlap"] <= 1.0 and 0.0 <= row["noise_in_top_k"] <= 1.0


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "0.5,0", ","])
def test_noise_bad_levels_are_usage_errors(cli: Cli, noise_manifest: Path, tmp_path: Path, bad: str) -> None:
    labelled = tmp_path / "q.csv"
    labelled.write_text("path,artist\nq.png,Ada\n")
    out = tmp_path / "out"
    args = ["evaluate", "noise", str(labelled), "--noise", str(noise_manifest), "--out", str(out)]
    result = cli(*args, f"--levels={bad}", *EMBEDDER, code=2)
    assert "levels" in result.output
    assert not out.exists()
    engine = cli.engine()
    try:
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(EvaluationRun)) == 0
    finally:
        engine.dispose()


# -- importing query sets ----------------------------------------------------------------------------------------
def test_import_query_set_is_idempotent(audit: AuditStore, tmp_path: Path) -> None:
    with Session(audit.engine) as session, session.begin():  # the true works it names are in a catalogue
        catalogue, artist = Catalogue(name="cat"), Artist(name="Ada")
        session.add_all(
            Work(catalogue=catalogue, artist=artist, work_id=w, image_path=f"{w}.png", image_sha256="0" * 64)
            for w in ("W1", "W2")
        )
    path = tmp_path / "labelled.csv"
    path.write_text("path,artist,work_ids,subset\na.png,Ada,W1;W2,alpha\nb.png,Bruno,,beta\n")

    def rows() -> list[tuple[str, str, list[str], str | None]]:
        with Session(audit.engine) as session:
            records = session.scalars(select(LabelledQueryRecord).order_by(LabelledQueryRecord.id)).all()
            return [(Path(r.path).name, r.artist, list(r.work_ids), r.subset) for r in records]

    first = import_query_set(audit, path)
    assert import_query_set(audit, path) == first
    assert rows() == [("a.png", "Ada", ["W1", "W2"], "alpha"), ("b.png", "Bruno", [], "beta")]
    # A stored set is found by name; a file that changed since its import is refused (past runs keep their labels)
    # and goes in under another name.
    assert import_query_set(audit, "labelled") == first
    path.write_text("path,artist,work_ids,subset\na.png,Ada,W1;W2,alpha\nb.png,Bruno,,beta\nc.png,Chiara,,\n")
    with pytest.raises(ManifestError, match="--name"):
        import_query_set(audit, path)
    assert [r[0] for r in rows()] == ["a.png", "b.png"]
    other = import_query_set(audit, path, name="second")
    assert other != first
    with Session(audit.engine) as session:
        assert session.scalar(select(func.count()).select_from(QuerySet)) == 2
        assert session.scalar(select(func.count()).select_from(LabelledQueryRecord)) == 5


def test_import_query_set_unknown_name_is_one_line(audit: AuditStore, tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.csv")
    for source in ("no-such-set", missing):
        with pytest.raises(NotFoundError) as caught:
            import_query_set(audit, source)
        message = str(caught.value)
        assert "\n" not in message and source in message


def labels_of(engine: Engine, query_set_id: int) -> list[tuple[str, str]]:
    with Session(engine) as session:
        records = session.scalars(
            select(LabelledQueryRecord).where(LabelledQueryRecord.query_set_id == query_set_id)
        ).all()
        return sorted((r.path, r.artist) for r in records)


def file_labels(path: Path) -> list[tuple[str, str]]:
    with path.open() as handle:
        return sorted((str((path.parent / r["path"]).resolve()), r["artist"]) for r in csv.DictReader(handle))


def test_import_of_another_file_with_the_same_stem_is_not_merged(audit: AuditStore, tmp_path: Path) -> None:
    first, second = tmp_path / "x" / "labelled.csv", tmp_path / "y" / "labelled.csv"
    for path, row in ((first, "a.png,Ada"), (second, "b.png,Bruno")):
        path.parent.mkdir()
        path.write_text(f"path,artist\n{row}\n")
    import_query_set(audit, first)
    try:
        second_id = import_query_set(audit, second)
    except AttributionAuditError:
        return  # refusing the clash in one line is a fine fix too
    assert labels_of(audit.engine, second_id) == file_labels(second)


def test_reimport_of_an_edited_file_does_not_keep_stale_labels(audit: AuditStore, tmp_path: Path) -> None:
    path = tmp_path / "labelled.csv"
    path.write_text("path,artist\na.png,Ada\nb.png,Bruno\n")
    import_query_set(audit, path)
    path.write_text("path,artist\na.png,Chiara\n")
    try:
        query_set = import_query_set(audit, path)
    except AttributionAuditError:
        return  # refusing the changed file in one line is a fine fix too
    assert labels_of(audit.engine, query_set) == file_labels(path)


def test_noise_level_inf_is_a_usage_error(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, noise_manifest: Path, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = tmp_path / "q.csv"
    labelled.write_text("path,artist\n" + "".join(f"{q.path},{q.artist}\n" for q in eval_catalogue.queries))
    args = ["evaluate", "noise", str(labelled), "--noise", str(noise_manifest), "--out", str(tmp_path / "out")]
    result = cli(*args, "--levels=inf", *EMBEDDER, code=2)
    assert "levels" in result.output


# -- HNSW vs exact search (the note's appendix 1) ------------------------------------------------------------------
def test_evaluate_run_compares_hnsw_with_the_chosen_exact_method(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    runs = {}
    for method in ("kdtree", "brute"):
        out = tmp_path / method
        cli(
            "evaluate",
            "run",
            str(labelled),
            "--k-max",
            "8",
            "--k",
            "4",
            "--exact",
            method,
            *EMBEDDER,
            "--out",
            str(out),
        )
        runs[method] = json.loads((out / "metrics.json").read_text())
        assert runs[method]["ann_vs_exact"]["exact_method"] == method
    assert "## HNSW vs exact search (KD-Tree)" in (tmp_path / "kdtree" / "report.md").read_text()
    assert "## HNSW vs exact search (brute force)" in (tmp_path / "brute" / "report.md").read_text()
    engine = cli.engine()
    try:
        with Session(engine) as session:
            exact = {
                run_id: {
                    r.labelled_query_id: r.exact_ids
                    for r in session.scalars(
                        select(EvaluationResult).where(
                            EvaluationResult.run_id == run_id, EvaluationResult.error.is_(None)
                        )
                    )
                }
                for run_id in (runs["kdtree"]["run_id"], runs["brute"]["run_id"])
            }
            settings = session.get_one(EvaluationRun, runs["kdtree"]["run_id"]).settings
    finally:
        engine.dispose()
    assert settings["params"]["exact_method"] == "kdtree"
    # Both are exact: the KD-Tree finds the very works brute force finds.
    kdtree, brute = exact.values()
    assert len(kdtree) == 12 and kdtree == brute
    assert "--exact" in cli("evaluate", "run", str(labelled), "--exact", "annoy", *EMBEDDER, code=2).output


def test_compare_exact_gives_the_appendix_table_on_the_collection(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    out = tmp_path / "exact"
    args = ["evaluate", "compare-exact", str(labelled), "--k", "5", *EMBEDDER]
    metrics = json.loads(cli(*args, "--format", "json", "--out", str(out)).stdout)
    assert metrics["queries"] == 12 and metrics["index_size"] == 48 and metrics["k"] == 5
    by_method = {row["method"]: row for row in metrics["methods"]}
    assert list(by_method) == ["hnsw", "kdtree", "brute"]
    assert by_method["brute"]["recall_vs_brute"] == 1.0 and by_method["kdtree"]["recall_vs_brute"] == 1.0
    assert 0.0 <= by_method["hnsw"]["recall_vs_brute"] <= 1.0
    for row in by_method.values():
        assert row["latency_ms"]["p50"] > 0 and row["latency_ms"]["p95"] >= row["latency_ms"]["p50"]
    assert by_method["hnsw"]["build_ms"] is None and by_method["kdtree"]["build_ms"] > 0
    table = (out / "compare_exact.md").read_text()
    assert "| method | recall@5 vs brute force | p50 ms | p95 ms | build ms |" in table
    assert "| KD-Tree | 1.000 |" in table and "| brute force | 1.000 |" in table
    printed = cli(*args).stdout
    assert printed.splitlines()[0].split()[:2] == ["method", "recall@5"] and "HNSW" in printed
    refused = cli(*args, "--space", "fused", code=2)
    assert "--space content or --space style" in refused.output


# -- artist-level curves, plots and every n/a explained -------------------------------------------------------------
UNEXPLAINED_NA = re.compile(r"\bn/a\b(?! \(|:)|\bN/A\b(?! \()")


def test_artist_recall_curves_and_every_na_explained(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    out = tmp_path / "run"
    cli("evaluate", "run", str(labelled), "--k-max", "10", "--k", "4", *EMBEDDER, "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    statement = select(AttributionRequest.id, LabelledQueryRecord.artist, AttributionNeighbour.canonical_artist)
    rows = logged_rows(cli, statement.where(AttributionNeighbour.rank <= 4), metrics["run_id"])
    by_request: dict[str, int] = {}
    for request_id, artist, neighbour in rows:
        by_request[request_id] = by_request.get(request_id, 0) + (artist == neighbour)
    # Every demo artist has 8 works in the catalogue: artist recall@4 = works by the true artist among 4, over 8.
    assert len(by_request) == 12
    assert metrics["overall"]["curves"][3]["artist_recall"] == pytest.approx(np.mean(list(by_request.values())) / 8)
    with (out / "curves.csv").open() as handle:
        header = next(csv.reader(handle))
    assert header == ["group", "k", "hit_rate", "artist_precision", "artist_recall", "work_precision", "work_recall"]
    report = (out / "report.md").read_text()
    assert "artist recall@K" in report and not UNEXPLAINED_NA.search(report)
    assert "N/A (every image of this class has entropy 0: one artist)" in report

    # Without true works: work-level values are n/a, and the report says why.
    plain = tmp_path / "plain"
    cli("evaluate", "run", str(eval_catalogue.labelled), "--k-max", "6", "--k", "3", *EMBEDDER, "--out", str(plain))
    report = (plain / "report.md").read_text()
    assert "n/a (no query has true works)" in report and not UNEXPLAINED_NA.search(report)
    assert_png(plain / "precision_recall.png")
    with Image.open(plain / "precision_recall.png") as image:
        assert image.width > image.height * 2  # two panels side by side: work level and artist level


# -- an --out that cannot be written ---------------------------------------------------------------------------------
def test_an_out_that_is_not_a_writable_folder_is_refused_before_the_run_in_one_line(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    labelled = write_labelled(eval_catalogue, tmp_path / "queries")
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    for out in (a_file, a_file / "below"):
        refused = cli(
            "evaluate", "run", str(labelled), "--k-max", "3", "--k", "2", *EMBEDDER, "--out", str(out), code=1
        )
        assert refused.stderr.startswith(f"error: {out}: ") and "--out" in refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and isinstance(refused.exception, SystemExit)
        noise = ["evaluate", "noise", str(labelled), "--levels", "0.1", "--k", "2", *EMBEDDER, "--out", str(out)]
        assert cli(*noise, code=1).stderr.startswith(f"error: {out}: ")
    assert cli("evaluate", "list", "--format", "csv").stdout.strip() == "id,kind,status,created_at,embedder"
    assert "chain OK: 0 records" in cli("audit", "verify").stdout  # nothing attributed, nothing recorded

    # A run whose outputs then cannot be written (here: evaluate report) says so in one line, with its run id.
    cli("evaluate", "run", str(labelled), "--k-max", "3", "--k", "2", *EMBEDDER, "--out", str(tmp_path / "ok"))
    refused = cli("evaluate", "report", "--run", "1", "--out", str(a_file), code=1)
    assert refused.stderr.startswith(f"error: {a_file}: ") and len(refused.stderr.splitlines()) == 1


def test_a_subset_named_overall_does_not_replace_the_overall_figures(tmp_path: Path) -> None:
    """A labelled set may name a subset "overall": it is shown as "subset overall", beside the real overall."""
    outcomes = [replace(O1, subset="overall"), replace(O2, subset="overall"), O3, O4, O5]
    metrics = evaluate(outcomes, k_max=3, k=3, model=None)
    write_outputs({"run_id": 1, "recorded_k": 3, **metrics}, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "| overall | 5 |" in report and "| subset overall | 2 |" in report
    with (tmp_path / "curves.csv").open() as handle:
        groups = [row["group"] for row in csv.DictReader(handle)]
    assert groups.count("overall") == 3 and groups.count("subset overall") == 3

    pairs = [ContentPairs("overall", [0.9], [0.1]), ContentPairs("b", [0.3, 0.4], [0.6])]
    bias = {"run_id": 2, "space": "content", "content_source": "captions", "content_source_reason": "r"}
    write_content_bias_outputs({**bias, **content_bias(pairs)}, tmp_path)
    table = (tmp_path / "content_bias.md").read_text()
    assert "| overall | 2 | 3 / 2 |" in table and "| subset overall | 1 | 1 / 1 |" in table
    assert (tmp_path / "content_bias_overall.png").is_file()
    assert (tmp_path / "content_bias_subset_overall.png").is_file()


def test_report_of_a_run_that_did_not_finish_is_refused_in_one_line(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """A run cut short (killed) stays "running" with part of its results: no report pretends it is whole."""
    cli.restore(ingested)
    audit = cli.audit()
    try:
        query_set = import_query_set(audit, eval_catalogue.labelled)
        run_id = audit.evaluations.start_run(
            kind="attribution",
            requester="tester",
            query_set_id=query_set,
            embedder_name=MODEL,
            collection="works_efficientnet_lite0",
            settings={"k_max": 3, "k": 2, "recorded_k": 3, "params": {"shares": "equal"}},
        )
    finally:
        audit.engine.dispose()
    refused = cli("evaluate", "report", "--run", str(run_id), "--out", str(tmp_path / "out"), code=1)
    assert f"evaluation run {run_id} has not finished" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_noise_removes_the_scratch_copy_a_killed_run_left_and_keeps_a_live_one(
    cli: Cli, ingested: Ingested, eval_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """A noise run killed mid-way leaves its scratch copy of the index in the data dir (SIGKILL runs no cleanup);
    the next run removes it, unless another run still holds it."""
    cli.restore(ingested)
    production = open_store(load_settings(data_dir=cli.data_dir, database_url=cli.database_url), MODEL)
    try:
        points = list(production.iter_points())[:4]
    finally:
        production.close()
    left, live = cli.data_dir / "noise-killed", cli.data_dir / "noise-running"
    for folder in (left, live):
        scratch = EdgeStore(folder, "scratch")
        scratch.ensure_collection(len(points[0].vector), None)
        scratch.upsert(points)
        if folder == left:
            scratch.close()  # what a killed process leaves: the copy, its lock free
        else:
            running = scratch  # another run's copy, its lock held
    try:
        args = ["evaluate", "noise", str(eval_catalogue.labelled), "--levels", "0.25", "--k", "3", *EMBEDDER]
        cli(*args, "--out", str(tmp_path / "out"))
        assert not left.exists() and (live / "scratch.lock").is_file()
        assert sorted(p.name for p in cli.data_dir.glob("noise-*")) == ["noise-running"]
    finally:
        running.close()


def test_a_clashing_query_set_name_says_what_every_command_can_do(audit: AuditStore, tmp_path: Path) -> None:
    """The same labels copied elsewhere, or the file edited: the error says which, and offers what works for every
    evaluate command (noise, content-bias, compare-exact have no --name): reuse the stored set by its name."""
    first, copy = tmp_path / "x" / "labelled.csv", tmp_path / "y" / "labelled.csv"
    for path in (first, copy):
        path.parent.mkdir()
        path.write_text("path,artist\na.png,Ada\n")
    import_query_set(audit, first)
    with pytest.raises(ManifestError) as moved:
        import_query_set(audit, copy)
    assert "other content" not in str(moved.value) and "give 'labelled' instead of the file" in str(moved.value)
    first.write_text("path,artist\na.png,Bruno\n")
    with pytest.raises(ManifestError) as edited:
        import_query_set(audit, first)
    assert "with other content" in str(edited.value) and "rename the file" in str(edited.value)
