"""Labelled queries: generated images with their true artist (and optionally true works and a subset name)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from attribution_audit.errors import ManifestError
from attribution_audit.sources.files import (
    csv_fields,
    csv_rows,
    irregular_file_problem,
    named_cells,
)
from attribution_audit.sources.manifest import MAX_LENGTHS, SUBSET_LENGTH, clean_name


@dataclass(frozen=True)
class LabelledQuery:
    line: int
    path: Path
    artist: str
    work_ids: tuple[str, ...] = ()
    subset: str | None = None
    caption: str | None = None  # what the generated image shows (evaluate content-bias)


def read_labelled(path: str | Path) -> list[LabelledQuery]:
    """Read a CSV with ``path,artist`` (+ optional ``work_ids`` separated by ``;``, ``subset`` and ``caption``).

    Paths are relative to the CSV's folder. Malformed files or rows (an image listed twice, a value in a column the
    header does not name too; empty cells there, a spreadsheet's trailing commas, are ignored) raise ManifestError
    naming the line.
    """
    path = Path(path)
    problem = irregular_file_problem(path)
    if problem:
        raise ManifestError(f"{path}: {problem}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"{path}: labelled query file not found; check the path") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    # an unnamed column (a spreadsheet's trailing commas) is read under its position, to refuse a value in it
    fields = csv_fields(path, text, ("path", "artist"))
    reader = csv.DictReader(io.StringIO(text, newline=""), fieldnames=fields)
    next(reader, None)  # the header
    queries: list[LabelledQuery] = []
    lines: dict[Path, int] = {}
    for raw in csv_rows(reader):
        row, unnamed = named_cells(raw, len(fields))
        if unnamed:
            raise ManifestError(f"{path}:{reader.line_num}: {unnamed}")
        if not row.get("path") or not row.get("artist"):
            raise ManifestError(f"{path}:{reader.line_num}: empty path or artist; fill it in or remove the row")
        image = (path.parent / row["path"]).resolve()
        if image in lines:  # one image, one label: a repeat would count it twice, or twice differently
            raise ManifestError(
                f"{path}:{reader.line_num}: image {row['path']} is already listed at line {lines[image]}; "
                "list each labelled image once"
            )
        lines[image] = reader.line_num
        work_ids = tuple(dict.fromkeys(w.strip() for w in row.get("work_ids", "").split(";") if w.strip()))
        artist, subset = clean_name(row["artist"]), clean_name(row.get("subset", ""))
        for name, value, limit in (("artist", artist, MAX_LENGTHS["artist"]), ("subset", subset, SUBSET_LENGTH)):
            if len(value) > limit or (name == "artist" and not value):
                raise ManifestError(
                    f"{path}:{reader.line_num}: {name} is empty or longer than {limit} characters once cleaned "
                    "(control characters removed, Unicode-normalised); fix it"
                )
        queries.append(
            LabelledQuery(
                reader.line_num, image, artist, work_ids, subset or None, clean_name(row.get("caption", "")) or None
            )
        )
    if not queries:
        raise ManifestError(f"{path}: no labelled queries; add rows under the header")
    return queries
