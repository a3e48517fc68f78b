"""Catalogue sources: CSV and JSONL manifests, a folder per artist, and the Wang et al. 2023 attribution layout.

Every source yields :class:`ManifestRow` (a work to ingest) or :class:`RowFailure` (a row that cannot be, and
why), streaming, after the same checks: required fields present, work ids unique, paths inside the catalogue
folder. Whole-file problems (missing file, missing columns, not UTF-8) raise ManifestError before any row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attribution_audit.errors import ManifestError
from attribution_audit.sources.files import (
    csv_fields,
    csv_rows,
    irregular_file_problem,
    named_cells,
)
from attribution_audit.sources.images import printable_path

REQUIRED_COLUMNS = ("path", "artist", "work_id")
MAX_LENGTHS = {"artist": 300, "work_id": 300, "title": 500}  # the audit schema's column sizes
SUBSET_LENGTH = 100  # ... and that of a labelled query's subset
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
SOURCE_FORMATS = ("auto", "csv", "jsonl", "folder", "wang")


@dataclass(frozen=True)
class ManifestRow:
    """One work to ingest; ``line`` is the manifest line (or entry) number, for messages."""

    line: int
    path: Path
    artist: str
    work_id: str
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowFailure:
    """A manifest row that could not be ingested, and why."""

    line: int
    work_id: str
    reason: str


@dataclass(frozen=True)
class LabelledImage:
    """A generated image of the Wang et al. layout: its true artist, inspiration works and subset."""

    path: Path
    artist: str
    work_ids: tuple[str, ...]
    subset: str | None


@dataclass(frozen=True)
class Manifest:
    path: Path
    sha256: str
    rows: list[ManifestRow]
    failures: list[RowFailure]


def clean_name(value: str) -> str:
    """Control characters removed (a terminal escape sequence in a name must not reach a terminal), surrounding
    whitespace removed and inner runs of whitespace collapsed, then Unicode NFC (last: a control character removed
    from between a letter and its accent would leave them decomposed)."""
    text = "".join(" " if c in "\t\n\r" else c for c in value if c in "\t\n\r" or unicodedata.category(c) != "Cc")
    return unicodedata.normalize("NFC", " ".join(text.split()))


def sha256_of(path: Path) -> str:
    _refuse_irregular(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class RowValidator:
    """The checks every source shares; remembers work ids to report duplicates (memory: one string per work)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._first_line: dict[str, tuple[int, str]] = {}  # work id in NFC -> (its first line, its spelling there)

    def check(self, line: int, record: dict[str, Any]) -> ManifestRow | RowFailure:
        wrong = _type_problem(record)
        if wrong:
            return RowFailure(line, _text_or_empty(record.get("work_id")), wrong)
        stored = _stored_values(record)
        work_id, rel = stored["work_id"], stored["path"]
        empty = [c for c in REQUIRED_COLUMNS if not stored[c]]
        if empty:  # (an artist of control characters only is empty once cleaned)
            return RowFailure(line, work_id, f"empty {', '.join(empty)}")
        problem = _field_problem(record, stored)
        if problem:
            return RowFailure(line, work_id, problem)
        # work ids are stored as written (point ids derive from them), but one that prints as an earlier one is a
        # duplicate: "Café" composed and decomposed would be two works no listing tells apart
        first = self._first_line.get(unicodedata.normalize("NFC", work_id))
        if first is not None:
            alike = "" if first[1] == work_id else ", the same text in another Unicode form"
            return RowFailure(line, work_id, f"duplicate work_id (first seen on line {first[0]}{alike})")
        image = (self.root / rel).resolve()
        if not image.is_relative_to(self.root):
            return RowFailure(
                line,
                work_id,
                f"path {rel!r} leaves the catalogue folder {self.root}: every image must lie under it (an absolute "
                "path too); put the manifest in a folder that holds its images",
            )
        self._first_line[unicodedata.normalize("NFC", work_id)] = (line, work_id)
        extra = {k: v for k, v in record.items() if k and k not in (*REQUIRED_COLUMNS, "title")}
        return ManifestRow(line, image, stored["artist"], work_id, stored["title"] or None, extra)


