"""What ingestion makes of its inputs: manifest rows the audit schema cannot hold fail alone (one failure per row,
the rest ingested), and a catalogue given as ``.`` is named after its folder."""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import Result

from attribution_audit.errors import ManifestError
from attribution_audit.services.ingest import default_catalogue_name
from attribution_audit.sources.files import CELL_LIMIT
from attribution_audit.sources.labelled import read_labelled
from attribution_audit.sources.manifest import RowFailure, WangSource, open_source
from attribution_audit.store.models import Artist, IngestionRun, Work


def ingest(cli: Cli, manifest: Path, work_ids: list[str], code: int = 1) -> Result:
    """``ingest`` of ``manifest`` with a precomputed 8-d vector for each of ``work_ids`` (no image is read, no model
    loaded), not one traceback, each failure one line naming the manifest's line."""
    vectors = manifest.parent / "vectors.npz"
    np.savez(vectors, work_ids=np.array(work_ids), vectors=np.eye(len(work_ids), 8, dtype=np.float32) + 0.1)
    result = cli("ingest", str(manifest), "--embedder", "vec8", "--embeddings", str(vectors), code=code)
    assert isinstance(result.exception, SystemExit | None) and "Traceback" not in result.output, result.output
    return result


def failed_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("failed: ")]


def ingested_work_ids(cli: Cli) -> list[str]:
    with Session(cli.engine()) as session:
        return sorted(session.scalars(select(Work.work_id)))


def test_a_csv_manifest_with_old_mac_line_endings_is_read(cli: Cli, tmp_path: Path) -> None:
    """``\r`` alone between rows: the header was split at ``\n`` only, and the csv module refused the line."""
    manifest = tmp_path / "mac.csv"
    manifest.write_bytes(b"path,artist,work_id\ra.png,Ada,W1\rb.png,,W2\rc.png,Bruno,W3\r")
    result = ingest(cli, manifest, ["W1", "W3"])
    assert failed_lines(result) == [f"failed: {manifest}:3 work_id='W2': empty artist"]
    assert ingested_work_ids(cli) == ["W1", "W3"]
    labelled = tmp_path / "q.csv"
    labelled.write_bytes(b"path,artist\ra.png,Ada\rb.png,Bruno\r")
    assert [(q.line, q.artist) for q in read_labelled(labelled)] == [(2, "Ada"), (3, "Bruno")]


def test_a_csv_cell_over_the_field_limit_fails_its_row_and_a_column_name_the_file(cli: Cli, tmp_path: Path) -> None:
    """The csv module's field limit ended the run with a traceback; a quoted cell cut at it must not be read on as
    rows either (its second line below looks like one)."""
    long = "x" * (CELL_LIMIT + 1)
    manifest = tmp_path / "long.csv"
    manifest.write_text(
        f'path,artist,work_id,note\na.png,Ada,W1,{long}\nb.png,Ada,W2,"{long}\nc.png,Ada,W3"\nd.png,Ada,W4,ok\n'
        f"e.png,Ada,{long}\n"
    )
    result = ingest(cli, manifest, ["W1", "W2", "W3", "W4"])
    too_long = f"holds more than {CELL_LIMIT} characters; shorten the value"
    assert failed_lines(result) == [
        f"failed: {manifest}:2 work_id='W1': column 'note' {too_long}",
        f"failed: {manifest}:4 work_id='W2': column 'note' {too_long}",
        f"failed: {manifest}:6 work_id='': column 'work_id' {too_long}",  # (the id too long to print)
    ]
    assert ingested_work_ids(cli) == ["W4"]
    assert csv.field_size_limit() == CELL_LIMIT  # the csv module's own limit as it was
    manifest.write_text(f"path,artist,work_id,{long}\na.png,Ada,W1,x\n")
    refused = ingest(cli, manifest, ["W1"])
    assert refused.output == f"error: {manifest}:1: a column name longer than {CELL_LIMIT} characters; shorten it\n"
    with Session(cli.engine()) as session:
        assert len(session.scalars(select(IngestionRun)).all()) == 1  # the first run's only
    labelled = tmp_path / "q.csv"
    labelled.write_text(f"path,artist\na.png,Ada\nb.png,{long}\n")
    with pytest.raises(ManifestError, match=rf"q\.csv:3: column 'artist' {too_long}$"):
        read_labelled(labelled)


