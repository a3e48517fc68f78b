"""Content vs style vs fused space on the demo set, through the real CLI; also refreshes the README's evaluation
example (docs/evaluation-demo/: report.md, metrics.json, CSV tables and plots of the content-space run).

The demo catalogue's "artists" differ by palette, motif and stroke, and its generated images are new compositions
in an artist's style: a style-driven set by construction, so read the numbers as a check of the machinery, not as
evidence about real art.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import markers, provenance, write_section

from attribution_audit.sources.synthetic import make_demo_catalogue

NAME = "bench_spaces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works-per-artist", type=int, default=8)
    parser.add_argument("--queries-per-artist", type=int, default=5)
    parser.add_argument("--k-max", type=int, default=20)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--example", type=Path, default=Path("docs/evaluation-demo"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalogue = make_demo_catalogue(
            root / "catalogue", works_per_artist=args.works_per_artist, queries_per_artist=args.queries_per_artist
        )
        labelled = root / "labelled.csv"
        subsets = ("gpt", "object")
        labelled.write_text(
            "path,artist,subset\n"
            + "".join(f"{q.path},{q.artist},{subsets[i % 2]}\n" for i, q in enumerate(catalogue.queries))
        )
        cli = [sys.executable, "-m", "attribution_audit", "--data-dir", str(root / "data")]
        embedder = ["--embedder", "efficientnet-lite0"]
        subprocess.run([*cli, "db", "upgrade"], check=True, capture_output=True)
        subprocess.run(
            [*cli, "ingest", str(catalogue.manifest), *embedder, "--spaces", "content,style"],
            check=True,
            capture_output=True,
        )
        ks = ["--k-max", str(args.k_max), "--k", str(args.k)]
        subprocess.run(
            [*cli, "evaluate", "run", str(labelled), *ks, *embedder, "--out", str(root / "eval")],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*cli, "evaluate", "compare-spaces", "labelled", *ks, *embedder, "--out", str(root / "cmp")],
            check=True,
            capture_output=True,
        )
        rows = json.loads((root / "cmp" / "compare.json").read_text())
        if args.example:
            shutil.rmtree(args.example, ignore_errors=True)
            shutil.copytree(root / "eval", args.example)
    start, end = markers(NAME)

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    k = args.k
    lines = [
        start,
        "## Content vs style vs fused space on the demo set (scripts/bench_spaces.py)",
        "",
        *provenance(("torch", "qdrant-edge-py")),
        "",
        f"Demo catalogue: 6 artists x {args.works_per_artist} works, {6 * args.queries_per_artist} generated queries; "
        "efficientnet-lite0 content space, its Gram-sketch style space, and the engine's weighted RRF of both "
        "(weights 1,1, k=60). The demo's artists differ by palette and texture by construction, so this checks the "
        "machinery; it says nothing about real art. Confidence AUROC is n/a when every query is right (one class).",
        "",
        f"| space | queries | hit rate@1 | hit rate@{k} | artist precision@{k} | confidence AUROC | evaluation run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['space']} | {row['queries']} | {fmt(row['hit_rate@1'])} | {fmt(row[f'hit_rate@{k}'])} | "
            f"{fmt(row[f'artist_precision@{k}'])} | {fmt(row['confidence_auroc'])} | {row['run_id']} |"
        )
    lines.append(end)
    write_section(args.out, NAME, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
