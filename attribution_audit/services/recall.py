"""Checks after the fact: exact recall checks of requests that were not verified when they ran, and replays of a
recorded request on today's index."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import point_id_for
from attribution_audit.domain.results import Attribution
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.wiring import open_attributor
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.exact import overlap_at_k
from attribution_audit.store.requests import RecallResult, RecordedQuery


@dataclass(frozen=True)
class RecallSummary:
    checked: int
    mean_overlap: float | None
    below_one: int
    changed: int = 0  # not checked: the collection changed since they ran


def verify_recall(attributor: Attributor, batch_size: int = 256) -> RecallSummary:
    """Exact-check every request of the attributor's collection that was not verified when it ran.

    The recorded neighbours are compared with the exact answer: nothing searches the HNSW graph, so the search ef
    configured now plays no part (the ef each request searched with is in its ``index_params``).

    Queries go through the exact index in batches (one matrix product per batch and parameter set); each result is
    appended to ``recall_checks`` (the audit rows themselves are never modified). A request whose collection has
    changed since it ran (works ingested or withdrawn) is not checked: today's exact top K is not the one its search
    could find, so every work withdrawn or added since would count as a miss of HNSW; ``changed`` counts them.
    """
    requests = attributor.audit.requests
    pending = requests.unverified_ids(attributor.store.collection)
    version = attributor.store.content_version()
    overlaps: list[float] = []
    changed = 0
    for start in range(0, len(pending), batch_size):
        by_params: dict[str, list[RecordedQuery]] = {}
        for recorded in requests.recorded_queries(pending[start : start + batch_size]):
            if recorded.attribution.catalogue_version != version:
                changed += 1
                continue
            by_params.setdefault(repr(sorted(recorded.attribution.parameters.items())), []).append(recorded)
        checks: list[RecallResult] = []
        for group in by_params.values():
            params = AttributionParams.from_json(group[0].attribution.parameters)
            exact = attributor.exact_top([r.vectors for r in group], params)
            for recorded, exact_ids in zip(group, exact, strict=True):
                found = [point_id_for(n.catalogue, n.work_id) for n in recorded.attribution.neighbours]
                overlap = overlap_at_k(found, exact_ids)
                overlaps.append(overlap)
                checks.append(RecallResult(recorded.attribution.request_id, params.exact_method, version, overlap))
        requests.add_recall_checks(checks)
    return RecallSummary(
        checked=len(overlaps),
        mean_overlap=float(np.mean(overlaps)) if overlaps else None,
        below_one=sum(1 for o in overlaps if o < 1.0),
        changed=changed,
    )


def verify_recall_all(settings: Settings, audit: AuditStore) -> dict[str, RecallSummary]:
    """Run :func:`verify_recall` for each embedder that has unverified requests."""
    summaries: dict[str, RecallSummary] = {}
    for name, fingerprint in audit.requests.unverified_embedders():
        if name in summaries:
            continue
        with open_attributor(settings, audit, name, fingerprint=fingerprint) as attributor:
            summaries[name] = verify_recall(attributor)
    return summaries


def replay(settings: Settings, audit: AuditStore, request_id: str) -> tuple[Attribution, Attribution]:
    """Re-run a recorded request on today's index (same embedder collection, vectors and parameters, and the HNSW
    search ef its ``index_params`` recorded, whatever ef is configured now, so that only the index can differ)."""
    original = audit.requests.get(request_id)
    recorded_ef = original.index_params.get("hnsw_ef")
    with open_attributor(
        replace(settings, hnsw_ef=recorded_ef) if isinstance(recorded_ef, int) else settings,
        audit,
        original.embedder_name,
        fingerprint=original.embedder_fingerprint,
    ) as attributor:
        return attributor.replay(request_id)