_JSON_TYPES = {bool: "a boolean", list: "a list", dict: "an object", float: "a number", int: "a number"}


def _text_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _type_problem(record: dict[str, Any]) -> str | None:
    """Why a row's named fields are not text, if one is not (a JSON list, object or boolean would be stored as its
    Python spelling); a work id may also be a whole number."""
    for column in (*REQUIRED_COLUMNS, "title"):
        value = record.get(column)
        if value is None or isinstance(value, str):
            continue
        if column == "work_id" and isinstance(value, int) and not isinstance(value, bool):
            continue
        return f"{column} is {_JSON_TYPES.get(type(value), type(value).__name__)}, not text; write it as a string"
    return None


def _stored_values(record: dict[str, Any]) -> dict[str, str]:
    """A row's path, artist, work id and title as the catalogue stores them (the artist cleaned: :func:`clean_name`),
    "" for those it leaves out."""
    values = {c: str(record.get(c) or "").strip() for c in (*REQUIRED_COLUMNS, "title")}
    return {**values, "artist": clean_name(values["artist"])}


def _field_problem(record: dict[str, Any], stored: dict[str, str]) -> str | None:
    """Why a row's values cannot be stored the same way in every audit database and vector store, if they can't
    (lengths are those of the ``stored`` values: NFC normalisation can lengthen a name)."""
    for column, limit in MAX_LENGTHS.items():
        if len(stored[column]) > limit:
            grown = " once Unicode-normalised (NFC)" if len(str(record.get(column)).strip()) <= limit else ""
            return f"{column} longer than {limit} characters{grown}; shorten it"
    for key, value in record.items():
        problem = "contains a NUL character" if "\x00" in str(key) else _value_problem(value)
        if problem:
            return f"column {key!r} {problem}"
    return None


MAX_NESTING = 100  # levels of lists and objects in a JSON value: deeper ones would exhaust the stack of the checks
# and encoders that walk it (the decoder refuses only what its own recursion limit does)


def _value_problem(value: Any, depth: int = 0) -> str | None:
    """Why a JSON value cannot be stored as a payload (NUL, NaN or infinity, too deep), None if it can."""
    if depth > MAX_NESTING:
        return f"is nested more than {MAX_NESTING} levels deep; flatten it"
    if isinstance(value, str) and "\x00" in value:
        return "contains a NUL character"
    if isinstance(value, float) and not math.isfinite(value):
        return "holds NaN or infinity, which JSON payloads cannot store"
    if isinstance(value, dict) and any("\x00" in key for key in value):
        return "contains a NUL character"
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((p for p in (_value_problem(child, depth + 1) for child in children) if p), None)


def _refuse_irregular(path: Path) -> None:
    problem = irregular_file_problem(path)
    if problem:
        raise ManifestError(f"{printable_path(path)}: {problem}")


def _read_text(path: Path, what: str) -> str:
    _refuse_irregular(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"{path}: {what} not found; check the path") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the {what} ({exc.strerror})") from None


class CsvSource:
    """``path,artist,work_id`` (+ ``title`` and any extra columns, kept as payload); paths relative to the file."""

    format = "csv"

    def __init__(self, path: Path) -> None:
        self.path = path
        text = _read_text(path, "manifest")  # validates encoding up front; rows stream from the file below
        # an unnamed column (a spreadsheet's trailing commas) is read under its position, to refuse a value in it
        self.fields = csv_fields(path, text, REQUIRED_COLUMNS)
        self.sha256 = sha256_of(path)

    def __iter__(self) -> Iterator[ManifestRow | RowFailure]:
        validator = RowValidator(self.path.parent)
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, fieldnames=self.fields)
            next(reader, None)  # the header
            for raw in csv_rows(reader):
                record, unnamed = named_cells(raw, len(self.fields))
                if unnamed:
                    yield RowFailure(reader.line_num, record.get("work_id", ""), unnamed)
                    continue
                yield validator.check(reader.line_num, record)


