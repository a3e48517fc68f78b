"""Fit the logistic confidence model on labelled queries and store it, versioned, in the audit DB."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.confidence import FEATURES, feature_value, fit_logistic
from attribution_audit.domain.params import AttributionParams
from attribution_audit.errors import AttributionAuditError
from attribution_audit.evaluation.metrics import auroc
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import read_labelled
from attribution_audit.store.audit_store import AuditStore


@dataclass(frozen=True)
class CalibrationReport:
    model_name: str
    n_samples: int
    n_positive: int
    auroc: float | None
    brier: float


def calibrate(
    attributor: Attributor, labelled_csv: str | Path, params: AttributionParams | None = None
) -> CalibrationReport:
    """Attribute each labelled query (not logged: nothing is shown as attributed), label it by whether the top
    artist is the true one, fit, store. Needs both correct and incorrect cases."""
    params = params or AttributionParams(verify="off")
    queries = read_labelled(labelled_csv)
    rows, labels = [], []
    for query in queries:
        image = load_image(query.path, target_size=224)
        outcome = attributor.compute(attributor.embed([image.image], params.space)[0], params)
        rows.append([feature_value(outcome.features, f) for f in FEATURES])
        labels.append(outcome.top_artist == query.artist)
    x, y = np.array(rows), np.array(labels, dtype=float)
    try:
        model = fit_logistic(x, y)
    except ValueError as exc:
        raise AttributionAuditError(
            f"{labelled_csv}: {exc} ({int(y.sum())} correct of {len(y)}); add labelled queries of both kinds"
        ) from None
    probabilities = np.array([model.predict(dict(zip(FEATURES, r, strict=True))) for r in rows])
    brier = float(np.mean((probabilities - y) ** 2))
    score = auroc(probabilities.tolist(), [bool(v) for v in y])
    name = attributor.audit.evaluations.add_calibration(
        model,
        embedder_fingerprint=attributor.embedder_fingerprint,
        labelled_path=str(Path(labelled_csv).resolve()),
        labelled_sha256=hashlib.sha256(Path(labelled_csv).read_bytes()).hexdigest(),
        n_samples=len(y),
        n_positive=int(y.sum()),
        fit_metrics={"auroc": score, "brier": brier, "parameters": params.as_json()},
    )
    return CalibrationReport(name, len(y), int(y.sum()), score, brier)


def calibrate_labelled(settings: Settings, audit: AuditStore, labelled: Path, k: int) -> CalibrationReport:
    """The ``calibrate`` use case: fit on labelled queries with the settings' embedder, at K = ``k``."""
    with open_attributor(settings, audit, settings.embedder) as attributor:
        return calibrate(attributor, labelled, AttributionParams(k=k, verify="off"))
