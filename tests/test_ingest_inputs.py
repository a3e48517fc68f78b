"""What ingestion makes of its inputs: manifest rows the audit schema cannot hold fail alone (one failure per row,
the rest ingested), and a catalogue given as ``.`` is named after its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attribution_audit.errors import ManifestError
from attribution_audit.services.ingest import default_catalogue_name
from attribution_audit.sources.labelled import read_labelled
from attribution_audit.sources.manifest import RowFailure, open_source


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
