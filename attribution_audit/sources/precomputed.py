"""Precomputed embeddings for users who embed elsewhere: ``.npy`` aligned with the manifest, ``.npz`` or
``.parquet`` keyed by work id. Vectors are L2-normalised on the way in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attribution_audit.errors import ManifestError
from attribution_audit.sources.files import irregular_file_problem
from attribution_audit.sources.manifest import ManifestRow, Source


def _unit(matrix: np.ndarray, path: Path) -> np.ndarray:
    kind = np.asarray(matrix).dtype
    if not (np.issubdtype(kind, np.floating) or np.issubdtype(kind, np.integer)):
        raise ManifestError(f"{path}: expected real numbers (float or int), got {kind}; convert the vectors")
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ManifestError(f"{path}: expected a 2-D array of vectors (one a row), got shape {matrix.shape}")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise ManifestError(f"{path}: row {int(np.argmin(finite))} has NaN or infinite values; fix or remove it")
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    odd = ~np.isfinite(norms[:, 0]) | (norms[:, 0] < np.finfo(np.float32).tiny)
    if odd.any():  # squares that overflow or vanish: those rows scaled by their largest value first
        largest = np.abs(matrix[odd]).max(axis=1, keepdims=True, initial=0.0)
        if (largest == 0).any():
            row = int(np.flatnonzero(odd)[np.argmax(largest[:, 0] == 0)])
            raise ManifestError(f"{path}: row {row} is an all-zero vector; fix or remove it")
        matrix, scaled = matrix.copy(), matrix[odd] / largest
        matrix[odd] = scaled
        norms[odd] = np.linalg.norm(scaled, axis=1, keepdims=True)
    unit: np.ndarray = matrix / norms
    return unit


def load_vectors(path: str | Path, source: Source) -> dict[str, np.ndarray]:
    """Work id -> unit vector. ``.npy`` rows follow the source's rows in order (failed rows included)."""
    path = Path(path)
    suffix = path.suffix.lower()
    problem = irregular_file_problem(path)
    if problem:
        raise ManifestError(f"{path}: {problem}")
    try:
        if suffix == ".npy":
            matrix = _unit(np.load(path, allow_pickle=False), path)
            items = list(source)
            if len(items) != len(matrix):
                raise ManifestError(
                    f"{path}: {len(matrix)} vectors for {len(items)} manifest rows; they must align row by row"
                )
            return {item.work_id: matrix[i] for i, item in enumerate(items) if isinstance(item, ManifestRow)}
        if suffix == ".npz":
            data = np.load(path, allow_pickle=False)
            ids, matrix = [str(w) for w in data["work_ids"]], _unit(data["vectors"], path)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            column = "vector" if "vector" in table.column_names else "embedding"
            if "work_id" not in table.column_names or column not in table.column_names:
                raise ManifestError(f"{path}: a parquet file of embeddings needs columns work_id and vector")
            ids = [str(w) for w in table.column("work_id").to_pylist()]
            matrix = _unit(np.array(table.column(column).to_pylist(), dtype=np.float32), path)
        else:
            raise ManifestError(f"{path}: embeddings must be .npy (aligned with the manifest), .npz or .parquet")
    except (OSError, ValueError, KeyError) as exc:
        raise ManifestError(f"{path}: cannot read the embeddings ({exc})") from None
    if len(ids) != len(matrix):
        raise ManifestError(f"{path}: {len(ids)} work ids for {len(matrix)} vectors; they must pair up one to one")
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{path}: duplicate work ids in the embeddings file")
    return dict(zip(ids, matrix, strict=True))
