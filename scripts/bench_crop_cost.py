"""What the crop log-odds costs a request in a learned space: embedding the image with its four corner crops (one
forward pass of five images) against the image alone, and the request's compute with and without the crops' log-odds,
interleaved image by image; results go to docs/benchmarks.md between this script's markers."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import provenance, publish

from attribution_audit.config import load_settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import read_labelled

NAME = "bench_crop_cost"


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queries", type=Path, help="a labelled CSV of images (e.g. style_queries.csv of the benchmark)")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--space", required=True, help="a learned space of the data dir")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    queries = read_labelled(args.queries)[: args.images]
    ms: dict[str, list[float]] = {"alone": [], "crops": [], "compute": [], "compute_crops": []}
    with open_attributor(settings, open_audit(settings), settings.embedder) as attributor:
        params = attributor.space_of(AttributionParams(verify="off", space=args.space))[1]
        base = attributor.space_of(params)[0].bases[-1]
        image = load_image(queries[0].path, target_size=224).image
        attributor.compute(attributor.embed([image], args.space)[0], params)  # warm: the projected catalogue
        for query in queries:
            image = load_image(query.path, target_size=224).image
            spent, _ = timed(partial(attributor.embed, [image], base))  # the base space: the image alone
            ms["alone"].append(spent)
            spent, (vectors,) = timed(partial(attributor.embed, [image], args.space, crops=True))
            ms["crops"].append(spent)
            ms["compute"].append(timed(partial(attributor.compute, replace(vectors, crops=()), params))[0])
            assert len(vectors.crops) == 4, "the learned space's query carries its four corner crops"
            ms["compute_crops"].append(timed(partial(attributor.compute, vectors, params))[0])
    p50 = {key: statistics.median(values) for key, values in ms.items()}
    lines = [
        *provenance(("numpy", "torch")),
        "",
        f"{len(queries)} images of `{args.queries.name}`, embedder `{settings.embedder}`, learned space "
        f"`{args.space}` (medians, ms; the same image through each step in turn):",
        "",
        "| embed the image alone | embed it with its 4 corner crops | ratio | compute without the crops' log-odds "
        "| compute with them | difference |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {p50['alone']:.1f} | {p50['crops']:.1f} | {p50['crops'] / p50['alone']:.2f} | {p50['compute']:.1f} | "
        f"{p50['compute_crops']:.1f} | {p50['compute_crops'] - p50['compute']:+.1f} |",
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
