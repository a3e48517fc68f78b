"""Learned spaces: fit a projection on the catalogue's own artist labels (``spaces fit``), validated on works held
out inside the catalogue, stored as a new version; list the spaces usable with ``--space``."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, LogisticModel, confidence, feature_value
from attribution_audit.domain.indicators import request_indicators
from attribution_audit.domain.params import DEFAULT_K, LEARNED_NAME, MAX_K, QUERY_SPACES, AttributionParams
from attribution_audit.domain.points import CONTENT, STYLE, WorkPoint
from attribution_audit.domain.projection import (
    CROP_SIDE,
    DEFAULT_CROPS,
    MAX_CROPS,
    SHRINKAGES,
    ArtistCentroids,
    Crops,
    Projection,
    artist_hits,
    crop_boxes,
    fit_lda,
    join_bases,
    unit_rows,
    unit_vectors,
    validation_split,
)
from attribution_audit.domain.spaces import LEARNED_BASES
from attribution_audit.errors import AttributionAuditError, ConflictError, NotFoundError
from attribution_audit.evaluation.calibration import expected_calibration_error
from attribution_audit.services.attribution import Attributor, space_since_fit
from attribution_audit.services.calibrate import fit_and_score
from attribution_audit.services.ingest import Progress, embed_images
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import one_line, recorded_image
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.spaces import ARTISTS, SpaceConfidence, SpaceInfo

METHODS = ("lda",)
MIN_ARTISTS = 3
FOLDS = 5  # of the cross-validation of a space's own confidence model, as ``calibrate``'s default
HELD_OUT_RATE = "held-out rate"
CROP_BATCH = 32  # crops embedded per forward pass
CROP_TARGET = 224  # the size the crops' images are loaded for, as ingest loads a work's for the embedder


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

    @property
    def crops(self) -> dict[str, Any]:
        """What the fit recorded of its crops (:func:`crops_record`)."""
        recorded: dict[str, Any] = self.space.validation["crops"]
        return recorded


def fit_space(
    settings: Settings,
    audit: AuditStore,
    name: str,
    base: str,
    method: str = "lda",
    shrinkage: float | None = None,
    k: int = DEFAULT_K,
    crops: int = DEFAULT_CROPS,
    progress: Progress | None = None,
) -> FitResult:
    """Fit ``name`` from ``base`` on the catalogue of the settings' embedder and store it as its next version.

    The LDA is fitted on the works' stored vectors and on ``crops`` crops of each work (:func:`embed_crops`), each
    labelled with its work's artist: a query is new content, and the crops give each artist's works content that
    varies. The shrinkage of the regularised LDA (unless given) is the one with the best hit@1 + hit@10 on works
    whose content is held out (:func:`held_out_validation`, fitted on the training works and their crops); the
    held-out scores of every shrinkage tried, and the base space's on the same split, are stored with it; the stored
    projection is then refitted on every work and crop. The version's own confidence model is fitted at K = ``k``,
    and scores only the requests at that K."""
    previous = _check_request(audit, name, base, method)
    if shrinkage is not None and not 0 < shrinkage < 1:
        raise AttributionAuditError(f"--shrinkage {shrinkage}: choose a number between 0 and 1 (exclusive)")
    if not 1 <= k <= MAX_K:
        raise AttributionAuditError(f"--k {k}: choose a number between 1 and {MAX_K}")
    if not 0 <= crops <= MAX_CROPS:
        raise AttributionAuditError(f"--crops {crops}: choose a number between 0 and {MAX_CROPS}")
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
        cut = embed_crops(attributor, audit, points, bases, crops, progress) if crops else None
        extra = cut.crops if cut is not None else Crops.none()
        shrinkages = (shrinkage,) if shrinkage is not None else SHRINKAGES
        validation, held_out = held_out_validation(rows, labels, shrinkages, extra)
        default = default_confidence(held_out, rows, labels, agreement_rows, k)
        projection = fit_lda(*extra.with_works(rows, labels), validation["shrinkage"])
        stored = audit.spaces.add(
            name,
            projection,
            base=base,
            method=method,
            embedder_fingerprint=attributor.embedder_fingerprint,
            collection=attributor.store.collection,
            n_works=len(points),
            n_artists=len(set(labels)),
            validation={
                **validation,
                "crops": crops_record(crops, cut),
                "confidence": default.fit_metrics,
                ARTISTS: sorted(set(labels)),
            },
            confidence=default,
        )
    outdated = {} if previous is None else audit.evaluations.calibrated_in(stored.embedder_fingerprint, name, previous)
    return FitResult(stored, time.perf_counter() - started, outdated, int(held_out.train.sum()))


@dataclass(frozen=True)
class CutWorks:
    """The crops of a catalogue's works embedded for a fit, the number of works cropped, the works without a readable
    image file (none recorded, missing, unreadable or changed since ingest) counted per reason with the first such
    work and its reason, and the seconds it took."""

    crops: Crops
    works: int
    skipped: dict[str, int]
    first_skipped: dict[str, str] | None
    seconds: float

    @property
    def without_image(self) -> int:
        return sum(self.skipped.values())


def crops_record(per_work: int, cut: CutWorks | None) -> dict[str, Any]:
    """What a version records of the crops it was fitted on (its validation's ``crops``)."""
    return {
        "per_work": per_work,
        "side": list(CROP_SIDE),
        "works": 0 if cut is None else cut.works,
        "without_image": None if cut is None else cut.without_image,  # None: no file read (``--crops 0``)
        "skipped": None if cut is None else dict(sorted(cut.skipped.items())),  # works without image, per reason
        "first_skipped": None if cut is None else cut.first_skipped,  # {"work_id", "reason"} or None
        "seed": "sha256 of the work's image file",
        "load_size": CROP_TARGET,
        "seconds": 0.0 if cut is None else round(cut.seconds, 3),
    }


def embed_crops(
    attributor: Attributor,
    audit: AuditStore,
    points: list[WorkPoint],
    bases: tuple[str, ...],
    per_work: int,
    progress: Progress | None = None,
) -> CutWorks:
    """``per_work`` crops of each work's image (:func:`crop_boxes`, from the file recorded at ingest, loaded as ingest
    loads it for the embedder), embedded by the collection's embedder in batches of CROP_BATCH into rows of
    ``bases`` (:func:`join_bases`, as the works' rows); a work without a readable image file as ingested
    (:func:`recorded_image`) is counted per reason and left uncropped. One batch's images are held at a time. An
    embedder failure is one AttributionAuditError line (nothing is stored)."""
    started = time.perf_counter()
    files = audit.catalogue.collection_images(attributor.store.collection)
    skipped: dict[str, int] = {}
    first_skipped: dict[str, str] | None = None

    def images() -> Iterator[tuple[int, Any]]:
        nonlocal first_skipped
        for index, point in enumerate(points):
            loaded = recorded_image(files.get(point.point_id), target_size=CROP_TARGET)
            if isinstance(loaded, str):
                reason = loaded.split(" (", 1)[0]  # an unreadable file's detail varies per file
                skipped[reason] = skipped.get(reason, 0) + 1
                if first_skipped is None:
                    first_skipped = {"work_id": str(point.payload.get("work_id")), "reason": loaded}
                continue
            image = loaded.image
            for box in crop_boxes(image.width, image.height, per_work, loaded.sha256):
                yield index, image.crop(box)

    parts, owners = [], []
    cut = images()
    while batch := list(itertools.islice(cut, CROP_BATCH)):
        try:
            parts.append(_embed_rows(attributor, [image for _, image in batch], bases))
        except Exception as exc:  # the model's own errors: one line, not a traceback
            work = points[batch[0][0]].payload.get("work_id")
            raise AttributionAuditError(
                f"spaces fit: embedding the crops of work {work} failed ({type(exc).__name__}: {one_line(exc)}); "
                "nothing was stored"
            ) from exc
        owners += [index for index, _ in batch]
        if progress is not None:
            progress(owners[-1] + 1, len(points))
    if progress is not None:
        progress(len(points), len(points))
    crops = Crops(np.vstack(parts), np.asarray(owners, dtype=np.intp)) if parts else Crops.none()
    return CutWorks(crops, len(set(owners)), skipped, first_skipped, time.perf_counter() - started)


def _embed_rows(attributor: Attributor, images: list[Any], bases: tuple[str, ...]) -> np.ndarray:
    """The rows of ``bases`` (:func:`join_bases`) of images embedded by the collection's embedder."""
    if attributor.embedder is None:
        raise ValueError("this Attributor was built without an embedder")
    style_embedder = None if bases == (CONTENT,) else attributor.style_embedder
    if style_embedder is None and STYLE in bases:
        raise ValueError(f"the {STYLE} space needs a style embedder")
    contents, styles = embed_images(attributor.embedder, style_embedder, images)
    vectors = {CONTENT: contents} if styles is None else {CONTENT: contents, STYLE: styles}
    return join_bases([vectors[base].astype(np.float64) for base in bases])


def validate(rows: np.ndarray, labels: list[str], shrinkages: tuple[float, ...] = SHRINKAGES) -> dict[str, Any]:
    """Artist hit@1/hit@10 of held-out works against the training works (:func:`validation_split`: whole content
    groups held out), for each shrinkage and for the base space; the best shrinkage (by hit@1 + hit@10) with its
    scores."""
    return held_out_validation(rows, labels, shrinkages)[0]


@dataclass(frozen=True)
class HeldOut:
    """The validation's split and the projection fitted on its training works (and their crops) at the chosen
    shrinkage."""

    train: np.ndarray
    scored: np.ndarray
    projection: Projection


def held_out_validation(
    rows: np.ndarray, labels: list[str], shrinkages: tuple[float, ...] = SHRINKAGES, crops: Crops | None = None
) -> tuple[dict[str, Any], HeldOut]:
    """:func:`validate`'s scores, and its split with the projection fitted on the training works at the chosen
    shrinkage. With ``crops`` (of the works, :func:`embed_crops`), each projection is fitted on the training works
    and their crops, never a held-out work's; the held-out works are compared with the training works, as before."""
    train, scored, split = validation_split(rows, labels)
    if not scored.any():
        raise AttributionAuditError("no artist has two works: nothing to validate a learned space on")
    train_labels = [label for label, t in zip(labels, train, strict=True) if t]
    test_labels = [label for label, s in zip(labels, scored, strict=True) if s]
    base = artist_hits(rows[scored], test_labels, rows[train], train_labels)
    fitted = (crops or Crops.none()).with_works(rows, labels, train)
    scores, projections = {}, {}
    for shrinkage in shrinkages:
        projections[shrinkage] = fit_lda(*fitted, shrinkage)
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
