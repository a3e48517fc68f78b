"""A data dir on the embedded defaults: created by the first ingest at the current schema, remembers its embedder,
and no command leaves a stray data dir it will not use."""

from __future__ import annotations

import json
import shutil
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


def test_a_first_ingest_none_of_whose_rows_can_be_ingested_is_refused_and_creates_nothing(
    tmp_path: Path, small_catalogue: DemoCatalogue
) -> None:
    """A new collection's every row is to be embedded: a manifest with no usable row (a missing image, a file that
    is not an image, a duplicate of one) or no row at all is refused in one line before the log, shard, record or
    failures file exist; one usable row is enough for the ingest to go on (and the others are its failed rows)."""
    data_dir = tmp_path / "data"
    (tmp_path / "notes.png").write_text("not an image")
    manifest = tmp_path / "broken.csv"
    manifest.write_text("path,artist,work_id\nmissing.png,Ada,W1\nnotes.png,Ada,W2\nnotes.png,Ada,W2\n")
    output = run(data_dir, "ingest", str(manifest), "--embedder", EMBEDDER, code=1)
    assert output.startswith(f"error: {manifest}: none of its 3 row(s) can be ingested (line 2, work_id 'W1': ")
    assert output.endswith("; fix the manifest (nothing was created)\n") and output.count("\n") == 1
    (tmp_path / "empty.csv").write_text("path,artist,work_id\n")
    output = run(data_dir, "ingest", str(tmp_path / "empty.csv"), "--embedder", EMBEDDER, code=1)
    assert (
        output
        == f"error: {tmp_path / 'empty.csv'}: no works to ingest; give a manifest with rows (nothing was created)\n"
    )
    assert not data_dir.exists()

    shutil.copyfile(small_catalogue.queries[0].path, tmp_path / "good.png")
    manifest.write_text(manifest.read_text() + "good.png,Ada,W3\n")
    assert "1 added, 0 updated, 0 unchanged, 0 withdrawn (skipped), 3 failed" in run(
        data_dir, "ingest", str(manifest), "--embedder", EMBEDDER, code=1
    )
    assert (data_dir / "audit.sqlite").exists()


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
    answered = CliRunner().invoke(app, ["--data-dir", str(data_dir), "attribute", image, "--json"])
    assert answered.exit_code == 0, answered.output
    assert EMBEDDER in json.loads(answered.stdout)[0]["embedder_fingerprint"]  # notes go to stderr


def test_a_server_database_is_never_created_implicitly(tmp_path: Path, small_catalogue: DemoCatalogue) -> None:
    url = f"sqlite:///{tmp_path / 'server.sqlite'}"  # any configured URL counts as a server database
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "--database-url", url, "audit", "list"])
    assert result.exit_code == 1
    output = result.output
    assert "run `attribution-audit db upgrade`" in output


@pytest.mark.parametrize("content", ["{garbage", '{"embedder": null}', '{"embedder": "x", "collections": 3}'])
def test_a_damaged_record_blocks_only_what_needs_the_embedder(
    tmp_path: Path, small_catalogue: DemoCatalogue, content: str
) -> None:
    data_dir = tmp_path / "data"
    run(data_dir, "ingest", str(small_catalogue.manifest), "--embedder", EMBEDDER)
    (data_dir / "attribution-audit.json").write_text(content)
    assert "chain OK" in run(data_dir, "audit", "verify")  # needs no embedder: unaffected
    refused = run(data_dir, "attribute", str(small_catalogue.queries[0].path), code=1)
    assert "unreadable data dir record" in refused and "pass --embedder" in refused
    chosen = run(data_dir, "attribute", str(small_catalogue.queries[0].path), "--embedder", EMBEDDER, "--k", "1")
    assert "request " in chosen


def test_record_writes_never_follow_a_planted_file_and_reads_survive_a_read_only_record(
    tmp_path: Path, small_catalogue: DemoCatalogue
) -> None:
    data_dir = tmp_path / "data"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    data_dir.mkdir()
    (data_dir / "attribution-audit.json.tmp").symlink_to(victim)  # the fixed temporary name of an earlier version
    run(data_dir, "ingest", str(small_catalogue.manifest), "--embedder", EMBEDDER)
    assert victim.read_text() == "keep me"
    record = data_dir / "attribution-audit.json"
    assert not record.is_symlink() and json.loads(record.read_text())["embedder"] == EMBEDDER


def test_a_record_that_cannot_be_rewritten_does_not_fail_a_command(
    tmp_path: Path, small_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attribution_audit import config
    from attribution_audit.errors import AttributionAuditError
    from attribution_audit.services import wiring

    data_dir = tmp_path / "data"
    run(data_dir, "ingest", str(small_catalogue.manifest), "--embedder", EMBEDDER)

    def read_only(data_dir: Path, record: config.DataDirRecord) -> None:  # what a read-only data dir answers
        raise AttributionAuditError(f"{data_dir}: cannot write the data dir record (Read-only file system)")

    monkeypatch.setattr(wiring, "write_record", read_only)
    assert "works_efficientnet_lite0" in run(data_dir, "catalogue", "check")  # the announcement is best effort
    again = run(data_dir, "ingest", str(small_catalogue.manifest))
    assert "0 added" in again and "the works are ingested, but" in again and "Read-only file system" in again


def test_no_space_is_left_partly_covered(tmp_path: Path, small_catalogue: DemoCatalogue) -> None:
    other = make_demo_catalogue(tmp_path / "other", artists=2, works_per_artist=2, queries_per_artist=0)
    image = str(small_catalogue.queries[0].path)
    # Style added to a collection whose works have content vectors only: partial, said, refused, reported.
    partial = tmp_path / "partial"
    run(partial, "ingest", str(small_catalogue.manifest), "--embedder", EMBEDDER)
    said = run(partial, "ingest", str(other.manifest), "--catalogue", "other", "--spaces", "content,style")
    assert "the style space covers 4 of 10 works" in said
    assert "covers 4 of its 10 works" in run(partial, "attribute", image, "--space", "style", code=1)
    assert "style 4/10 works" in run(partial, "catalogue", "check", code=1)
    # Fixed as the messages say: re-ingest the first catalogue with both spaces.
    run(partial, "ingest", str(small_catalogue.manifest), "--spaces", "content,style")
    assert "style 10/10 works" in run(partial, "catalogue", "check")
    # A content-only ingest into a collection that has a style space fills it too.
    filled = tmp_path / "filled"
    run(filled, "ingest", str(small_catalogue.manifest), "--embedder", EMBEDDER, "--spaces", "content,style")
    output = run(filled, "ingest", str(other.manifest), "--catalogue", "other")
    assert "filled the style space too" in output
    assert "style 10/10 works" in run(filled, "catalogue", "check")
    assert "request " in run(filled, "attribute", image, "--space", "fused", "--k", "2")
