"""Hostile inputs: files that are not regular files (refused before opening, never a hang), manifest values of the
wrong type (refused per row), and manifest texts written to other media (CSV formulas, terminal control sequences)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EMBEDDER, Cli, Ingested, ingest_once
from dbtools import complete_request
from PIL import Image

from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import AttributionAuditError, ImageError, ManifestError
from attribution_audit.sources.images import sha256_file
from attribution_audit.sources.labelled import read_labelled
from attribution_audit.sources.manifest import ManifestRow, RowFailure, open_source
from attribution_audit.sources.precomputed import load_vectors
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store import chain
from attribution_audit.store.models import AttributionArtistShare


def _without_hanging(call: Callable[[], Any]) -> BaseException | None:
    """Run ``call`` in a thread; fail the test if it has not returned within 20 s (a FIFO blocks forever)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    assert outcome, "the call blocked on the FIFO"
    return outcome[0]


@pytest.mark.parametrize(
    ("name", "read", "error"),
    [
        ("manifest.csv", lambda p: open_source(p), ManifestError),
        ("manifest.jsonl", lambda p: open_source(p), ManifestError),
        ("wang.json", lambda p: open_source(p), ManifestError),
        ("labelled.csv", read_labelled, ManifestError),
        ("image.png", sha256_file, ImageError),
    ],
)
def test_a_fifo_is_refused_before_it_is_opened(
    tmp_path: Path, name: str, read: Callable[[Path], Any], error: type[AttributionAuditError]
) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    raised = _without_hanging(lambda: read(fifo))
    assert isinstance(raised, error) and "not a regular file" in str(raised)
    assert str(raised).startswith(str(fifo)) and "\n" not in str(raised)


