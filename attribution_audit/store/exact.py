"""Exact cosine nearest neighbours over unit vectors: the ground truth that checks HNSW search.

Two implementations share one interface (:class:`ExactIndex`):

* ``brute``: a float32 matrix product in blocks of queries, then a partial sort. The default: on 2 cores at
  100k x 512 (``scripts/bench_exact.py``, ``docs/benchmarks.md``) one k=10 query took 10.2 ms p50 against
  96.7 ms for the KD-Tree (9.5x; 3.4-9.5x over three runs on a noisy VM), and a batch of 200 queries ran at
  552 queries/s against 18.
* ``kdtree``: a ``scipy.spatial.cKDTree`` over the unit vectors. For unit vectors ``|a - b|^2 = 2 - 2 a.b``,
  so Euclidean order is cosine order and the similarity is ``1 - d^2 / 2``. In 512-d the tree prunes little.

Both return neighbours best first, equal similarities ordered by id, as the HNSW side orders them (a cache brought
up to date by :func:`update_cache` holds its new rows after the others, so row order is not id order). ``brute``
also cuts ties at the k-th place by id; ``kdtree`` keeps whichever tied rows the tree visits first and computes in
float64, so the two can differ where similarities agree to ~1e-6.
"""

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
from scipy.spatial import cKDTree

EXACT_METHODS = ("brute", "kdtree")
DEFAULT_EXACT_METHOD = "brute"

# Bound on the (queries x rows) score block; with argpartition's int64 indexes ~12 bytes each, ~200 MB.
_MAX_BLOCK_ELEMENTS = 1 << 24

_IDS_FILE = "ids.json"
_VECTORS_FILE = "vectors.npy"
_KDTREE_FILE = "kdtree.pkl"


