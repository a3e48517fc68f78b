"""The service under load: N concurrent loopback clients posting demo images to `attribution-audit serve`.

A demo catalogue is ingested into a fresh data dir, a writer key created, and the real server started in a
subprocess (tests/servers.py). Each client posts one image per request, for a bounded number of requests. Measured:
throughput (images/s over the client phase), p50/p95 latency per request, the mean embedding batch the worker formed
(from /metrics), and afterwards that every returned request is in the log and the chain verifies. The raw model is
timed in this process on the same images, before and after the load (the server idle), and the throughput is given
as a ratio to it.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from benchlib import markers, provenance, run_together, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from servers import cli_command, create_key, running_server  # noqa: E402 (the tests' server helper)

from attribution_audit.embedding.efficientnet import EfficientNetLite0Embedder, preprocess  # noqa: E402
from attribution_audit.sources.images import load_image  # noqa: E402
from attribution_audit.sources.synthetic import make_demo_catalogue  # noqa: E402

NAME = "bench_serve"
ROUNDS = 4  # load slices per row, each between two timings of the raw model


@functools.cache
def _embedder() -> EfficientNetLite0Embedder:
    return EfficientNetLite0Embedder()


def forward_rate(paths: list[Path], batch_size: int, seconds: float) -> float:
    """Images/s of the model's forward pass alone (ready tensors, batches of ``batch_size``)."""
    images = [load_image(paths[i % len(paths)], target_size=224).image for i in range(batch_size)]
    embedder = _embedder()
    batch = torch.from_numpy(np.stack([preprocess(image) for image in images])).to(embedder.device)
    with torch.inference_mode():
        embedder.features(batch)  # warm-up
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            embedder.features(batch)
            done += len(images)
    return done / (time.perf_counter() - started)


def best_forward(paths: list[Path], batch_size: int, seconds: float) -> tuple[float, str]:
    """The fastest raw configuration now: batch 1 or ``batch_size``, on 1 or all of torch's threads (on a loaded
    machine one thread can beat two several times over), as (images/s, which)."""
    threads = torch.get_num_threads()
    rates = {}
    try:
        for count in sorted({1, threads}):
            torch.set_num_threads(count)
            for size in sorted({1, batch_size}):
                rates[f"batch {size}, {count} thread{'s' if count > 1 else ''}"] = forward_rate(paths, size, seconds)
    finally:
        torch.set_num_threads(threads)
    which = max(rates, key=lambda k: rates[k])
    return rates[which], which


def load(url: str, key: str, paths: list[Path], clients: int, requests: int) -> tuple[float, list[float], list[str]]:
    """(wall seconds, latency of each request, request ids returned) of ``requests`` posts by ``clients`` threads."""
    latencies: list[float] = []
    ids: list[str] = []
    failures: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as http:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                path = paths[index % len(paths)]
                started = time.perf_counter()
                response = http.post("/v1/attributions", files=[("images", (path.name, path.read_bytes()))])
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                        ids.extend(r["request_id"] for r in response.json())
                    else:
                        failures.append(response.text)

    wall = run_together([threading.Thread(target=client) for _ in range(clients)])
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return wall, latencies, ids


COUNTERS = ("images_attributed", "batches", "embed_seconds", "record_seconds")


