"""Learned projections of the base spaces: regularised linear discriminant analysis on the catalogue's own artist
labels, and its validation on works held out inside the catalogue (pure NumPy/SciPy)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.linalg import eigh

SHRINKAGES = (0.01, 0.1, 0.5, 0.9)  # tried on the validation split; the best is refitted on every work
MAX_DIM = 128
CONTENT_GROUPS = 10  # k-means groups of the validation split: coarse, so that a held-out content has no twin left
EPS = 1e-12
RIDGE = 1e-6  # added to the pooled within-artist covariance (x its mean variance): invertible with few works
LOG_ODDS_BOUND = 30.0  # of an artist's log-odds under the centroids' model
DEFAULT_CROPS = 2  # crops of each work a learned space is fitted on too (``spaces fit --crops``)
MAX_CROPS = 16  # crops of each work at most (each costs an embedding of every work)
CROP_SIDE = (0.6, 0.85)  # the range of a crop's side, as a fraction of the image's (the same for width and height)
QUERY_CROP_SIDE = 0.75  # a query's crops (:func:`query_crop_boxes`): each side this fraction of the image's


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    unit: np.ndarray = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), EPS)
    return unit


def join_bases(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The input rows of a projection: each base's rows made unit, joined side by side and scaled by
    1/sqrt(number of bases) (so a joined row is a unit vector too)."""
    joined: np.ndarray = np.hstack([unit_rows(np.atleast_2d(part)) for part in parts]) / np.sqrt(len(parts))
    return joined


@dataclass(frozen=True)
class Projection:
    """``z = unit((x - mean) @ matrix)``, ``x`` a row of :func:`join_bases`."""

    mean: np.ndarray
    matrix: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def coordinates(self, rows: np.ndarray) -> np.ndarray:
        """The projected coordinates of ``rows`` (n x input dim) before they are made unit (float64)."""
        projected: np.ndarray = (np.asarray(rows, dtype=np.float64) - self.mean) @ self.matrix
        return projected

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """Projected unit vectors (float32) of ``rows`` (n x input dim)."""
        return unit_vectors(self.coordinates(rows))


def unit_vectors(coordinates: np.ndarray) -> np.ndarray:
    """The unit vectors (float32) a learned space searches with, of projected coordinates."""
    return unit_rows(coordinates).astype(np.float32)


@dataclass(frozen=True)
class ArtistCentroids:
    """The Gaussian model of linear discriminant analysis in a learned space: each artist's centroid (the mean of its
    works' projected coordinates) and the artists' pooled within-artist covariance, kept as a whitening matrix
    (``||(a - b) @ whitening||^2`` is the squared Mahalanobis distance); centroids are stored whitened."""

    artists: tuple[str, ...]
    centres: np.ndarray
    whitening: np.ndarray

    @classmethod
    def fit(cls, coordinates: np.ndarray, labels: Sequence[str]) -> ArtistCentroids | None:
        """The model of works' coordinates (n x dim) and their artists; None with fewer than two artists or no
        artist with two works (no within-artist spread to measure)."""
        x = np.asarray(coordinates, dtype=np.float64)
        names, y = np.unique(np.asarray(labels), return_inverse=True)
        if len(names) < 2 or len(x) <= len(names):
            return None
        centres = np.zeros((len(names), x.shape[1]))
        np.add.at(centres, y, x)
        centres /= np.bincount(y)[:, None]
        within = x - centres[y]
        covariance = within.T @ within / (len(x) - len(names))
        covariance += RIDGE * (np.trace(covariance) / len(covariance) + EPS) * np.eye(len(covariance))
        whitening = np.linalg.cholesky(np.linalg.inv(covariance))
        return cls(tuple(str(n) for n in names), centres @ whitening, whitening)

    def logits(self, coordinates: np.ndarray) -> np.ndarray:
        """Each artist's log-posterior of a point (its projected coordinates) up to a shared constant, equal priors:
        minus half the squared Mahalanobis distance to the artist's centroid (in ``artists``' order)."""
        whitened = np.asarray(coordinates, dtype=np.float64) @ self.whitening
        found: np.ndarray = -0.5 * ((whitened - self.centres) ** 2).sum(axis=1)
        return found

    def most_likely(self, coordinates: np.ndarray) -> str:
        """The artist of maximum posterior of a point (the nearest centroid in Mahalanobis distance; ties to the
        first name): the reported artist of the ``centroid`` rule."""
        return self.artists[int(np.argmax(self.logits(coordinates)))]

    def log_odds(self, coordinates: np.ndarray, artist: str) -> float | None:
        """The log-odds that a point (its projected coordinates) is ``artist``'s rather than any other artist's, under
        the model with equal priors (a softmax of minus half the squared Mahalanobis distances to the centroids),
        clipped to +-LOG_ODDS_BOUND; None for an artist without a centroid."""
        if artist not in self.artists:
            return None
        logits = self.logits(coordinates)
        t = self.artists.index(artist)
        others = np.delete(logits, t)
        rest = others.max() + np.log(np.exp(others - others.max()).sum())
        return float(np.clip(logits[t] - rest, -LOG_ODDS_BOUND, LOG_ODDS_BOUND))


