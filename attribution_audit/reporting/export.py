"""Export the audit records of a period as JSON lines with their hashes, and verify such a file without the DB.

Line 1 is a header (format, period, number of records, the chain head at export time, the audit DB identity; spaces
after it fill the width its line was reserved at: it is written last, over them); each following line is one
record: ``seq``, ``request_id``, ``prev_hash``, ``record_hash`` and ``content`` (exactly what the hash covers). A
verifier recomputes every hash from the content and checks that the records link up without gaps; every field
outside the content is checked against it (seq, request_id, prev_hash; the header's count, period, export time and
chain head), and the identity against a checkpoint (``audit verify --checkpoint``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from json.encoder import encode_basestring, encode_basestring_ascii
from pathlib import Path
from typing import Any

from attribution_audit.domain.chain import ChainCheck, ChainRecord, ChainReport, hash_content
from attribution_audit.errors import AttributionAuditError
from attribution_audit.reporting.output_file import refuse_as_output, writing
from attribution_audit.sources.files import irregular_file_problem

FORMAT = "attribution-audit-export/1"
_BUFFER = 1 << 20  # bytes written at a time (a record's line is a few KiB)


def _bounds(date_from: date | None, date_to: date | None) -> tuple[datetime | None, datetime | None]:
    start = datetime.combine(date_from, time.min, UTC) if date_from else None
    end = datetime.combine(date_to, time.max, UTC) if date_to else None
    return start, end


def export_records(
    chain: Iterable[ChainRecord],
    rows: Callable[[int], int],
    out: str | Path,
    date_from: date | None = None,
    date_to: date | None = None,
    db_identity: str | None = None,
    vouch: Callable[[ChainReport], ChainReport] = lambda head: head,
    overwrite: bool = False,
) -> tuple[int, ChainReport]:
    """Verify ``chain`` (every record, in order) while writing those created within [date_from, date_to] (inclusive
    days, UTC), in one pass and constant memory; ``rows(seq)`` counts the log's request rows up to the last seq read
    (records other writers append meanwhile are left for the next export). The
    header names the audit DB's identity (what checkpoints name); ``vouch`` checks the verified head against what is
    known beyond the chain (e.g. an earlier verification that counted more records). Returns how many were written
    and the verified head. A broken chain, or a head ``vouch`` fails, writes nothing and raises; so does an existing
    ``out`` unless ``overwrite`` (then replaced by a rename, as a new one is written)."""
    start, end = _bounds(date_from, date_to)
    out = Path(out)
    check, written = ChainCheck(), 0
    try:
        refuse_as_output(out, overwrite, "the export")
        with writing(out, overwrite, buffering=_BUFFER) as handle:
            # the header comes first but holds what only the end knows (the count, the head): its line is reserved
            # as spaces wide enough for any such values, and written over once they are known
            header = _header(date_from, date_to, db_identity, _WIDEST_MOMENT, _WIDEST_COUNT, _WIDEST_COUNT, "f" * 64)
            width = len(header)
            handle.write(b" " * width + b"\n")
            for record in check.accepted(chain):
                if (start is None or record.created_at >= start) and (end is None or record.created_at <= end):
                    handle.write(_line(record))
                    written += 1
            head = vouch(check.report(rows(check.checked)))
            if not head.ok:
                raise AttributionAuditError(
                    f"the audit chain is broken{head.located}: {head.reason}; run `attribution-audit audit "
                    "verify` and resolve it before exporting"
                )
            now = datetime.now(UTC)
            header = _header(date_from, date_to, db_identity, now, written, head.checked, head.head_hash)
            if len(header) > width:  # (cannot be: the reserved line is as wide as the widest values make it)
                raise AttributionAuditError(f"{out}: the export's header outgrew its line; this is a bug, report it")
            handle.seek(0)
            handle.write(header.ljust(width))
    except FileExistsError:
        raise AttributionAuditError(
            f"{out}: was written meanwhile (another export?); pass --force to overwrite it, or choose another name"
        ) from None
    except OSError as exc:
        raise AttributionAuditError(
            f"{out}: cannot write the export ({exc.strerror}); choose a writable path"
        ) from None
    return written, head


_WIDEST_MOMENT = datetime.max.replace(tzinfo=UTC)  # (its ISO text has microseconds: the longest a time writes)
_WIDEST_COUNT = 10**20  # more digits than any count or seq the databases hold (64-bit)


def _header(
    date_from: date | None,
    date_to: date | None,
    db_identity: str | None,
    exported_at: datetime,
    records: int,
    head_seq: int,
    head_hash: str,
) -> bytes:
    """The export's header line, without its newline: its format, period, time, count, chain head, audit DB."""
    header = {
        "format": FORMAT,
        "exported_at": exported_at.isoformat(),
        "from": date_from.isoformat() if date_from else None,
        "to": date_to.isoformat() if date_to else None,
        "records": records,
        "chain_head": {"seq": head_seq, "hash": head_hash},
        "db_identity": db_identity,
    }
    return json.dumps(header, sort_keys=True, ensure_ascii=False).encode()


