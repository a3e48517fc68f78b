"""A data dir on the embedded defaults: created by the first ingest at the current schema, remembers its embedder,
and no command leaves a stray data dir it will not use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import EMBEDDER, save_tiny_clip
from typer.testing import CliRunner

from attribution_audit.cli import app
from attribution_audit.sources.synthetic import DemoCatalogue, make_demo_catalogue


@pytest.fixture
def small_catalogue(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalogue:
    return make_demo_catalogue(tmp_path_factory.mktemp("small"), artists=2, works_per_artist=3, queries_per_artist=1)


def run(data_dir: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])
    assert result.exit_code == code, result.output
    return result.output


@pytest.mark.parametrize(
    "command", [["audit", "list"], ["report", "summary"], ["audit", "verify"], ["artists", "list"], ["db", "current"]]
)
def test_reading_commands_on_a_missing_data_dir_create_nothing(tmp_path: Path, command: list[str]) -> None:
    data_dir = tmp_path / "nowhere"
    output = run(data_dir, *command, code=1)
    assert f"no audit log in {data_dir}" in output and "ingest a catalogue first" in output
    assert "--data-dir / ATTRIBUTION_AUDIT_DATA_DIR" in output
    assert not data_dir.exists()


def test_an_ingest_that_cannot_start_creates_nothing(tmp_path: Path, small_catalogue: DemoCatalogue) -> None:
    data_dir = tmp_path / "data"
    run(data_dir, "ingest", str(small_catalogue.manifest), "--embedder", "no-such-model", code=1)
    run(data_dir, "ingest", str(tmp_path / "missing.csv"), "--embedder", EMBEDDER, code=1)
    assert not data_dir.exists()


def test_first_ingest_creates_the_log_and_later_commands_need_no_embedder(
    tmp_path: Path, small_catalogue: DemoCatalogue
) -> None:
    data_dir = tmp_path / "data"
    run(data_dir, "ingest", str(small_catalogue.manifest), "--embedder", EMBEDDER)  # no `db upgrade` before
    record = json.loads((data_dir / "attribution-audit.json").read_text())
    assert record["embedder"] == EMBEDDER and record["collections"] == {EMBEDDER: ["content"]}

    image = str(small_catalogue.queries[0].path)
    first = run(data_dir, "attribute", image, "--k", "2")
    assert f"note: using embedder {EMBEDDER}, recorded by the first ingest into {data_dir}" in first
    second = run(data_dir, "attribute", image, "--k", "2")
    assert "note: using embedder" not in second  # said once
    assert "works_efficientnet_lite0" in run(data_dir, "catalogue", "check")
    assert "chain OK: 2 records" in run(data_dir, "audit", "verify")


def test_another_embedder_is_an_explicit_choice_a_new_collection_and_the_default_stays(
    tmp_path: Path, small_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    run(data_dir, "ingest", str(small_catalogue.manifest), "--embedder", EMBEDDER)
    save_tiny_clip(tmp_path / "clip")
    other = f"clip:{tmp_path / 'clip'}"
    output = run(data_dir, "ingest", str(small_catalogue.manifest), "--embedder", other)
    assert f"new collection for embedder {other} beside {EMBEDDER}'s" in output
    assert f"commands without --embedder keep using {EMBEDDER}" in output
    record = json.loads((data_dir / "attribution-audit.json").read_text())
    assert record["embedder"] == EMBEDDER and set(record["collections"]) == {EMBEDDER, other}
    # The environment variable is an explicit choice too: it is used, never silently replaced by the record.
    monkeypatch.setenv("ATTRIBUTION_AUDIT_EMBEDDER", "clip")
    assert "CLIP weights" in run(data_dir, "attribute", str(small_catalogue.queries[0].path), code=1)
    monkeypatch.delenv("ATTRIBUTION_AUDIT_EMBEDDER")
    image = str(small_catalogue.queries[0].path)
    assert (
        EMBEDDER in json.loads(run(data_dir, "attribute", image, "--json").split("\n", 1)[1])[0]["embedder_fingerprint"]
    )


def test_a_server_database_is_never_created_implicitly(tmp_path: Path, small_catalogue: DemoCatalogue) -> None:
    url = f"sqlite:///{tmp_path / 'server.sqlite'}"  # any configured URL counts as a server database
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "--database-url", url, "audit", "list"])
    assert result.exit_code == 1
    output = result.output
    assert "run `attribution-audit db upgrade`" in output
