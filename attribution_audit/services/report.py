"""Reports for compliance officers and analysts: shares per artist, a summary of the log, one request as a page."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from typing import Any

from attribution_audit.domain.chain import ChainReport
from attribution_audit.domain.results import as_utc
from attribution_audit.errors import DatabaseError, SchemaCheckError
from attribution_audit.services.checkpoints import check_json, model_problems, space_problems
from attribution_audit.store.audit_store import AuditStore

CONFIDENCE_BUCKETS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
ARTIST_COLUMNS = ("artist", "attributions", "share_sum", "mean_confidence")


def artist_shares(
    audit: AuditStore, date_from: date | None = None, date_to: date | None = None
) -> list[dict[str, Any]]:
    """Per canonical artist over [date_from, date_to] (inclusive days): attributions, sum of shares, mean confidence."""
    return audit.reports.artist_shares(date_from, date_to)


def one_colour_left_out(audit: AuditStore, date_from: date | None = None, date_to: date | None = None) -> int:
    """How many production requests over [date_from, date_to] the artist shares leave out: images of one colour."""
    return audit.reports.one_colour_production(date_from, date_to)


def _iso(moment: str | None) -> str | None:
    """A time as SQL gives it (SQLite: text in UTC without a zone) as ISO 8601 in UTC with the zone."""
    if moment is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(moment)).isoformat()
    except ValueError:  # SQLite keeps any text in a time column
        raise DatabaseError(
            f"the audit log holds a request time {moment!r} that is not a time (a row was changed outside "
            "attribution-audit); run `attribution-audit audit verify`, which names its record, and restore it from a "
            "backup"
        ) from None


def summary(audit: AuditStore) -> dict[str, Any]:
    """Counts, confidence distribution, HNSW/exact disagreements, the chain status (from the last full
    verification and the records appended since: see :func:`chain_status`) and the schema objects' (views,
    triggers: compared with what the migrations create, as ``audit verify`` compares them), the stored confidence
    models' (compared with the fingerprints their records hold) and the learned space versions the records name
    (stored unchanged), as ``audit verify`` checks them."""
    chain, since = chain_status(audit)
    try:
        problems, unchecked = audit.schema_differences(), None
    except SchemaCheckError as exc:
        problems, unchecked = [], str(exc)
    models, models_unchecked, models_checked = model_problems(audit)
    spaces, spaces_unchecked, spaces_checked = space_problems(audit)
    return {
        **log_counts(audit),
        "chain": {
            "ok": chain.ok,
            "records": chain.checked,
            "head_hash": chain.head_hash,
            "broken_seq": chain.broken_seq,
            "reason": chain.reason,
            **since,
        },
        "schema": {"ok": not problems and unchecked is None, "problems": problems, "unchecked": unchecked},
        "models": check_json(models, models_unchecked, models_checked),
        "spaces": check_json(spaces, spaces_unchecked, spaces_checked),
    }


def log_counts(audit: AuditStore) -> dict[str, Any]:
    """Counts, confidence distribution and HNSW/exact disagreements of the log (no chain verification)."""
    counts = audit.reports.counts()
    buckets = []
    for lower, upper in itertools.pairwise(CONFIDENCE_BUCKETS):
        last = upper == CONFIDENCE_BUCKETS[-1]
        n = sum(1 for c in counts.confidences if lower <= c < upper or (last and c == upper))
        buckets.append({"from": lower, "to": upper, "requests": n})
    return {
        "requests": counts.requests,
        "production_requests": counts.production_requests,
        "verified_requests": counts.verified_requests,
        "ann_disagreements": counts.ann_disagreements,
        "low_confidence_requests": counts.low_confidence_requests,
        "one_colour_requests": counts.one_colour_requests,
        "production_not_looked_at_for_one_colour": counts.production_not_looked_at,
        "mean_confidence": counts.mean_confidence,
        "first_request": _iso(counts.first_request),
        "last_request": _iso(counts.last_request),
        "confidence_distribution": buckets,
        "active_works": counts.active_works,
        "withdrawn_works": counts.withdrawn_works,
    }


def chain_status(audit: AuditStore) -> tuple[ChainReport, dict[str, Any]]:
    """The chain's state without re-verifying the whole log: the last full verification (``audit verify`` or
    ``audit export``) and the records appended since, checked now; the whole chain when none is remembered (or this
    user may not read them). With what it rests on: when the full verification ran, how long ago, the head it
    reached (records, hash: a row of this DB, not checked again here), records checked now."""
    last = audit.requests.last_verification()
    if last is None or not last.report.ok:
        report = audit.requests.verify_chain() if last is None else last.report
        return report, {
            "verified_in_full_at": None,
            "verified_in_full_age_s": None,
            "verified_in_full_records": None,
            "verified_in_full_head_hash": None,
            "checked_now": report.checked,
        }
    report = audit.requests.verify_chain(last.report)
    at = as_utc(last.verified_at)
    return report, {
        "verified_in_full_at": at.isoformat(),
        "verified_in_full_age_s": round((datetime.now(UTC) - at).total_seconds()),
        "verified_in_full_records": last.report.checked,
        "verified_in_full_head_hash": last.report.head_hash,
        "checked_now": report.checked - last.report.checked,
    }
