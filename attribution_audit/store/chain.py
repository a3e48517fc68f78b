"""The hash chain over attribution requests: append one record, verify the whole log.

Each request's ``record_hash`` is ``sha256(prev_hash || canonical JSON of the request, its neighbours, artist
shares and metrics)``. Appends take a database-wide lock (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``)
so that concurrent writers still form one linear chain with consecutive ``seq`` numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Select, func, select, text
from sqlalchemy.orm import Session, selectinload

from attribution_audit.domain.chain import GENESIS_HASH, ChainReport, hash_content
from attribution_audit.store.database import read_scope, session_scope
from attribution_audit.store.models import AttributionRequest, Base, utcnow

CHAIN_LOCK_ID = 0x41545452  # pg_advisory_xact_lock key of the audit chain
_EXCLUDED = {"request_id", "record_hash"}


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds")
    if isinstance(value, bytes | bytearray | memoryview):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    if isinstance(value, float) and value == 0.0:
        return 0.0  # SQLite does not keep the sign of -0.0: hash what every database reads back
    return value


def _row(obj: Base) -> dict[str, Any]:
    return {
        column.key: _canonical_value(getattr(obj, column.key))
        for column in obj.__table__.columns
        if column.key not in _EXCLUDED
    }


def canonical_content(request: AttributionRequest) -> dict[str, Any]:
    """What the hash covers: the request and its neighbours, artist shares and metrics, as plain JSON values."""
    return {
        "request": _row(request),
        "neighbours": [_row(n) for n in sorted(request.neighbours, key=lambda n: n.rank)],
        "artist_shares": [_row(s) for s in sorted(request.artist_shares, key=lambda s: s.artist)],
        "metrics": _row(request.metrics) if request.metrics is not None else None,
    }


def record_hash(prev_hash: str, request: AttributionRequest) -> str:
    return hash_content(prev_hash, canonical_content(request))


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_ID})
    # SQLite: every transaction starts with BEGIN IMMEDIATE (see audit.db), which already serialises writers.


def append(engine: Engine, request: AttributionRequest, at: datetime | None = None) -> AttributionRequest:
    """Give ``request`` (children attached, not yet added) its time, chain position and hash, and commit it.

    The time is taken under the chain lock, so chain order is time order; ``at`` backdates it (importing a log).
    """
    with session_scope(engine) as session:
        _lock_chain(session)
        last = session.execute(
            select(AttributionRequest.seq, AttributionRequest.record_hash)
            .order_by(AttributionRequest.seq.desc())
            .limit(1)
        ).first()
        request.created_at = at or utcnow()
        request.seq = 1 if last is None else last.seq + 1
        request.prev_hash = GENESIS_HASH if last is None else last.record_hash
        request.record_hash = record_hash(request.prev_hash, request)
        session.add(request)
    return request


def select_requests() -> Select[AttributionRequest]:
    """A SELECT of requests that loads their neighbours, artist shares and metrics with them."""
    return select(AttributionRequest).options(
        selectinload(AttributionRequest.neighbours),
        selectinload(AttributionRequest.artist_shares),
        selectinload(AttributionRequest.metrics),
    )


def iter_chain(engine: Engine, page: int = 500) -> Iterator[AttributionRequest]:
    """Every request with its children, in chain order, loaded page by page."""
    last_seq = 0
    while True:
        with read_scope(engine) as session:
            rows = session.scalars(
                select_requests().where(AttributionRequest.seq > last_seq).order_by(AttributionRequest.seq).limit(page)
            ).all()
        if not rows:
            return
        yield from rows
        last_seq = rows[-1].seq


def verify_chain(engine: Engine) -> ChainReport:
    """Recompute every hash; stop at the first row whose content, link or position does not match."""
    prev, checked = GENESIS_HASH, 0
    for request in iter_chain(engine):
        problem = None
        if request.seq != checked + 1:
            problem = f"sequence gap: expected seq {checked + 1}, found {request.seq}"
        elif request.prev_hash != prev:
            problem = "prev_hash does not match the previous record's hash (a record was removed or reordered)"
        elif record_hash(prev, request) != request.record_hash:
            problem = "content does not match its record_hash (the record was modified)"
        if problem:
            return ChainReport(False, checked, prev, request.id, request.seq, problem)
        prev, checked = request.record_hash, checked + 1
    with read_scope(engine) as session:
        total = session.scalar(select(func.count()).select_from(AttributionRequest)) or 0
    if total != checked:
        return ChainReport(
            False,
            checked,
            prev,
            None,
            None,
            f"{total - checked} request row(s) lie outside the chain (inserted by hand?)",
        )
    return ChainReport(True, checked, prev)
