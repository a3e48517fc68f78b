"""Learned spaces: fit a projection on the catalogue's own artist labels (``spaces fit``), validated on works held
out inside the catalogue, stored as a new version; list the spaces usable with ``--space``."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, LogisticModel, confidence, feature_value
from attribution_audit.domain.indicators import request_indicators
from attribution_audit.domain.params import DEFAULT_K, LEARNED_NAME, MAX_K, QUERY_SPACES, AttributionParams
from attribution_audit.domain.points import CONTENT, STYLE, WorkPoint
from attribution_audit.domain.projection import (
    SHRINKAGES,
    ArtistCentroids,
    Projection,
    artist_hits,
    fit_lda,
    join_bases,
    unit_rows,
    unit_vectors,
    validation_split,
)
from attribution_audit.domain.spaces import LEARNED_BASES
from attribution_audit.errors import AttributionAuditError, ConflictError, NotFoundError
from attribution_audit.evaluation.calibration import expected_calibration_error
from attribution_audit.services.attribution import space_since_fit
from attribution_audit.services.calibrate import fit_and_score
from attribution_audit.services.wiring import open_attributor
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.spaces import ARTISTS, SpaceConfidence, SpaceInfo

METHODS = ("lda",)
MIN_ARTISTS = 3
FOLDS = 5  # of the cross-validation of a space's own confidence model, as ``calibrate``'s default
HELD_OUT_RATE = "held-out rate"


@dataclass(frozen=True)
class HeldOutRate:
    """The learned space version's own confidence model (``spaces fit``) is the held-out rate: too few right or wrong
    held-out answers to fit one, so every request it scores gets the same confidence, ``rate``."""

    space: str
    version: int
    model: str
    rate: float

    @classmethod
    def of(cls, info: SpaceInfo, model: str) -> HeldOutRate | None:
        """The note of a request scored by ``model`` in this version, when that is its own held-out rate."""
        own = info.validation.get("confidence", {})
        if own.get("kind") != HELD_OUT_RATE or own.get("model") != model:
            return None
        return cls(info.name, info.version, model, float(own["rate"]))

    def __str__(self) -> str:
        return (
            f"space {self.space} (version {self.version})'s own confidence model {self.model} is the held-out rate: "
            f"`spaces fit` had too few right or wrong held-out answers to fit one, so every request gets the same "
            f"confidence, {self.rate:.3f}; for a real model run `attribution-audit calibrate LABELLED.csv --space "
            f"{self.space}` on labelled queries, or ingest more works per artist and run `spaces fit` again"
        )


@dataclass(frozen=True)
class FitResult:
    """A stored fit and how long the fit took (validation included), with the ``calibrate`` models fitted in the
    version it succeeds (model name -> top rule): they do not score requests in the new version; and the number of
    training works each held-out work was compared against (the own model's answers rank at most that many)."""

    space: SpaceInfo
    seconds: float
    outdated: dict[str, str]
    training_works: int


def fit_space(
    settings: Settings,
    audit: AuditStore,
    name: str,
    base: str,
    method: str = "lda",
    shrinkage: float | None = None,
    k: int = DEFAULT_K,
) -> FitResult:
    """Fit ``name`` from ``base`` on the catalogue of the settings' embedder and store it as its next version.

    The shrinkage of the regularised LDA (unless given) is the one with the best hit@1 + hit@10 on works whose
    content is held out (:func:`validate`); the held-out scores of every shrinkage tried, and the base
    space's on the same split, are stored with it; the stored projection is then refitted on every work. The
    version's own confidence model is fitted at K = ``k``, and scores only the requests at that K."""
    previous = _check_request(audit, name, base, method)
    if shrinkage is not None and not 0 < shrinkage < 1:
        raise AttributionAuditError(f"--shrinkage {shrinkage}: choose a number between 0 and 1 (exclusive)")
    if not 1 <= k <= MAX_K:
        raise AttributionAuditError(f"--k {k}: choose a number between 1 and {MAX_K}")
    started = time.perf_counter()
    with open_attributor(settings, audit, settings.embedder) as attributor:
        bases = LEARNED_BASES[base]
        attributor.check_coverage(bases)
        points = list(attributor.store.iter_points())
        labels = [attributor.canonical.get(a, a) for a in (str(p.payload.get("artist", "")) for p in points)]
        if len(set(labels)) < MIN_ARTISTS:  # n artists give n - 1 dimensions; in one, every cosine is +-1
            raise AttributionAuditError(
                f"collection '{attributor.store.collection}' holds works of {len(set(labels))} artist(s); a learned "
                f"space needs at least {MIN_ARTISTS} (with two it has one dimension, where every work is at "
                "similarity 1 or -1 and the confidence says nothing): ingest the works of more artists first"
            )
        rows = join_bases([_stack(points, b) for b in bases])
        other = STYLE if bases == (CONTENT,) else CONTENT  # the agreement's space, as a request measures it
        agreement_rows = _stack(points, other) if attributor.has_both_spaces() else None
        validation, held_out = held_out_validation(rows, labels, (shrinkage,) if shrinkage is not None else SHRINKAGES)
        default = default_confidence(held_out, rows, labels, agreement_rows, k)
        projection = fit_lda(rows, labels, validation["shrinkage"])
        stored = audit.spaces.add(
            name,
            projection,
            base=base,
            method=method,
            embedder_fingerprint=attributor.embedder_fingerprint,
            collection=attributor.store.collection,
            n_works=len(points),
            n_artists=len(set(labels)),
            validation={**validation, "confidence": default.fit_metrics, ARTISTS: sorted(set(labels))},
            confidence=default,
        )
    outdated = {} if previous is None else audit.evaluations.calibrated_in(stored.embedder_fingerprint, name, previous)
    return FitResult(stored, time.perf_counter() - started, outdated, int(held_out.train.sum()))


def validate(rows: np.ndarray, labels: list[str], shrinkages: tuple[float, ...] = SHRINKAGES) -> dict[str, Any]:
    """Artist hit@1/hit@10 of held-out works against the training works (:func:`validation_split`: whole content
    groups held out), for each shrinkage and for the base space; the best shrinkage (by hit@1 + hit@10) with its
    scores."""
    return held_out_validation(rows, labels, shrinkages)[0]


@dataclass(frozen=True)
class HeldOut:
    """The validation's split and the projection fitted on its training works at the chosen shrinkage."""

    train: np.ndarray
    scored: np.ndarray
    projection: Projection


def held_out_validation(
    rows: np.ndarray, labels: list[str], shrinkages: tuple[float, ...] = SHRINKAGES
) -> tuple[dict[str, Any], HeldOut]:
    """:func:`validate`'s scores, and its split with the projection fitted on the training works at the chosen
    shrinkage."""
    train, scored, split = validation_split(rows, labels)
    if not scored.any():
        raise AttributionAuditError("no artist has two works: nothing to validate a learned space on")
    train_labels = [label for label, t in zip(labels, train, strict=True) if t]
    test_labels = [label for label, s in zip(labels, scored, strict=True) if s]
    base = artist_hits(rows[scored], test_labels, rows[train], train_labels)
    scores, projections = {}, {}
    for shrinkage in shrinkages:
        projections[shrinkage] = fit_lda(rows[train], train_labels, shrinkage)
        scores[shrinkage] = artist_hits(
            projections[shrinkage].apply(rows[scored]),
            test_labels,
            projections[shrinkage].apply(rows[train]),
            train_labels,
        )
    # on a tie the strongest shrinkage: the held-out works cannot tell them apart, and the least regularised fits the
    # training works' own noise (a small catalogue's held-out hit@1 of 1.0 at every shrinkage chose 0.01)
    best = max(shrinkages, key=lambda s: (scores[s]["hit@1"] + scores[s]["hit@10"], s))
    validation = {
        "split": split,
        "held_out_works": int(scored.sum()),
        "shrinkage": best,
        **scores[best],
        "base_hit@1": base["hit@1"],
        "base_hit@10": base["hit@10"],
        "tried": [{"shrinkage": s, **scores[s]} for s in shrinkages],
    }
    return validation, HeldOut(train, scored, projections[best])


def default_confidence(
    held_out: HeldOut, rows: np.ndarray, labels: list[str], agreement_rows: np.ndarray | None, k: int = DEFAULT_K
) -> SpaceConfidence:
    """The confidence model of a learned space, fitted on its validation's held-out works as queries against its
    training works, with the indicators a request measures there at the default parameters but K = ``k`` (the
    K it is recorded with, the only K whose requests it scores; the agreement from
    ``agreement_rows``, the other base space's vectors, when the shard holds both spaces; the centroid log-odds
    among the training works' artists): what a request in the space reports when no ``calibrate`` model was fitted
    in it. Its distances are the space's own, so the default formula's scale, made for the base spaces, does not
    apply. Cross-validated like ``calibrate``; with fewer than ``FOLDS`` right or wrong held-out answers, the
    held-out rate of right ones (Laplace-smoothed) for every request instead."""
    params = AttributionParams(k=k)
    names = np.asarray(labels)
    train, scored = names[held_out.train], names[held_out.scored]
    queries, works = (held_out.projection.coordinates(rows[mask]) for mask in (held_out.scored, held_out.train))
    sims = unit_vectors(queries) @ unit_vectors(works).T  # as a request's
    centroids = ArtistCentroids.fit(works, train.tolist())
    depth = params.k * params.oversampling
    order = np.argsort(-sims, axis=1, kind="stable")[:, :depth]
    nearest_other = None
    if agreement_rows is not None:
        other = unit_rows(agreement_rows)
        other_sims = other[held_out.scored] @ other[held_out.train].T
        nearest_other = np.argsort(-other_sims, axis=1, kind="stable")[:, : params.k]
    x, y, defaults = [], [], []
    for i, truth in enumerate(scored):
        ranked = [(str(train[j]), float(sims[i, j])) for j in order[i]]
        _, _, measured, _, top = request_indicators(ranked, str, params)
        features = {**measured, "agreement": None, "centroid_log_odds": None}
        if centroids is not None and top is not None:
            features["centroid_log_odds"] = centroids.log_odds(queries[i], top)
        if nearest_other is not None and top is not None:
            features["agreement"] = float(np.mean(train[nearest_other[i]] == top))
        x.append([feature_value(features, f) for f in CALIBRATION_FEATURES])
        y.append(top == truth)
        defaults.append(confidence(None, features)[0])
    evidence = {"held_out_works": len(y), "right": int(sum(y)), "parameters": params.as_json()}
    if min(sum(y), len(y) - sum(y)) < FOLDS:  # too few to rank requests: every one gets the held-out rate
        rate = (sum(y) + 1) / (len(y) + 2)  # Laplace: never 0 or 1 on a few works
        flat = [0.0] * len(CALIBRATION_FEATURES)
        ones = [1.0] * len(flat)
        model = LogisticModel(HELD_OUT_RATE, flat, ones, flat, math.log(rate / (1 - rate)), CALIBRATION_FEATURES)
        right = [bool(v) for v in y]
        scores = {"kind": HELD_OUT_RATE, "rate": rate, "default_ece": expected_calibration_error(defaults, right)}
    else:
        model, _, fitted = fit_and_score(np.array(x), np.array(y, dtype=float), defaults, FOLDS, "held-out works")
        scores = {"kind": "logistic", **fitted, "folds": FOLDS}
    digest = hashlib.sha256(json.dumps([x, y], sort_keys=True).encode()).hexdigest()
    return SpaceConfidence(model, digest, {**evidence, **scores})


def list_spaces(audit: AuditStore) -> list[dict[str, Any]]:
    """Every learned space version usable with ``--space NAME`` (the newest) or replayed (older ones), with the
    number of artists of its collection ingested since its fit (None for a version stored without its artists):
    they have no centroid there until the space is refitted (:func:`space_since_fit`)."""
    listed = []
    for info in audit.spaces.versions():
        note = space_since_fit(audit, info)
        listed.append(
            {
                "name": info.name,
                "version": info.version,
                "base": info.base,
                "method": info.method,
                "dimension": info.dim,
                "collection": info.collection,
                "works": info.n_works,
                "artists": info.n_artists,
                "artists_since_fit": None if info.artists is None else len(note.artists) if note else 0,
                "validation": {key: value for key, value in info.validation.items() if key != ARTISTS},
                "fingerprint": info.fingerprint,
                "created_at": info.created_at.isoformat(),
            }
        )
    return listed


def _check_request(audit: AuditStore, name: str, base: str, method: str) -> int | None:
    """The newest stored version of ``name`` (None for a new name), once the request is checked."""
    if name in QUERY_SPACES or not LEARNED_NAME.fullmatch(name):
        raise AttributionAuditError(
            f"space name {name!r}: use lowercase letters, digits, - and _ (at most 40, starting with a letter), "
            f"not {', '.join(QUERY_SPACES)}"
        )
    if base not in LEARNED_BASES:
        raise AttributionAuditError(f"--from {base!r}: choose {', '.join(LEARNED_BASES)}")
    if method not in METHODS:
        raise AttributionAuditError(f"--method {method!r}: choose {', '.join(METHODS)}")
    latest = audit.spaces.load(name)
    if latest is not None and latest[0].base != base:
        raise ConflictError(
            f"space {name} is fitted from {latest[0].base}, not {base}; refit it --from {latest[0].base} "
            "or choose another name"
        )
    return None if latest is None else latest[0].version


def _stack(points: list[WorkPoint], base: str) -> np.ndarray:
    vectors = [p.vector if base == "content" else p.style for p in points]
    missing = sum(v is None for v in vectors)
    if missing:
        raise NotFoundError(f"{missing} works have no {base} vector; ingest again with --spaces content,style")
    return np.vstack([np.asarray(v, dtype=np.float64) for v in vectors])
