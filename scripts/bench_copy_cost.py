"""The CPU cost of the copy check per candidate, and what the rule decides, on a built font benchmark: every
``--every``-th style query against each catalogue page of its own face (the hardest non-copies: the same glyphs) and
every ``--every``-th copy against its source, with the rule of the ``attribution_audit`` on the path (run it with the
PYTHONPATH of another checkout to compare rules). One thread; CPU time of this process.

    python scripts/bench_copy_cost.py /tmp/qbench --every 8
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from pathlib import Path

import cv2
from PIL import Image

from attribution_audit.embedding.copy_match import METHOD, LocalFeatures, local_features, match
from attribution_audit.services.copy_check import COPY_SCORE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a folder written by scripts/build_benchmark.py")
    parser.add_argument("--every", type=int, default=8, help="take every N-th style query and copy")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    def rows(name: str) -> list[dict[str, str]]:
        with (args.bench / name).open() as handle:
            return list(csv.DictReader(handle))

    catalogue = rows("catalogue.csv")
    source = {row["work_id"]: row["path"] for row in catalogue}
    faces: dict[str, list[str]] = defaultdict(list)
    for row in catalogue:
        faces[row["artist"]].append(row["path"])
    pairs = [(q["path"], w, False) for q in rows("style_queries.csv")[:: args.every] for w in faces[q["artist"]]]
    pairs += [(q["path"], source[q["work_ids"]], True) for q in rows("copy_queries.csv")[:: args.every]]

    features: dict[str, LocalFeatures] = {}
    started = time.process_time()
    for path in dict.fromkeys(p for query, work, _ in pairs for p in (query, work)):
        features[path] = local_features(Image.open(args.bench / path).convert("RGB"))
    feature_seconds = time.process_time() - started
    started = time.process_time()
    scores = [(match(features[query], features[work]).score, copy) for query, work, copy in pairs]
    match_seconds = time.process_time() - started

    copies = [score for score, copy in scores if copy]
    others = [score for score, copy in scores if not copy]
    print(
        f"rule {METHOD}: {1000 * feature_seconds / len(features):.1f} ms of CPU per image's features "
        f"({len(features)} images), {1000 * match_seconds / len(pairs):.1f} ms per candidate ({len(pairs)} pairs); "
        f"copies {sum(s >= COPY_SCORE for s in copies)} of {len(copies)} found (lowest {min(copies):.3f}), "
        f"same-face pages {sum(s >= COPY_SCORE for s in others)} of {len(others)} flagged (highest {max(others):.3f})"
    )


if __name__ == "__main__":
    main()