def test_jsonl_values_the_decoder_refuses_fail_their_row(cli: Cli, tmp_path: Path) -> None:
    """Nesting past the recursion limit (a RecursionError) and an integer over Python's 4300 digits (a ValueError
    naming no line, which ended the whole run) are invalid JSON lines like others; nesting the decoder takes but the
    checks and encoders walking it would not is refused too."""

    def row(work_id: str, value: str) -> str:
        return f'{{"path": "{work_id}.png", "artist": "Ada", "work_id": "{work_id}", "extra": {value}}}\n'

    lines = [
        row("W1", "[" * 200_000 + "]" * 200_000),
        row("W2", "9" * 5000),
        row("W3", "[" * 150 + "]" * 150),
        row("W4", '{"k": 1, "k": 2}, "deep": ' + "[" * 200_000 + "]" * 200_000),  # (the repeat found first)
        row("W5", "[" * 20 + "1.5" + "]" * 20),
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(lines))
    result = ingest(cli, manifest, ["W1", "W2", "W3", "W4", "W5"])
    assert failed_lines(result) == [
        f"failed: {manifest}:1 work_id='': invalid JSON (nested too deeply)",
        f"failed: {manifest}:2 work_id='': invalid JSON (a number of more than 4300 digits)",
        f"failed: {manifest}:3 work_id='W3': column 'extra' is nested more than 100 levels deep; flatten it",
        f"failed: {manifest}:4 work_id='': key 'k' appears twice in the object; keep one",
    ]
    assert ingested_work_ids(cli) == ["W5"]


def test_names_are_checked_as_they_are_stored(cli_on: Callable[[str], Cli], migrated_url: str, tmp_path: Path) -> None:
    """An artist of control characters only was stored as '' (a blank artist); one of 300 x U+0958 passed the
    300-character limit but is 600 once NFC-normalised: PostgreSQL refused the write, the whole run lost. Both fail
    their row; the other rows are ingested on both databases."""
    cli = cli_on(migrated_url)
    rows = [
        {"path": "a.png", "artist": "\x01\x7f", "work_id": "W1"},
        {"path": "b.png", "artist": "\u0958" * 300, "work_id": "W2"},
        {"path": "c.png", "artist": "\u0958" * 150, "work_id": "W3"},  # 300 once normalised: kept
        {"path": "d.png", "artist": "Ada", "work_id": "W" * 301},
        {"path": "e.png", "artist": "Ada", "work_id": "W5", "title": " " + "t" * 500 + " "},  # 500 once stripped
        {"path": "f.png", "artist": "Ada", "work_id": "W6", "title": "t" * 501},
        {"path": "g.png", "artist": "Ada", "work_id": "W7", "extra": {"k": ["\x00"]}},
    ]
    manifest = tmp_path / "names.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = ingest(cli, manifest, ["W1", "W2", "W3", "W" * 301, "W5", "W6", "W7"])
    assert [line.split(": ", 2)[2] for line in failed_lines(result)] == [
        "empty artist",
        "artist longer than 300 characters once Unicode-normalised (NFC); shorten it",
        "work_id longer than 300 characters; shorten it",
        "title longer than 500 characters; shorten it",
        "column 'extra' contains a NUL character",
    ]
    assert [line.split(" ")[1] for line in failed_lines(result)] == [f"{manifest}:{n}" for n in (1, 2, 4, 6, 7)]
    assert ingested_work_ids(cli) == ["W3", "W5"]
    with Session(cli.engine()) as session:
        assert sorted(session.scalars(select(Artist.name))) == ["Ada", unicodedata.normalize("NFC", "\u0958" * 150)]
    entries = {"x": {"artist": "\x01", "exemplar": ["a.png"], "synth": ["q.png"]}, "y": {"exemplar": ["b.png"]}}
    wang = tmp_path / "wang.json"
    wang.write_text(json.dumps(entries))
    source = open_source(wang)
    assert isinstance(source, WangSource)
    assert [getattr(item, "reason", "") for item in source] == [
        "entry's artist is empty or longer than 300 characters once cleaned",
        "",
    ]
    assert source.labelled == []  # (no query of the blank artist)


def test_a_work_id_in_another_unicode_form_is_a_duplicate(cli: Cli, tmp_path: Path) -> None:
    """A work id composed (NFC) and decomposed (NFD) prints alike: two works no listing tells apart. The second
    fails as a duplicate; a work id is still stored as written (its point id derives from it)."""
    composed, decomposed = "Caf\u00e9", "Cafe\u0301"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,artist,work_id\na.png,Ada,{decomposed}\nb.png,Ada,{composed}\nc.png,Ada,{decomposed}\n")
    result = ingest(cli, manifest, [decomposed, composed])
    assert failed_lines(result) == [
        f"failed: {manifest}:3 work_id={composed!r}: duplicate work_id (first seen on line 2, the same text in "
        "another Unicode form)",
        f"failed: {manifest}:4 work_id={decomposed!r}: duplicate work_id (first seen on line 2)",
    ]
    assert ingested_work_ids(cli) == [decomposed]


