"""Read access to past attribution requests, and the batch exact check of unverified ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from attribution_audit.attribution import (
    Attribution,
    AttributionParams,
    Attributor,
    load_request,
    neighbour_point_ids,
)
from attribution_audit.audit.chain import select_requests
from attribution_audit.audit.db import session_scope
from attribution_audit.audit.models import AttributionMetrics, AttributionRequest, RecallCheck
from attribution_audit.exact import overlap_at_k


def list_attributions(engine: Engine, limit: int = 50) -> list[Attribution]:
    """The most recent requests, newest first."""
    with Session(engine) as session:
        requests = session.scalars(select_requests().order_by(AttributionRequest.seq.desc()).limit(limit))
        return [Attribution.from_record(r) for r in requests]


def get_attribution(engine: Engine, request_id: str) -> Attribution:
    """One request by id; NotFoundError if absent."""
    return Attribution.from_record(load_request(engine, request_id))


@dataclass(frozen=True)
class RecallSummary:
    checked: int
    mean_overlap: float | None
    below_one: int


def verify_recall(attributor: Attributor, batch_size: int = 256) -> RecallSummary:
    """Exact-check every request of the attributor's collection that was not verified when it ran.

    Queries go through the exact index in batches (one matrix product per batch); each result is appended to
    ``recall_checks`` (the audit rows themselves are never modified).
    """
    engine = attributor.engine
    with Session(engine) as session:
        pending = session.scalars(
            select(AttributionRequest.id)
            .join(AttributionMetrics, AttributionMetrics.request_id == AttributionRequest.id)
            .where(
                AttributionMetrics.overlap_at_k.is_(None),
                AttributionRequest.collection == attributor.store.collection,
                ~select(RecallCheck.id).where(RecallCheck.request_id == AttributionRequest.id).exists(),
            )
            .order_by(AttributionRequest.seq)
        ).all()
    overlaps: list[float] = []
    for start in range(0, len(pending), batch_size):
        requests = [load_request(engine, rid) for rid in pending[start : start + batch_size]]
        by_params: dict[str, list[AttributionRequest]] = {}
        for request in requests:
            by_params.setdefault(repr(sorted(request.parameters.items())), []).append(request)
        checks: list[RecallCheck] = []
        for group in by_params.values():
            params = AttributionParams(**group[0].parameters)
            queries = np.vstack([np.frombuffer(r.query_vector, dtype="<f4") for r in group])
            styles = (
                np.vstack([np.frombuffer(r.style_vector, dtype="<f4") for r in group])
                if all(r.style_vector is not None for r in group)
                else None
            )
            exact, version = attributor.exact_top(queries, params, styles)
            for request, exact_ids in zip(group, exact, strict=True):
                overlap = overlap_at_k(neighbour_point_ids(request), exact_ids)
                overlaps.append(overlap)
                checks.append(
                    RecallCheck(
                        request_id=request.id,
                        exact_method=params.exact_method,
                        catalogue_version=version,
                        overlap_at_k=overlap,
                    )
                )
        with session_scope(engine) as session:
            session.add_all(checks)
    return RecallSummary(
        checked=len(overlaps),
        mean_overlap=float(np.mean(overlaps)) if overlaps else None,
        below_one=sum(1 for o in overlaps if o < 1.0),
    )
