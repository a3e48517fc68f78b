"""Learned projections of the base spaces: regularised linear discriminant analysis on the catalogue's own artist
labels, and its validation on works held out inside the catalogue (pure NumPy/SciPy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh

SHRINKAGES = (0.01, 0.1, 0.5, 0.9)  # tried on the validation split; the best is refitted on every work
MAX_DIM = 128
EPS = 1e-12


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

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """Projected unit vectors (float32) of ``rows`` (n x input dim)."""
        return unit_rows((np.asarray(rows, dtype=np.float64) - self.mean) @ self.matrix).astype(np.float32)


def fit_lda(rows: np.ndarray, labels: Sequence[str], shrinkage: float, max_dim: int = MAX_DIM) -> Projection:
    """Regularised LDA: the directions maximising between-artist over within-artist scatter, the within scatter
    shrunk towards ``shrinkage`` x its mean variance; at most ``min(artists - 1, max_dim)`` dimensions.
    ValueError with fewer than two artists."""
    x = np.asarray(rows, dtype=np.float64)
    names, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(names) < 2:
        raise ValueError("a learned space needs works of at least two artists")
    mean = x.mean(axis=0)
    counts = np.bincount(y).astype(np.float64)
    centres = np.zeros((len(names), x.shape[1]))
    np.add.at(centres, y, x)
    centres /= counts[:, None]
    within = x - centres[y]
    sw = within.T @ within / len(x)
    between = (centres - mean) * np.sqrt(counts / len(x))[:, None]
    sb = between.T @ between
    sw = (1 - shrinkage) * sw + shrinkage * (np.trace(sw) / len(sw) + EPS) * np.eye(len(sw))
    dim = min(len(names) - 1, max_dim, x.shape[1])
    _, vectors = eigh(sb, sw, subset_by_index=[x.shape[1] - dim, x.shape[1] - 1])
    return Projection(mean=mean, matrix=vectors[:, ::-1].copy())


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


def artist_hits(
    queries: np.ndarray, query_labels: Sequence[str], works: np.ndarray, work_labels: Sequence[str], depth: int = 10
) -> dict[str, float]:
    """Artist hit@1 and hit@``depth`` of unit query vectors against unit work vectors (cosine, nearest works)."""
    sims = np.asarray(queries, dtype=np.float64) @ np.asarray(works, dtype=np.float64).T
    order = np.argsort(-sims, axis=1)[:, :depth]
    found = np.asarray(work_labels)[order] == np.asarray(query_labels)[:, None]
    return {"hit@1": float(found[:, 0].mean()), f"hit@{depth}": float(found.any(axis=1).mean())}
