"""Reading the audit log: recent requests, one request, exports and request pages (verification: checkpoints)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from attribution_audit.domain.chain import ChainReport
from attribution_audit.domain.params import MAX_LISTED
from attribution_audit.domain.results import Attribution
from attribution_audit.errors import AmbiguousIdError, NotFoundError, OptionError, PermissionDeniedError, ReadOnlyError
from attribution_audit.reporting import export, html
from attribution_audit.services.attribution import FlatImage, space_since_fit
from attribution_audit.services.spaces import HeldOutRate
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.browse import RequestFilter
from attribution_audit.store.requests import to_attribution


def list_attributions(audit: AuditStore, limit: int = 50, kind: str = "all") -> list[Attribution]:
    """The most recent requests of ``kind`` (all; production: users' attributions; evaluation: made by evaluation
    runs; replay), newest first; OptionError for a limit outside 1 to MAX_LISTED."""
    if not 1 <= limit <= MAX_LISTED:
        raise OptionError(f"limit {limit}: give a whole number from 1 to {MAX_LISTED}")
    return audit.requests.latest(limit, kind)


ID_PREFIX = 8  # the fewest leading characters of a request id that look it up


def resolve_request_id(audit: AuditStore, given: str) -> str:
    """The whole id of the one request whose id is ``given`` or starts with it (at least ID_PREFIX characters, in
    either case, as git takes a commit's); NotFoundError if none does, AmbiguousIdError if several do or
    ``given`` is shorter (a refused input, whatever the log holds)."""
    prefix = given.strip().lower()
    if len(prefix) < ID_PREFIX:
        raise AmbiguousIdError(
            f"{given!r} is too short to name a request: give its whole id or at least its first {ID_PREFIX} "
            "characters; `attribution-audit audit list` shows ids"
        )
    count, least = audit.requests.with_prefix(prefix)
    if count > 1:
        raise AmbiguousIdError(f"{count} requests have an id that starts with {given!r}: give more of its characters")
    if least is None:
        raise NotFoundError(
            f"no attribution request {given!r} in the audit log (no id starts with it); `attribution-audit audit "
            "list` shows ids"
        )
    return least


def get_attribution(audit: AuditStore, request_id: str) -> Attribution:
    """One request by id; NotFoundError if absent."""
    return audit.requests.get(request_id)


def verify_chain(audit: AuditStore, workers: int = 1) -> tuple[ChainReport, str | None]:
    """Recompute every hash of the log (streaming, by ``workers`` processes); the first broken record, if any. The
    outcome is remembered for ``report summary``; where this user may only read, the log is open read-only or its
    disk is full, it is not (a verification is a read): then, second, why not, in one line."""
    report = audit.requests.verify_chain(workers=workers)
    return report, _remember(audit, report)


def _remember(audit: AuditStore, report: ChainReport) -> str | None:
    """Remember a full verification for ``report summary``; where it cannot be written (this user may only read, the
    log is open read-only, its disk is full), why it was not, in one line (the verdict stands)."""
    try:
        audit.requests.remember_verification(report)
    except ReadOnlyError as exc:
        return f"this verification is not recorded for report summary: {exc}"
    return None


def export_records(
    audit: AuditStore,
    out: Path,
    date_from: date | None = None,
    date_to: date | None = None,
    workers: int = 1,
    *,
    overwrite: bool = False,
) -> tuple[int, str | None]:
    """Export a period's records with their hashes, the chain head and the DB identity, verifying the whole chain in
    the same pass (a broken chain exports nothing; the log read by ``workers`` processes); how many were written,
    and why that verification was not remembered for ``report summary`` (None: it was; see :func:`verify_chain`).
    An existing ``out`` is refused unless ``overwrite``."""
    written, head = export.export_records(
        audit.requests.chain_records(workers),
        audit.requests.count,
        out,
        date_from,
        date_to,
        db_identity=audit.checkpoints.identity(),
        vouch=audit.requests.against_earlier,
        overwrite=overwrite,
    )
    return written, _remember(audit, head)


def request_notes(audit: AuditStore, attribution: Attribution) -> list[str]:
    """The notes of a logged request, as its page, ``audit show --format json`` and the service's GET show them: of
    an image of one colour, a :class:`FlatImage` first; in a learned space version fitted before some of its
    collection's artists were ingested, those the request could have met (ingested by its time, not withdrawn
    before), as of the catalogue now; scored by its own held-out rate, that every request got the same confidence."""
    flat = [str(FlatImage(attribution.image))] if attribution.one_colour else []
    version = attribution.parameters.get("space_version")  # recorded for a learned space only
    try:
        found = audit.spaces.load(attribution.parameters["space"], version) if version is not None else None
        note = None if found is None else space_since_fit(audit, found[0], as_of=attribution.created_at)
    except PermissionDeniedError:  # a read-only role sees the log's views, not the spaces and catalogue tables
        hidden = (
            f"the notes of learned space {attribution.parameters['space']} (version {version}) are not shown: this "
            "database user may only read the audit views; a writer's `audit show` shows them"
        )
        return [*flat, hidden]
    held_out = None if found is None else HeldOutRate.of(found[0], attribution.confidence_model)
    return [*flat, *(str(n) for n in (note, held_out) if n is not None)]


def request_page(audit: AuditStore, request_id: str, **page: Any) -> str:
    """One request as a self-contained HTML page (thumbnails inlined and checked against the digests the record
    pinned, or for older records the catalogue's; a catalogue that now names another image said so; record integrity
    checked; its :func:`request_notes`); ``page`` adds to the template's context (the console's navigation, chain
    status)."""
    attribution = audit.requests.get(request_id)
    recorded = audit.requests.neighbour_images(request_id)
    return html.render_request_html(
        attribution,
        {rank: path for rank, (path, _) in recorded.items()},
        audit.requests.intact(request_id),
        {rank: sha for rank, (_, sha) in recorded.items()},
        notes=request_notes(audit, attribution),
        **page,
    )


def write_request_html(audit: AuditStore, request_id: str, out: Path) -> Path:
    return html.write_page(request_page(audit, request_id), out)


def write_request_pdf(audit: AuditStore, request_id: str, out: Path) -> Path:
    """The same page printed to PDF by headless Chromium."""
    return html.print_pdf(request_page(audit, request_id), out)


def browse_attributions(audit: AuditStore, where: RequestFilter) -> list[Attribution]:
    """The requests that match ``where``, newest first (a page of at most ``where.limit``)."""
    return [to_attribution(record) for record in audit.browse.page(where)]


def shares_over_time(audit: AuditStore, period: str) -> list[dict[str, Any]]:
    """Attributions and share sums per artist and day or month (production requests only)."""
    return audit.browse.shares_over_time(period)
