"""Exact search: both methods against a naive full sort, batching, ties, the on-disk cache, input checks."""

from pathlib import Path

import numpy as np
import pytest

from attribution_audit.store.exact import (
    DEFAULT_EXACT_METHOD,
    EXACT_METHODS,
    BruteForceIndex,
    ExactIndex,
    KDTreeIndex,
    build_exact_index,
    load_or_build,
    overlap_at_k,
)

N, DIM = 400, 24
TOL = 1e-5
Data = tuple[list[str], np.ndarray, np.ndarray]  # ids, vectors, queries


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """Rows scattered around the unit ``centres``, with norm ~3 (the index normalises them)."""
    noise = 0.5 * rng.standard_normal((n, centres.shape[1])) / np.sqrt(centres.shape[1])
    return (centres[rng.integers(0, len(centres), n)] + noise) * 3.0


@pytest.fixture(scope="module")
def data() -> Data:
    """400 catalogue vectors and 30 queries (not in the catalogue) drawn around the same 8 centres."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return [f"work-{i}" for i in range(N)], clustered(rng, centres, N), clustered(rng, centres, 30)


def naive(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row of every query, fully sorted in float64: (rows (m, n), similarities (m, n))."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ v.T
    rows = np.argsort(-sims, axis=1, kind="stable")
    return rows, np.take_along_axis(sims, rows, axis=1)


def assert_matches_naive(rows: np.ndarray, sims: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> None:
    """Same similarities as the full sort, and the same rows wherever the order is not a near-tie (< TOL)."""
    ref_rows, ref_sims = naive(vectors, queries)
    k = rows.shape[1]
    assert rows.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_allclose(sims, ref_sims[:, :k], atol=TOL)
    gaps = -np.diff(ref_sims, axis=1, append=-np.inf, prepend=np.inf)  # gap[j] = sim[j-1] - sim[j]
    clear = (gaps[:, :k] > TOL) & (gaps[:, 1 : k + 1] > TOL)
    assert clear.mean() > 0.95  # the data leaves most of the order unambiguous
    np.testing.assert_array_equal(rows[clear], ref_rows[:, :k][clear])
    assert all(len(set(r)) == k for r in rows)


@pytest.mark.parametrize("method", EXACT_METHODS)
@pytest.mark.parametrize("k", [1, 5, N, N + 3])
def test_methods_match_a_full_sort(data: Data, method: str, k: int) -> None:
    ids, vectors, queries = data
    index = build_exact_index(method, ids, vectors)
    assert isinstance(index, BruteForceIndex if method == "brute" else KDTreeIndex)
    assert index.method == method and index.ids == ids and index.dim == DIM
    rows, sims = index.search(queries.astype(np.float32), k)
    assert rows.shape == sims.shape == (len(queries), min(k, N))
    assert_matches_naive(rows, sims, vectors, queries)


def test_methods_agree_with_each_other(data: Data) -> None:
    ids, vectors, queries = data
    brute_rows, brute_sims = build_exact_index("brute", ids, vectors).search(queries, 10)
    tree_rows, tree_sims = build_exact_index("kdtree", ids, vectors).search(queries, 10)
    np.testing.assert_array_equal(brute_rows, tree_rows)
    np.testing.assert_allclose(brute_sims, tree_sims, atol=TOL)
    assert DEFAULT_EXACT_METHOD in EXACT_METHODS


@pytest.mark.parametrize("method", EXACT_METHODS)
def test_batch_equals_one_by_one(data: Data, method: str) -> None:
    ids, vectors, queries = data
    index = build_exact_index(method, ids, vectors)
    rows, sims = index.search(queries, 7)
    for i, query in enumerate(queries):
        one_rows, one_sims = index.search(query[None, :], 7)
        np.testing.assert_array_equal(one_rows[0], rows[i])
        np.testing.assert_allclose(one_sims[0], sims[i], atol=1e-6)


def test_brute_blocks_give_the_same_answer(data: Data) -> None:
    ids, vectors, queries = data
    unit = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    whole, blocked = BruteForceIndex(ids, unit), BruteForceIndex(ids, unit, block_size=4)
    for got, want in zip(blocked.search(queries, 9), whole.search(queries, 9), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_no_queries_give_empty_results(data: Data) -> None:
    ids, vectors, _ = data
    for method in EXACT_METHODS:
        rows, sims = build_exact_index(method, ids, vectors).search(np.empty((0, DIM), np.float32), 3)
        assert rows.shape == sims.shape == (0, 3)


def test_ties_are_broken_by_id_whatever_the_row_order() -> None:
    """As the HNSW side breaks them (a cache brought up to date holds its new rows last, out of id order)."""
    e = np.eye(3, dtype=np.float32)
    vectors = np.stack([e[0], e[1], e[1], e[0], e[2], e[1]])
    query = e[1][None, :]
    for ids, tied, first_zero in (
        ([f"w{i}" for i in range(6)], [1, 2, 5], 0),  # rows in id order
        ([f"w{5 - i}" for i in range(6)], [5, 2, 1], 4),  # rows in reverse id order: w0 is row 5
    ):
        rows, sims = build_exact_index("brute", ids, vectors).search(query, 4)
        assert rows.tolist() == [[*tied, first_zero]]  # the three exact 1.0s by id, then the lowest id of the 0.0s
        np.testing.assert_array_equal(sims, [[1, 1, 1, 0]])
        rows, sims = build_exact_index("kdtree", ids, vectors).search(query, 3)
        assert rows.tolist() == [tied]
        np.testing.assert_allclose(sims, [[1, 1, 1]])


@pytest.mark.parametrize("k", [1, 3, 7, 40])
def test_brute_cuts_each_querys_ties_by_id_in_a_batch(k: int) -> None:
    """Queries in one batch, where a group of equal works crosses the k-th place or not: each row is the full sort by
    (similarity, id), in whatever order the rows are held; each query searched alone (a request's own check) too."""
    rng = np.random.default_rng(k)
    directions = rng.standard_normal((10, 8)).astype(np.float32)
    vectors = np.repeat(directions, 4, axis=0)  # each direction 4 times: equal similarities, bit for bit
    ids = [f"w{i:02d}" for i in rng.permutation(40)]
    queries = rng.standard_normal((7, 8)).astype(np.float32)
    index = build_exact_index("brute", ids, vectors)
    rows, sims = index.search(queries, k)
    for q in range(len(queries)):
        alone = index.search(queries[q : q + 1], k)
        np.testing.assert_array_equal(alone[0], rows[q : q + 1])
        np.testing.assert_allclose(alone[1], sims[q : q + 1], atol=1e-6)  # (BLAS: one query's product, a batch's)
    similarity = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        directions / np.linalg.norm(directions, axis=1, keepdims=True)
    ).T
    for q in range(len(queries)):
        expected = sorted(range(40), key=lambda r: (-similarity[q, r // 4], ids[r]))[:k]
        assert [ids[r] for r in rows[q]] == [ids[r] for r in expected]
        np.testing.assert_allclose(sims[q], similarity[q, [r // 4 for r in expected]], atol=1e-6)


class Fetch:
    """A fetch callback that counts its calls."""

    def __init__(self, ids: list[str], vectors: np.ndarray) -> None:
        self.ids, self.vectors, self.calls = ids, vectors, 0

    def __call__(self) -> tuple[list[str], np.ndarray]:
        self.calls += 1
        return self.ids, self.vectors


@pytest.mark.parametrize("method", EXACT_METHODS)
def test_cache_is_reused_for_the_same_version(tmp_path: Path, data: Data, method: str) -> None:
    ids, vectors, queries = data
    fetch = Fetch(ids, vectors)
    first = load_or_build(method, tmp_path, "v1", fetch)
    second = load_or_build(method, tmp_path, "v1", fetch)
    assert fetch.calls == 1
    assert second.method == method and second.ids == ids
    expected = {"ids.json", "vectors.npy"} | ({"kdtree.pkl"} if method == "kdtree" else set())
    assert {p.name for p in (tmp_path / "v1").iterdir()} == expected  # no temporary files left behind
    for got, want in zip(second.search(queries, 5), first.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)


def test_new_version_fetches_again_and_removes_the_old_one(tmp_path: Path, data: Data) -> None:
    ids, vectors, queries = data
    load_or_build("brute", tmp_path, "v1", Fetch(ids, vectors))
    fetch = Fetch(ids[:100], vectors[:100])
    index = load_or_build("kdtree", tmp_path, "v2", fetch)
    assert fetch.calls == 1
    assert [p.name for p in tmp_path.iterdir()] == ["v2"]
    assert index.ids == ids[:100]
    assert_matches_naive(*index.search(queries, 5), vectors[:100], queries)


def test_a_cache_shared_by_both_methods_is_not_fetched_again(tmp_path: Path, data: Data) -> None:
    ids, vectors, _ = data
    fetch = Fetch(ids, vectors)
    load_or_build("brute", tmp_path, "v1", fetch)
    index: ExactIndex = load_or_build("kdtree", tmp_path, "v1", fetch)
    assert fetch.calls == 1 and index.method == "kdtree"
    assert (tmp_path / "v1" / "kdtree.pkl").is_file()


def test_an_unreadable_cache_is_fetched_again(tmp_path: Path, data: Data) -> None:
    ids, vectors, _ = data
    fetch = Fetch(ids, vectors)
    load_or_build("kdtree", tmp_path, "v1", fetch)
    (tmp_path / "v1" / "ids.json").write_text("[truncated")
    (tmp_path / "v1" / "kdtree.pkl").write_bytes(b"garbage")
    index = load_or_build("kdtree", tmp_path, "v1", fetch)
    assert fetch.calls == 2 and index.ids == ids
    assert load_or_build("kdtree", tmp_path, "v1", fetch).ids == ids and fetch.calls == 2


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (["a", "b"], np.ones(4), "2-D float"),
        (["a", "b"], np.ones((2, 3), dtype=np.int64), "2-D float"),
        (["a", "b"], np.ones((2, 0)), "empty"),
        ([], np.ones((0, 3)), "empty"),
        (["a", "b"], np.array([[1.0, np.nan, 0.0], [1.0, 0.0, 0.0]]), "NaN"),
        (["a", "b"], np.array([[1.0, np.inf, 0.0], [1.0, 0.0, 0.0]]), "NaN"),
        (["a", "b"], np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), "all-zero"),
        (["a", "b", "c"], np.ones((2, 3)), "3 ids but 2 vectors"),
        (["a", "a"], np.ones((2, 3)), "unique"),
        (["a", 2], np.ones((2, 3)), "strings"),
    ],
)
def test_bad_inputs_raise(ids: list[str], vectors: np.ndarray, message: str) -> None:
    for method in EXACT_METHODS:
        with pytest.raises(ValueError, match=message):
            build_exact_index(method, ids, vectors)


def test_bad_method_queries_k_and_version_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown exact search method 'hnsw'"):
        build_exact_index("hnsw", ["a"], np.ones((1, 3)))
    fetch = Fetch(["a"], np.ones((1, 3)))
    for version in ["", ".", "..", "a/b", ".hidden"]:
        with pytest.raises(ValueError, match="plain folder name"):
            load_or_build("brute", tmp_path, version, fetch)
    with pytest.raises(ValueError, match="unknown"):
        load_or_build("annoy", tmp_path, "v1", fetch)
    assert fetch.calls == 0
    for method in EXACT_METHODS:
        index = build_exact_index(method, ["a", "b"], np.eye(2, 3))
        for k in [0, -1, 2.0, True]:
            with pytest.raises(ValueError, match="positive integer"):
                index.search(np.eye(1, 3), k)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="dimension 4, the index has 3"):
            index.search(np.ones((1, 4)), 1)
        with pytest.raises(ValueError, match="all-zero"):
            index.search(np.zeros((1, 3)), 1)
        with pytest.raises(ValueError, match="2-D"):
            index.search(np.ones(3), 1)


@pytest.mark.parametrize(
    ("approx", "exact", "expected"),
    [
        (["a", "b", "c"], ["a", "b", "c"], 1.0),
        (["c", "b", "a"], ["a", "b", "c"], 1.0),
        (["a", "x", "y", "z"], ["a", "b", "c", "d"], 0.25),
        (["x", "y"], ["a", "b"], 0.0),
        ([], ["a", "b"], 0.0),
        (["a", "b"], [], 1.0),
        ([], [], 1.0),
        (["a", "b", "c"], ["b", "c"], 1.0),
    ],
)
def test_overlap_at_k(approx: list[str], exact: list[str], expected: float) -> None:
    assert overlap_at_k(approx, exact) == expected
