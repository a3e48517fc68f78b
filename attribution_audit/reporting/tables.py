"""Rows as text, the one output layer of the CLI: an aligned table with a header, CSV (header + rows) or JSON.

Every format has a header or keys, also with no rows. Times are ISO 8601 in UTC with the zone (a time without one is
UTC already, as the audit DB stores it). CSV cells that a spreadsheet would run as a formula are neutralised, and
so is table text that a terminal would run (control sequences).
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime
from typing import Any

OUTPUT_FORMATS = ("table", "csv", "json")
# A text cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and Google Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Numbers written as text (a signed decimal) are not formulas: "-0.5" stays a number in the spreadsheet.
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
NO_ROWS = "(no rows)"
# What a terminal would run or reorder rather than show: C0/C1 controls (ESC starts a control sequence; tab and line
# breaks would break a table's layout) and the bidirectional overrides and isolates (they reorder what follows).
_TERMINAL_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same in CSV, where tabs and line breaks are data (quoted cells), printed to a terminal or opened elsewhere.
_CSV_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def iso_time(moment: datetime, timespec: str = "auto") -> str:
    """ISO 8601 in UTC with the zone (``+00:00``); a time without a zone is UTC already (as the audit DB stores it)."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.isoformat(timespec=timespec)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def render_json(data: Any, indent: int | None = 2) -> str:
    """``data`` as JSON; times as ISO 8601 with their zone, other values JSON does not know as text."""
    return json.dumps(data, indent=indent, default=_json_value)


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: empty for None, true/false, times in ISO 8601, text that looks like a formula behind
    ``'``, control characters other than tabs and line breaks escaped (as in :func:`terminal_text`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, str):
        value = _CSV_UNSAFE.sub(_escaped, value)
        if value.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(value):
            return "'" + value
    return value


def _csv_line(cells: Any) -> str:
    """One CSV record. The writer's own terminator is CR LF so that it quotes a cell holding a CR as well as one
    holding an LF; the records are then joined with LF."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue().removesuffix("\r\n")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str) -> str:
    """Text as a terminal shows it literally: control characters and bidirectional overrides as ``\\xNN`` or
    ``\\uNNNN`` escapes (a name from a manifest cannot move the cursor, recolour or rewrite the screen)."""
    return _TERMINAL_UNSAFE.sub(_escaped, text)


def table_cell(value: Any) -> str:
    """A value as a table cell: ``-`` for None, true/false, times in ISO 8601 to the second, floats to 6 decimals,
    text safe for a terminal (:func:`terminal_text`)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso_time(value, "seconds")
    if isinstance(value, float):
        return str(round(value, 6))
    return terminal_text(str(value))


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def render_rows(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] | None = None) -> str:
    """Rows as an aligned table (numbers right-aligned), CSV or a JSON list; the header even with no rows.

    ``columns`` picks and orders the columns of the table and CSV (default: the keys of the first row); JSON has
    every key of every row.
    """
    if fmt == "json":
        return render_json(rows)
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"format {fmt!r}: choose {', '.join(OUTPUT_FORMATS)}")
    columns = tuple(columns or (rows[0] if rows else ()))
    if fmt == "csv":
        lines = [_csv_line(columns), *(_csv_line([csv_cell(row.get(c)) for c in columns]) for row in rows)]
        return "\n".join(lines)
    if not rows:
        return "  ".join(columns) + "\n" + NO_ROWS if columns else NO_ROWS
    cells = [[table_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    right = [all(_numeric(line[i]) or line[i] in ("-", "n/a") for line in cells) for i in range(len(columns))]
    right = [r and any(_numeric(line[i]) for line in cells) for i, r in enumerate(right)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ).rstrip()

    return "\n".join([line(list(columns)), *(line(values) for values in cells)])