def _line(record: ChainRecord) -> bytes:
    """One record as a JSON line, keys sorted; its content is the canonical JSON its hash covers, as hashed."""
    return b'{"content":%s,"prev_hash":%s,"record_hash":%s,"request_id":%s,"seq":%d}\n' % (
        record.canonical,
        _json(record.prev_hash),
        _json(record.record_hash),
        _json(record.request_id, ascii=False),
        record.seq,
    )


def _json(value: Any, ascii: bool = True) -> bytes:
    """``value`` as json.dumps writes it (a string by json's own function, the one json.dumps calls), UTF-8."""
    if type(value) is str:
        return (encode_basestring_ascii if ascii else encode_basestring)(value).encode()
    return json.dumps(value, ensure_ascii=ascii).encode()


@dataclass(frozen=True)
class ExportReport:
    ok: bool
    records: int
    first_seq: int | None
    last_seq: int | None
    last_hash: str | None
    problem: str | None = None


def verify_export(path: str | Path) -> ExportReport:
    """Check an export file on its own, in constant memory (two passes over its lines): every line a record and the
    header's count, then every hash, every link, no gap."""
    path = Path(path)
    irregular = irregular_file_problem(path)
    if irregular:
        raise AttributionAuditError(f"{path}: {irregular}")
    try:
        header, repeated = _parsed(next(_lines(path), "null"))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise AttributionAuditError(
                f"{path}: not an attribution-audit export (expected format {FORMAT}); give a file written by "
                "`attribution-audit audit export`"
            )
        edited = _header_problem(header, repeated)
        if edited:
            return ExportReport(False, 0, None, None, None, f"the header {edited}")
        count = 0
        for number, line in enumerate(_record_lines(path), start=2):
            count += 1
            try:
                record, repeated = _parsed(line)
            except (json.JSONDecodeError, _Unreadable) as exc:
                return ExportReport(False, count, None, None, None, f"line {number} is not JSON ({exc.msg})")
            if not isinstance(record, dict) or not _well_formed(record):
                problem = f"line {number} is not a record (seq, request_id, prev_hash, record_hash, content)"
                return ExportReport(False, count, None, None, None, problem)
            if repeated:  # readers differ on which of the two they take: the hash covers the one json keeps
                problem = f"line {number} names {', '.join(repeated)} twice in one object (edited after the export)"
                return ExportReport(False, count, None, None, None, problem)
        if header.get("records") != count:
            problem = f"header announces {header.get('records')} records, file holds {count} (lines removed?)"
            return ExportReport(False, count, None, None, None, problem)
        return _verify_records(_records(path), count, header)
    except FileNotFoundError:
        raise AttributionAuditError(f"{path}: export file not found; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, _Unreadable) as exc:
        raise AttributionAuditError(f"{path}: not a readable export ({exc}); export again") from None


class _Unreadable(ValueError):
    """JSON that Python's json cannot read: an integer of more digits than it converts, values nested deeper than
    its recursion allows (no export holds either: edited after the export)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


_HEADER_KEYS = frozenset({"format", "exported_at", "from", "to", "records", "chain_head", "db_identity"})


def _parsed(line: str) -> tuple[Any, list[str]]:
    """A line's JSON value, and the keys that one of its objects names more than once (JSON keeps the last)."""
    repeated: list[str] = []

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value = dict(pairs)
        if len(value) < len(pairs):
            keys = [key for key, _ in pairs]
            repeated.extend(sorted({key for key in keys if keys.count(key) > 1}))
        return value

    try:
        return json.loads(line, object_pairs_hook=unique), repeated
    except RecursionError:
        raise _Unreadable("values nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion: ...; use sys..."
        raise _Unreadable(str(exc).split(";")[0]) from None


def _header_problem(header: dict[str, Any], repeated: list[str]) -> str | None:
    """What in a header no export of this version writes: a field named twice, a field of another name, values of
    another kind (a count that is not a whole number, a chain head other than its seq and hash, a period bound
    other than an ISO date)."""
    if repeated:
        return f"names {', '.join(repeated)} twice (edited after the export)"
    unknown = sorted(set(header) - _HEADER_KEYS)
    if unknown:
        return (
            f"holds a field no export writes ({', '.join(unknown)}): edited after the export, or written by a newer "
            "attribution-audit"
        )
    if type(header.get("records")) is not int:
        return f"announces {header.get('records')!r} records, not a whole number (edited after the export)"
    head = header.get("chain_head")
    if not (
        isinstance(head, dict)
        and set(head) == {"seq", "hash"}
        and type(head["seq"]) is int
        and isinstance(head["hash"], str)
    ):
        return f"names a chain head {head!r}, not its seq and hash (edited after the export)"
    if header.get("db_identity") is not None and not isinstance(header["db_identity"], str):
        return f"names an audit DB {header['db_identity']!r}, not its identity (edited after the export)"
    bounds = [header.get(bound) for bound in ("from", "to")]
    if not all(bound is None or (isinstance(bound, str) and _is_date(bound)) for bound in bounds):
        return f"names a period {bounds[0]!r} to {bounds[1]!r}, not ISO dates (edited after the export)"
    return None


def _is_date(text: str) -> bool:
    try:
        return date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        yield from (line for line in handle if line.strip())


def _record_lines(path: Path) -> Iterator[str]:
    lines = _lines(path)
    next(lines, None)  # the header
    return lines


def _records(path: Path) -> Iterator[Any]:
    return map(json.loads, _record_lines(path))


def _verify_records(records: Iterator[dict[str, Any]], count: int, header: dict[str, Any]) -> ExportReport:
    def fail(problem: str, record: dict[str, Any]) -> ExportReport:
        where = f"seq {record.get('seq')} (request {record.get('request_id')}): "
        return ExportReport(False, count, None, None, None, where + problem)

    first: int | None = None
    previous: dict[str, Any] | None = None
    for record in records:
        content = record["content"]
        if content.get("request", {}).get("seq") != record.get("seq"):
            return fail("seq differs from the seq inside the record's content", record)
        if content.get("request", {}).get("prev_hash") != record.get("prev_hash"):
            return fail("prev_hash differs from the one inside the record's content", record)
        if content["request"].get("id") != record.get("request_id"):
            return fail("request_id differs from the id inside the record's content", record)
        if not _within(content["request"].get("created_at"), header.get("from"), header.get("to")):
            return fail("the record's time lies outside the period the header announces", record)
        try:
            hashed = hash_content(record["prev_hash"], content)
        except RecursionError:  # (parsed, but nested too deeply to be encoded again)
            return fail("content is nested too deeply to be hashed (the record was modified)", record)
        if hashed != record.get("record_hash"):
            return fail("content does not match its record_hash (the record was modified)", record)
        if previous is not None:
            if record["seq"] != previous["seq"] + 1:
                return fail(f"gap after seq {previous['seq']} (a record was removed)", record)
            if record["prev_hash"] != previous["record_hash"]:
                return fail("prev_hash does not match the previous record's hash", record)
        first = record["seq"] if first is None else first
        previous = record
    head = header.get("chain_head") or {}
    if previous is not None and not (isinstance(head.get("seq"), int) and head["seq"] >= previous["seq"]):
        return fail("the chain head in the header lies before the last record", previous)
    if previous is not None and not _not_before(
        header.get("exported_at"), previous["content"]["request"]["created_at"]
    ):
        return fail("the header's export time lies before the last record", previous)
    if previous is not None and previous["seq"] == head.get("seq") and previous["record_hash"] != head.get("hash"):
        return fail("the last record's hash differs from the chain head in the header", previous)
    # a period open at its start holds the log's first record, one that reaches the export time its last (the time
    # of a record is taken under the chain's lock: later records are not older, on one clock)
    last, moment = (previous["seq"] if previous else 0), header.get("exported_at")
    to_the_end = header.get("to") is None or (isinstance(moment, str) and header["to"] >= moment[:10])
    if header.get("from") is None and first not in (None, 1):
        return _cut(count, f"has no start but holds seq {first} first, not 1 (records removed from its start)")
    if to_the_end and (previous is not None or header.get("from") is None) and head.get("seq") != last:
        return _cut(
            count,
            f"reaches the export time but ends at seq {last}, not at its header's chain head, seq {head.get('seq')} "
            "(records removed from its end)",
        )
    return ExportReport(
        True, count, first, previous["seq"] if previous else None, previous["record_hash"] if previous else None
    )


def _cut(count: int, where: str) -> ExportReport:
    return ExportReport(False, count, None, None, None, f"the export's period {where}")


def _within(created_at: Any, date_from: Any, date_to: Any) -> bool:
    """Whether a record's canonical time (ISO 8601, UTC) falls in the header's period (ISO dates, inclusive)."""
    if not isinstance(created_at, str):
        return False
    day = created_at[:10]
    return (not isinstance(date_from, str) or day >= date_from) and (not isinstance(date_to, str) or day <= date_to)


def _not_before(moment: Any, created_at: str) -> bool:
    """Whether ``moment`` (ISO 8601 with a zone) is a time not before ``created_at`` (canonical: UTC, no zone)."""
    try:
        when = datetime.fromisoformat(moment).astimezone(UTC).replace(tzinfo=None)
        return when >= datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        return False


def _values(path: Path) -> Iterator[Any]:
    """The export's lines as JSON values, one at a time (after :func:`verify_export` accepted the file)."""
    try:
        yield from (json.loads(line) for line in _lines(path))
    except (OSError, ValueError, RecursionError) as exc:
        raise AttributionAuditError(f"{path}: not a readable export ({exc}); export again") from None


def export_identity(path: str | Path) -> str | None:
    """The audit DB identity the export's header names (None for an export without one)."""
    header = next(_values(Path(path)), None)
    identity = header.get("db_identity") if isinstance(header, dict) else None
    return identity if isinstance(identity, str) else None


def record_hash_at(path: str | Path, seq: int) -> str | None:
    """The record_hash of record ``seq`` in the export, None when the export does not hold it."""
    for line in _values(Path(path)):
        if isinstance(line, dict) and line.get("seq") == seq and "content" in line:
            hashed = line.get("record_hash")
            return hashed if isinstance(hashed, str) else None
    return None


_RECORD_KEYS = frozenset({"seq", "request_id", "prev_hash", "record_hash", "content"})


def _well_formed(record: dict[str, Any]) -> bool:
    content = record.get("content")
    return (
        set(record) == _RECORD_KEYS
        and type(record["seq"]) is int
        and isinstance(record.get("prev_hash"), str)
        and isinstance(record.get("record_hash"), str)
        and isinstance(content, dict)
        and isinstance(content.get("request"), dict)
    )
