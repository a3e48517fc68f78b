"""Wiring from settings: open the audit store, the vector store, the embedder and the Attributor for a use case,
and close them after. Adapters (CLI, HTTP) build everything through here."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from attribution_audit.config import DataDirRecord, Settings, read_record, write_record
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import AttributionAuditError, DatabaseError, NotFoundError
from attribution_audit.services.attribution import Attributor
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.vectors import VectorStore, open_collection, open_store


def open_audit(settings: Settings, *, check_schema: bool = True, create: bool = False) -> AuditStore:
    """The audit store of the settings' database, its schema checked at the head revision (unless told otherwise).

    The embedded default (a SQLite file in the data dir) is created at the head revision when ``create`` is set (a
    command that writes: ingest, db upgrade); otherwise a missing one is a one-line error, and nothing is created.
    A server database is never created or migrated implicitly: ``db upgrade`` does that. A new embedded log beside
    an existing shard or witness file is refused unless ``settings.new_audit_log`` says it is meant.
    """
    from attribution_audit.services.checkpoints import guard_witness, refuse_silent_new_database

    embedded = settings.embedded_database
    if embedded is not None and not embedded.exists():
        if not create:
            raise NotFoundError(
                f"no audit log in {settings.data_dir} (no {embedded.name}); ingest a catalogue first "
                "(`attribution-audit ingest MANIFEST`), or point --data-dir / ATTRIBUTION_AUDIT_DATA_DIR at the data "
                "dir you used"
            )
        refuse_silent_new_database(settings, str(embedded))
        audit = AuditStore.open(settings.resolved_database_url, check_schema=False)
        audit.upgrade()
        guard_witness(settings, audit)  # with --new-audit-log: the witness records the new log at once
        return audit
    if embedded is not None and not os.access(embedded.parent, os.W_OK):
        raise DatabaseError(
            f"{embedded.parent}: the data dir is read-only; its SQLite audit log needs a writable folder (for its "
            "journal, even to read): mount it read-write or fix its permissions, or work on a copy"
        )
    return AuditStore.open(settings.resolved_database_url, check_schema=check_schema)


@contextmanager
def vector_store(
    settings: Settings, embedder_spec: str | None = None, *, collection: str | None = None
) -> Iterator[VectorStore]:
    """The vector store of an embedder's collection (or of a named collection), closed after."""
    store = (
        open_collection(settings, collection)
        if collection
        else open_store(settings, embedder_spec or settings.embedder)
    )
    try:
        yield store
    finally:
        store.close()


def announce_recorded_embedder(settings: Settings) -> bool:
    """True the first time a command uses the embedder its data dir recorded (the caller says so); marks it said."""
    if settings.embedder_from != "data dir":
        return False
    try:
        record = read_record(settings.data_dir)
        if record is None or record.announced:
            return False
        write_record(settings.data_dir, replace(record, announced=True))
    except AttributionAuditError:
        return False  # best effort: a read-only data dir still serves its commands
    return True


def remember_ingest(settings: Settings, spaces: list[str]) -> str | None:
    """Record in the data dir which embedder built which collection; the first ingest's embedder becomes the data
    dir's default. A note when this ingest made a collection beside the default one."""
    try:
        record = read_record(settings.data_dir) or DataDirRecord(settings.embedder)
        known = record.collections.get(settings.embedder, [])
        collections = {**record.collections, settings.embedder: sorted(set(known) | set(spaces))}
        write_record(settings.data_dir, replace(record, collections=collections))
    except AttributionAuditError as exc:  # the ingest itself is committed: say so, do not fail it
        return f"the works are ingested, but {exc}"
    if settings.embedder != record.embedder and not known:
        return (
            f"new collection for embedder {settings.embedder} beside {record.embedder}'s; commands without "
            f"--embedder keep using {record.embedder}"
        )
    return None


@functools.cache
def load_embedder(spec: str, batch_size: int = 32) -> Embedder:
    """The embedder named ``spec``, loaded once per process (a service, or a test session, reuses it)."""
    from attribution_audit.embedding import get_embedder

    return get_embedder(spec, batch_size=batch_size)


@contextmanager
def open_attributor(
    settings: Settings, audit: AuditStore, embedder_spec: str, *, fingerprint: str | None = None, batch_size: int = 32
) -> Iterator[Attributor]:
    """An Attributor over the collection of ``embedder_spec``.

    Without ``fingerprint`` the embedder is loaded (needed to embed images); with it, only recorded query vectors
    can be used (replay, recall checks), and no model is loaded.
    """
    embedder = style = None
    if fingerprint is None:
        from attribution_audit.embedding.style import style_embedder_for

        embedder = load_embedder(embedder_spec, batch_size)
        style = style_embedder_for(embedder)  # shares the loaded model; used by the style and fused spaces
        fingerprint = embedder.fingerprint
    with vector_store(settings, embedder_spec) as store:
        yield Attributor(
            audit,
            store,
            embedder_name=embedder_spec,
            embedder_fingerprint=fingerprint,
            requester=settings.resolved_requester,
            exact_cache_dir=settings.exact_cache_path,
            embedder=embedder,
            style_embedder=style,
            copy_depth=settings.copy_depth,
            query_crops=settings.query_crops,
        )
