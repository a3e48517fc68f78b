"""What reading the newest learned spaces and calibration models costs a request: the thread CPU and wall time of a
recorded request (search, re-rank, indicators in every other space, audit write; the query already embedded) with
the per-request change marker (:meth:`Attributor.refresh`) and with it read once per attributor (as before),
interleaved, and the marker query alone; on the demo catalogue with two learned spaces.

Written to docs/benchmarks.md between this script's markers.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import provenance, publish

from attribution_audit.config import load_settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.images import load_image
from attribution_audit.sources.synthetic import make_demo_catalogue

NAME = "bench_fresh_reads"
EMBEDDER = "efficientnet-lite0"


class _ReadOnce(Attributor):
    """The attributor as it was: the stored spaces and models read at first use, for its life."""

    def refresh(self) -> None:
        if self._marker is None:
            super().refresh()


def _timed(cpu: list[float], wall: list[float], step: Callable[[], object]) -> None:
    """Run ``step``; append its thread CPU and wall milliseconds."""
    started, started_cpu = time.perf_counter(), time.thread_time()
    step()
    cpu.append((time.thread_time() - started_cpu) * 1000)
    wall.append((time.perf_counter() - started) * 1000)


def _cli(data_dir: Path, url: str | None, *args: str) -> None:
    database = [] if url is None else ["--database-url", url]
    command = [sys.executable, "-m", "attribution_audit", "--data-dir", str(data_dir), *database, *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)}: {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    parser.add_argument("--database-url", help="an empty audit database (default: SQLite in a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        demo = make_demo_catalogue(root / "demo")
        url, data_dir = args.database_url, root / "data"  # by default the data dir's own SQLite log
        if url is not None:
            _cli(data_dir, url, "db", "upgrade")
        embedder = ["--embedder", EMBEDDER]
        _cli(data_dir, url, "ingest", str(demo.manifest), "--spaces", "content,style", *embedder)
        _cli(data_dir, url, "spaces", "fit", "painters", "--from", "style", *embedder)
        _cli(data_dir, url, "spaces", "fit", "both", "--from", "content+style", *embedder)
        settings = load_settings(data_dir=data_dir, database_url=url, embedder=EMBEDDER)
        audit = open_audit(settings)
        cpu: dict[str, list[float]] = {"fresh": [], "read once": [], "marker": []}
        wall: dict[str, list[float]] = {name: [] for name in cpu}
        with open_attributor(settings, audit, EMBEDDER) as fresh:
            once = _ReadOnce(
                audit,
                fresh.store,
                embedder_name=fresh.embedder_name,
                embedder_fingerprint=fresh.embedder_fingerprint,
                requester=fresh.requester,
                exact_cache_dir=fresh.exact_cache_dir,
                copy_depth=0,
            )
            fresh.copy_depth = 0  # copy detection reads image files: not what is measured
            queries = fresh.embed([load_image(q.path, target_size=224).image for q in demo.queries], "content")
            params = AttributionParams(verify="off")

            def request(attributor: Attributor, query: QueryVectors) -> None:
                attributor.refresh()  # once per request, as `attribute` and the service do
                attributor.record("bench", "0" * 64, query, params, attributor.compute(query, params))

            for attributor in (fresh, once):  # warm up: the learned spaces' projected catalogues
                request(attributor, queries[0])
            for i in range(args.requests):  # interleaved, in alternating order
                query = queries[i % len(queries)]
                pair = [("fresh", fresh), ("read once", once)][:: 1 if i % 2 else -1]
                for name, attributor in pair:
                    _timed(cpu[name], wall[name], lambda a=attributor, q=query: request(a, q))  # type: ignore[misc]
                _timed(cpu["marker"], wall["marker"], audit.spaces.marker)
        audit.close()
    lines = [
        f"## Reading the newest learned spaces and models per request, "
        f"{'SQLite' if args.database_url is None else 'a database server'} (scripts/bench_fresh_reads.py)",
        "",
        *provenance(("numpy", "SQLAlchemy", "qdrant-edge-py")),
        "",
        f"Demo catalogue (6 artists x 8 works) ingested with content and style, learned spaces `painters` (from "
        f"style) and `both` (from content+style); {args.requests} recorded content-space requests of each kind "
        f"(query embedded beforehand, copy check off, exact check off), interleaved in alternating order, on "
        f"{'SQLite' if args.database_url is None else 'the given database (`--database-url`)'}. fresh: the change "
        "marker of the learned spaces and calibration models read once per request (`Attributor.refresh`); read "
        "once: as before, the spaces and models read at first use for the attributor's life. Thread CPU and wall "
        "time in ms.",
        "",
        "| what | CPU median | CPU mean | wall median | wall p95 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in cpu:
        ordered = sorted(wall[name])
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        lines.append(
            f"| {name if name != 'marker' else 'the marker query alone'} | {statistics.median(cpu[name]):.3f} | "
            f"{statistics.mean(cpu[name]):.3f} | {statistics.median(wall[name]):.3f} | {p95:.3f} |"
        )
    added = statistics.median(cpu["fresh"]) - statistics.median(cpu["read once"])
    lines += ["", f"Added per request (CPU median, fresh - read once): {added:+.3f} ms."]
    publish(args.out, NAME if args.database_url is None else f"{NAME}_server", lines)


if __name__ == "__main__":
    main()
