"""How good a confidence is: k-fold cross-validated predictions, Brier score, expected calibration error and the
reliability diagram (predicted probability against the observed share of right top artists, per bin)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

BINS = 10


def stratified_folds(labels: Sequence[bool], folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) of each sample: each class dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels, dtype=bool)
    fold = np.empty(len(y), dtype=int)
    for value in (True, False):
        members = rng.permutation(np.flatnonzero(y == value))
        fold[members] = np.arange(len(members)) % folds
    return fold


def cross_validated(
    x: np.ndarray, y: np.ndarray, fit: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], float]], folds: int
) -> np.ndarray:
    """Out-of-fold predictions: each sample predicted by the model fitted on the other folds."""
    fold = stratified_folds(y.astype(bool).tolist(), folds)
    predicted = np.empty(len(y))
    for f in range(folds):
        held = fold == f
        model = fit(x[~held], y[~held])
        predicted[held] = [model(row) for row in x[held]]
    return predicted


def brier(probabilities: Sequence[float], labels: Sequence[bool]) -> float:
    p, y = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=float)
    return float(np.mean((p - y) ** 2))


def reliability(probabilities: Sequence[float], labels: Sequence[bool], bins: int = BINS) -> list[dict[str, float]]:
    """Per equal-width bin of predicted probability (empty bins left out): count, mean prediction, observed rate."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "bin": b,
                    "count": int(inside.sum()),
                    "predicted": float(p[inside].mean()),
                    "observed": float(y[inside].mean()),
                }
            )
    return rows


def expected_calibration_error(probabilities: Sequence[float], labels: Sequence[bool], bins: int = BINS) -> float:
    """Weighted mean over bins of |mean prediction - observed rate| (weights: the bins' shares of samples)."""
    rows = reliability(probabilities, labels, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["predicted"] - r["observed"]) for r in rows) / total) if total else 0.0


def plot_reliability(path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[bool]]]) -> Path:
    """A reliability diagram PNG of each named set of (probabilities, labels), with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 5), dpi=110)
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    for name, (probabilities, labels) in curves.items():
        rows = reliability(probabilities, labels)
        ece = expected_calibration_error(probabilities, labels)
        axis.plot(
            [r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o", label=f"{name} (ECE {ece:.3f})"
        )
    axis.set_xlabel("predicted probability that the top artist is right")
    axis.set_ylabel("observed share right")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
