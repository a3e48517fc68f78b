"""The request-time cost of the agreement between spaces: a content-space request with and without it (one extra
engine search in the style space), and the query's embedding with and without the style vector it needs; measured
interleaved on the font benchmark's style queries, written to docs/quality.md between this script's markers.

The data dir must hold the benchmark's catalogue, ingested with ``--spaces content,style``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import provenance, publish

from attribution_audit.config import load_settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import read_labelled

NAME = "bench_agreement"


def _timed(into: list[float], step: Callable[[], Any]) -> Any:
    """Run ``step``, append its wall time to ``into``, return its result."""
    started = time.perf_counter()
    result = step()
    into.append(time.perf_counter() - started)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="folder written by scripts/build_benchmark.py")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("docs/quality.md"))
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    queries = read_labelled(args.bench / "style_queries.csv")[: args.queries]
    params = AttributionParams(k=10, verify="off")
    times: dict[str, list[float]] = {"search": [], "search + agreement": [], "embed": [], "embed + style": []}
    with open_attributor(settings, open_audit(settings), settings.embedder) as attributor:
        images = [load_image(q.path, target_size=224).image for q in queries]
        assert attributor.embedder is not None and attributor.style_embedder is not None
        attributor.style_embedder.embed_both(images[:2])  # warm up
        for i, image in enumerate(images):  # interleaved, in alternating order: neither side always runs first
            steps: list[tuple[str, Callable[[], Any]]] = [
                ("embed", partial(attributor.embedder.embed, [image])),
                ("embed + style", partial(attributor.style_embedder.embed_both, [image])),
            ]
            found = {name: _timed(times[name], step) for name, step in steps[:: 1 if i % 2 else -1]}
            content, style = found["embed"][0], found["embed + style"][1][0]
            steps = [
                ("search", partial(attributor.compute, QueryVectors(content), params)),
                ("search + agreement", partial(attributor.compute, QueryVectors(content, style), params)),
            ]
            found = {name: _timed(times[name], step) for name, step in steps[:: 1 if i % 2 else -1]}
            assert found["search"].features["agreement"] is None
            assert found["search + agreement"].features["agreement"] is not None
    median = {name: float(np.median(values)) * 1000 for name, values in times.items()}
    lines = [
        *provenance(("numpy",)),
        f"Load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} (2 CPUs).",
        "",
        f"{len(queries)} style queries, content space, K = 10, median ms per query (pairs run interleaved):",
        "",
        "| step | without agreement | with agreement | ratio |",
        "|---|---|---|---|",
        f"| search, re-rank, indicators (`compute`) | {median['search']:.1f} | {median['search + agreement']:.1f} | "
        f"{median['search + agreement'] / median['search']:.2f} |",
        f"| embedding (content alone / content and style, one pass) | {median['embed']:.1f} | "
        f"{median['embed + style']:.1f} | {median['embed + style'] / median['embed']:.2f} |",
    ]
    publish(args.out, NAME, lines)


if __name__ == "__main__":
    main()
