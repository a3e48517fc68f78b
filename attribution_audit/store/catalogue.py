"""Catalogues, artists and works in the audit database: what ingestion writes, what the lifecycle commands change,
and what the consistency check compares with the vector store. Every query on those tables lives here."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from attribution_audit.domain.points import PointIdentity
from attribution_audit.errors import ConflictError, NotFoundError
from attribution_audit.store import runs
from attribution_audit.store.database import insert_or_ignore, read_scope, session_scope, upsert
from attribution_audit.store.models import (
    Artist,
    Catalogue,
    IngestionRun,
    Work,
    WorkEmbedding,
    WorkVersion,
    utcnow,
)

TABLE = IngestionRun.__tablename__
ID_BATCH = 500  # ids per IN (...) list


class WorksRecordedMeanwhile(ConflictError):
    """New works of a batch that another ingest of the catalogue recorded after this one read the catalogue."""


@dataclass(frozen=True)
class KnownWork:
    """What the audit DB knows of a work, and of its embedding in one collection (``None`` fields: not embedded)."""

    pk: int
    work_id: str
    artist: str
    title: str | None
    payload: dict[str, Any]
    image_sha256: str
    version: int
    withdrawn: bool
    embedded_sha256: str | None = None
    embedded_fingerprint: str | None = None
    embedded_spaces: tuple[str, ...] = ()
    embedded_version: int | None = None


@dataclass(frozen=True)
class WorkRecord:
    """A work as one ingestion run writes it (its vector is already in the store under ``point_id``): ``pk`` is its
    row when the catalogue already has it (from :meth:`CatalogueRepository.known_works`), None for a new work."""

    work_id: str
    artist: str
    title: str | None
    image_path: str
    image_sha256: str
    payload: dict[str, Any]
    version: int
    point_id: str
    vector_digest: str | None = None  # sha256 of the vectors written (domain.points.vector_digest)
    pk: int | None = None
    new_version: bool = True  # its image differs from the row's (always true of a new work)


@dataclass(frozen=True)
class StoredVector:
    """What the DB recorded of a point: the digest of its vectors (None before migration 0007), and the image they
    were computed from (to embed it again)."""

    digest: str | None
    image_path: str
    image_sha256: str


@dataclass(frozen=True)
class WrittenWorks:
    """What :meth:`CatalogueRepository.record_works` did."""

    added: int
    updated: int
    same_image: list[tuple[str, str]]  # (work_id, another active work_id of the catalogue with that image)


@dataclass(frozen=True)
class ArtistRow:
    name: str
    canonical: str | None
    active_works: int


@dataclass(frozen=True)
class RunCounts:
    """The final counts of an ingestion run."""

    added: int
    updated: int
    unchanged: int
    withdrawn: int
    failed: int
    failures_path: str | None
    status: str


class CatalogueRepository:
    """Catalogues, artists, works, their versions and embeddings, and ingestion runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- ingestion -------------------------------------------------------------------------------------------
    def start_ingestion(
        self,
        catalogue: str,
        *,
        source_format: str,
        manifest_path: str,
        manifest_sha256: str,
        collection: str,
        embedder_fingerprint: str,
        requester: str,
    ) -> tuple[int, int]:
        """Create the catalogue if new and an ingestion run, whose lease this process holds until
        :meth:`finish_ingestion` (the runs of killed processes are marked ``interrupted`` first); (run id, catalogue
        id)."""
        runs.sweep(self.engine, TABLE)
        with session_scope(self.engine) as session:
            catalogue_id = _catalogue_created(session, catalogue)
            run = IngestionRun(
                catalogue_id=catalogue_id,
                source_format=source_format,
                manifest_path=manifest_path,
                manifest_sha256=manifest_sha256,
                collection=collection,
                embedder_fingerprint=embedder_fingerprint,
                requester=requester,
            )
            session.add(run)
            session.flush()
            runs.hold(self.engine, TABLE, run.id)
            return run.id, catalogue_id

    def finish_ingestion(self, run_id: int, counts: RunCounts) -> None:
        with session_scope(self.engine) as session:
            run = session.get_one(IngestionRun, run_id)
            run.added, run.updated, run.unchanged = counts.added, counts.updated, counts.unchanged
            run.withdrawn, run.failed, run.finished_at = counts.withdrawn, counts.failed, utcnow()
            run.failures_path, run.status = counts.failures_path, counts.status
        runs.release(self.engine, TABLE, run_id)

    def unknown_work_ids(self, work_ids: Collection[str]) -> set[str]:
        """The ids among ``work_ids`` that no catalogue holds (withdrawn works are held)."""
        wanted, found = sorted(set(work_ids)), set[str]()
        with read_scope(self.engine) as session:
            for start in range(0, len(wanted), ID_BATCH):
                batch = wanted[start : start + ID_BATCH]
                found.update(session.scalars(select(Work.work_id).where(Work.work_id.in_(batch)).distinct()))
        return set(wanted) - found

    def known_works(self, catalogue_id: int, collection: str, work_ids: Sequence[str]) -> dict[str, KnownWork]:
        """The catalogue's works among ``work_ids``, with their embedding in ``collection`` (one query)."""
        query = (
            select(Work, WorkEmbedding, Artist.name)
            .join(Artist, Artist.id == Work.artist_id)
            .outerjoin(WorkEmbedding, (WorkEmbedding.work_pk == Work.id) & (WorkEmbedding.collection == collection))
            .where(Work.catalogue_id == catalogue_id, Work.work_id.in_(list(work_ids)))
        )
        with read_scope(self.engine) as session:
            return {
                work.work_id: KnownWork(
                    pk=work.id,
                    work_id=work.work_id,
                    artist=artist,
                    title=work.title,
                    payload=work.payload,
                    image_sha256=work.image_sha256,
                    version=work.version,
                    withdrawn=work.withdrawn_at is not None,
                    embedded_sha256=embedding.image_sha256 if embedding else None,
                    embedded_fingerprint=embedding.embedder_fingerprint if embedding else None,
                    embedded_spaces=tuple(embedding.spaces.split(",")) if embedding else (),
                    embedded_version=embedding.version if embedding else None,
                )
                for work, embedding, artist in session.execute(query)
            }

    def record_works(
        self,
        catalogue_id: int,
        collection: str,
        *,
        run_id: int,
        embedder_fingerprint: str,
        spaces: str,
        works: Sequence[WorkRecord],
    ) -> WrittenWorks:
        """Write works, their new versions and their embeddings in ``collection`` in one transaction, a few bulk
        statements per batch whatever its size (artists inserted if new, new works inserted, known ones updated by
        primary key, versions inserted, embeddings upserted); the same-image check is one indexed query."""
        if not works:
            return WrittenWorks(0, 0, [])
        now = utcnow()
        with session_scope(self.engine) as session:
            same_image = _same_image(session, catalogue_id, works)
            artists = _artist_ids(session, {w.artist for w in works})

            def columns(w: WorkRecord) -> dict[str, Any]:
                return {
                    "artist_id": artists[w.artist],
                    "title": w.title,
                    "image_path": w.image_path,
                    "image_sha256": w.image_sha256,
                    "version": w.version,
                    "payload": w.payload,
                    "updated_at": now,
                }

            pks = {w.work_id: w.pk for w in works if w.pk is not None}
            if len(pks) < len(works):
                try:
                    created = session.execute(
                        insert(Work).returning(Work.work_id, Work.id),  # returned with their key: no order needed
                        [
                            {"catalogue_id": catalogue_id, "work_id": w.work_id, "created_at": now, **columns(w)}
                            for w in works
                            if w.pk is None
                        ],
                    ).all()
                except IntegrityError:
                    raise WorksRecordedMeanwhile(
                        "another ingest of this catalogue recorded some of these works since they were read; nothing "
                        "of this batch was recorded: run the ingest again (it adds only what is still missing)"
                    ) from None
                pks.update({work_id: pk for work_id, pk in created})
            if any(w.pk is not None for w in works):
                session.execute(update(Work), [{"id": w.pk, **columns(w)} for w in works if w.pk is not None])
            versions = [
                {
                    "work_pk": pks[w.work_id],
                    "version": w.version,
                    "image_path": w.image_path,
                    "image_sha256": w.image_sha256,
                    "ingestion_run_id": run_id,
                    "created_at": now,
                }
                for w in works
                if w.new_version
            ]
            if versions:
                session.execute(insert(WorkVersion), versions)
            embedding = {
                "version",
                "point_id",
                "image_sha256",
                "embedder_fingerprint",
                "spaces",
                "updated_at",
                "vector_digest",
            }
            session.execute(
                upsert(session, WorkEmbedding, ("work_pk", "collection"), sorted(embedding)),
                [
                    {
                        "work_pk": pks[w.work_id],
                        "collection": collection,
                        "point_id": w.point_id,
                        "version": w.version,
                        "image_sha256": w.image_sha256,
                        "embedder_fingerprint": embedder_fingerprint,
                        "spaces": spaces,
                        "updated_at": now,
                        "vector_digest": w.vector_digest,
                    }
                    for w in works
                ],
            )
        added = sum(w.pk is None for w in works)
        return WrittenWorks(added, len(works) - added, same_image)

    def sources_of(self, catalogue: str) -> list[str]:
        """The source paths a catalogue was ingested from, oldest first (empty for an unknown catalogue)."""
        query = (
            select(IngestionRun.manifest_path)
            .join(Catalogue, Catalogue.id == IngestionRun.catalogue_id)
            .where(Catalogue.name == catalogue)
            .group_by(IngestionRun.manifest_path)
            .order_by(func.min(IngestionRun.id))
        )
        with read_scope(self.engine) as session:
            return list(session.scalars(query))

    def space_coverage(self, collection: str) -> dict[str, int]:
        """Active works embedded in ``collection``, per space their embedding covers (``content`` = all of them)."""
        query = (
            select(WorkEmbedding.spaces, func.count())
            .join(Work, Work.id == WorkEmbedding.work_pk)
            .where(WorkEmbedding.collection == collection, Work.withdrawn_at.is_(None))
            .group_by(WorkEmbedding.spaces)
        )
        coverage: dict[str, int] = {"content": 0}
        with read_scope(self.engine) as session:
            for spaces, count in session.execute(query):
                for space in spaces.split(","):
                    coverage[space] = coverage.get(space, 0) + count
        return coverage

    def artists_in(self, collection: str, as_of: datetime | None = None) -> set[str]:
        """The names (as ingested, not merged) of the artists with an active work embedded in ``collection``; with
        ``as_of``, of those whose work was ingested by then and not withdrawn before (the catalogue a request saw)."""
        active = (
            Work.withdrawn_at.is_(None)
            if as_of is None
            else (Work.created_at <= as_of) & (Work.withdrawn_at.is_(None) | (Work.withdrawn_at > as_of))
        )
        query = (
            select(Artist.name)
            .join(Work, Work.artist_id == Artist.id)
            .join(WorkEmbedding, WorkEmbedding.work_pk == Work.id)
            .where(WorkEmbedding.collection == collection, active)
            .distinct()
        )
        with read_scope(self.engine) as session:
            return set(session.scalars(query))

    # -- lifecycle -------------------------------------------------------------------------------------------
    def collections_of(self, catalogue: str, work_ids: Sequence[str]) -> list[str]:
        """The collections that hold a point of any of these works (nothing is marked: see :meth:`withdraw`);
        NotFoundError naming the works the catalogue does not hold."""
        with read_scope(self.engine) as session:
            works = [work.id for work in _works_named(session, catalogue, work_ids)]
            held = select(WorkEmbedding.collection).where(WorkEmbedding.work_pk.in_(works)).distinct()
            return sorted(session.scalars(held))

    def withdraw(self, catalogue: str, work_ids: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
        """Mark works withdrawn (kept for old audit records); their point ids per collection, to delete next (those
        of works withdrawn before too: a withdrawal that stopped before deleting them), and the ids of the works that
        were withdrawn already."""
        with session_scope(self.engine) as session:
            works = _works_named(session, catalogue, work_ids)
            already = sorted(w.work_id for w in works if w.withdrawn_at is not None)
            for work in works:
                work.withdrawn_at = work.withdrawn_at or utcnow()
            points: dict[str, list[str]] = {}
            embedded = select(WorkEmbedding).where(WorkEmbedding.work_pk.in_([w.id for w in works]))
            for embedding in session.scalars(embedded):
                points.setdefault(embedding.collection, []).append(embedding.point_id)
        return points, already

    def merge_artists(self, alias: str, canonical: str) -> None:
        """Record that ``alias`` is another spelling of ``canonical`` (merges chain: A into B, then B into C)."""
        with session_scope(self.engine) as session:
            artists = {a.name: a for a in session.scalars(select(Artist).where(Artist.name.in_([alias, canonical])))}
            for name in (alias, canonical):
                if name not in artists:
                    raise NotFoundError(
                        f"unknown artist {name!r}; `attribution-audit artists list` shows the known names"
                    )
            source, target = artists[alias], artists[canonical]
            root = target
            while root.canonical_id is not None:
                root = session.get_one(Artist, root.canonical_id)
            if root.id == source.id:
                raise ConflictError(f"{canonical!r} is already merged into {alias!r}; merging back would make a cycle")
            source.canonical_id, source.merged_at = root.id, utcnow()
            for follower in session.scalars(select(Artist).where(Artist.canonical_id == source.id)):
                follower.canonical_id = root.id

    def unmerge_artist(self, name: str) -> str:
        """Make ``name`` an artist of its own again (undo its merge); returns the artist it was merged into. Names
        merged into ``name`` before its own merge were sent on to that artist then, and stay there."""
        with session_scope(self.engine) as session:
            artist = session.scalars(select(Artist).where(Artist.name == name)).one_or_none()
            if artist is None:
                raise NotFoundError(f"unknown artist {name!r}; `attribution-audit artists list` shows the known names")
            if artist.canonical_id is None:
                raise ConflictError(f"{name!r} is not merged into another artist; nothing to undo")
            canonical = session.get_one(Artist, artist.canonical_id).name
            artist.canonical_id, artist.merged_at = None, None
            return canonical

    def artists(self) -> list[ArtistRow]:
        """Every artist with its canonical name (None when not merged) and number of active works."""
        with read_scope(self.engine) as session:
            names = dict(session.execute(select(Artist.id, Artist.name)).all())
            active = select(Work.artist_id, func.count()).where(Work.withdrawn_at.is_(None)).group_by(Work.artist_id)
            counts = dict(session.execute(active).all())
            return [
                ArtistRow(a.name, names.get(a.canonical_id) if a.canonical_id else None, counts.get(a.id, 0))
                for a in session.scalars(select(Artist).order_by(Artist.name))
            ]

    def canonical_artists(self) -> dict[str, str]:
        """Alias name -> canonical name, for every merged artist (merges can chain: A -> B -> C gives A -> C)."""
        with read_scope(self.engine) as session:
            rows = session.execute(select(Artist.id, Artist.name, Artist.canonical_id)).all()
        by_id = {row.id: row for row in rows}
        mapping = {}
        for row in rows:
            current, seen = row, set()
            while current.canonical_id is not None and current.id not in seen:
                seen.add(current.id)
                current = by_id[current.canonical_id]
            if current.id != row.id:
                mapping[row.name] = current.name
        return mapping

    # -- consistency with the vector store ---------------------------------------------------------------------
    def expected_points(self, collection: str) -> dict[str, PointIdentity]:
        """Point id -> the work embedded there (image sha256, catalogue, work id, artist, version as recorded) of
        every active work embedded in ``collection``."""
        query = (
            select(
                WorkEmbedding.point_id,
                WorkEmbedding.image_sha256,
                Catalogue.name,
                Work.work_id,
                Artist.name,
                WorkEmbedding.version,
            )
            .join(Work, Work.id == WorkEmbedding.work_pk)
            .join(Catalogue, Catalogue.id == Work.catalogue_id)
            .join(Artist, Artist.id == Work.artist_id)
            .where(WorkEmbedding.collection == collection, Work.withdrawn_at.is_(None))
        )
        with read_scope(self.engine) as session:
            return {
                point: PointIdentity(image, catalogue, work_id, artist, str(version))
                for point, image, catalogue, work_id, artist, version in session.execute(query)
            }

    def image_paths(self, collection: str, point_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Point id -> (image file, sha256 of the image embedded) of the works embedded in ``collection`` under
        those points, in the order the works were first added to a catalogue (copy checks)."""
        query = (
            select(WorkEmbedding.point_id, Work.image_path, WorkEmbedding.image_sha256)
            .join(Work, Work.id == WorkEmbedding.work_pk)
            .where(WorkEmbedding.collection == collection, WorkEmbedding.point_id.in_(list(point_ids)))
            .order_by(Work.id)
        )
        with read_scope(self.engine) as session:
            return {point: (path, digest) for point, path, digest in session.execute(query)}

    def collection_images(self, collection: str) -> dict[str, tuple[str, str]]:
        """Point id -> (image file, sha256 of the image embedded) of every work embedded in ``collection``, as
        :meth:`image_paths` of all its points, in one query without an ``IN`` list (any catalogue size)."""
        query = (
            select(WorkEmbedding.point_id, Work.image_path, WorkEmbedding.image_sha256)
            .join(Work, Work.id == WorkEmbedding.work_pk)
            .where(WorkEmbedding.collection == collection)
            .order_by(Work.id)
        )
        with read_scope(self.engine) as session:
            return {point: (path, digest) for point, path, digest in session.execute(query)}

    def stored_vectors(self, collection: str) -> dict[str, StoredVector]:
        """Point id -> what the DB recorded of the vectors of every active work embedded in ``collection``."""
        query = (
            select(WorkEmbedding.point_id, WorkEmbedding.vector_digest, Work.image_path, WorkEmbedding.image_sha256)
            .join(Work, Work.id == WorkEmbedding.work_pk)
            .where(WorkEmbedding.collection == collection, Work.withdrawn_at.is_(None))
        )
        with read_scope(self.engine) as session:
            return {point: StoredVector(digest, path, sha) for point, digest, path, sha in session.execute(query)}

    def forget_embeddings(self, collection: str, point_ids: Sequence[str]) -> None:
        """Drop the embedding rows of these points, so the next ingest embeds their works again."""
        if not point_ids:
            return
        with session_scope(self.engine) as session:
            session.execute(
                delete(WorkEmbedding).where(
                    WorkEmbedding.collection == collection, WorkEmbedding.point_id.in_(list(point_ids))
                )
            )


def _catalogue_created(session: Session, name: str) -> int:
    """The id of catalogue ``name``, creating it if new (a concurrent ingest creating it too is no conflict)."""
    session.execute(insert_or_ignore(session, Catalogue, ("name",)), {"name": name, "created_at": utcnow()})
    return session.scalars(select(Catalogue.id).where(Catalogue.name == name)).one()


def _artist_ids(session: Session, names: set[str]) -> dict[str, int]:
    """Ids of the named artists, creating the missing ones: one ``INSERT ... ON CONFLICT DO NOTHING`` (in name order,
    so that concurrent ingests sharing artists wait for each other instead of failing or deadlocking) and one
    SELECT, whatever the number of names."""
    now = utcnow()
    insert_missing = insert_or_ignore(session, Artist, ("name",))
    session.execute(insert_missing, [{"name": name, "created_at": now} for name in sorted(names)])
    return {name: pk for name, pk in session.execute(select(Artist.name, Artist.id).where(Artist.name.in_(names)))}


def _same_image(session: Session, catalogue_id: int, works: Sequence[WorkRecord]) -> list[tuple[str, str]]:
    """(work_id, another active work_id of the catalogue with its image) for each work that has such a twin: among
    the rows written before (one query through the (catalogue, image) index; a row these works rewrite counts with
    its new image) and the works before it in ``works``."""
    new_image = {w.work_id: w.image_sha256 for w in works}
    holders: dict[str, list[str]] = {}
    query = select(Work.image_sha256, Work.work_id).where(
        Work.catalogue_id == catalogue_id,
        Work.image_sha256.in_(set(new_image.values())),
        Work.withdrawn_at.is_(None),
    )
    for digest, work_id in session.execute(query):
        if new_image.get(work_id, digest) == digest:
            holders.setdefault(digest, []).append(work_id)
    twins = []
    for work in works:
        same = holders.setdefault(work.image_sha256, [])
        others = [other for other in same if other != work.work_id]
        if others:
            twins.append((work.work_id, others[0]))
        if work.work_id not in same:
            same.append(work.work_id)
    return twins


def _works_named(session: Session, catalogue: str, work_ids: Sequence[str]) -> Sequence[Work]:
    """The catalogue's works of these ids; NotFoundError naming those it does not hold (nothing withdrawn)."""
    catalogue_id = _catalogue_id(session, catalogue)
    works = session.scalars(
        select(Work).where(Work.catalogue_id == catalogue_id, Work.work_id.in_(list(work_ids)))
    ).all()
    missing = sorted(set(work_ids) - {w.work_id for w in works})
    if missing:
        raise NotFoundError(f"catalogue {catalogue!r} has no work {', '.join(map(repr, missing))}; nothing withdrawn")
    return works


def _catalogue_id(session: Session, name: str) -> int:
    catalogue = session.scalar(select(Catalogue).where(Catalogue.name == name))
    if catalogue is None:
        known = ", ".join(session.scalars(select(Catalogue.name))) or "none yet"
        raise NotFoundError(f"unknown catalogue {name!r} (known: {known}); pass --catalogue with one of them")
    return catalogue.id
