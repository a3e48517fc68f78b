"""The README's quick start, walked as a new user would: a fresh folder, the commands exactly as the README shows
them (no `db upgrade` on the embedded default, no `--embedder` after the first ingest), each one must work."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attribution_audit.cli import app
from attribution_audit.sources.synthetic import make_demo_catalogue

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROMPT = "$ attribution-audit "
PASTED = "  attribution-audit "


def quick_start_lines() -> list[str]:
    """The `$ ...` commands and the pasted follow-up lines of the README's first transcript."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"^## Quick start\n.*?^```text\n(.*?)^```", text, flags=re.M | re.S)
    assert block, "README.md has no quick-start transcript"
    return [line for line in block.group(1).splitlines() if line.startswith((PROMPT, PASTED, "$ export ", "  export "))]


def test_the_quick_start_transcript_has_the_commands_a_user_needs() -> None:
    lines = quick_start_lines()
    joined = "\n".join(lines)
    for needed in ("ingest", "attribute", "audit list", "audit verify", "export ATTRIBUTION_AUDIT_DATA_DIR"):
        assert needed in joined
    assert "db upgrade" not in joined, "the embedded default needs no `db upgrade`"
    after_ingest = [line for line in lines if "attribution-audit" in line and " ingest " not in line]
    assert after_ingest and not any("--embedder" in line for line in after_ingest)


@pytest.mark.slow
def test_every_quick_start_command_works_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_demo_catalogue(tmp_path / ".demo" / "catalogue", queries_per_artist=1)
    monkeypatch.delenv("ATTRIBUTION_AUDIT_DATA_DIR", raising=False)
    monkeypatch.delenv("ATTRIBUTION_AUDIT_EMBEDDER", raising=False)
    monkeypatch.delenv("ATTRIBUTION_AUDIT_DATABASE_URL", raising=False)
    runner = CliRunner()
    request_id = None
    for line in quick_start_lines():
        command = line.strip().removeprefix("$ ").replace("$PWD", str(tmp_path))
        words = shlex.split(command, comments=True)
        outside = [w for w in words if "/" in w and Path(w.partition("=")[2] or w).is_absolute()]
        assert all(Path(w.partition("=")[2] or w).is_relative_to(tmp_path) for w in outside), (
            f"`{line.strip()}` names a path of one machine; a reader cannot paste it"
        )
        if command.startswith("export "):
            name, _, value = words[1].partition("=")
            monkeypatch.setenv(name, value)
            continue
        if "<request id" in command:
            assert request_id, "the transcript shows a request id placeholder before any request"
            command = re.sub(r"<request id[^>]*>", request_id, command)
        args = words[1:]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"`{command}` failed: {result.output}"
        found = re.search(r"^request ([0-9a-f-]{36})", result.stdout, flags=re.M)
        request_id = found.group(1) if found else request_id
    assert not (tmp_path / ".attribution-audit").exists(), "a command created a stray default data dir"
    assert (tmp_path / ".demo" / "data" / "attribution-audit.json").is_file()
