"""What every benchmark script shares: the machine description and writing its section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import threading
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

from attribution_audit.domain.spaces import QueryVectors


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def provenance(packages: tuple[str, ...]) -> list[str]:
    """The command, date and machine lines that head a benchmark section."""
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    return [
        f"Command: `{shlex.join(['python', *sys.orig_argv[1:]])}`  ",  # not this machine's interpreter path
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs ({cpu_model()}), Python "
        f"{platform.python_version()}, {versions}",
    ]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(path: Path, name: str, section: str) -> None:
    """Replace the text between the ``name`` markers in ``path`` (or append it), keeping everything else."""
    start, end = markers(name)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].removeprefix("\n")
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(path: Path, name: str, lines: list[str]) -> None:
    """Write ``lines`` as the ``name`` section of ``path`` (between its markers) and print them."""
    start, end = markers(name)
    write_section(path, name, "\n".join([start, *lines, end, ""]))
    print("\n".join(lines))


def run_together(threads: list[threading.Thread]) -> float:
    """Start the threads at once, wait for all; the wall seconds they took together."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def style_queries_parser(doc: str, learned: bool = True) -> argparse.ArgumentParser:
    """The arguments of the scripts that measure the font benchmark's style queries from their cached vectors: the
    benchmark folder, ``--data-dir``, ``--learned`` (when ``learned``), ``--vectors`` and ``--out``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("bench", type=Path, help="folder written by scripts/build_benchmark.py")
    parser.add_argument("--data-dir", type=Path, required=True, help="the benchmark ingested with content and style")
    if learned:
        parser.add_argument("--learned", required=True, help="learned spaces to measure, comma-separated")
    parser.add_argument("--vectors", type=Path, required=True, help="the queries' vectors (bench_confidence --vectors)")
    parser.add_argument("--out", type=Path, default=Path("docs/quality.md"))
    return parser


def cached_query_vectors(path: Path) -> list[QueryVectors]:
    """The queries' vectors cached by ``bench_confidence.py --vectors``."""
    cached = np.load(path)
    return [QueryVectors(c, s) for c, s in zip(cached["content"], cached["style"], strict=True)]
