"""Ingestion throughput: the full pipeline (`attribution-audit ingest`) vs the raw model, upserts into Qdrant Edge,
and peak memory at two catalogue sizes.

For each size N: N synthetic 256x256 PNG works are written, then ingested by the real CLI in a fresh process
(efficientnet-lite0, batch 32) with its wall time, steady rate (from the CLI's own timer) and peak RSS
(`wait4` ru_maxrss). The raw model is timed on the same images and batch size in this process: forward pass on
ready tensors, and `embed()` on decoded images (preprocessing included). Ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import markers, provenance, write_section

from attribution_audit.embedding.efficientnet import EfficientNetLite0Embedder, preprocess
from attribution_audit.sources.images import load_image
from attribution_audit.sources.synthetic import make_demo_catalogue
from attribution_audit.store.vectors.base import WorkPoint
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

NAME = "bench_ingest"


def raw_model_rates(manifest: Path, samples: int, batch_size: int) -> tuple[float, float]:
    """(images/s of the forward pass alone, images/s of embed() on decoded images) on the first ``samples`` works."""
    embedder = EfficientNetLite0Embedder(batch_size=batch_size)
    paths = sorted((manifest.parent / "works").glob("*.png"))[:samples]
    images = [load_image(p, target_size=224).image for p in paths]
    embedder.embed(images[:batch_size])  # warm-up
    started = time.perf_counter()
    embedder.embed(images)
    embed_rate = len(images) / (time.perf_counter() - started)
    batch = torch.from_numpy(np.stack([preprocess(image) for image in images[:batch_size]])).to(embedder.device)
    with torch.inference_mode():
        embedder.features(batch)
        started = time.perf_counter()
        rounds = max(1, samples // batch_size)
        for _ in range(rounds):
            embedder.features(batch)
    forward_rate = rounds * batch_size / (time.perf_counter() - started)
    return forward_rate, embed_rate


def run_ingest(manifest: Path, data_dir: Path, batch_size: int) -> tuple[float, float, float]:
    """(wall seconds, pipeline seconds reported by the CLI, peak RSS MiB) of one real ingest process."""
    command = [sys.executable, "-m", "attribution_audit", "--data-dir", str(data_dir)]
    subprocess.run([*command, "db", "upgrade"], check=True, capture_output=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "ingest", str(manifest), "--embedder", "efficientnet-lite0", "--batch-size", str(batch_size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"ingest failed: {output}")
    timer = re.search(r", ([\d.]+) s\)", output)
    if timer is None:
        raise SystemExit(f"ingest printed no pipeline time (its steady rate); its output: {output}")
    seconds = float(timer.group(1))
    return wall, seconds, usage.ru_maxrss / 1024


def upsert_rate(n: int, dim: int, root: Path) -> tuple[float, float]:
    """(points/s upserted into a Qdrant Edge shard through EdgeStore, HNSW build seconds)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = EdgeStore(root, "bench")
    store.ensure_collection(dim)
    points = [WorkPoint(f"00000000-0000-0000-0000-{i:012d}", vectors[i], {"artist": str(i % 50)}) for i in range(n)]
    started = time.perf_counter()
    store.upsert(points)
    upsert_seconds = time.perf_counter() - started
    started = time.perf_counter()
    store.build_index()
    build = time.perf_counter() - started
    store.close()
    return n / upsert_seconds, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000", help="comma-separated catalogue sizes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=512, help="images for the raw-model timing")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            artists = 20
            catalogue = make_demo_catalogue(
                Path(tmp) / f"cat{n}", artists=artists, works_per_artist=n // artists, queries_per_artist=0
            )
            forward, embed = raw_model_rates(catalogue.manifest, min(args.samples, n), args.batch_size)
            wall, seconds, rss = run_ingest(catalogue.manifest, Path(tmp) / f"data{n}", args.batch_size)
            points_per_s, build = upsert_rate(n, 1280, Path(tmp) / f"upsert{n}")
            rows.append((n, forward, embed, n / seconds, n / wall, rss, points_per_s, build))
            print(
                f"n={n}: forward {forward:.1f}/s, embed {embed:.1f}/s, pipeline {n / seconds:.1f}/s, rss {rss:.0f} MiB"
            )
    start, end = markers(NAME)
    lines = [
        start,
        "## Ingestion throughput and memory (scripts/bench_ingest.py)",
        "",
        *provenance(("torch", "qdrant-edge-py", "pillow")),
        "",
        "Synthetic 256x256 PNG works (`attribution_audit.sources.synthetic`), efficientnet-lite0 on CPU, batch "
        f"{args.batch_size}, 2 decoding threads. *forward*: the model alone on ready tensors; *embed*: "
        "`Embedder.embed` on decoded images (preprocessing included); *pipeline*: `attribution-audit ingest` "
        "(decode, embed, upsert, audit-DB writes, HNSW build) by the CLI's own timer, and *wall* including process "
        "start and model load. Upserts: random 1280-d unit vectors through `EdgeStore.upsert` (batches of 512), "
        "then the HNSW build (`optimize`).",
        "",
        "| works | forward img/s | embed img/s | pipeline img/s | pipeline / forward | pipeline / embed | wall img/s "
        "| peak RSS MiB | upsert points/s | HNSW build s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, forward, embed, pipeline, wall_rate, rss, points_per_s, build in rows:
        lines.append(
            f"| {n} | {forward:.1f} | {embed:.1f} | {pipeline:.1f} | {pipeline / forward:.2f} | {pipeline / embed:.2f} "
            f"| {wall_rate:.1f} | {rss:.0f} | {points_per_s:.0f} | {build:.1f} |"
        )
    lines.append(end)
    write_section(args.out, NAME, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
