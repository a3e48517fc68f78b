"""How a confidence is judged: stratified folds, out-of-fold predictions, Brier score, ECE and the reliability
diagram (evaluation/calibration.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attribution_audit.evaluation.calibration import (
    brier,
    cross_validated,
    expected_calibration_error,
    plot_reliability,
    reliability,
    stratified_folds,
)


def test_folds_split_each_class_evenly_and_are_seeded() -> None:
    labels = [True] * 10 + [False] * 5
    folds = stratified_folds(labels, 5)
    for f in range(5):
        assert (folds[:10] == f).sum() == 2 and (folds[10:] == f).sum() == 1
    assert (folds == stratified_folds(labels, 5)).all()


def test_out_of_fold_predictions_never_see_their_own_label() -> None:
    # A "model" that predicts the mean label of its training data: a leak would move each prediction towards
    # the sample's own label.
    y = np.array([1.0] * 6 + [0.0] * 6)
    x = np.arange(12, dtype=float)[:, None]
    predicted = cross_validated(x, y, lambda _x, train_y: lambda _row: float(train_y.mean()), 3)
    folds = stratified_folds(y.astype(bool).tolist(), 3)
    for i in range(12):
        assert predicted[i] == pytest.approx(y[folds != folds[i]].mean())


def test_brier_and_ece_hand_cases() -> None:
    assert brier([1.0, 0.0], [True, False]) == 0.0 and brier([0.5, 0.5], [True, False]) == 0.25
    # Bin 0.0-0.1: predicted 0.05 twice, observed 0 -> gap 0.05; bin 0.9-1.0: predicted 0.95 twice, observed 0.5.
    probabilities, labels = [0.05, 0.05, 0.95, 0.95], [False, False, True, False]
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.5 * 0.05 + 0.5 * 0.45)
    rows = reliability(probabilities, labels)
    assert [(r["bin"], r["count"], r["observed"]) for r in rows] == [(0, 2, 0.0), (9, 2, 0.5)]
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0  # 1.0 falls in the last bin


def test_reliability_diagram_is_a_png(tmp_path: Path) -> None:
    path = plot_reliability(tmp_path / "plots" / "r.png", {"model": ([0.2, 0.8, 0.9], [False, True, True])})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
