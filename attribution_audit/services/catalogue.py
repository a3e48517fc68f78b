"""Catalogue lifecycle: withdraw works, merge artist aliases, and check that the vector store and the audit DB agree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from attribution_audit.config import Settings
from attribution_audit.domain.points import LAYOUT, STYLE
from attribution_audit.domain.spaces import partial_spaces
from attribution_audit.errors import DamagedShardError
from attribution_audit.services import vector_check
from attribution_audit.services.vector_check import VectorCheck
from attribution_audit.services.wiring import vector_store
from attribution_audit.sources.manifest import clean_name
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import ArtistRow
from attribution_audit.store.vectors import VectorStore, set_aside


@dataclass(frozen=True)
class Withdrawal:
    works: int  # withdrawn now
    already: int  # withdrawn before (their points deleted again, should a withdrawal have stopped before it did)
    collections: int  # those its points were removed from


def withdraw(settings: Settings, audit: AuditStore, catalogue: str, work_ids: Sequence[str]) -> Withdrawal:
    """Mark works withdrawn (kept for old audit records), then delete their points from every collection.

    Each collection holding them is opened first (an embedded shard's lock taken, which a running ``serve`` holds),
    so a store that cannot be written leaves the catalogue as it was: a work marked withdrawn whose point stays is
    refused by every request near it. The database is then marked before the points are deleted, so a crash in
    between leaves only points that :func:`check` reports as orphans and ``repair`` deletes.
    """
    with ExitStack() as opened:
        stores: dict[str, VectorStore] = {}

        def store_of(collection: str) -> VectorStore:
            if collection not in stores:
                stores[collection] = opened.enter_context(vector_store(settings, collection=collection))
                stores[collection].spaces()  # (opens it: an embedded shard's lock is held until it is closed)
            return stores[collection]

        for collection in audit.catalogue.collections_of(catalogue, work_ids):
            store_of(collection)
        points, already = audit.catalogue.withdraw(catalogue, work_ids)
        removed_from = sum(store_of(collection).delete(ids) > 0 for collection, ids in points.items())
    return Withdrawal(len(set(work_ids)) - len(already), len(already), removed_from)


def merge_artists(audit: AuditStore, alias: str, canonical: str) -> tuple[str, str]:
    """Record that ``alias`` is another spelling of ``canonical``; reports and entropy then use the canonical name.

    Audit rows keep the name recorded at the time. Merges chain (A into B, then B into C sends A to C). Both names
    are read as a manifest's are (NFC, whitespace collapsed), so a name typed as the manifest wrote it is found;
    returns them as read.
    """
    names = clean_name(alias), clean_name(canonical)
    audit.catalogue.merge_artists(*names)
    return names


def unmerge_artist(audit: AuditStore, name: str) -> tuple[str, str]:
    """Undo ``name``'s merge (read as a manifest's name is): reports and entropy name it apart again; returns it as
    read and the artist it was merged into."""
    name = clean_name(name)
    return name, audit.catalogue.unmerge_artist(name)


def list_artists(audit: AuditStore) -> list[ArtistRow]:
    """Every artist with its canonical name (None when not merged) and number of active works."""
    return audit.catalogue.artists()


@dataclass
class CheckReport:
    """Differences between a collection and the audit DB."""

    collection: str
    points: int
    expected: int
    orphans: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    repaired: bool = False
    coverage: dict[str, int] = field(default_factory=dict)  # space -> active works embedded in it (per the DB)
    vectors: VectorCheck = field(default_factory=VectorCheck)  # stored vectors against their recorded digests
    set_aside: str | None = None  # where a damaged shard was moved by the repair
    layouts: int | None = None  # points with a layout (copy detection's candidates); None: no layout space
    unended_writes: dict[str, str] = field(default_factory=dict)  # see VectorStore.unended_writes (after a repair)

    @property
    def partial_spaces(self) -> list[str]:
        """Spaces that some works of the collection lack (they could never be found there)."""
        return partial_spaces(self.coverage)

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.missing or self.stale or self.partial_spaces or self.vectors.corrupt)


def check(
    audit: AuditStore,
    store: VectorStore,
    repair: bool = False,
    *,
    deep: bool = False,
    embed: Callable[[], vector_check.Embed] | None = None,
) -> CheckReport:
    """Compare the collection's points with the DB's active works embedded in it.

    Orphans: points with no active work (withdrawn, or written by a run that crashed before its DB commit).
    Missing: works recorded as embedded whose point is gone. Stale: point and DB disagree on the image hash, or on
    the work the point names (catalogue, work id, artist, version: a payload rewritten behind the catalogue).
    Corrupt: stored vectors that differ from the digest recorded when they were written (a sample of points;
    ``deep``: all). ``repair`` rewrites corrupt points from their recorded image (with the embedder ``embed``
    builds), deletes orphan and stale points and those it could not rewrite, and forgets the missing, stale and
    dropped embeddings, so the next ``ingest`` of the catalogue embeds those works again; it also ends the write
    runs a killed writer left on a Qdrant server (15 minutes after they last wrote).
    """
    expected = audit.catalogue.expected_points(store.collection)
    actual = store.identities()
    report = CheckReport(store.collection, len(actual), len(expected))
    report.coverage = {space: 0 for space in store.spaces()} | audit.catalogue.space_coverage(store.collection)
    report.layouts = store.count_with(LAYOUT) if LAYOUT in store.sizes() else None
    report.orphans = sorted(actual.keys() - expected.keys())
    report.missing = sorted(expected.keys() - actual.keys())
    report.stale = sorted(p for p in actual.keys() & expected.keys() if not actual[p].agrees_with(expected[p]))
    recorded = audit.catalogue.stored_vectors(store.collection)
    report.vectors = vector_check.compare(store, recorded, actual.keys() & expected.keys() - set(report.stale), deep)
    if repair and not report.clean:
        with store.writing():
            dropped = vector_check.repair(store, recorded, report.vectors, embed) if embed else report.vectors.corrupt
            store.delete(report.orphans + report.stale + dropped)
        audit.catalogue.forget_embeddings(store.collection, report.missing + report.stale + dropped)
        report.repaired = True
    elif repair:
        with store.writing():  # writes nothing: ends the runs killed writers left
            pass
    report.unended_writes = store.unended_writes()
    return report


def _embedder_for(settings: Settings, store: VectorStore) -> vector_check.Embed:
    """The collection's embedder (with its style embedder when the collection has a style space), loaded once."""
    from attribution_audit.embedding.style import style_embedder_for
    from attribution_audit.services.wiring import load_embedder

    embedder = load_embedder(settings.embedder)
    if STYLE in store.spaces():
        style = style_embedder_for(embedder)
        return lambda images: style.embed_both(images)
    return lambda images: (embedder.embed(images), None)


def check_collection(settings: Settings, audit: AuditStore, repair: bool = False, deep: bool = False) -> CheckReport:
    """The ``catalogue check`` use case: :func:`check` on the settings' embedder collection. With ``repair``, a
    damaged embedded shard is set aside and its works forgotten (the next ingest embeds them into a new one)."""
    with vector_store(settings) as store:
        try:
            return check(audit, store, repair=repair, deep=deep, embed=lambda: _embedder_for(settings, store))
        except DamagedShardError as damaged:
            if not repair:
                raise
            expected = audit.catalogue.expected_points(store.collection)
            report = CheckReport(store.collection, 0, len(expected), missing=sorted(expected), repaired=True)
            report.set_aside = str(set_aside(damaged.path))
            audit.catalogue.forget_embeddings(store.collection, report.missing)
            return report
