"""Browsing the audit log: requests filtered by artist, confidence and time, page by page (newest first), and the
artist shares per day or month. Read from what a read-only role may read (the audit views on PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_, select, text

from attribution_audit.domain.confidence import LOW_CONFIDENCE
from attribution_audit.domain.params import MAX_LISTED
from attribution_audit.store import chain
from attribution_audit.store.chain import StoredRequest
from attribution_audit.store.database import compared_time, read_connection

PERIODS = ("day", "month")
MAX_SEQ = 2**63 - 1  # a seq is a 64-bit integer in both databases


def parse_cursor(text: str | None) -> int | None:
    """The ``before_seq`` of a page cursor (the last seq of the previous page); ValueError for anything else."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and int(text) <= MAX_SEQ):
        raise ValueError(f"cursor {text[:40]!r}: pass the next_cursor of the previous page")
    return int(text)


@dataclass(frozen=True)
class RequestFilter:
    """Which requests to list: an artist among the shares, a confidence range, a time range (``until`` exclusive),
    at most ``limit`` of them, older than the ``before_seq`` cursor; with ``low_confidence``, only those
    v_low_confidence lists (a confidence below LOW_CONFIDENCE, or an image of one colour)."""

    artist: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    before_seq: int | None = None
    low_confidence: bool = False

    def __post_init__(self) -> None:
        for name, value in (("min_confidence", self.min_confidence), ("max_confidence", self.max_confidence)):
            if value is not None and not 0.0 <= value <= 1.0:  # NaN fails both comparisons
                raise ValueError(f"{name} {value!r}: a number between 0 and 1")
        if not 1 <= self.limit <= MAX_LISTED:
            raise ValueError(f"limit {self.limit}: a whole number from 1 to {MAX_LISTED}")


class BrowseRepository:
    """Filtered pages of requests and shares over time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(self, where: RequestFilter) -> list[StoredRequest]:
        """The requests that match, newest first."""
        src = chain.log_source(self.engine)
        requests, metrics, shares = src.requests.c, src.metrics.c, src.artist_shares.c
        query = (
            select(requests.id)
            .join(src.metrics, metrics.request_id == requests.id)
            .order_by(requests.seq.desc())
            .limit(where.limit)
        )
        if where.artist is not None:
            query = query.where(
                select(shares.request_id)
                .where(shares.request_id == requests.id, shares.artist == where.artist)
                .exists()
            )
        if where.min_confidence is not None:
            query = query.where(metrics.confidence >= where.min_confidence)
        if where.max_confidence is not None:
            query = query.where(metrics.confidence <= where.max_confidence)
        if where.since is not None:
            query = query.where(requests.created_at >= compared_time(self.engine, where.since))
        if where.until is not None:
            query = query.where(requests.created_at < compared_time(self.engine, where.until))
        if where.before_seq is not None:
            query = query.where(requests.seq < where.before_seq)
        if where.low_confidence:
            query = query.where(or_(metrics.confidence < LOW_CONFIDENCE, metrics.one_colour == 1))
        with read_connection(self.engine) as connection:
            ids = list(connection.scalars(query))
        return chain.load_requests(self.engine, ids=ids, newest_first=True) if ids else []

    def shares_over_time(self, period: str) -> list[dict[str, Any]]:
        """Per ``period`` (day or month, UTC) and canonical artist: attributions and the sum of their shares."""
        if period not in PERIODS:
            raise ValueError(f"period {period!r}: choose day or month")
        sql = text(
            f"SELECT {period} AS period, artist, SUM(attributions) AS attributions, SUM(share_sum) AS share_sum "
            f"FROM v_artist_shares GROUP BY {period}, artist ORDER BY {period}, share_sum DESC, artist"
        )
        with read_connection(self.engine) as connection:
            return [
                {
                    "period": str(row.period),
                    "artist": row.artist,
                    "attributions": int(row.attributions),
                    "share_sum": round(float(row.share_sum), 6),
                }
                for row in connection.execute(sql)
            ]