def test_rows_the_schema_cannot_hold_fail_alone(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"path": "a.png", "artist": "A" * 301, "work_id": "long-artist"},
        {"path": "b.png", "artist": "B", "work_id": "W" * 301},
        {"path": "c.png", "artist": "Bad\u0000Name", "work_id": "nul"},
        {"path": "d.png", "artist": "D", "work_id": "nan", "score": float("nan")},
        {"path": "e.png", "artist": "E", "work_id": "ok", "title": "fine"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = list(open_source(manifest))
    failures = [i for i in items if isinstance(i, RowFailure)]
    assert [f.line for f in failures] == [1, 2, 3, 4]
    assert "longer than 300" in failures[0].reason and "NUL" in failures[2].reason and "NaN" in failures[3].reason
    assert [i.work_id for i in items if not isinstance(i, RowFailure)] == ["ok"]


def test_a_column_or_key_given_twice_is_refused_not_settled_by_the_last_value(tmp_path: Path) -> None:
    """``path,artist,work_id,artist`` (or a JSON line naming ``artist`` twice) was ingested under the last value,
    silently: which artist was meant is the file's author's to say."""
    csv_manifest = tmp_path / "m.csv"
    csv_manifest.write_text("path,artist,work_id, artist\na.png,Ada,W1,Bruno\n")
    with pytest.raises(ManifestError) as info:
        open_source(csv_manifest)
    assert str(info.value) == f"{csv_manifest}: column 'artist' appears twice in the header; keep one"
    labelled = tmp_path / "q.csv"
    labelled.write_text("path,artist,path\na.png,Ada,b.png\n")
    with pytest.raises(ManifestError, match=r"q\.csv: column 'path' appears twice in the header; keep one$"):
        read_labelled(labelled)
    # a spreadsheet's trailing commas: unnamed columns, dropped as before
    csv_manifest.write_text("path,artist,work_id,title,,\na.png,Ada,W1,Dawn,,\nb.png,Ada,W2,Dusk,,,, \n")
    rows = list(open_source(csv_manifest))
    assert [(r.artist, r.title) for r in rows if not isinstance(r, RowFailure)] == [("Ada", "Dawn"), ("Ada", "Dusk")]
    # ... but a value under an unnamed column was dropped silently: its row fails, naming the column
    csv_manifest.write_text("path,,artist,work_id,#3\na.png,,Ada,W1,x\nb.png,Bruno,Ada,W2,\nc.png,,Ada,W3,,z\n")
    first, second, third = open_source(csv_manifest)
    assert not isinstance(first, RowFailure) and first.extra == {"#3": "x"}  # a column named so is a column
    assert isinstance(second, RowFailure) and (second.work_id, second.reason) == (
        "W2",
        "a value in column 2, which the header does not name; name the column or move the value",
    )
    assert isinstance(third, RowFailure) and third.reason.startswith("a value in column 6, which the header")
    labelled.write_text("path,artist,,\na.png,Ada,,\n")
    assert [q.artist for q in read_labelled(labelled)] == ["Ada"]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(
        '{"path": "a.png", "artist": "Ada", "work_id": "J1", "artist": "Bruno"}\n'
        '{"path": "b.png", "artist": "Ada", "work_id": "J2", "extra": {"k": 1, "k": 2}}\n'
        '{"path": "c.png", "artist": "Ada", "work_id": "J3"}\n'
        '{"path": "d.png", "artist": "Ada", "work_id": "J4", "work_id": "J5"}\n'
        '[{"a": 1, "a": 2}]\n'
    )
    items = list(open_source(jsonl))
    assert [(i.line, i.work_id, i.reason) for i in items if isinstance(i, RowFailure)] == [
        (1, "J1", "key 'artist' appears twice in the object; keep one"),  # named, to be found in the failures file
        (2, "J2", "key 'k' appears twice in the object; keep one"),
        (4, "", "key 'work_id' appears twice in the object; keep one"),  # which one: not said
        (5, "", "key 'a' appears twice in the object; keep one"),
    ]
    assert [i.work_id for i in items if not isinstance(i, RowFailure)] == ["J3"]


def test_ingesting_dot_names_the_catalogue_after_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "museum"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert default_catalogue_name(Path(".")) == "museum"
    assert default_catalogue_name(Path("catalogue.csv")) == "catalogue"


def test_the_failures_file_neutralises_formulas(tmp_path: Path) -> None:
    import csv

    from attribution_audit.services.ingest import _write_failures
    from attribution_audit.sources.manifest import RowFailure

    written = _write_failures(tmp_path / "failed.csv", [RowFailure(3, '=HYPERLINK("http://evil")', "+cmd")])
    assert written is not None
    rows = list(csv.reader(written.open()))
    assert rows[1] == ["3", '\'=HYPERLINK("http://evil")', "'+cmd"]
