"""The README's Evaluation section, run as written on the demo data (the state `make demo` leaves), and its claims
held to the research note's own hedging."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import EMBEDDER
from typer.testing import CliRunner

from attribution_audit.cli import app
from attribution_audit.embedding.base import Embedder
from attribution_audit.sources.synthetic import make_demo_catalogue

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def evaluation_section() -> str:
    found = re.search(r"^## Evaluation\n(.*?)^## ", README.read_text(encoding="utf-8"), flags=re.M | re.S)
    assert found, "README.md has no Evaluation section"
    return found.group(1)


def evaluation_commands() -> list[str]:
    block = re.search(r"^```sh\n(.*?)^```", evaluation_section(), flags=re.M | re.S)
    assert block, "the Evaluation section has no command block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_evaluation_section_runs_every_experiment_of_the_note() -> None:
    joined = "\n".join(evaluation_commands())
    for command in ("evaluate run", "evaluate report", "evaluate content-bias", "evaluate compare-exact"):
        assert command in joined
    assert "--kind heterogeneous" in joined and "--reference-fraction" in joined and "--exact kdtree" in joined


def test_readme_claims_keep_the_notes_hedging() -> None:
    text = README.read_text(encoding="utf-8")
    assert "reproduces the research note" not in text and "reproduces the note" not in text
    assert "CLIP captures an image's content more than its style," not in text  # stated as a fact
    assert "it is possible that clip captures" in text.lower()
    assert "may not be generalizable" in text
    assert "depends on the embedder" in text


@pytest.mark.slow
def test_every_evaluation_command_runs_as_written_on_the_demo_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Embedder
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATA_DIR", "DATABASE_URL", "QDRANT_URL", "EMBEDDER"):
        monkeypatch.delenv(f"ATTRIBUTION_AUDIT_{name}", raising=False)
    runner = CliRunner()
    # What `make demo` (scripts/demo.py) leaves: the catalogue, labelled and noise sets, the catalogue ingested.
    demo = make_demo_catalogue(tmp_path / ".demo" / "catalogue", queries_per_artist=1)
    assert demo.evaluation.is_file() and demo.noise.is_file()
    data = ["--data-dir", ".demo/data"]
    assert runner.invoke(app, [*data, "ingest", ".demo/catalogue/catalogue.csv", "--embedder", EMBEDDER]).exit_code == 0
    for line in evaluation_commands():
        command = line.replace("$PWD", str(tmp_path))
        words = shlex.split(command, comments=True)
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            monkeypatch.setenv(name, value)
            continue
        assert words[0] == "attribution-audit", line
        result = runner.invoke(app, words[1:])
        assert result.exit_code == 0, f"`{line}` failed: {result.output}"
    out = tmp_path / ".demo" / "evaluation"
    for name in ("report.md", "hit_rate.png", "precision_recall.png", "content_bias.md", "content_bias_overall.png"):
        assert (out / name).is_file(), name
    assert (tmp_path / ".demo" / "evaluation-again" / "metrics.json").read_text() == (out / "metrics.json").read_text()
    for kind in ("homogeneous", "heterogeneous"):
        noise = json.loads((out / kind / "noise.json").read_text())
        assert noise["kind"] == kind and [row["level"] for row in noise["levels"]] == [0.1, 0.25, 0.5, 0.75]
    assert not (tmp_path / ".attribution-audit").exists()