class ExactIndex(Protocol):
    """Exact nearest-neighbour search by cosine similarity; row ``i`` of the index is ``ids[i]``."""

    method: str
    ids: list[str]
    dim: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (m, d) float32 unit rows -> (rows (m, k) int64 into ids, similarities (m, k) float32).

        Best first; ``k`` larger than the index is clipped to its size.
        """
        ...


class BruteForceIndex:
    """Exact search by a matrix product with every row. Build it with :func:`build_exact_index`."""

    method = "brute"

    def __init__(self, ids: list[str], vectors: np.ndarray, block_size: int = 256) -> None:
        """``vectors``: validated (n, d) float32 unit rows (an ``np.load`` memmap is fine).

        At most ``block_size`` queries are scored at once, fewer when the index is large.
        """
        self.ids = ids
        self.dim = vectors.shape[1]
        self._block_size = block_size
        self._ranks = _id_ranks(ids)
        self._columns = np.asarray(vectors).T  # (a plain view: a memmap's own type costs each product a wrapper)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`ExactIndex.search`."""
        queries = _unit_rows(queries, "queries", dim=self.dim, allow_empty=True)
        n = len(self.ids)
        k = _clip_k(k, n)
        rows = np.empty((len(queries), k), dtype=np.int64)
        sims = np.empty((len(queries), k), dtype=np.float32)
        block = max(1, min(self._block_size, _MAX_BLOCK_ELEMENTS // n))
        for start in range(0, len(queries), block):
            rows[start : start + block], sims[start : start + block] = _best(
                queries[start : start + block] @ self._columns, k, self._ranks
            )
        return rows, sims


class KDTreeIndex:
    """Exact search with a KD-Tree over the unit vectors. Build it with :func:`build_exact_index`."""

    method = "kdtree"

    def __init__(self, ids: list[str], tree: cKDTree) -> None:
        """``tree``: a ``cKDTree`` over the validated unit rows, in the order of ``ids``."""
        self.ids = ids
        self.dim = tree.m
        self._tree = tree
        self._ranks = _id_ranks(ids)

    @classmethod
    def from_vectors(cls, ids: list[str], vectors: np.ndarray) -> "KDTreeIndex":
        """Build the tree over validated (n, d) unit rows."""
        return cls(ids, cKDTree(vectors))

    @property
    def tree(self) -> cKDTree:
        """The underlying tree (picklable, for caching)."""
        return self._tree

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`ExactIndex.search`."""
        queries = _unit_rows(queries, "queries", dim=self.dim, allow_empty=True)
        k = _clip_k(k, len(self.ids))
        shape = (len(queries), k)
        if not len(queries):
            return np.empty(shape, dtype=np.int64), np.empty(shape, dtype=np.float32)
        distances, rows = self._tree.query(queries.astype(np.float64), k=k, workers=-1)
        rows = rows.reshape(shape).astype(np.int64)
        sims = 1.0 - distances.reshape(shape) ** 2 / 2.0
        order = np.lexsort((_tie_keys(rows, self._ranks), -sims), axis=1)
        sims = np.take_along_axis(sims, order, axis=1).astype(np.float32)
        return np.take_along_axis(rows, order, axis=1), sims


def build_exact_index(method: str, ids: Sequence[str], vectors: np.ndarray) -> ExactIndex:
    """Build an exact index over ``vectors`` (n, d), row ``i`` belonging to ``ids[i]``.

    Rows are re-normalised to unit norm. Raises ``ValueError`` on an unknown method, non-string or duplicate
    ids, a length mismatch, or vectors that are not a non-empty 2-D float array of finite, non-zero rows.
    """
    _check_method(method)
    ids_list, unit = _validated(ids, vectors)
    return _make_index(method, ids_list, unit)


def load_or_build(
    method: str, cache_dir: Path, version: str, fetch: Callable[[], tuple[list[str], np.ndarray]]
) -> ExactIndex:
    """Build an exact index from the cache in ``cache_dir/<version>/``, or from ``fetch()`` if there is none.

    ``version`` identifies the collection's contents (e.g. a checksum of its ids and image hashes) and must be
    a plain folder name. On a miss the validated ids and unit vectors are written there (each file atomically)
    and every other folder in ``cache_dir`` is removed, so ``cache_dir`` must belong to this cache alone. For
    ``kdtree`` the built tree is pickled alongside; pickles are trusted, so keep ``cache_dir`` private.
    """
    _check_method(method)
    if not version or Path(version).name != version or version.startswith("."):
        raise ValueError(f"cache version {version!r} is not a plain folder name")
    cache_dir = Path(cache_dir)
    version_dir = cache_dir / version
    cached = _read_cache(version_dir)
    if cached is None:
        ids, vectors = _validated(*fetch())
        version_dir.mkdir(parents=True, exist_ok=True)
        (version_dir / _KDTREE_FILE).unlink(missing_ok=True)
        _atomic_write(version_dir / _VECTORS_FILE, lambda f: np.save(f, vectors))
        _atomic_write(version_dir / _IDS_FILE, lambda f: f.write(json.dumps(ids).encode()))
        for other in cache_dir.iterdir():
            if other.is_dir() and other.name != version:
                shutil.rmtree(other)
    else:
        ids, vectors = cached
    if method == "kdtree":
        return _load_or_build_kdtree(version_dir, ids, vectors)
    return _make_index(method, ids, vectors)


def cache_folder(root: Path, collection: str, method: str, space: str) -> Path:
    """The cache folder (for :func:`load_or_build`) of one method over one space of a collection."""
    return Path(root) / collection / (method if space == "content" else f"{space}-{method}")


def cached_space(folder: Path) -> str:
    """The space whose vectors a :func:`cache_folder` holds."""
    return folder.name.split("-", 1)[0] if "-" in folder.name else "content"


def update_cache(
    cache_dir: Path, version: str, new_version: str, ids: Sequence[str], vectors: np.ndarray, held: int | None = None
) -> bool:
    """Bring the cache of ``version`` to ``new_version`` by upserted points (rows of known ids replaced in place, new
    ids appended), reading nothing else of the collection: the exact index follows an ingest without a full scroll.
    The new vectors file is written through a memory map (the old one is copied in blocks), then the old version is
    removed; with no point, the cache (the exact index included) is only renamed to ``new_version`` (a write of
    vectors it does not hold, such as layouts). False, and nothing done, when ``version`` is not cached, or when the
    result would not hold ``held`` vectors, the number the collection holds now (another process added or removed
    points meanwhile): the next search builds it from the store."""
    cache_dir = Path(cache_dir)
    cached = _read_cache(cache_dir / version)
    if cached is None or version == new_version:
        return cached is not None
    old_ids, old_vectors = cached
    new_ids, unit = _validated(ids, vectors) if len(ids) else ([], np.zeros((0, old_vectors.shape[1]), np.float32))
    if unit.shape[1] != old_vectors.shape[1]:
        raise ValueError(f"vectors have dimension {unit.shape[1]}, the cache has {old_vectors.shape[1]}")
    position = {point: row for row, point in enumerate(old_ids)} if new_ids else {}
    appended = [j for j, point in enumerate(new_ids) if point not in position]
    if held is not None and held != len(old_ids) + len(appended):
        return False
    if not len(ids) and not (cache_dir / new_version).exists():
        os.replace(cache_dir / version, cache_dir / new_version)
        return True
    target = cache_dir / new_version
    target.mkdir(parents=True, exist_ok=True)
    (target / _KDTREE_FILE).unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{_VECTORS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        shape = (len(old_ids) + len(appended), old_vectors.shape[1])
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        block = max(1, _MAX_BLOCK_ELEMENTS // shape[1])
        for start in range(0, len(old_ids), block):
            end = min(start + block, len(old_ids))
            out[start:end] = old_vectors[start:end]
        for j, point in enumerate(new_ids):
            if point in position:
                out[position[point]] = unit[j]
        out[len(old_ids) :] = unit[appended]
        out.flush()
        del out
        os.replace(tmp, target / _VECTORS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    all_ids = old_ids + [new_ids[j] for j in appended]
    _atomic_write(target / _IDS_FILE, lambda f: f.write(json.dumps(all_ids).encode()))
    for other in cache_dir.iterdir():
        if other.is_dir() and other.name != new_version:
            shutil.rmtree(other)
    return True


def overlap_at_k(approx_ids: Sequence[str], exact_ids: Sequence[str]) -> float:
    """Fraction of the exact neighbours the approximate search found (recall@k); 1.0 if there are none."""
    exact = set(exact_ids)
    return len(set(approx_ids) & exact) / len(exact) if exact else 1.0


def _check_method(method: str) -> None:
    if method not in EXACT_METHODS:
        raise ValueError(f"unknown exact search method {method!r}; choose one of {', '.join(EXACT_METHODS)}")


def _make_index(method: str, ids: list[str], unit: np.ndarray) -> ExactIndex:
    return KDTreeIndex.from_vectors(ids, unit) if method == "kdtree" else BruteForceIndex(ids, unit)


def _validated(ids: Sequence[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    ids_list = list(ids)
    if not all(isinstance(i, str) for i in ids_list):
        raise ValueError("ids must be strings")
    if len(set(ids_list)) != len(ids_list):
        raise ValueError("ids must be unique")
    unit = _unit_rows(vectors, "vectors")
    if len(ids_list) != len(unit):
        raise ValueError(f"{len(ids_list)} ids but {len(unit)} vectors")
    return ids_list, unit


def _unit_rows(array: np.ndarray, name: str, dim: int | None = None, allow_empty: bool = False) -> np.ndarray:
    """Check a 2-D float array of finite, non-zero rows and return it as float32 unit rows."""
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype.kind != "f":  # (np.issubdtype(.., np.floating), at a tenth of its cost)
        raise ValueError(f"{name} must be a 2-D float array, got shape {array.shape} and dtype {array.dtype}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} have dimension {array.shape[1]}, the index has {dim}")
    if not array.shape[1] or (not allow_empty and not array.shape[0]):
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    squares = np.add.reduce(array * array, axis=1, keepdims=True)  # np.linalg.norm's own sum: the same bits
    # a NaN or infinite value makes its row's sum non-finite (a finite one only where the sum overflows)
    if not np.isfinite(squares).all() and not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    norms = np.sqrt(squares)
    if not norms.all():
        raise ValueError(f"{name} contain {int((norms == 0).sum())} all-zero rows, which have no direction")
    unit: np.ndarray = (array / norms).astype(np.float32, copy=False)
    return unit


def _clip_k(k: int, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return min(int(k), n)


def _id_ranks(ids: Sequence[str]) -> np.ndarray | None:
    """Each row's place in id order, the tie key of a search; None when the rows are in id order (a cache as built),
    so that a row's index is its key."""
    if all(a < b for a, b in pairwise(ids)):
        return None
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    return ranks


def _tie_keys(rows: np.ndarray, ranks: np.ndarray | None) -> np.ndarray:
    return rows if ranks is None else ranks[rows]


def _best(scores: np.ndarray, k: int, ranks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores`` and their scores, best first, equal scores by tie key. Where
    the k-th score ties with columns beyond it, those of the lowest keys are kept (a partition picks any of them): one
    more than ``k`` is selected, so such a tie shows as the k-th and (k+1)-th scores being equal, without another pass
    over the row unless it does."""
    m, n = scores.shape
    depth = min(k + 1, n)
    top = np.argpartition(scores, n - depth, axis=1)[:, n - depth :]
    line = np.arange(m)[:, None]
    top_scores = scores[line, top]
    order = np.lexsort((_tie_keys(top, ranks), -top_scores), axis=1)
    top, top_scores = top[line, order], top_scores[line, order]
    if depth > k:
        for q in np.flatnonzero(top_scores[:, k - 1] == top_scores[:, k]):
            candidates = np.flatnonzero(scores[q] >= top_scores[q, k - 1])
            best = candidates[np.lexsort((_tie_keys(candidates, ranks), -scores[q, candidates]))[:k]]
            top[q, :k], top_scores[q, :k] = best, scores[q, best]
    return top[:, :k], top_scores[:, :k]


def _read_cache(version_dir: Path) -> tuple[list[str], np.ndarray] | None:
    """The cached ids and unit vectors, or None when missing or inconsistent (then they are fetched again)."""
    try:
        ids = json.loads((version_dir / _IDS_FILE).read_text())
        vectors = np.load(version_dir / _VECTORS_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return None
    consistent = (
        isinstance(ids, list)
        and all(isinstance(i, str) for i in ids)
        and vectors.dtype == np.float32
        and vectors.ndim == 2
        and len(ids) == len(vectors) > 0
    )
    return (ids, vectors) if consistent else None


def _load_or_build_kdtree(version_dir: Path, ids: list[str], vectors: np.ndarray) -> KDTreeIndex:
    """The tree pickled in ``version_dir`` if it matches the vectors, else a new one (then pickled there)."""
    try:
        with (version_dir / _KDTREE_FILE).open("rb") as f:
            tree = pickle.load(f)
        if isinstance(tree, cKDTree) and tree.n == len(ids) and tree.m == vectors.shape[1]:
            return KDTreeIndex(ids, tree)
    except Exception:  # any unreadable pickle is rebuilt below
        pass
    index = KDTreeIndex.from_vectors(ids, vectors)
    _atomic_write(version_dir / _KDTREE_FILE, lambda f: pickle.dump(index.tree, f, pickle.HIGHEST_PROTOCOL))
    return index


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
