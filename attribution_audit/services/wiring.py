"""Wiring from settings: open the audit store, the vector store, the embedder and the Attributor for a use case,
and close them after. Adapters (CLI, HTTP) build everything through here."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from attribution_audit.config import Settings
from attribution_audit.embedding.base import Embedder
from attribution_audit.services.attribution import Attributor
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.vectors import VectorStore, open_collection, open_store


def open_audit(settings: Settings, *, check_schema: bool = True) -> AuditStore:
    """The audit store of the settings' database (schema checked at the head revision unless told otherwise)."""
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
            exact_cache_dir=settings.data_dir / "exact",
            embedder=embedder,
            style_embedder=style,
        )
