"""Report queries over the SQL views (the same views analysts query directly; see docs/schema.md)."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import date
from typing import Any

from sqlalchemy import Engine, text

from attribution_audit.audit.chain import verify_chain

OUTPUT_FORMATS = ("table", "csv", "json")
CONFIDENCE_BUCKETS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def artist_shares(engine: Engine, date_from: date | None = None, date_to: date | None = None) -> list[dict[str, Any]]:
    """Per canonical artist over [date_from, date_to] (inclusive days): attributions, sum of shares, mean confidence."""
    conditions, bind = [], {}
    sqlite = engine.dialect.name == "sqlite"  # SQLite's view yields ISO date strings, PostgreSQL's DATE values
    for name, value, operator in (("date_from", date_from, ">="), ("date_to", date_to, "<=")):
        if value is not None:
            conditions.append(f"day {operator} :{name}")
            bind[name] = value.isoformat() if sqlite else value
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = text(
        f"""
        SELECT artist, SUM(attributions) AS attributions, SUM(share_sum) AS share_sum,
               SUM(mean_confidence * attributions) / SUM(attributions) AS mean_confidence
        FROM v_artist_shares {where}
        GROUP BY artist ORDER BY share_sum DESC, artist
        """
    )
    with engine.connect() as connection:
        return [
            {
                "artist": row.artist,
                "attributions": int(row.attributions),
                "share_sum": round(float(row.share_sum), 6),
                "mean_confidence": round(float(row.mean_confidence), 6),
            }
            for row in connection.execute(sql, bind)
        ]


def summary(engine: Engine) -> dict[str, Any]:
    """Counts, confidence distribution, HNSW/exact disagreements and the chain status."""
    with engine.connect() as connection:
        counts = connection.execute(
            text(
                "SELECT COUNT(*) AS total, COALESCE(SUM(is_production), 0) AS production, "
                "COUNT(overlap_at_k) AS verified, "
                "SUM(CASE WHEN overlap_at_k < 1 THEN 1 ELSE 0 END) AS disagreements, "
                "AVG(confidence) AS mean_confidence, MIN(created_at) AS first, MAX(created_at) AS last "
                "FROM v_attributions"
            )
        ).one()
        confidences = [float(c) for c in connection.scalars(text("SELECT confidence FROM v_attributions"))]
        low = connection.scalar(text("SELECT COUNT(*) FROM v_low_confidence"))
        works = connection.execute(
            text("SELECT COALESCE(SUM(active), 0), COALESCE(SUM(withdrawn), 0) FROM v_catalogue")
        ).one()
    buckets = []
    for lower, upper in itertools.pairwise(CONFIDENCE_BUCKETS):
        last = upper == CONFIDENCE_BUCKETS[-1]
        n = sum(1 for c in confidences if lower <= c < upper or (last and c == upper))
        buckets.append({"from": lower, "to": upper, "requests": n})
    chain = verify_chain(engine)
    return {
        "requests": int(counts.total),
        "production_requests": int(counts.production),
        "verified_requests": int(counts.verified),
        "ann_disagreements": int(counts.disagreements or 0),
        "low_confidence_requests": int(low or 0),
        "mean_confidence": None if counts.mean_confidence is None else round(float(counts.mean_confidence), 6),
        "first_request": str(counts.first) if counts.first else None,
        "last_request": str(counts.last) if counts.last else None,
        "confidence_distribution": buckets,
        "active_works": int(works[0]),
        "withdrawn_works": int(works[1]),
        "chain": {
            "ok": chain.ok,
            "records": chain.checked,
            "head_hash": chain.head_hash,
            "broken_seq": chain.broken_seq,
            "reason": chain.reason,
        },
    }


ARTIST_COLUMNS = ("artist", "attributions", "share_sum", "mean_confidence")


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
