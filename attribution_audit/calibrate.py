"""Fit the logistic confidence model on labelled queries and store it, versioned, in the audit DB."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attribution_audit.attribution import AttributionParams, Attributor
from attribution_audit.audit.db import session_scope
from attribution_audit.audit.models import CalibrationModel
from attribution_audit.calibration import FEATURES, feature_value, fit_logistic
from attribution_audit.errors import AttributionAuditError
from attribution_audit.images import load_image
from attribution_audit.labelled import read_labelled
from attribution_audit.metrics import auroc


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
    if attributor.embedder is None:
        raise ValueError("calibration needs an Attributor with an embedder")
    params = params or AttributionParams(verify="off")
    queries = read_labelled(labelled_csv)
    rows, labels = [], []
    for query in queries:
        image = load_image(query.path, target_size=224)
        outcome = attributor.compute(attributor.embedder.embed([image.image])[0], params)
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
    row = CalibrationModel(
        embedder_fingerprint=attributor.embedder_fingerprint,
        labelled_path=str(Path(labelled_csv).resolve()),
        labelled_sha256=hashlib.sha256(Path(labelled_csv).read_bytes()).hexdigest(),
        features=model.as_json(),
        n_samples=len(y),
        n_positive=int(y.sum()),
        fit_metrics={"auroc": score, "brier": brier, "parameters": params.as_json()},
    )
    with session_scope(attributor.engine) as session:
        session.add(row)
        session.flush()
        name = f"logistic-v{row.id}"
    return CalibrationReport(name, len(y), int(y.sum()), score, brier)
