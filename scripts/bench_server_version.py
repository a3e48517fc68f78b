"""What a request spends reading a Qdrant server collection's content version (recorded with every request, keying
the exact and learned-space caches), by the write mark against reading every point's digest (what a collection
without a mark still costs; every collection before the marks), beside the engine's own search at K=10, interleaved
round by round at each size. Run on qdrant-client's in-process mode (no server here): it counts the points each
version reads, which is what grows with the catalogue on a server too.

    python scripts/bench_server_version.py --sizes 10000,100000 --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import provenance, publish

from attribution_audit.store.vectors import WorkPoint, point_id_for
from attribution_audit.store.vectors.qdrant_server import WRITE_MARK, ServerStore

DIM = 512
ROUNDS = 30


def _filled(n: int) -> ServerStore:
    """A collection of ``n`` clustered unit vectors (n/20 artists), as ingested."""
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((max(1, n // 20), DIM)).astype(np.float32)
    store = ServerStore(":memory:", f"works_{n}")
    store.ensure_collection(DIM)
    for start in range(0, n, 5000):
        rows = np.arange(start, min(n, start + 5000))
        vectors = centres[rows // 20] + 0.3 * rng.standard_normal((len(rows), DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert(
            [
                WorkPoint(
                    point_id_for("bench", f"w{i}"),
                    vector,
                    {"work_id": f"w{i}", "artist": f"a{i // 20}", "catalogue": "bench", "image_sha256": f"{i:064x}"},
                )
                for i, vector in zip(rows.tolist(), vectors, strict=True)
            ]
        )
    return store


def _ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


class _ReadCounter:
    """Counts the points a store's scrolls return."""

    def __init__(self, store: ServerStore) -> None:
        self.points = 0
        self._scroll = store._scroll
        store._scroll = self  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[list[Any], Any]:
        records, offset = self._scroll(*args, **kwargs)
        self.points += len(records)
        return records, offset


def _version_read(store: ServerStore, counter: _ReadCounter, times: list[float]) -> int:
    """Time one content version into ``times``; the points it read."""
    before = counter.points
    times.append(_ms(store.content_version))
    return counter.points - before


def measure(n: int) -> list[str]:
    store = _filled(n)
    mark = (store._client.get_collection(store.collection).config.metadata or {})[WRITE_MARK]
    query = np.random.default_rng(1).standard_normal(DIM).astype(np.float32).tolist()
    counter = _ReadCounter(store)
    times: dict[str, list[float]] = {"mark": [], "digest": [], "search": []}
    read = {"mark": 0, "digest": 0}
    for _ in range(ROUNDS):
        store._client.update_collection(store.collection, metadata={WRITE_MARK: ""})  # as a collection before marks
        read["digest"] = _version_read(store, counter, times["digest"])
        store._client.update_collection(store.collection, metadata={WRITE_MARK: mark})
        read["mark"] = _version_read(store, counter, times["mark"])
        times["search"].append(
            _ms(lambda: store._client.query_points(store.collection, query=query, using="content", limit=10))
        )
    p50 = {name: statistics.median(values) for name, values in times.items()}
    store.close()
    return [
        f"| {n} | {p50['mark']:.2f} | {p50['digest']:.1f} | {p50['search']:.1f} | "
        f"{p50['mark'] / p50['search']:.3f} | {p50['digest'] / p50['search']:.2f} | {read['mark']} | {read['digest']} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Local mode performs exact")
    warnings.filterwarnings("ignore", message="Payload indexes have no effect")
    rows = [row for n in map(int, args.sizes.split(",")) for row in measure(n)]
    lines = [
        "## A Qdrant server collection's content version per request (scripts/bench_server_version.py)",
        "",
        *provenance(("qdrant-client", "numpy")),
        "",
        f"qdrant-client's in-process mode, {DIM}-d clustered unit vectors; medians of {ROUNDS} rounds, each reading "
        "the version by the digest of every point (the mark emptied, as on a collection made before the marks), by "
        "the mark, then the engine's own search at K=10 (ms):",
        "",
        "| works | by the mark | by every point | engine search | mark / search | every point / search | "
        "points read (mark) | points read (every point) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    if args.out is not None:
        publish(args.out, "bench_server_version", lines)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
