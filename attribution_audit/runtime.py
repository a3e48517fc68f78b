"""Wiring from settings: open the store, the embedder and the Attributor for a command, and close them after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from attribution_audit.attribution import Attribution, Attributor, load_request
from attribution_audit.audit.models import AttributionMetrics, AttributionRequest, RecallCheck
from attribution_audit.audit.repository import RecallSummary, verify_recall
from attribution_audit.config import Settings
from attribution_audit.vectorstore import open_store


@contextmanager
def open_attributor(
    settings: Settings, engine: Engine, embedder_spec: str, *, fingerprint: str | None = None, batch_size: int = 32
) -> Iterator[Attributor]:
    """An Attributor over the collection of ``embedder_spec``.

    Without ``fingerprint`` the embedder is loaded (needed to embed images); with it, only recorded query vectors
    can be used (replay, recall checks), and no model is loaded.
    """
    embedder = style = None
    if fingerprint is None:
        from attribution_audit.embedding import get_embedder
        from attribution_audit.embedding.style import style_embedder_for

        embedder = get_embedder(embedder_spec, batch_size=batch_size)
        style = style_embedder_for(embedder)  # shares the loaded model; used by the style and fused spaces
        fingerprint = embedder.fingerprint
    store = open_store(settings, embedder_spec)
    try:
        yield Attributor(
            engine,
            store,
            embedder_name=embedder_spec,
            embedder_fingerprint=fingerprint,
            requester=settings.resolved_requester,
            exact_cache_dir=settings.data_dir / "exact",
            embedder=embedder,
            style_embedder=style,
        )
    finally:
        store.close()


def replay(settings: Settings, engine: Engine, request_id: str) -> tuple[Attribution, Attribution]:
    """Re-run a recorded request on today's index (same embedder collection, vector and parameters)."""
    original = load_request(engine, request_id)
    with open_attributor(
        settings, engine, original.embedder_name, fingerprint=original.embedder_fingerprint
    ) as attributor:
        return attributor.replay(request_id)


def verify_recall_all(settings: Settings, engine: Engine) -> dict[str, RecallSummary]:
    """Run :func:`verify_recall` for each embedder that has unverified requests."""
    with Session(engine) as session:
        pending = session.execute(
            select(AttributionRequest.embedder_name, AttributionRequest.embedder_fingerprint)
            .join(AttributionMetrics, AttributionMetrics.request_id == AttributionRequest.id)
            .where(
                AttributionMetrics.overlap_at_k.is_(None),
                ~select(RecallCheck.id).where(RecallCheck.request_id == AttributionRequest.id).exists(),
            )
            .distinct()
        ).all()
    summaries: dict[str, RecallSummary] = {}
    for name, fingerprint in pending:
        if name in summaries:
            continue
        with open_attributor(settings, engine, name, fingerprint=fingerprint) as attributor:
            summaries[name] = verify_recall(attributor)
    return summaries
