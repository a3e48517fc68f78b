"""Input files are regular files: a FIFO would block a read forever (while the caller holds the store's lock), a
device would stream without end, a directory cannot be read. Checked with ``stat`` before anything opens the path."""

from __future__ import annotations

import csv
import io
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from attribution_audit.errors import ManifestError

CELL_LIMIT = 131072  # characters in one CSV cell (the csv module's default limit): a longer one fails its row
_READ_LIMIT = 2**31 - 1  # the csv module's own limit while a row is read (a C long on every platform)
_LIMIT_LOCK = threading.Lock()
T = TypeVar("T")


def irregular_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read ("is a directory ...", "is not a regular file ..."), None when it
    is one or does not exist (the caller's open then says "not found")."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file; pass the path of a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a pipe, socket or device); pass the path of a file"
    return None


def csv_rows(reader: Iterator[T]) -> Iterator[T]:
    """The rows of ``reader`` (a ``csv.reader`` or ``csv.DictReader``), each read above the csv module's field size
    limit: its error ended the read mid-file with a traceback, and a reader resuming after it would read the rest of
    a long quoted cell as rows. The callers refuse a cell over :data:`CELL_LIMIT` themselves (:func:`named_cells`,
    :func:`refuse_bad_header`). The module's limit is process-wide: raised for each row's read only, under a lock."""
    while True:
        with _LIMIT_LOCK:
            limit = csv.field_size_limit(_READ_LIMIT)
            try:
                row = next(reader, None)
            finally:
                csv.field_size_limit(limit)
        if row is None:
            return
        yield row


def csv_fields(path: Path, text: str, required: Sequence[str]) -> list[str | int]:
    """The keys to read the rows of ``path``'s CSV ``text`` under (:func:`header_fields`), from its header line (any
    line ending: \n, \r\n, \r); ManifestError where the header lacks a ``required`` column, names one twice or
    holds a name over :data:`CELL_LIMIT` characters (:func:`refuse_bad_header`)."""
    header = next(csv_rows(csv.reader(io.StringIO(text, newline=""))), [])
    missing = [c for c in required if c not in [h.strip() for h in header]]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)}; the header must contain {','.join(required)}"
        )
    refuse_bad_header(path, header)
    return header_fields(header)


def refuse_bad_header(path: Path, header: Sequence[str]) -> None:
    """ManifestError naming the first column name of ``path``'s CSV ``header`` over :data:`CELL_LIMIT` characters,
    or the first one the header names twice (names compared stripped; empty ones not compared: the readers read
    their cells by position, :func:`header_fields`): a reader keeps one of the two values silently, and which one
    was meant is the file's author's to say."""
    if any(len(name) > CELL_LIMIT for name in header):
        raise ManifestError(f"{path}:1: a column name longer than {CELL_LIMIT} characters; shorten it")
    seen: set[str] = set()
    for name in (h.strip() for h in header):
        if name in seen and name:  # (unnamed columns: a spreadsheet's trailing commas)
            raise ManifestError(f"{path}: column {name!r} appears twice in the header; keep one")
        seen.add(name)


def header_fields(header: Sequence[str]) -> list[str | int]:
    """The keys to read a CSV's rows under (``csv.DictReader``'s ``fieldnames``): each column's name, stripped, or
    its number (from 1) where ``header`` leaves it unnamed (a spreadsheet's trailing commas), so that a value there
    is seen (:func:`named_cells`) rather than dropped."""
    return [name.strip() or number for number, name in enumerate(header, start=1)]


def named_cells(raw: Mapping[Any, Any], width: int) -> tuple[dict[str, str], str | None]:
    """A row read under :func:`header_fields` (``width`` of them): its named cells, stripped, and why the row is
    refused: a cell over :data:`CELL_LIMIT` characters, or a value in a column the header does not name (left
    unnamed, or beyond its last column: the reader's ``None`` key), None when there is none. Such cells left empty
    (a spreadsheet's trailing commas) are ignored."""
    record = {k: (v or "").strip() for k, v in raw.items() if k is not None}
    beyond = list(enumerate(raw.get(None) or [], start=width + 1))
    named = {k: v for k, v in record.items() if isinstance(k, str) and len(v) <= CELL_LIMIT}
    long = [k for k, v in [*record.items(), *beyond] if len(v) > CELL_LIMIT]
    if long:
        return named, f"column {long[0]!r} holds more than {CELL_LIMIT} characters; shorten the value"
    unnamed = [k for k, v in record.items() if isinstance(k, int) and v] + [c for c, v in beyond if v.strip()]
    if not unnamed:
        return named, None
    return named, f"a value in column {unnamed[0]}, which the header does not name; name the column or move the value"
