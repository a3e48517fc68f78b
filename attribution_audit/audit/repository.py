"""Read access to past attribution requests."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload

from attribution_audit.attribution import Attribution
from attribution_audit.audit.models import AttributionRequest
from attribution_audit.errors import NotFoundError


def list_attributions(engine: Engine, limit: int = 50) -> list[Attribution]:
    """The most recent requests, newest first."""
    with Session(engine) as session:
        requests = session.scalars(
            select(AttributionRequest)
            .options(selectinload(AttributionRequest.neighbours), selectinload(AttributionRequest.metrics))
            .order_by(AttributionRequest.created_at.desc())
            .limit(limit)
        )
        return [Attribution.from_record(r) for r in requests]


def get_attribution(engine: Engine, request_id: str) -> Attribution:
    """One request by id; NotFoundError if absent."""
    with Session(engine) as session:
        request = session.scalar(
            select(AttributionRequest)
            .options(selectinload(AttributionRequest.neighbours), selectinload(AttributionRequest.metrics))
            .where(AttributionRequest.id == request_id)
        )
        if request is None:
            raise NotFoundError(
                f"no attribution request {request_id!r} in the audit log; `attribution-audit audit list` shows ids"
            )
        return Attribution.from_record(request)