def counters(http: httpx.Client) -> dict[str, float]:
    """The service's worker counters from /metrics."""
    text = http.get("/metrics").text
    found = {name: re.search(rf"^attribution_{name} ([0-9.e+]+)$", text, flags=re.M) for name in COUNTERS}
    return {name: float(match.group(1)) if match else float("nan") for name, match in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,4,8", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=96, help="requests (one image each) per client count")
    parser.add_argument("--batch-size", type=int, default=32, help="the server's largest embedding batch")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    loads: list[float] = []
    fastest: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalogue = make_demo_catalogue(root / "catalogue", queries_per_artist=4)
        data, database = root / "data", f"sqlite:///{root / 'data' / 'audit.sqlite'}"
        for command in (("db", "upgrade"), ("ingest", str(catalogue.manifest), "--embedder", "efficientnet-lite0")):
            subprocess.run(cli_command(data, database, *command), check=True, capture_output=True)
        key = create_key(data, database, "bench")
        paths = [q.path for q in catalogue.queries]
        with running_server(data, database, root / "serve.log") as server:
            for clients in [int(c) for c in args.clients.split(",")]:
                with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
                    before = counters(http)
                # Interleaved: a slice of raw forward passes, a slice of the load, ... (a shared machine's load
                # drifts; interleaving exposes both to the same drift).
                raws: list[tuple[float, str]] = []
                latencies: list[float] = []
                ids: list[str] = []
                wall = 0.0
                for part in range(ROUNDS):
                    raws.append(best_forward(paths, args.batch_size, seconds=1.5))
                    share = args.requests // ROUNDS + (1 if part < args.requests % ROUNDS else 0)
                    seconds, part_latencies, part_ids = load(server.url, key, paths, clients, share)
                    wall, latencies, ids = wall + seconds, latencies + part_latencies, ids + part_ids
                raws.append(best_forward(paths, args.batch_size, seconds=1.5))
                fastest.update(which for _, which in raws)
                with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
                    logged = sum(http.get(f"/v1/attributions/{i}").status_code == 200 for i in ids)
                    verified = http.get("/v1/audit/verify").json()
                    after = counters(http)
                done = {name: after[name] - before[name] for name in COUNTERS}
                p50, p95 = np.percentile(latencies, [50, 95]) * 1000
                row = {
                    "clients": clients,
                    "images": len(ids),
                    "rate": len(ids) / wall,
                    "raw": statistics.mean(rate for rate, _ in raws),
                    "p50": p50,
                    "p95": p95,
                    "batch": done["images_attributed"] / done["batches"],
                    "embed_ms": 1000 * done["embed_seconds"] / done["images_attributed"],
                    "record_ms": 1000 * done["record_seconds"] / done["images_attributed"],
                    "logged": logged,
                    "chain": f"{'OK' if verified['ok'] else 'BROKEN'} ({verified['checked']} records)",
                }
                rows.append(row)
                loads.append(os.getloadavg()[0])
                print(row, flush=True)
    start, end = markers(NAME)
    lines = [
        start,
        "## The HTTP service under concurrent clients (scripts/bench_serve.py)",
        "",
        *provenance(("torch", "fastapi", "uvicorn", "qdrant-edge-py")),
        "",
        f"`attribution-audit serve` (efficientnet-lite0 on CPU, embedded Qdrant Edge shard, SQLite log, largest "
        f"batch {args.batch_size}) over the demo catalogue (48 works); {args.requests} requests per row, one 256x256 "
        "PNG each, default parameters (K = 10, exact check `always`), posted by N threads over loopback HTTP. "
        "*forward*: the model alone on ready tensors in the benchmark's process, in its fastest configuration at "
        f"the time (batch 1 or {args.batch_size}, 1 or all torch threads; fastest here: {'; '.join(sorted(fastest))}), "
        f"timed for 1.5 s each before, between and after {ROUNDS} slices of each row's load (mean of the best), "
        "while the server is idle. *batch*: mean images per embedding batch the service formed; *embed ms* and "
        "*record ms*: the busy time per image of the service's embedder thread and of its recorder thread (search, "
        "re-rank, exact check, audit write), which run as a pipeline. *logged*: returned request ids found by "
        "`GET /v1/attributions/{id}`; *chain*: `GET /v1/audit/verify` after the row. Latency: client-side, per "
        "request.",
        "",
        f"The machine was shared: 1-minute load average {min(loads):.1f} to {max(loads):.1f} on "
        f"{os.cpu_count()} CPUs after the rows (other engineers' test suites), so absolute rates are low and noisy; "
        "the ratios compare the service and the raw model under the same load.",
        "",
        "| clients | images | images/s | forward img/s | images/s / forward | p50 ms | p95 ms | batch | embed ms "
        "| record ms | logged | chain |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['images']} | {r['rate']:.1f} | {r['raw']:.1f} | {r['rate'] / r['raw']:.2f} | "
            f"{r['p50']:.0f} | {r['p95']:.0f} | {r['batch']:.1f} | {r['embed_ms']:.0f} | {r['record_ms']:.0f} | "
            f"{r['logged']}/{r['images']} | {r['chain']} |"
        )
    lines.append(end)
    write_section(args.out, NAME, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
