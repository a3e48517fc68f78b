"""Ingestion: manifest rows -> decoded images -> embeddings -> vector store, then works rows in the audit DB.

The store is written before the database: a crash in between leaves a point without a row, which the next run
finds (no row, or a row with another hash) and writes again under the same deterministic point id. Nothing is
ever duplicated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from attribution_audit.audit.models import Artist, Catalogue, IngestionRun, Work, utcnow
from attribution_audit.catalogue.manifest import ManifestRow, RowFailure, read_csv_manifest
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import ImageError
from attribution_audit.images import LoadedImage, load_image, sha256_file
from attribution_audit.vectorstore import VectorStore, WorkPoint, point_id_for

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingestion run did."""

    run_id: int
    catalogue: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failures: list[RowFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def get_or_create(session: Session, model: type[Artist] | type[Catalogue], name: str) -> Artist | Catalogue:
    """The artist or catalogue row with this name, created if absent."""
    row = session.scalar(select(model).where(model.name == name))
    if row is None:
        row = model(name=name)
        session.add(row)
        session.flush()
    return row


def _batches(rows: Sequence[ManifestRow], size: int) -> Iterator[Sequence[ManifestRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _decode(row: ManifestRow, target_size: int) -> LoadedImage | RowFailure:
    try:
        return load_image(row.path, target_size=target_size)
    except ImageError as exc:
        return RowFailure(row.line, row.work_id, str(exc))


def ingest_manifest(
    manifest_path: str | Path,
    *,
    engine: Engine,
    store: VectorStore,
    embedder: Embedder,
    catalogue: str | None = None,
    requester: str = "unknown",
    batch_size: int = 32,
    workers: int = 2,
) -> IngestReport:
    """Ingest a CSV manifest; re-running an unchanged manifest adds nothing."""
    manifest = read_csv_manifest(manifest_path)
    catalogue_name = catalogue or manifest.path.stem
    with Session(engine) as session, session.begin():
        cat = get_or_create(session, Catalogue, catalogue_name)
        run = IngestionRun(
            catalogue_id=cat.id,
            manifest_path=str(manifest.path.resolve()),
            manifest_sha256=manifest.sha256,
            embedder_fingerprint=embedder.fingerprint,
            requester=requester,
        )
        session.add(run)
        session.flush()
        report = IngestReport(run_id=run.id, catalogue=catalogue_name, failures=list(manifest.failures))
        catalogue_id = cat.id
    store.ensure_collection(embedder.dim)

    todo = _rows_to_embed(engine, store, manifest.rows, catalogue_id, catalogue_name, embedder, report)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(todo), unit="img", desc=f"ingest {catalogue_name}", disable=None) as bar,
    ):
        for batch in _batches(todo, batch_size):
            decoded = list(pool.map(lambda r: _decode(r, 224), batch))
            ok = [(row, img) for row, img in zip(batch, decoded, strict=True) if isinstance(img, LoadedImage)]
            report.failures.extend(d for d in decoded if isinstance(d, RowFailure))
            if ok:
                vectors = embedder.embed([img.image for _, img in ok])
                _write_batch(engine, store, ok, vectors, catalogue_id, catalogue_name, embedder, report)
            bar.update(len(batch))
    store.build_index()
    with Session(engine) as session, session.begin():
        run = session.get_one(IngestionRun, report.run_id)
        run.added, run.updated, run.unchanged = report.added, report.updated, report.unchanged
        run.failed, run.finished_at = report.failed, utcnow()
        run.status = "completed" if not report.failures else "partial"
    return report


def _rows_to_embed(
    engine: Engine,
    store: VectorStore,
    rows: Sequence[ManifestRow],
    catalogue_id: int,
    catalogue_name: str,
    embedder: Embedder,
    report: IngestReport,
) -> list[ManifestRow]:
    """Rows whose image is new or changed, or whose point is missing from the store; counts the unchanged."""
    with Session(engine) as session:
        known = {
            w.work_id: (w.image_sha256, w.embedder_fingerprint)
            for w in session.scalars(select(Work).where(Work.catalogue_id == catalogue_id))
        }
    todo: list[ManifestRow] = []
    for batch in _batches(rows, 1000):
        present = store.existing_ids([point_id_for(catalogue_name, r.work_id) for r in batch])
        for row in batch:
            try:
                digest = sha256_file(row.path) if row.work_id in known else None
            except OSError as exc:
                report.failures.append(RowFailure(row.line, row.work_id, f"{row.path}: {exc.strerror}"))
                continue
            same = known.get(row.work_id) == (digest, embedder.fingerprint)
            if same and point_id_for(catalogue_name, row.work_id) in present:
                report.unchanged += 1
            else:
                todo.append(row)
    return todo


def _write_batch(
    engine: Engine,
    store: VectorStore,
    items: Sequence[tuple[ManifestRow, LoadedImage]],
    vectors: object,
    catalogue_id: int,
    catalogue_name: str,
    embedder: Embedder,
    report: IngestReport,
) -> None:
    points = [
        WorkPoint(
            point_id=point_id_for(catalogue_name, row.work_id),
            vector=vector,
            payload={
                "work_id": row.work_id,
                "artist": row.artist,
                "title": row.title,
                "catalogue": catalogue_name,
                "image_sha256": img.sha256,
                **row.extra,
            },
        )
        for (row, img), vector in zip(items, vectors, strict=True)  # type: ignore[call-overload]
    ]
    store.upsert(points)
    with Session(engine) as session, session.begin():
        existing = {
            w.work_id: w
            for w in session.scalars(
                select(Work).where(
                    Work.catalogue_id == catalogue_id, Work.work_id.in_([row.work_id for row, _ in items])
                )
            )
        }
        for (row, img), point in zip(items, points, strict=True):
            artist = get_or_create(session, Artist, row.artist)
            work = existing.get(row.work_id)
            values = {
                "artist_id": artist.id,
                "title": row.title,
                "image_path": str(row.path),
                "image_sha256": img.sha256,
                "point_id": point.point_id,
                "embedder_fingerprint": embedder.fingerprint,
                "payload": row.extra,
            }
            if work is None:
                session.add(Work(catalogue_id=catalogue_id, work_id=row.work_id, **values))
                report.added += 1
            else:
                for key, value in values.items():
                    setattr(work, key, value)
                work.updated_at = utcnow()
                report.updated += 1
