"""Fit the logistic confidence model on labelled queries over every indicator (entropy, NN distance, margin, top
artist share), measure it by k-fold cross-validation against the default formula and the NN distance alone, and
store it, versioned, in the audit DB."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypedDict

import numpy as np
from PIL import Image

from attribution_audit.config import Settings
from attribution_audit.domain.confidence import (
    CALIBRATION_FEATURES,
    LogisticModel,
    confidence,
    default_model_name,
    feature_value,
    fit_logistic,
)
from attribution_audit.domain.params import AttributionParams
from attribution_audit.errors import AttributionAuditError, ImageError
from attribution_audit.evaluation.calibration import (
    brier,
    cross_validated,
    expected_calibration_error,
    plot_reliability,
)
from attribution_audit.evaluation.metrics import auroc
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.evaluate import unseen_artists
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import LabelledQuery, read_labelled
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.evaluations import CalibrationEvidence

BATCH = 32
CHANCE = 0.5  # the AUROC of a confidence that ranks at random: a model below it is refused whatever the baseline


class Scores(TypedDict):
    """The scores of a fitted model (on its training queries, and cross-validated) and of the alternatives."""

    auroc: float | None
    brier: float | None
    cv_auroc: float | None
    cv_brier: float | None
    cv_ece: float | None
    default_auroc: float | None
    default_ece: float | None
    nn_distance_auroc: float | None


@dataclass(frozen=True)
class Baseline:
    """The confidence requests keep without a new model (``model``: a stored model's name, or the default formula's
    ``default-v1``/``default-centroid-v1``; ``kind`` says which it is), scored on the labelled queries."""

    model: str
    kind: str
    auroc: float | None
    ece: float | None
    fitted_on: str | None = None  # a calibrate model fitted on these labelled queries: which (its score is in-sample)

    def __str__(self) -> str:
        return f"{self.kind} {self.model}"


@dataclass(frozen=True)
class CalibrationReport:
    """The stored model (None: ``refused``, why it was not stored), its training scores, and the cross-validated
    scores of it and of the alternatives."""

    model_name: str | None
    n_samples: int
    n_positive: int
    folds: int
    plot: Path | None
    scores: Scores
    baseline: Baseline
    refused: str | None = None
    unseen: dict[str, int] = field(default_factory=dict)  # see services.evaluate.unseen_artists


def calibrate(
    attributor: Attributor,
    labelled_csv: str | Path,
    params: AttributionParams | None = None,
    *,
    folds: int = 5,
    plot: Path | None = None,
    force: bool = False,
) -> CalibrationReport:
    """Attribute each labelled query (not logged: nothing is shown as attributed), label it by whether the top
    artist is the true one, cross-validate, fit on all, store. Needs at least ``folds`` correct and ``folds``
    incorrect cases (a model without out-of-fold evidence never replaces the default confidence), and, unless
    ``force``, a cross-validated AUROC no worse than that of the confidence requests keep without it on the same
    queries (:func:`baseline_of`): else nothing is stored, and the report says why (:func:`worse`; the reliability
    diagram is written either way)."""
    # the newest stored now (the baseline too; also for an attributor that ran before), kept for the whole run:
    # compute does not read again, so a version or model stored meanwhile changes no query's features
    attributor.refresh()
    params = attributor.space_of(params or AttributionParams(verify="off"))[1]  # a learned space's version
    queries = read_labelled(labelled_csv)
    active = attributor.calibration_for(params)
    labelled = (str(Path(labelled_csv).resolve()), hashlib.sha256(Path(labelled_csv).read_bytes()).hexdigest())
    rows, labels, defaults, kept = [], [], [], []
    for start in range(0, len(queries), BATCH):
        batch = queries[start : start + BATCH]
        images = [_labelled_image(labelled_csv, q) for q in batch]
        for query, vectors in zip(batch, attributor.embed(images, params.space, crops=True), strict=True):
            outcome = attributor.compute(vectors, params)
            rows.append([feature_value(outcome.features, f) for f in CALIBRATION_FEATURES])
            labels.append(outcome.top_artist == attributor.canonical.get(query.artist, query.artist))
            defaults.append(confidence(None, outcome.features, params.top)[0])
            kept.append(confidence(active, outcome.features, params.top)[0])
    x, y = np.array(rows), np.array(labels, dtype=float)
    model, cv, scores = fit_and_score(x, y, defaults, folds, source=str(labelled_csv))
    right = [bool(v) for v in y]
    baseline = baseline_of(attributor, params, active, kept, right, scores, labelled)
    if plot is not None:
        plot_reliability(plot, {"default formula": (defaults, right), "calibrated (out of fold)": (cv.tolist(), right)})
    report = CalibrationReport(
        None,
        len(y),
        int(y.sum()),
        folds=folds,
        plot=plot,
        scores=scores,
        baseline=baseline,
        unseen=unseen_artists(attributor.audit, queries),
    )
    if not force and (refused := worse(scores, str(labelled_csv), baseline)):
        return replace(report, refused=refused)
    evidence = CalibrationEvidence(
        embedder_fingerprint=attributor.embedder_fingerprint,
        labelled_path=labelled[0],
        labelled_sha256=labelled[1],
        n_samples=len(y),
        n_positive=int(y.sum()),
        fit_metrics={**scores, "folds": folds, "parameters": params.as_json()},
    )
    return replace(report, model_name=attributor.audit.evaluations.add_calibration(model, evidence))


def _labelled_image(labelled_csv: str | Path, query: LabelledQuery) -> Image.Image:
    """The query's image; one that cannot be read fails with the CSV's line (relative paths are the CSV's folder's)."""
    try:
        return load_image(query.path, target_size=224).image
    except ImageError as exc:
        raise ImageError(
            f"{labelled_csv}:{query.line}: {exc} (a relative path is read from the CSV's folder); fix or remove the row"
        ) from None


def fit_and_score(
    x: np.ndarray, y: np.ndarray, defaults: list[float], folds: int, source: str
) -> tuple[LogisticModel, np.ndarray, Scores]:
    """The model fitted on every query, its out-of-fold predictions, and the scores of it, of the default formula
    and of the NN distance alone on the same queries (``source`` names the labelled queries in errors)."""
    positives = int(y.sum())
    try:
        model = fit_logistic(x, y, names=CALIBRATION_FEATURES)
    except ValueError as exc:
        raise AttributionAuditError(
            f"{source}: {exc} ({positives} correct of {len(y)}); add labelled queries of both kinds"
        ) from None
    fewer = min(positives, len(y) - positives)
    if fewer < folds:  # each class in every fold, or no evidence for the model
        remedy = f" or pass --folds {fewer}" if fewer >= 2 else ""  # fewer than 2 folds cross-validate nothing
        raise AttributionAuditError(
            f"{source}: {positives} correct and {len(y) - positives} incorrect of {len(y)}; {folds}-fold "
            f"cross-validation needs at least {folds} of each before a model replaces the default confidence: "
            f"add labelled queries{remedy}; nothing was stored"
        )
    cv = cross_validated(x, y, _fitter, folds)
    trained = [model.predict(dict(zip(CALIBRATION_FEATURES, r, strict=True))) for r in x.tolist()]
    right = [bool(v) for v in y]
    nn_column = x[:, CALIBRATION_FEATURES.index("nn_distance")]
    scores: Scores = {
        "auroc": auroc(trained, right),
        "brier": brier(trained, right),
        "cv_auroc": auroc(cv.tolist(), right),
        "cv_brier": brier(cv.tolist(), right),
        "cv_ece": expected_calibration_error(cv.tolist(), right),
        "default_auroc": auroc(defaults, right),
        "default_ece": expected_calibration_error(defaults, right),
        "nn_distance_auroc": auroc((-nn_column).tolist(), right),
    }
    return model, cv, scores


def baseline_of(
    attributor: Attributor,
    params: AttributionParams,
    active: LogisticModel | None,
    kept: list[float],
    right: list[bool],
    scores: Scores,
    labelled: tuple[str, str],
) -> Baseline:
    """The confidence requests at ``params`` keep without a new model, scored on the labelled queries (``kept``, its
    confidence of each): the ``active`` model (an earlier ``calibrate``'s, else a learned space version's own fitted
    at their K), else the default formula of their rule. An earlier ``calibrate`` model fitted on the same labelled
    queries (``labelled``: their resolved path and sha256; the same content, or the same file since edited) says
    so in ``fitted_on``: its score on them is in-sample."""
    if active is None:
        model = default_model_name(params.top)
        return Baseline(model, "the default formula", scores["default_auroc"], scores["default_ece"])
    own = attributor.own_fit(params)
    measured = auroc(kept, right), expected_calibration_error(kept, right)
    if own is not None and own[0] == active.name:
        return Baseline(active.name, "the space's own model", *measured)
    path, sha256 = attributor.audit.evaluations.calibration_source(active.name)
    fitted_on = (
        "these queries" if sha256 == labelled[1] else "an earlier version of them" if path == labelled[0] else None
    )
    return Baseline(active.name, "the calibrate model", *measured, fitted_on=fitted_on)


def worse(scores: Scores, source: str, baseline: Baseline) -> str | None:
    """Why a model is refused, in one line: its cross-validated AUROC is below 0.5 (it ranks worse than chance,
    whatever the baseline), or below that of the ``baseline`` (the confidence requests keep without it) on the same
    queries (it would rank requests worse than what they have; a baseline fitted on these queries is said to be
    scored in-sample); None when it is not worse."""
    fitted, kept = scores["cv_auroc"], baseline.auroc
    if fitted is not None and fitted < CHANCE:
        return (
            f"{source}: the fitted model's cross-validated AUROC {fitted:.3f} is below {CHANCE} (worse than chance); "
            "nothing was stored (add labelled queries, or --force to store it anyway)"
        )
    if fitted is None or kept is None or fitted >= kept:
        return None
    if baseline.fitted_on is not None:
        return (
            f"{source}: the fitted model's cross-validated AUROC {fitted:.3f} is below the AUROC {kept:.3f} of "
            f"{baseline}, fitted on {baseline.fitted_on}: its AUROC here is not out of sample; nothing was stored "
            "(use --force to replace it or label new queries)"
        )
    return (
        f"{source}: the fitted model's cross-validated AUROC {fitted:.3f} is below the AUROC {kept:.3f} of "
        f"{baseline} on the same queries; nothing was stored and requests keep it (add labelled queries, or --force "
        "to store it anyway, e.g. for its calibration)"
    )


def _fitter(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], float]:
    model = fit_logistic(x, y, names=CALIBRATION_FEATURES)
    return lambda row: model.predict(dict(zip(CALIBRATION_FEATURES, row.tolist(), strict=True)))


def calibrate_labelled(
    settings: Settings,
    audit: AuditStore,
    labelled: Path,
    k: int,
    *,
    space: str = "content",
    top: str = "share",
    folds: int = 5,
    plot: Path | None = None,
    force: bool = False,
) -> CalibrationReport:
    """The ``calibrate`` use case: fit on labelled queries with the settings' embedder, at K = ``k``, in ``space``,
    the top artist chosen by ``top``."""
    with open_attributor(settings, audit, settings.embedder) as attributor:
        params = AttributionParams(k=k, verify="off", space=space, top=top)
        return calibrate(attributor, labelled, params, folds=folds, plot=plot, force=force)