def crop_boxes(width: int, height: int, count: int, sha256: str) -> list[tuple[int, int, int, int]]:
    """``count`` crop boxes (left, upper, right, lower) of an image of ``width`` x ``height``: each side a fraction
    uniform in CROP_SIDE of the image's (the same fraction for both), at a uniform position inside the image; seeded
    by the image file's sha256 (hex), so that a refit cuts the same crops."""
    rng = np.random.default_rng(int(sha256, 16))
    boxes = []
    for _ in range(count):
        f = rng.uniform(*CROP_SIDE)
        cw, ch = max(1, int(width * f)), max(1, int(height * f))  # a 1-px side keeps its pixel
        x, y = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        boxes.append((x, y, x + cw, y + ch))
    return boxes


def query_crop_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The boxes (left, upper, right, lower) of a query image's four corner crops, each side QUERY_CROP_SIDE of the
    image's (inside the range the learned spaces are fitted on): where a learned space places them measures whether
    the reported artist holds across the image (the ``crop_log_odds`` indicator)."""
    cw, ch = max(1, int(width * QUERY_CROP_SIDE)), max(1, int(height * QUERY_CROP_SIDE))
    return [
        (0, 0, cw, ch),
        (width - cw, 0, width, ch),
        (0, height - ch, cw, height),
        (width - cw, height - ch, width, height),
    ]


@dataclass(frozen=True)
class Crops:
    """The rows (:func:`join_bases` of their embeddings) of crops of works, and the index of the work each crop was
    cut from: they give each artist's works within-artist content variation to fit on."""

    rows: np.ndarray
    works: np.ndarray

    @classmethod
    def none(cls) -> Crops:
        return cls(np.zeros((0, 0)), np.zeros(0, dtype=np.intp))

    def with_works(
        self, rows: np.ndarray, labels: Sequence[str], mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """The rows and labels to fit on: the works' (those of the boolean ``mask``, or all) then the crops of those
        works, each labelled with its work's artist."""
        keep = np.ones(len(rows), dtype=bool) if mask is None else mask
        works = (rows[keep], [labels[int(i)] for i in np.flatnonzero(keep)])
        crops = keep[self.works]
        if not crops.any():
            return works
        return np.vstack([works[0], self.rows[crops]]), works[1] + [labels[int(i)] for i in self.works[crops]]


def fit_lda(rows: np.ndarray, labels: Sequence[str], shrinkage: float, max_dim: int = MAX_DIM) -> Projection:
    """Regularised LDA: the directions maximising between-artist over within-artist scatter, the within scatter
    shrunk towards ``shrinkage`` x its mean variance; at most ``min(artists - 1, max_dim)`` dimensions.
    ValueError with fewer than two artists.

    Solved in the span of the centred works (both scatters live there, and so do the solutions): with fewer works
    than dimensions the eigenproblem is that much smaller, and the result the same."""
    x = np.asarray(rows, dtype=np.float64)
    names, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(names) < 2:
        raise ValueError("a learned space needs works of at least two artists")
    mean = x.mean(axis=0)
    basis = _span(x - mean)
    xs = (x - mean) @ basis
    counts = np.bincount(y).astype(np.float64)
    centres = np.zeros((len(names), xs.shape[1]))
    np.add.at(centres, y, xs)
    centres /= counts[:, None]
    within = xs - centres[y]
    sw = within.T @ within / len(x)
    between = centres * np.sqrt(counts / len(x))[:, None]  # the centres' mean is 0 in centred coordinates
    sb = between.T @ between
    sw = (1 - shrinkage) * sw + shrinkage * (np.trace(sw) / x.shape[1] + EPS) * np.eye(len(sw))
    span = len(sw)
    dim = min(len(names) - 1, max_dim, span)
    _, vectors = eigh(sb, sw, subset_by_index=[span - dim, span - 1])
    return Projection(mean=mean, matrix=basis @ vectors[:, ::-1])


def _span(centred: np.ndarray) -> np.ndarray:
    """An orthonormal basis (columns) of the rows' span when there are fewer rows than dimensions, else identity."""
    if len(centred) >= centred.shape[1]:
        return np.eye(centred.shape[1])
    _, values, vt = np.linalg.svd(centred, full_matrices=False)
    rank = max(1, int((values > values[0] * 1e-10).sum())) if values.size and values[0] > 0 else 1
    basis: np.ndarray = vt[:rank].T
    return basis


def held_out_split(labels: Sequence[str], share: float = 0.2, seed: int = 0) -> np.ndarray:
    """A boolean mask of works held out for validation: ``share`` of each artist's works (at least one), from
    artists with at least two works; seeded."""
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    mask = np.zeros(len(labels_array), dtype=bool)
    for name in np.unique(labels_array):
        members = np.flatnonzero(labels_array == name)
        if len(members) >= 2:
            mask[rng.choice(members, max(1, round(share * len(members))), replace=False)] = True
    return mask


def content_groups(rows: np.ndarray, labels: Sequence[str], groups: int = CONTENT_GROUPS, seed: int = 0) -> np.ndarray:
    """The content group (0..groups-1) of each work: k-means of the works' within-artist residuals (a row minus its
    artist's mean row, made unit). What varies between one artist's works is their content, so works of different
    artists that show the same content (a subject, a layout, a palette) fall in one group; seeded."""
    x = np.asarray(rows, dtype=np.float64)
    names, y = np.unique(np.asarray(labels), return_inverse=True)
    centres = np.zeros((len(names), x.shape[1]))
    np.add.at(centres, y, x)
    centres /= np.bincount(y)[:, None]
    residuals = unit_rows(x - centres[y])
    with warnings.catch_warnings():  # an empty cluster is a smaller k, not a problem
        warnings.simplefilter("ignore")
        _, assigned = kmeans2(residuals, min(groups, len(x)), seed=seed, minit="++")
    found: np.ndarray = assigned
    return found


def held_out_groups(groups: np.ndarray, share: float = 0.2, seed: int = 0) -> np.ndarray:
    """A boolean mask of works held out for validation: whole groups, in a seeded order, until ``share`` of the
    works are held out."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(groups), dtype=bool)
    for group in rng.permutation(np.unique(groups)):
        if mask.mean() >= share:
            break
        mask[groups == group] = True
    return mask


def validation_split(rows: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """(training mask, scored mask, split name) of a learned space's validation.

    A query is new content, never in the catalogue: whole content groups (:func:`content_groups`) are held out,
    so that a held-out work has no work of the same content left among the training works, and the held-out works
    whose artist keeps training works are scored. A catalogue whose groups leave fewer than two artists to train
    on falls back to a fifth of each artist's works (:func:`held_out_split`)."""
    names = np.asarray(labels)
    held = held_out_groups(content_groups(rows, labels))
    scored = held & np.isin(names, names[~held])
    if scored.any() and len(np.unique(names[~held])) >= 2:
        return ~held, scored, "content groups"
    held = held_out_split(labels)
    return ~held, held, "per artist"


def artist_hits(
    queries: np.ndarray, query_labels: Sequence[str], works: np.ndarray, work_labels: Sequence[str], depth: int = 10
) -> dict[str, float]:
    """Artist hit@1 and hit@``depth`` of unit query vectors against unit work vectors (cosine, nearest works)."""
    sims = np.asarray(queries, dtype=np.float64) @ np.asarray(works, dtype=np.float64).T
    order = np.argsort(-sims, axis=1)[:, :depth]
    found = np.asarray(work_labels)[order] == np.asarray(query_labels)[:, None]
    return {"hit@1": float(found[:, 0].mean()), f"hit@{depth}": float(found.any(axis=1).mean())}
