"""8 processes x 25 real `attribute` calls on one audit database leave one chain that verifies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attribution_audit.cli import app
from attribution_audit.demo import DemoCatalogue

PROCESSES, CALLS = 8, 25


@pytest.mark.slow
def test_concurrent_attribute_processes_keep_the_chain_linear(
    tmp_path: Path, database_url: str, demo_catalogue: DemoCatalogue
) -> None:
    runner = CliRunner()
    seed = tmp_path / "seed"
    base = ["--data-dir", str(seed), "--database-url", database_url]
    assert runner.invoke(app, [*base, "db", "upgrade"]).exit_code == 0
    ingest = runner.invoke(app, [*base, "ingest", str(demo_catalogue.manifest), "--embedder", "efficientnet-lite0"])
    assert ingest.exit_code == 0, ingest.output
    images = [str(q.path) for q in demo_catalogue.queries]
    # The embedded shard is single-process, so each worker gets its own replica; all share the audit database.
    processes = []
    for worker in range(PROCESSES):
        replica = tmp_path / f"worker{worker}"
        shutil.copytree(seed / "qdrant", replica / "qdrant")
        batch = [images[(worker + i) % len(images)] for i in range(CALLS)]
        command = [sys.executable, "-m", "attribution_audit", "--data-dir", str(replica)]
        command += ["--database-url", database_url, "attribute", *batch, "--json", "--k", "3", "--verify", "off"]
        command += ["--embedder", "efficientnet-lite0"]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    printed = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        printed += json.loads(out)
    assert len({r["request_id"] for r in printed}) == PROCESSES * CALLS
    assert sorted(r["seq"] for r in printed) == list(range(1, PROCESSES * CALLS + 1))
    verified = runner.invoke(app, [*base, "audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert f"chain OK: {PROCESSES * CALLS} records" in verified.stdout
