"""Reading catalogue manifests (CSV: ``path,artist,work_id`` + optional ``title`` + any extra columns)."""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from attribution_audit.errors import ManifestError

REQUIRED_COLUMNS = ("path", "artist", "work_id")


@dataclass(frozen=True)
class ManifestRow:
    """One work to ingest; ``line`` is the manifest line number, for messages."""

    line: int
    path: Path
    artist: str
    work_id: str
    title: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RowFailure:
    """A manifest row that could not be ingested, and why."""

    line: int
    work_id: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    path: Path
    sha256: str
    rows: list[ManifestRow]
    failures: list[RowFailure]


def clean_name(value: str) -> str:
    """Unicode NFC, surrounding whitespace removed and inner runs of whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", value).split())


def read_csv_manifest(path: str | Path) -> Manifest:
    """Parse a CSV manifest. Whole-file problems raise ManifestError; row problems become RowFailures."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found; check the path") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)}; the header must contain path,artist,work_id"
        )
    root = path.resolve().parent
    rows: list[ManifestRow] = []
    failures: list[RowFailure] = []
    first_line: dict[str, int] = {}
    for raw in reader:
        index = reader.line_num
        record = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            failures.append(RowFailure(index, record.get("work_id", ""), "more fields than header columns"))
            continue
        work_id, artist, rel = record["work_id"], clean_name(record["artist"]), record["path"]
        empty = [c for c in REQUIRED_COLUMNS if not record[c]]
        if empty:
            failures.append(RowFailure(index, work_id, f"empty {', '.join(empty)}"))
            continue
        if work_id in first_line:
            failures.append(RowFailure(index, work_id, f"duplicate work_id (first seen on line {first_line[work_id]})"))
            continue
        image = (root / rel).resolve()
        if not image.is_relative_to(root):
            failures.append(RowFailure(index, work_id, f"path {rel!r} leaves the catalogue folder {root}"))
            continue
        first_line[work_id] = index
        extra = {k: v for k, v in record.items() if k not in (*REQUIRED_COLUMNS, "title") and k}
        rows.append(ManifestRow(index, image, artist, work_id, record.get("title") or None, extra))
    return Manifest(path, hashlib.sha256(data).hexdigest(), rows, failures)
