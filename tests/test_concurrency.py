"""8 processes x 25 real `attribute` calls on one audit database leave one chain that verifies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EMBEDDER, Cli

from attribution_audit.sources.synthetic import DemoCatalogue

PROCESSES, CALLS = 8, 25
# Each process loads the model and makes 25 requests; slow machines raise the bound with this factor.
TIMEOUT_S = 600 * float(os.environ.get("ATTRIBUTION_AUDIT_TEST_TIMEOUT_FACTOR", "1"))


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
    processes = []
    for worker in range(PROCESSES):
        replica = tmp_path / f"worker{worker}"
        shutil.copytree(cli.data_dir / "qdrant", replica / "qdrant")
        batch = [images[(worker + i) % len(images)] for i in range(CALLS)]
        command = [sys.executable, "-m", "attribution_audit", "--data-dir", str(replica)]
        command += ["--database-url", database_url, "attribute", *batch, "--json", "--k", "3", "--verify", "off"]
        command += ["--embedder", EMBEDDER]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    printed = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT_S)
            assert process.returncode == 0, err
            printed += json.loads(out)
    finally:
        for process in processes:  # a failed or hung worker must not outlive the test
            if process.poll() is None:
                process.kill()
                process.wait()
    assert len({r["request_id"] for r in printed}) == PROCESSES * CALLS
    assert sorted(r["seq"] for r in printed) == list(range(1, PROCESSES * CALLS + 1))
    verified = cli("audit", "verify")
    assert f"chain OK: {PROCESSES * CALLS} records" in verified.stdout
