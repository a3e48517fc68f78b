"""The README's "Service" example, run as written by bash in a fresh folder holding the demo data (on a free port
instead of 8000, so that parallel runs do not collide)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import ingest_once
from servers import free_port

from attribution_audit.embedding.base import Embedder
from attribution_audit.sources.synthetic import DemoCatalogue

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- service-example:"


def service_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(re.escape(MARKER) + r".*?-->\n```sh\n(.*?)^```", text, flags=re.M | re.S)
    assert found, "README.md has no service example"
    return found.group(1)


def python_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^\*\*Python API\.\*\*.*?^```python\n(.*?)^```", text, flags=re.M | re.S)
    assert found, "README.md has no Python API example"
    return found.group(1)


@pytest.mark.slow
def test_the_readme_service_example_works_as_written(
    tmp_path: Path, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> None:
    (tmp_path / "ingested").mkdir()
    ingested = ingest_once(tmp_path / "ingested", sqlite_template, demo_catalogue.manifest)
    work = tmp_path / "repo"
    shutil.copytree(ingested.data_dir, work / ".demo" / "data")
    source, target = sqlite3.connect(ingested.database), sqlite3.connect(work / ".demo" / "data" / "audit.sqlite")
    source.backup(target)  # the embedded default's log: DATA_DIR/audit.sqlite
    source.close()
    target.close()
    generated = work / ".demo" / "catalogue" / "generated"
    generated.mkdir(parents=True)
    shutil.copy(next(q.path for q in demo_catalogue.queries if q.path.name == "gen_a5_0.png"), generated)
    (work / ".venv").symlink_to(ROOT / ".venv")

    script = service_example().replace("8000", str(free_port()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTRIBUTION_AUDIT_")}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    attributed = json.loads(lines[0])
    assert re.fullmatch(r"image-generator-\d+", attributed[0]["requester"]) and len(attributed[0]["neighbours"]) == 5
    listed = json.loads(lines[1])
    assert attributed[0]["request_id"] in [a["request_id"] for a in listed["attributions"]]
    assert json.loads(lines[2])["period"] == "month"
    assert json.loads(lines[3])["ok"] is True
    assert 'attribution_http_requests_total{method="POST",route="/v1/attributions",status="200"} 1.0' in done.stdout

    # The Python API example, as written, on the same data (the server has stopped: the shard is free).
    ran = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", python_example()],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    top_artist, confidence, record_hash = ran.stdout.splitlines()[0].rsplit(maxsplit=2)
    assert top_artist == "Farid Turner"  # gen_a5_0.png was made in his style
    assert len(record_hash) == 64 and 0 <= float(confidence) <= 1
    assert ran.stdout.splitlines()[-1] == "True"  # the chain verifies
