"""Rows as text: an aligned table with a header, CSV (header + rows) or a JSON list."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

OUTPUT_FORMATS = ("table", "csv", "json")


def render_rows(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] | None = None) -> str:
    """Rows as an aligned table, CSV (header + rows, the header even with no rows) or a JSON list."""
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    columns = tuple(columns or (rows[0] if rows else ()))
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    if not rows:
        return "  ".join(columns) + "\n(no rows)" if columns else "(no rows)"
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
