"""8 processes x 25 real `attribute` calls on one audit database leave one chain that verifies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EMBEDDER, Cli

from attribution_audit.sources.synthetic import DemoCatalogue

PROCESSES, CALLS = 8, 25
TIMEOUT_FACTOR = float(os.environ.get("ATTRIBUTION_AUDIT_TEST_TIMEOUT_FACTOR", "1"))


@pytest.mark.slow
def test_concurrent_attribute_processes_keep_the_chain_linear(
    tmp_path: Path, database_url: str, cli_on: Callable[[str], Cli], demo_catalogue: DemoCatalogue
) -> None:
    cli = cli_on(database_url)  # the seed data dir: migrated log, ingested collection
    cli("db", "upgrade")
    cli("ingest", str(demo_catalogue.manifest), "--embedder", EMBEDDER)
    images = [str(q.path) for q in demo_catalogue.queries]
    # One compute thread per process: eight processes of a thread pool each would only contend for the cores.
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    # The embedded shard is single-process, so each worker gets its own replica; all share the audit database.
    commands = []
    for worker in range(PROCESSES + 1):
        replica = tmp_path / f"worker{worker}"
        shutil.copytree(cli.data_dir / "qdrant", replica / "qdrant")
        command = [sys.executable, "-m", "attribution_audit", "--data-dir", str(replica), "--database-url"]
        commands.append([*command, database_url, "attribute", "--json", "--k", "3", "--verify", "off"])
    # The bound that tells a hung worker from a slow machine, measured here and now: one process's start and one
    # call, alone, times the calls every worker makes while they share the cores (a request of the log like any other).
    started = time.monotonic()
    subprocess.run([*commands.pop(), images[0], "--embedder", EMBEDDER], check=True, capture_output=True, env=env)
    timeout = max(600.0, PROCESSES * CALLS * (time.monotonic() - started)) * TIMEOUT_FACTOR
    processes = []
    for worker, command in enumerate(commands):
        batch = [images[(worker + i) % len(images)] for i in range(CALLS)]
        command += [*batch, "--embedder", EMBEDDER]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    printed = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err
            printed += json.loads(out)
    finally:
        for process in processes:  # a failed or hung worker must not outlive the test
            if process.poll() is None:
                process.kill()
                process.wait()
    assert len({r["request_id"] for r in printed}) == PROCESSES * CALLS
    assert sorted(r["seq"] for r in printed) == list(range(2, PROCESSES * CALLS + 2))  # seq 1: the timed call's
    verified = cli("audit", "verify")
    assert f"chain OK: {PROCESSES * CALLS + 1} records" in verified.stdout