class RepeatedKeyError(ValueError):
    """A JSON object names ``key`` twice (the decoder would keep the last value silently)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_of_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; :class:`RepeatedKeyError` when a key appears twice."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise RepeatedKeyError(key)
        seen.add(key)
    return dict(pairs)


class InvalidJsonError(ValueError):
    """A line the JSON decoder refuses, and why (one line, said to the file's author)."""


def _decoded(line: str, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any]) -> Any:
    """``line`` decoded; :class:`InvalidJsonError` for every refusal of the decoder: a syntax error, nesting deeper
    than Python's recursion limit (a RecursionError), or an integer longer than Python converts (a ValueError that
    names no line, and would end the run). :class:`RepeatedKeyError` from the hook passes."""
    try:
        return json.loads(line, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        raise InvalidJsonError(f"{exc.msg} at {where}") from None
    except RecursionError:
        raise InvalidJsonError("nested too deeply") from None
    except RepeatedKeyError:
        raise
    except ValueError:
        raise InvalidJsonError(f"a number of more than {sys.get_int_max_str_digits()} digits") from None


def _named_work_id(line: str) -> str:
    """The work id a JSON object line names once (for its failure); "" where it names none, or several."""
    try:
        pairs = _decoded(line, list)  # every key of every object, repeated ones too
    except InvalidJsonError:
        return ""  # (the objects' keys were read before a later part of the line was refused)
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        return ""  # (an array line, whose object inside repeats a key)
    named = [value for key, value in pairs if key == "work_id"]
    return str(named[0]) if len(named) == 1 and type(named[0]) in (str, int) else ""


class JsonlSource:
    """One JSON object per line with ``path``, ``artist``, ``work_id`` and optional fields."""

    format = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        _read_text(path, "manifest")
        self.sha256 = sha256_of(path)

    def __iter__(self) -> Iterator[ManifestRow | RowFailure]:
        validator = RowValidator(self.path.parent)
        with self.path.open(encoding="utf-8-sig") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = _decoded(line, _object_of_unique_keys)
                except InvalidJsonError as exc:
                    yield RowFailure(line_number, "", f"invalid JSON ({exc})")
                    continue
                except RepeatedKeyError as exc:
                    reason = f"key {exc.key!r} appears twice in the object; keep one"
                    yield RowFailure(line_number, _named_work_id(line), reason)
                    continue
                if not isinstance(record, dict):
                    yield RowFailure(line_number, "", "not a JSON object")
                    continue
                yield validator.check(line_number, record)


class FolderSource:
    """``ROOT/<artist>/<image>``: the folder name is the artist, ``<artist>/<file stem>`` the work id."""

    format = "folder"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = sorted(p for p in path.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ManifestError(f"{path}: no images in artist sub-folders (expected {path}/<artist>/<image>)")
        listing = "\n".join(f"{p.relative_to(path)}\t{p.stat().st_size}" for p in self.files)
        self.sha256 = hashlib.sha256(listing.encode()).hexdigest()

    def __iter__(self) -> Iterator[ManifestRow | RowFailure]:
        validator = RowValidator(self.path)
        for number, file in enumerate(self.files, start=1):
            rel = file.relative_to(self.path)
            names = {"artist": printable_path(rel.parts[0]), "work_id": printable_path(rel.with_suffix(""))}
            record = {"path": str(rel), **names}
            yield validator.check(number, record)


class WangSource:
    """The attribution dataset layout of Wang et al. 2023: JSON entries ``{exemplar: [paths], synth: {subset:
    [paths]}, ...}`` keyed by (or carrying) the artist. Exemplars become works (work id = path); synthetic images
    become :attr:`labelled` queries whose true works are the entry's exemplars."""

    format = "wang"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = _decoded(_read_text(path, "attribution dataset file"), dict)
        except InvalidJsonError as exc:
            raise ManifestError(f"{path}: invalid JSON ({exc}); fix the file") from None
        entries = data.items() if isinstance(data, dict) else enumerate(data if isinstance(data, list) else [])
        self.entries = [(str(key), entry) for key, entry in entries if isinstance(entry, dict)]
        if not self.entries:
            raise ManifestError(f"{path}: no entries with 'exemplar' lists; expected the Wang et al. 2023 layout")
        self.sha256 = sha256_of(path)
        self.labelled: list[LabelledImage] = []

    @staticmethod
    def _artist(key: str, entry: dict[str, Any]) -> str | None:
        """The entry's artist name; None when the entry names it with something else than text."""
        name = entry.get("artist") or entry.get("name") or key
        return clean_name(name) if isinstance(name, str) else None

    def __iter__(self) -> Iterator[ManifestRow | RowFailure]:
        validator = RowValidator(self.path.parent)
        self.labelled = []
        for number, (key, entry) in enumerate(self.entries, start=1):
            artist, exemplars = self._artist(key, entry), entry.get("exemplar") or []
            if artist is None:
                yield RowFailure(number, key, "entry's artist is not text; write it as a string")
                continue
            if not 0 < len(artist) <= MAX_LENGTHS["artist"]:  # (its labelled queries would store it too)
                limit = MAX_LENGTHS["artist"]
                yield RowFailure(number, key, f"entry's artist is empty or longer than {limit} characters once cleaned")
                continue
            if not isinstance(exemplars, list) or not exemplars:
                yield RowFailure(number, key, "entry has no 'exemplar' list")
                continue
            work_ids = tuple(str(p) for p in exemplars)
            for work_path in exemplars:  # a path that is not text fails its row
                yield validator.check(number, {"path": work_path, "artist": artist, "work_id": work_path})
            synth = entry.get("synth") or {}
            subsets = synth.items() if isinstance(synth, dict) else [(None, synth)]
            for subset, paths in subsets:
                if subset is not None and len(subset) > SUBSET_LENGTH:  # (the audit DB's column: refused at import)
                    reason = f"subset {subset[:40]!r}... is longer than {SUBSET_LENGTH} characters; shorten it"
                    yield RowFailure(number, key, f"{reason} (its generated images were not kept as labelled queries)")
                    continue
                for rel in paths if isinstance(paths, list) else []:
                    image = (self.path.parent / str(rel)).resolve()
                    if image.is_relative_to(validator.root):
                        self.labelled.append(LabelledImage(image, artist, work_ids, subset))


Source = CsvSource | JsonlSource | FolderSource | WangSource


def open_source(path: str | Path, fmt: str = "auto") -> Source:
    """Open a catalogue source; ``auto`` picks by suffix (.csv, .jsonl, .json = Wang layout) or folder."""
    path = Path(path)
    if fmt not in SOURCE_FORMATS:
        raise ManifestError(f"{path}: unknown format {fmt!r}; choose one of {', '.join(SOURCE_FORMATS)}")
    if fmt == "auto":
        if path.is_dir():
            fmt = "folder"
        else:
            fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "wang"}.get(path.suffix.lower(), "")
        if not fmt:
            raise ManifestError(f"{path}: cannot tell the format from the name; pass --format csv|jsonl|folder|wang")
    if fmt == "folder" and not path.is_dir():
        raise ManifestError(f"{path}: not a folder; the folder format needs ROOT/<artist>/<image>")
    sources: dict[str, Callable[[Path], Source]] = {
        "csv": CsvSource,
        "jsonl": JsonlSource,
        "folder": FolderSource,
        "wang": WangSource,
    }
    return sources[fmt](path)


def read_csv_manifest(path: str | Path) -> Manifest:
    """Read a whole CSV manifest into memory (small manifests, tests); ingestion streams instead."""
    source = CsvSource(Path(path))
    rows: list[ManifestRow] = []
    failures: list[RowFailure] = []
    for item in source:
        (rows if isinstance(item, ManifestRow) else failures).append(item)  # type: ignore[arg-type]
    return Manifest(source.path, source.sha256, rows, failures)
