"""Catalogue lifecycle: withdraw works, merge artist aliases, and check that the vector store and the audit DB agree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from attribution_audit.audit.db import session_scope
from attribution_audit.audit.models import Artist, Catalogue, Work, WorkEmbedding, utcnow
from attribution_audit.errors import ConflictError, NotFoundError
from attribution_audit.vectorstore import VectorStore


def _catalogue_id(session: Session, name: str) -> int:
    catalogue = session.scalar(select(Catalogue).where(Catalogue.name == name))
    if catalogue is None:
        known = ", ".join(session.scalars(select(Catalogue.name))) or "none yet"
        raise NotFoundError(f"unknown catalogue {name!r} (known: {known}); pass --catalogue with one of them")
    return catalogue.id


def withdraw(engine: Engine, catalogue: str, work_ids: Sequence[str]) -> dict[str, list[str]]:
    """Mark works withdrawn (kept for old audit records) and return their point ids per collection.

    The caller then deletes those points from each collection. The database is marked first, so a crash in
    between leaves only points that ``check`` reports as orphans and ``--repair`` deletes.
    """
    with session_scope(engine) as session:
        catalogue_id = _catalogue_id(session, catalogue)
        works = session.scalars(
            select(Work).where(Work.catalogue_id == catalogue_id, Work.work_id.in_(list(work_ids)))
        ).all()
        missing = sorted(set(work_ids) - {w.work_id for w in works})
        if missing:
            raise NotFoundError(
                f"catalogue {catalogue!r} has no work {', '.join(map(repr, missing))}; nothing withdrawn"
            )
        for work in works:
            work.withdrawn_at = work.withdrawn_at or utcnow()
        points: dict[str, list[str]] = {}
        for embedding in session.scalars(select(WorkEmbedding).where(WorkEmbedding.work_pk.in_([w.id for w in works]))):
            points.setdefault(embedding.collection, []).append(embedding.point_id)
    return points


def merge_artists(engine: Engine, alias: str, canonical: str) -> None:
    """Record that ``alias`` is another spelling of ``canonical``; reports and entropy then use the canonical name.

    Audit rows keep the name recorded at the time. Merges chain (A into B, then B into C sends A to C).
    """
    with session_scope(engine) as session:
        artists = {a.name: a for a in session.scalars(select(Artist).where(Artist.name.in_([alias, canonical])))}
        for name in (alias, canonical):
            if name not in artists:
                raise NotFoundError(f"unknown artist {name!r}; `attribution-audit artists list` shows the known names")
        source, target = artists[alias], artists[canonical]
        root = target
        while root.canonical_id is not None:
            root = session.get_one(Artist, root.canonical_id)
        if root.id == source.id:
            raise ConflictError(f"{canonical!r} is already merged into {alias!r}; merging back would make a cycle")
        source.canonical_id, source.merged_at = root.id, utcnow()
        for follower in session.scalars(select(Artist).where(Artist.canonical_id == source.id)):
            follower.canonical_id = root.id


def list_artists(engine: Engine) -> list[tuple[str, str | None, int]]:
    """(name, canonical name or None, number of active works) for every artist."""
    from sqlalchemy import func

    with Session(engine) as session:
        names = dict(session.execute(select(Artist.id, Artist.name)).all())
        counts = dict(
            session.execute(
                select(Work.artist_id, func.count()).where(Work.withdrawn_at.is_(None)).group_by(Work.artist_id)
            ).all()
        )
        return [
            (a.name, names.get(a.canonical_id) if a.canonical_id else None, counts.get(a.id, 0))
            for a in session.scalars(select(Artist).order_by(Artist.name))
        ]


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

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.missing or self.stale)


def check(engine: Engine, store: VectorStore, repair: bool = False) -> CheckReport:
    """Compare the collection's points with the DB's active works embedded in it.

    Orphans: points with no active work (withdrawn, or written by a run that crashed before its DB commit).
    Missing: works recorded as embedded whose point is gone. Stale: point and DB disagree on the image hash.
    ``repair`` deletes orphan and stale points and forgets the missing/stale embeddings, so the next ``ingest``
    of the catalogue embeds those works again.
    """
    with Session(engine) as session:
        expected = dict(
            session.execute(
                select(WorkEmbedding.point_id, WorkEmbedding.image_sha256)
                .join(Work, Work.id == WorkEmbedding.work_pk)
                .where(WorkEmbedding.collection == store.collection, Work.withdrawn_at.is_(None))
            ).all()
        )
    actual = store.image_hashes()
    report = CheckReport(store.collection, len(actual), len(expected))
    report.orphans = sorted(actual.keys() - expected.keys())
    report.missing = sorted(expected.keys() - actual.keys())
    report.stale = sorted(p for p in actual.keys() & expected.keys() if actual[p] != expected[p])
    if repair and not report.clean:
        store.delete(report.orphans + report.stale)
        forget = report.missing + report.stale
        if forget:
            with session_scope(engine) as session:
                session.execute(
                    delete(WorkEmbedding).where(
                        WorkEmbedding.collection == store.collection, WorkEmbedding.point_id.in_(forget)
                    )
                )
        report.repaired = True
    return report
