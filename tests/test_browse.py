"""Browsing the log (store/browse.py), on SQLite and PostgreSQL: filters by artist, confidence and time (with or
without a zone), pages by cursor, shares per day and month, and the digests of the neighbours' images."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from dbtools import complete_request

from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.browse import RequestFilter
from attribution_audit.store.models import AttributionArtistShare

START = datetime(2026, 3, 30, 22, 0, tzinfo=UTC)


def _log(audit: AuditStore) -> list[str]:
    """Six requests an hour apart across two days (and a month end): artist A or B, confidence 0.3 to 0.8."""
    ids = []
    for i in range(6):
        request = complete_request(f"r{i}")
        artist = "A" if i % 2 == 0 else "B"
        request.artist_shares = [AttributionArtistShare(artist=artist, share=1.0)]
        request.metrics.confidence = 0.3 + i / 10  # type: ignore[union-attr]
        chain.append(audit.engine, request, at=START + timedelta(hours=i))
        ids.append(request.id)
    return ids


def _ids(audit: AuditStore, **where: object) -> list[str]:
    return [r.id for r in audit.browse.page(RequestFilter(**where))]  # type: ignore[arg-type]


def test_filters_and_pages(audit: AuditStore) -> None:
    ids = _log(audit)
    newest_first = ids[::-1]
    assert _ids(audit) == newest_first
    assert _ids(audit, artist="B") == [ids[5], ids[3], ids[1]]
    assert _ids(audit, min_confidence=0.55, max_confidence=0.75) == [ids[4], ids[3]]
    # times with a zone, and without one (UTC), select the same records
    cut = START + timedelta(hours=2)
    assert _ids(audit, since=cut) == newest_first[:4]
    assert _ids(audit, since=cut.replace(tzinfo=None)) == newest_first[:4]
    paris = timezone(timedelta(hours=2))
    assert _ids(audit, until=cut.astimezone(paris)) == [ids[1], ids[0]]
    pages, cursor = [], None
    while True:
        page = audit.browse.page(RequestFilter(limit=4, before_seq=cursor))
        pages.append([r.id for r in page])
        if len(page) < 4:
            break
        cursor = page[-1].seq
    assert pages == [newest_first[:4], newest_first[4:]]


def test_shares_over_time(audit: AuditStore) -> None:
    _log(audit)
    days = audit.browse.shares_over_time("day")
    assert [(r["period"], r["artist"], r["attributions"]) for r in days] == [
        ("2026-03-30", "A", 1),
        ("2026-03-30", "B", 1),
        ("2026-03-31", "A", 2),
        ("2026-03-31", "B", 2),
    ]
    months = audit.browse.shares_over_time("month")
    assert [(r["period"], r["artist"], r["share_sum"]) for r in months] == [
        ("2026-03", "A", 3.0),
        ("2026-03", "B", 3.0),
    ]


def test_a_filter_out_of_range_is_refused_not_an_empty_page() -> None:
    for name, value in (("min_confidence", float("nan")), ("max_confidence", 5.0), ("min_confidence", -0.1)):
        with pytest.raises(ValueError, match=f"{name} .*: a number between 0 and 1"):
            RequestFilter(**{name: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit 0: a whole number from 1 to 2147483647"):
        RequestFilter(limit=0)