def test_precomputed_vectors_from_a_fifo_are_refused(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    (tmp_path / "m.csv").write_text("path,artist,work_id\na.png,A,w1\n")
    fifo = tmp_path / "vectors.npy"
    os.mkfifo(fifo)
    raised = _without_hanging(lambda: load_vectors(fifo, open_source(tmp_path / "m.csv")))
    assert isinstance(raised, ManifestError) and "not a regular file" in str(raised)


def test_a_directory_as_a_manifest_or_image_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "looks.csv"
    folder.mkdir()
    with pytest.raises(ManifestError, match="is a directory"):
        open_source(folder, "csv")
    with pytest.raises(ImageError, match="is a directory"):
        sha256_file(folder)


def test_manifest_values_of_the_wrong_type_are_refused_per_row(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [
        {"path": "a.png", "artist": ["Ada"], "work_id": "w1"},
        {"path": "a.png", "artist": "Ada", "work_id": {"id": 2}},
        {"path": "a.png", "artist": True, "work_id": "w3"},
        {"path": "a.png", "artist": "Ada", "work_id": "w4", "title": ["t"]},
        {"path": ["a.png"], "artist": "Ada", "work_id": "w5"},
        {"path": "a.png", "artist": "Ada", "work_id": False},
        {"path": "a.png", "artist": "Ada", "work_id": 7, "year": [1900, 1901]},  # a number id; any extra value
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    items = list(open_source(manifest))
    failures = [i for i in items if isinstance(i, RowFailure)]
    assert [(f.line, f.reason) for f in failures] == [
        (1, "artist is a list, not text; write it as a string"),
        (2, "work_id is an object, not text; write it as a string"),
        (3, "artist is a boolean, not text; write it as a string"),
        (4, "title is a list, not text; write it as a string"),
        (5, "path is a list, not text; write it as a string"),
        (6, "work_id is a boolean, not text; write it as a string"),
    ]
    (good,) = [i for i in items if isinstance(i, ManifestRow)]
    assert (good.work_id, good.extra) == ("7", {"year": [1900, 1901]})


def test_a_wang_entry_whose_artist_is_not_text_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data = {"x": {"artist": ["Ada"], "exemplar": ["a.png"]}, "Bruno": {"exemplar": ["a.png", ["b.png"]]}}
    (tmp_path / "w.json").write_text(json.dumps(data))
    items = list(open_source(tmp_path / "w.json"))
    assert [(type(i).__name__, getattr(i, "reason", None)) for i in items] == [
        ("RowFailure", "entry's artist is not text; write it as a string"),
        ("ManifestRow", None),
        ("RowFailure", "path is a list, not text; write it as a string"),
    ]


def test_a_wang_subset_longer_than_the_audit_db_stores_fails_its_entry(tmp_path: Path) -> None:
    """Its generated images became labelled queries that PostgreSQL refused at the import, saying to retry."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "g.png")
    data = {"Ada": {"exemplar": ["a.png"], "synth": {"s" * 101: ["g.png"], "short": ["g.png"]}}}
    (tmp_path / "w.json").write_text(json.dumps(data))
    source = open_source(tmp_path / "w.json")
    items = list(source)
    assert [type(i).__name__ for i in items] == ["ManifestRow", "RowFailure"]
    assert items[1].reason.startswith(f"subset {'s' * 40!r}... is longer than 100 characters; shorten it")  # type: ignore[union-attr]
    assert [q.subset for q in source.labelled] == ["short"]  # type: ignore[union-attr]


HOSTILE = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)", "Ada\x1b[2J\x1b]0;pwned\x07"]


def test_manifest_texts_are_neutralised_in_csv_and_on_the_terminal(cli: Cli) -> None:
    engine = cli.engine()
    ids = []
    for artist in HOSTILE:
        request = complete_request(artist)
        request.image_path = f"/images/{artist}.png"
        request.artist_shares = [AttributionArtistShare(artist=artist, share=1.0)]
        for neighbour in request.neighbours:
            neighbour.artist = neighbour.canonical_artist = artist
            neighbour.work_id = f"{artist}-w{neighbour.rank}"
        request.metrics.top_artist = artist  # type: ignore[union-attr]
        ids.append(chain.append(engine, request).id)
    csv_text = cli("report", "artists", "--format", "csv").stdout
    cells = [line.split(",")[0].strip('"') for line in csv_text.splitlines()[1:]]
    assert cells and all(not cell.startswith(("=", "+", "-", "@")) for cell in cells), cells
    for listed in (cli("audit", "list").stdout, cli("audit", "list", "--format", "csv").stdout):
        assert "\x1b" not in listed and "\x07" not in listed
    for request_id in ids:
        shown = cli("audit", "show", request_id).stdout
        assert "\x1b" not in shown and "\x07" not in shown
    shown = cli("audit", "show", ids[-1]).stdout
    assert "Ada\\x1b[2J\\x1b]0;pwned\\x07" in shown  # shown literally, escaped
    assert "\x1b" not in cli("report", "artists").stdout


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("hostile-ingested"), sqlite_template, demo_catalogue.manifest)


def test_attribute_refuses_a_fifo_a_strip_and_a_huge_image_in_one_line_each(
    cli: Cli, ingested: Ingested, tmp_path: Path
) -> None:
    cli.restore(ingested)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    strip = tmp_path / "strip.png"
    Image.new("RGB", (20000, 1), (200, 30, 30)).save(strip)
    huge = tmp_path / "huge.png"
    Image.new("1", (10000, 10000)).save(huge)
    outcome: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            cli("attribute", str(fifo), str(strip), str(huge), "--embedder", EMBEDDER, code=1)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(120)
    assert outcome, "attribute blocked"
    lines = outcome[0].stderr.splitlines()
    assert lines == [
        f"error: {fifo}: is not a regular file (a pipe, socket or device); pass the path of a file",
        f"error: {strip}: image is 20000x1, more elongated than 20:1; crop it to the part to attribute",
        f"error: {huge}: image is 10000x10000, more than 64,000,000 pixels (decompression-bomb guard); scale it down "
        "to at most 64,000,000 pixels and use that copy",
    ]
    assert cli("audit", "list", "--format", "json").stdout.strip() == "[]"  # nothing was logged
