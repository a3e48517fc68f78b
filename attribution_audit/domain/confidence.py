"""Confidence: the documented default formula, or a logistic model fitted on labelled queries.

``attribution-audit calibrate`` fits P(top artist correct | entropy, nn_distance, margin) by Newton's method
(IRLS) with a small L2 penalty on standardised features, stores it versioned in the audit DB, and every later
request with the same embedder uses the newest model and records its name (``logistic-v<N>``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from attribution_audit.domain.chain import canonical_json
from attribution_audit.domain.indicators import centroid_confidence_score, confidence_score
from attribution_audit.domain.params import CENTROID
from attribution_audit.domain.projection import LOG_ODDS_BOUND

FEATURES = ("entropy", "nn_distance", "margin")  # of the models fitted before top_share was recorded
# what ``calibrate`` fits on now (a model keeps the names it was fitted on: older ones predict without the newer)
CALIBRATION_FEATURES = (
    *FEATURES,
    "top_share",
    "agreement",
    "agreement_spaces",
    "centroid_log_odds",
    "centroid_log_odds_others",
    "crop_log_odds",
)
# the indicators a request reads from other spaces or a learned space's centroids, not from its own neighbours
LOGGED_INDICATORS = ("agreement", "agreement_spaces", "centroid_log_odds", "centroid_log_odds_others", "crop_log_odds")
DEFAULT_MODEL_NAME = "default-v1"
DEFAULT_CENTROID_MODEL_NAME = "default-centroid-v1"  # the default formula of the ``centroid`` rule
LOW_CONFIDENCE = 0.5  # below it a request is of low confidence (the reports, the v_low_confidence view)
STORED_MODEL_PREFIX = "logistic-v"  # a stored (fitted) model is named logistic-v<N>; a default formula is not
L2_PENALTY = 1e-2


@dataclass(frozen=True)
class LogisticModel:
    """Coefficients over standardised features; ``name`` is recorded with every request that uses it."""

    name: str
    mean: list[float]
    std: list[float]
    coef: list[float]
    intercept: float
    names: tuple[str, ...] = FEATURES

    def predict(self, features: dict[str, float | None]) -> float:
        x = np.array([feature_value(features, f) for f in self.names])
        z = float(np.dot((x - self.mean) / self.std, self.coef) + self.intercept)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def weight(self, feature: str) -> float:
        """The model's coefficient of ``feature`` (0 for one it was not fitted on, or that was constant at its fit)."""
        return self.coef[self.names.index(feature)] if feature in self.names else 0.0

    def problem(self) -> str | None:
        """Why these values are no model (a stored one changed by hand), or None: known feature names, one finite
        number per feature in mean, std (positive) and coef, and a finite intercept."""
        unknown = [name for name in self.names if name not in CALIBRATION_FEATURES]
        if unknown:
            return f"unknown feature {unknown[0]!r}"
        for key in ("mean", "std", "coef"):
            values = getattr(self, key)
            if not isinstance(values, list) or len(values) != len(self.names) or not all(map(_finite, values)):
                return f"{key} is not {len(self.names)} finite numbers"
        if min(self.std, default=1.0) <= 0:
            return "a std is not positive"
        return None if _finite(self.intercept) else "intercept is not a finite number"

    def as_json(self) -> dict[str, object]:
        return {
            "names": list(self.names),
            "mean": self.mean,
            "std": self.std,
            "coef": self.coef,
            "intercept": self.intercept,
        }

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON (:func:`canonical_json`) of the model (feature names and coefficients): a
        request records it, so that a stored model changed since (by hand) no longer matches the record."""
        return hashlib.sha256(canonical_json(self.as_json())).hexdigest()


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def feature_value(features: dict[str, float | None], name: str) -> float:
    """Missing indicators take their least confident value (no neighbour: distance 1, margin 0)."""
    value = features.get(name)
    if value is None:
        return {
            "entropy": 1.0,
            "nn_distance": 1.0,
            "margin": 0.0,
            "top_share": 0.0,
            "agreement": 0.0,
            "agreement_spaces": 0.0,
            "centroid_log_odds": -LOG_ODDS_BOUND,
            "centroid_log_odds_others": -LOG_ODDS_BOUND,
            "crop_log_odds": -LOG_ODDS_BOUND,
        }[name]
    return float(value)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, name: str = "logistic", iterations: int = 100, names: tuple[str, ...] = FEATURES
) -> LogisticModel:
    """L2-penalised logistic regression by Newton's method; ``x`` is (n, len(names)), ``y`` 0/1."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both correct and incorrect attributions among the labelled queries")
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    design = np.hstack([np.ones((len(x), 1)), (x - mean) / std])
    weights = np.zeros(design.shape[1])
    penalty = np.diag([0.0] + [L2_PENALTY * len(x)] * x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ weights, -50, 50)))
        gradient = design.T @ (p - y) + penalty @ weights
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return LogisticModel(name, mean.tolist(), std.tolist(), weights[1:].tolist(), float(weights[0]), tuple(names))


def confidence(
    model: LogisticModel | None, features: dict[str, float | None], rule: str = "share"
) -> tuple[float, str]:
    """(confidence in [0, 1], model name): the calibrated model if given, else the default formula of the top-artist
    ``rule`` (the ``centroid`` rule's reported artist may have no work among the K: its own formula measures it)."""
    if model is not None:
        return model.predict(features), model.name
    if rule == CENTROID:
        score = centroid_confidence_score(features.get("top_share"), features.get("top_distance"))
    else:
        score = confidence_score(features["entropy"] or 0.0, features.get("nn_distance"))
    return score, default_model_name(rule)


def default_model_name(rule: str) -> str:
    """The name recorded for the default formula of the top-artist ``rule``."""
    return DEFAULT_CENTROID_MODEL_NAME if rule == CENTROID else DEFAULT_MODEL_NAME
