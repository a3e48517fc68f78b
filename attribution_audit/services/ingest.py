"""Ingestion: source rows -> decoded images (worker threads) -> embeddings (batches) -> vector store -> audit DB.

Streaming and bounded: rows are taken in chunks, so memory does not grow with the catalogue (apart from one
work id string per row for the duplicate check). The store is written before the database: a crash in between
leaves a point without its row, which the next run finds (no row, or a row with another hash) and writes again
under the same deterministic point id, so nothing is duplicated and ``catalogue check`` finds no orphan.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.points import PointIdentity, vector_digest
from attribution_audit.domain.spaces import partial_spaces
from attribution_audit.embedding import known_dim
from attribution_audit.embedding.base import Embedder
from attribution_audit.embedding.layout import LAYOUT_DIM, layout_vector
from attribution_audit.errors import ConflictError, ImageError, ManifestError, VectorStoreError
from attribution_audit.reporting.tables import csv_cell
from attribution_audit.sources.files import csv_rows
from attribution_audit.sources.images import LoadedImage, load_image, printable_path, sha256_file
from attribution_audit.sources.manifest import (
    CsvSource,
    FolderSource,
    JsonlSource,
    ManifestRow,
    RowFailure,
    Source,
    WangSource,
)
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import KnownWork, RunCounts, WorkRecord, WorksRecordedMeanwhile
from attribution_audit.store.exact import cached_space, update_cache
from attribution_audit.store.vectors import VectorStore, WorkPoint, point_id_for
from attribution_audit.store.vectors.base import CONTENT, LAYOUT, STYLE

if TYPE_CHECKING:
    from PIL import Image

    from attribution_audit.embedding.style import StyleEmbedder

log = logging.getLogger(__name__)
CHUNK_ROWS = 512
UPSERT_ATTEMPTS = 3
NO_VECTOR = "no precomputed vector for this row"
T = TypeVar("T")


@dataclass
class IngestReport:
    """What one ingestion run did."""

    run_id: int
    catalogue: str
    added: int = 0
    updated: int = 0
    new_images: int = 0  # of the updated works, those whose image changed (the others: metadata, spaces, embedder)
    unchanged: int = 0
    withdrawn: int = 0
    failures: list[RowFailure] = field(default_factory=list)
    failures_path: Path | None = None
    labelled_queries: int = 0
    same_image: list[tuple[str, str]] = field(default_factory=list)  # (work_id, earlier work_id with that image)
    layouts_added: int = 0  # unchanged works stored before layouts existed, given their layout (embedding.layout)
    seconds: float = 0.0
    note: str | None = None  # what the user should know about where the vectors went
    artist_changes: list[tuple[str, str, str]] = field(default_factory=list)  # (work_id, old artist, new artist)

    @property
    def failed(self) -> int:
        return len(self.failures)


@dataclass(frozen=True)
class Prepared:
    """A row ready to write: its vector(s) and the image hash they were computed from."""

    row: ManifestRow
    sha256: str
    vector: np.ndarray
    style: np.ndarray | None = None
    layout: np.ndarray | None = None


VectorLookup = Callable[[ManifestRow], np.ndarray | None]
Progress = Callable[[int, int | None], None]  # (rows done, rows in all or None): called after each batch


class _Counter:
    """Rows done so far, reported to a progress callback."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress, self.total, self.done = progress, total, 0
        if progress is not None:
            progress(0, total)

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.progress is not None and rows:
            self.progress(self.done, self.total)


def default_catalogue_name(path: Path) -> str:
    """The source's own name (``.`` and trailing slashes resolved): ``catalogue.csv`` -> ``catalogue``."""
    name = path.resolve().stem
    if not name:
        raise ManifestError(f"{path}: cannot name a catalogue after it; pass --catalogue NAME")
    return name


_UNSAFE_IN_FILE_NAME = re.compile(r"[^\w.-]", re.ASCII)
MAX_CATALOGUE_NAME = 200  # characters: what the audit DB keeps (PostgreSQL refuses more, SQLite would keep more)


def _catalogue_name(catalogue: str | None, path: Path) -> str:
    """``catalogue``, else the source's own name; ValueError naming it unless it is 1 to 200 printable characters
    (checked before anything is created)."""
    name = catalogue or default_catalogue_name(path)
    if len(name) > MAX_CATALOGUE_NAME or not name.isprintable():
        shown = name if len(name) <= 80 else f"{name[:80]}..."
        origin = "" if catalogue else " (the source's file name)"
        raise ValueError(
            f"catalogue name {shown!r}{origin}: 1 to {MAX_CATALOGUE_NAME} printable characters; pass --catalogue NAME"
        )
    return name


def _failures_file(data_dir: Path, name: str) -> Path:
    """The default failures file of catalogue ``name``: timestamped, in the data dir, its name reduced to letters,
    digits, ``.``, ``_`` and ``-`` (a ``/`` in the catalogue's name is no folder, a long non-ASCII one fits the file
    system's 255 bytes)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return data_dir / "failures" / f"{_UNSAFE_IN_FILE_NAME.sub('_', name)}-{stamp}.csv"


def row_total(source: Source) -> int:
    """How many rows ``source`` yields, for progress, read without validating them (a CSV's records, a JSONL's
    non-blank lines, a folder's images): the full validating pass over the manifest happens once, in the ingest."""
    if isinstance(source, CsvSource):
        with source.path.open(encoding="utf-8-sig", newline="") as handle:
            return max(sum(1 for record in csv_rows(csv.reader(handle)) if record) - 1, 0)
    if isinstance(source, JsonlSource):
        with source.path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    if isinstance(source, FolderSource):
        return len(source.files)
    return sum(1 for _ in source)


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def with_retries(action: Callable[[], None], attempts: int = UPSERT_ATTEMPTS, pause: float = 0.5) -> None:
    """Run a store write, retrying transient store errors with a growing pause."""
    for attempt in range(1, attempts + 1):
        try:
            action()
            return
        except VectorStoreError:
            if attempt == attempts:
                raise
            log.warning("store write failed (attempt %d of %d); retrying", attempt, attempts)
            time.sleep(pause * attempt)


class Ingestion:
    """One ingestion run of one source into one collection. Use :func:`ingest_source`."""

    def __init__(
        self,
        audit: AuditStore,
        store: VectorStore,
        embedder_fingerprint: str,
        report: IngestReport,
        catalogue_id: int,
        spaces: str = CONTENT,
        vectors: VectorLookup | None = None,
        allow_artist_changes: bool = False,
    ) -> None:
        self.audit = audit
        self.store = store
        self.fingerprint = embedder_fingerprint
        self.report = report
        self.catalogue_id = catalogue_id
        self.spaces = spaces
        self.vectors = vectors
        self.allow_artist_changes = allow_artist_changes
        self.known: dict[str, KnownWork] = {}  # the current chunk's works the catalogue has (read once by classify)
        self.written: list[str] = []  # point ids upserted by this run (to bring the exact caches up to date)
        self.without_layout: list[ManifestRow] = []  # the current chunk's unchanged works whose point has no layout

    def digest(self, row: ManifestRow) -> str:
        """The content hash of a row's work: its image file, or for a precomputed vector whose image is not on this
        machine, the vector's bytes."""
        if self.vectors is not None and not row.path.is_file():
            vector = self.vectors(row)
            if vector is not None:
                return vector_digest(vector)  # stand-in content hash: the image is not on this machine
        return sha256_file(row.path)

    def _sharing_point(self, point_id: str, point: PointIdentity | None, row: ManifestRow) -> str | None:
        """Why ``row`` may not be written to ``point``, its work's point (of id ``point_id``): another catalogue's
        work holds it, its names joining into the same text at a '/' ('a/b' + 'c' and 'a' + 'b/c'), which the upsert
        would replace. None otherwise (a payload rewritten behind the catalogue names a work of another point:
        rewritten)."""
        name = self.report.catalogue
        if point is None or (point.catalogue, point.work_id) == (name, row.work_id):
            return None
        if point_id_for(point.catalogue, point.work_id) != point_id:
            return None
        return (
            f"work {row.work_id!r} of catalogue {name!r} would take the point of work {point.work_id!r} of catalogue "
            f"{point.catalogue!r} (the two names join into the same text at a '/'); rename the work or ingest it "
            "under another --catalogue"
        )

    def classify(self, rows: Sequence[ManifestRow]) -> list[tuple[ManifestRow, str | None]]:
        """Rows to (re)embed with their known image hash; counts the unchanged and the withdrawn."""
        name = self.report.catalogue
        known = self.audit.catalogue.known_works(self.catalogue_id, self.store.collection, [r.work_id for r in rows])
        self.known = known
        point_ids = [point_id_for(name, r.work_id) for r in rows]
        stored = self.store.identities(point_ids)
        todo: list[tuple[ManifestRow, str | None]] = []
        unchanged: list[ManifestRow] = []
        for row, point_id in zip(rows, point_ids, strict=True):
            work = known.get(row.work_id)
            if work is not None and work.withdrawn:
                self.report.withdrawn += 1
                continue
            point = stored.get(point_id)
            if (other := self._sharing_point(point_id, point, row)) is not None:
                self.report.failures.append(RowFailure(row.line, row.work_id, other))
                continue
            if work is not None and work.artist != row.artist:
                if not self.allow_artist_changes:
                    self.report.failures.append(
                        RowFailure(
                            row.line,
                            row.work_id,
                            f"work {row.work_id!r} of catalogue {name!r} is by {work.artist!r}, this row says "
                            f"{row.artist!r}: fix the row, use another --catalogue, or pass --allow-artist-changes "
                            "if the manifest corrects the artist",
                        )
                    )
                    continue
                self.report.artist_changes.append((row.work_id, work.artist, row.artist))
            digest = None
            if work is not None:
                try:
                    digest = self.digest(row)
                except OSError as exc:
                    failure = RowFailure(row.line, row.work_id, f"{printable_path(row.path)}: {exc.strerror}")
                    self.report.failures.append(failure)
                    continue
            if (
                work is not None
                and (work.embedded_sha256, work.embedded_fingerprint) == (digest, self.fingerprint)
                and set(self.spaces.split(",")) <= set(work.embedded_spaces)
                and work.image_sha256 == digest
                and (work.artist, work.title, work.payload) == (row.artist, row.title, row.extra)
                # its point holds it as recorded (a payload rewritten behind the catalogue is written again)
                and point is not None
                and point.agrees_with(PointIdentity(digest, name, row.work_id, row.artist, str(work.embedded_version)))
            ):
                self.report.unchanged += 1
                unchanged.append(row)
            else:
                todo.append((row, digest))
        self.without_layout = self._without_layout(unchanged)
        return todo

    def _without_layout(self, rows: list[ManifestRow]) -> list[ManifestRow]:
        """Those of the unchanged rows whose point has no layout, where this run embeds images into a collection
        with a layout space (a work ingested before layouts existed; a flat image's point has none, and gets none)."""
        if not rows or self.vectors is not None or LAYOUT not in self.store.sizes():
            return []
        ids = {point_id_for(self.report.catalogue, row.work_id): row for row in rows}
        laid = set(self.store.fetch(list(ids), LAYOUT)[0])
        return [row for point, row in ids.items() if point not in laid]

    def add_layouts(self, images: Sequence[tuple[ManifestRow, LoadedImage]]) -> None:
        """Give unchanged works their layout, each of the image its point was embedded from: only where the bytes
        decoded still have the sha256 in the point's payload (a file changed since :meth:`classify` hashed it, or a
        point deleted or rewritten meanwhile, gets none); the other vectors and the payload stay as they are."""
        layouts = {
            point_id_for(self.report.catalogue, row.work_id): (image.sha256, vector)
            for row, image in images
            if (vector := layout_vector(image.image)) is not None
        }
        current = self.store.image_hashes(list(layouts))
        kept = {point: vector for point, (sha256, vector) in layouts.items() if current.get(point) == sha256}
        with_retries(lambda: self.store.set_layouts(kept))
        self.report.layouts_added += len(kept)

    def write(self, items: Sequence[Prepared], run_id: int) -> None:
        """Upsert the vectors (with retries), then record works, versions and embeddings in one transaction.
        ``items`` are rows of the chunk :meth:`classify` saw last (what the catalogue has of them is read again only
        when a concurrent ingest of the catalogue recorded some of them meanwhile: then they are written as known)."""
        try:
            self._write(items, run_id)
        except WorksRecordedMeanwhile:
            ids = [p.row.work_id for p in items]
            self.known.update(self.audit.catalogue.known_works(self.catalogue_id, self.store.collection, ids))
            self._write(items, run_id)

    def _write(self, items: Sequence[Prepared], run_id: int) -> None:
        if not items:
            return
        name = self.report.catalogue
        known = self.known

        def version_of(p: Prepared) -> int:
            old = known.get(p.row.work_id)
            return 1 if old is None else old.version + (old.image_sha256 != p.sha256)

        points = [
            WorkPoint(
                point_id=point_id_for(name, p.row.work_id),
                vector=p.vector,
                style=p.style,
                layout=p.layout,
                payload={
                    **{k: v for k, v in p.row.extra.items() if v not in (None, "")},
                    "work_id": p.row.work_id,
                    "artist": p.row.artist,
                    "title": p.row.title,
                    "catalogue": name,
                    "image_sha256": p.sha256,
                    "version": version_of(p),
                },
            )
            for p in items
        ]
        with_retries(lambda: self.store.upsert(points))
        self.written += [point.point_id for point in points]
        works = [
            WorkRecord(
                work_id=p.row.work_id,
                artist=p.row.artist,
                title=p.row.title,
                image_path=printable_path(p.row.path),
                image_sha256=p.sha256,
                payload=p.row.extra,
                version=point.payload["version"],
                point_id=point.point_id,
                vector_digest=vector_digest(point.vector, point.style),
                pk=old.pk if old is not None else None,
                new_version=old is None or old.image_sha256 != p.sha256,
            )
            for p, point in zip(items, points, strict=True)
            for old in [known.get(p.row.work_id)]
        ]
        written = self.audit.catalogue.record_works(
            self.catalogue_id,
            self.store.collection,
            run_id=run_id,
            embedder_fingerprint=self.fingerprint,
            spaces=self.spaces,
            works=works,
        )
        self.report.added += written.added
        self.report.updated += written.updated
        self.report.new_images += sum(w.pk is not None and w.new_version for w in works)
        self.report.same_image.extend(written.same_image)


def _decode(row: ManifestRow) -> LoadedImage | RowFailure:
    try:
        return load_image(row.path, target_size=224)
    except ImageError as exc:
        return RowFailure(row.line, row.work_id, str(exc))


def ingest_source(
    source: Source,
    *,
    audit: AuditStore,
    store: VectorStore,
    embedder: Embedder | None,
    embedder_fingerprint: str | None = None,
    vectors: VectorLookup | None = None,
    catalogue: str | None = None,
    requester: str = "unknown",
    batch_size: int = 32,
    workers: int = 2,
    failures_path: Path | None = None,
    progress: Progress | None = None,
    style_embedder: StyleEmbedder | None = None,
    allow_artist_changes: bool = False,
    exact_cache_dir: Path | None = None,
) -> IngestReport:
    """Ingest a source; re-running an unchanged source adds nothing. Either ``embedder`` embeds the images, or
    ``vectors`` gives each row a precomputed vector (``embedder_fingerprint`` then names their model).
    With ``style_embedder`` (see embedding.style) each work also gets a vector in the style space. The exact-index
    caches under ``exact_cache_dir`` that held the collection as it was are brought up to date with the points
    written (no full scroll of the collection on the next exact search)."""
    fingerprint = embedder.fingerprint if embedder is not None else embedder_fingerprint
    if fingerprint is None:
        raise ValueError("precomputed vectors need an embedder_fingerprint")
    started = time.perf_counter()
    catalogue_name = catalogue or default_catalogue_name(source.path)
    run_id, catalogue_id = audit.catalogue.start_ingestion(
        catalogue_name,
        source_format=source.format,
        manifest_path=str(source.path.resolve()),
        manifest_sha256=source.sha256,
        collection=store.collection,
        embedder_fingerprint=fingerprint,
        requester=requester,
    )
    report = IngestReport(run_id=run_id, catalogue=catalogue_name)
    before = store.content_version() if store.spaces() else None
    if embedder is not None:
        store.ensure_collection(embedder.dim, style_embedder.dim if style_embedder is not None else None, LAYOUT_DIM)
    spaces = CONTENT if style_embedder is None else f"{CONTENT},{STYLE}"
    ingestion = Ingestion(audit, store, fingerprint, report, catalogue_id, spaces, vectors, allow_artist_changes)
    counter = _Counter(progress, row_total(source) if progress is not None else None)
    try:
        with store.writing(), ThreadPoolExecutor(max_workers=workers) as pool:  # the store marked once for the run
            for chunk in chunks(source, CHUNK_ROWS):
                rows = [r for r in chunk if isinstance(r, ManifestRow)]
                report.failures.extend(r for r in chunk if isinstance(r, RowFailure))
                todo = ingestion.classify(rows) if rows else []
                counter.advance(len(chunk) - len(todo))  # rows settled without embedding
                if vectors is not None:
                    _ingest_precomputed(ingestion, todo, vectors, report.run_id)
                    counter.advance(len(todo))
                else:
                    assert embedder is not None
                    _ingest_images(
                        ingestion, todo, embedder, style_embedder, pool, batch_size, report.run_id, counter.advance
                    )
                    _add_layouts(ingestion, pool)
        store.build_index()
        if exact_cache_dir is not None and before is not None and (ingestion.written or report.layouts_added):
            _refresh_exact_caches(store, exact_cache_dir, before, ingestion.written)
        if isinstance(source, WangSource):
            report.labelled_queries = audit.evaluations.add_labelled_queries(
                catalogue_name, str(source.path.resolve()), source.labelled
            )
    except BaseException:
        status = "failed"  # interrupted or crashed: never recorded as completed
        raise
    else:
        status = "completed" if not report.failures else "partial"
    finally:
        report.seconds = time.perf_counter() - started
        report.failures.sort(key=lambda failure: failure.line)  # (a chunk's decoding failures come after the others)
        report.failures_path = _write_failures(failures_path, report.failures)
        audit.catalogue.finish_ingestion(
            run_id,
            RunCounts(
                added=report.added,
                updated=report.updated,
                unchanged=report.unchanged,
                withdrawn=report.withdrawn,
                failed=report.failed,
                failures_path=str(report.failures_path) if report.failures_path else None,
                status=status,
            ),
        )
    return report


def _ingest_images(
    ingestion: Ingestion,
    todo: list[tuple[ManifestRow, str | None]],
    embedder: Embedder,
    style_embedder: StyleEmbedder | None,
    pool: ThreadPoolExecutor,
    batch_size: int,
    run_id: int,
    advance: Callable[[int], None],
) -> None:
    """Decode the next batch in worker threads while the current one is embedded and written; ``advance`` counts
    each batch's rows once it is written."""
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    pending: list[Future[LoadedImage | RowFailure]] | None = None
    for index, batch in enumerate(batches):
        current = pending if pending is not None else [pool.submit(_decode, row) for row, _ in batch]
        if index + 1 < len(batches):
            pending = [pool.submit(_decode, row) for row, _ in batches[index + 1]]
        decoded = [future.result() for future in current]
        loaded = [(row, img) for (row, _), img in zip(batch, decoded, strict=True) if isinstance(img, LoadedImage)]
        ingestion.report.failures.extend(d for d in decoded if isinstance(d, RowFailure))
        if loaded:
            images = [img.image for _, img in loaded]
            contents, both = embed_images(embedder, style_embedder, images)
            styles: list[np.ndarray | None] = [None] * len(images) if both is None else list(both)
            ingestion.write(
                [
                    Prepared(row, img.sha256, content, style, layout_vector(img.image))
                    for (row, img), content, style in zip(loaded, contents, styles, strict=True)
                ],
                run_id,
            )
        advance(len(batch))


def _add_layouts(ingestion: Ingestion, pool: ThreadPoolExecutor) -> None:
    """Decode, in worker threads, the images of the chunk's unchanged works that have no layout, and write their
    layouts (:meth:`Ingestion.add_layouts`). A work whose file no longer decodes under today's limits, or changed
    since :meth:`Ingestion.classify` hashed it, keeps none: it is unchanged in this run, and the next run sees the
    change."""
    rows, ingestion.without_layout = ingestion.without_layout, []  # once: the next chunk's classify sets its own
    decoded = list(pool.map(_decode, rows))
    loaded = [(row, image) for row, image in zip(rows, decoded, strict=True) if isinstance(image, LoadedImage)]
    if loaded:
        ingestion.add_layouts(loaded)


def embed_images(
    embedder: Embedder, style_embedder: StyleEmbedder | None, images: Sequence[Image.Image]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Content vectors of images and, with a style embedder, their style vectors (None without), from one forward
    pass."""
    if style_embedder is not None:
        return style_embedder.embed_both(images)
    return embedder.embed(images), None


def _ingest_precomputed(
    ingestion: Ingestion, todo: list[tuple[ManifestRow, str | None]], vectors: VectorLookup, run_id: int
) -> None:
    prepared = []
    for row, known_digest in todo:
        vector = vectors(row)
        if vector is None:
            ingestion.report.failures.append(RowFailure(row.line, row.work_id, NO_VECTOR))
            continue
        prepared.append(Prepared(row, known_digest or ingestion.digest(row), vector))
    if prepared:
        ingestion.store.ensure_collection(int(prepared[0].vector.shape[0]), None, LAYOUT_DIM, layouts_later=True)
        ingestion.write(prepared, run_id)


def _refresh_exact_caches(store: VectorStore, root: Path, before: str, written: list[str]) -> None:
    """Bring each exact cache of the collection as it was ``before`` this run to its content now, from the points
    written (read back by id; none where the run only gave works their layouts, which no cache holds). Where another
    writer wrote the collection since ``before`` (another process, on a Qdrant server), a cache of another version,
    or one that would not hold as many vectors as the collection (a write behind the store), nothing is brought
    forward: the next search rebuilds it."""
    folder = root / store.collection
    if not folder.is_dir():
        return
    after = store.content_version()
    if not store.wrote_alone_since(before):  # (asked after reading ``after``: nobody wrote before it was read)
        return
    caches = sorted(p for p in folder.iterdir() if p.is_dir() and (p / before).is_dir())
    points = list(dict.fromkeys(written))
    read = {space: (*store.fetch(points, space), store.count_with(space)) for space in set(map(cached_space, caches))}
    for cache in caches:  # (a space's written points read once, whatever the number of its caches)
        ids, vectors, held = read[cached_space(cache)]
        update_cache(cache, before, after, ids, vectors, held=held)


def _write_failures(path: Path | None, failures: list[RowFailure]) -> Path | None:
    if path is None or not failures:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "work_id", "reason"])
        writer.writerows([f.line, csv_cell(f.work_id), csv_cell(f.reason)] for f in failures)  # opened in spreadsheets
    return path


def ingest_catalogue(
    settings: Settings,
    source_path: Path,
    *,
    audit: AuditStore | None = None,
    fmt: str = "auto",
    catalogue: str | None = None,
    embeddings: Path | None = None,
    failures: Path | None = None,
    batch_size: int = 32,
    workers: int = 2,
    with_style: bool = False,
    allow_artist_changes: bool = False,
    progress: Progress | None = None,
) -> IngestReport:
    """The ``ingest`` use case: open the source, the settings' embedder (or the precomputed ``embeddings``) and its
    collection, and ingest. Failed rows go to ``failures`` (default: a timestamped CSV in the data dir).

    A catalogue named after its file is refused when that name already belongs to a catalogue ingested from another
    file (pass ``catalogue`` to choose). No space of the collection is left partly covered: when it holds style
    vectors, this ingest fills them too (precomputed content vectors are refused there).
    """
    from attribution_audit.services.outputs import refuse_evidence_as_output
    from attribution_audit.services.wiring import load_embedder, open_audit, remember_ingest, vector_store
    from attribution_audit.sources.manifest import open_source

    if with_style and embeddings is not None:
        raise ValueError("--spaces content,style needs the images: precomputed --embeddings fill content only")
    source = open_source(source_path, fmt)
    name = _catalogue_name(catalogue, source.path)
    if failures is not None:
        refuse_evidence_as_output(settings, failures, "--failures")
    embedder: Embedder | None = None
    vectors: VectorLookup | None = None
    fingerprint = None
    with ExitStack() as opened:
        # The store is opened once: at once where opening creates nothing (a server's, or an embedded shard already
        # there), else only once the inputs are usable (opening an embedded shard makes its folder and lock file).
        early = bool(settings.qdrant_url) or _shard_exists(settings)
        store = opened.enter_context(vector_store(settings)) if early else None
        new = store is None or not store.spaces()  # (a server's collection is made by the first points written)
        if embeddings is not None:
            from attribution_audit.sources.precomputed import load_vectors

            table = load_vectors(embeddings, source)
            held = store.sizes().get(CONTENT) if store is not None and not new else None
            _refuse_other_dimension(embeddings, table, held, settings.embedder)
            vectors, fingerprint = (lambda row: table.get(row.work_id)), f"precomputed:{settings.embedder}"
        else:
            embedder = load_embedder(settings.embedder, batch_size)
        if new:  # every row is to be embedded: one must be usable, or there is nothing to ingest
            _refuse_nothing_to_ingest(source, vectors)
        # Only now that the inputs are usable is anything created (the embedded audit log on first use).
        audit = audit or open_audit(settings, create=True)
        if catalogue is None:
            _refuse_name_collision(audit, name, source.path)
        failures_path = failures or _failures_file(settings.data_dir, name)
        store = store or opened.enter_context(vector_store(settings))
        filled = STYLE in store.spaces() and not with_style
        if filled and embeddings is not None:
            raise ConflictError(
                f"collection '{store.collection}' holds style vectors and precomputed --embeddings fill content "
                "only: ingest the images instead, or use another data dir"
            )
        style: StyleEmbedder | None = None
        if embedder is not None and (with_style or filled):
            from attribution_audit.embedding.style import style_embedder_for

            style = style_embedder_for(embedder)
        # Recorded before the first point is written: a killed first ingest still says which embedder built the shard.
        notes = [remember_ingest(settings, [CONTENT, STYLE] if style is not None else [CONTENT])]
        report = ingest_source(
            source,
            audit=audit,
            store=store,
            embedder=embedder,
            embedder_fingerprint=fingerprint,
            vectors=vectors,
            catalogue=name,
            requester=settings.resolved_requester,
            batch_size=batch_size,
            workers=workers,
            failures_path=failures_path,
            style_embedder=style,
            allow_artist_changes=allow_artist_changes,
            progress=progress,
            exact_cache_dir=settings.exact_cache_path,
        )
    if filled and (report.added or report.updated):
        notes.append("the collection holds style vectors, so this ingest filled the style space too")
    coverage = audit.catalogue.space_coverage(store.collection)
    notes += [
        f"the {space} space covers {coverage[space]} of {coverage[CONTENT]} works: ingest the other catalogues again "
        f"with --spaces content,style (their works are re-embedded); until then --space {space} and fused refuse"
        for space in partial_spaces(coverage)
    ]
    report.note = "; ".join(n for n in notes if n) or None
    return report


def _shard_exists(settings: Settings) -> bool:
    """Whether the settings' embedded shard is already there (the collection's folder in the data dir)."""
    from attribution_audit.store.vectors import collection_name

    return (settings.qdrant_path / collection_name(settings.embedder)).exists()


def _unusable(row: ManifestRow, vectors: VectorLookup | None) -> RowFailure | None:
    """Why ``row`` cannot be ingested into a new collection (no vector, or an image that does not load), or None."""
    if vectors is not None:
        return None if vectors(row) is not None else RowFailure(row.line, row.work_id, NO_VECTOR)
    decoded = _decode(row)
    return decoded if isinstance(decoded, RowFailure) else None


def _refuse_nothing_to_ingest(source: Source, vectors: VectorLookup | None) -> None:
    """ManifestError when no row of ``source`` can be ingested, read up to its first row that can: checked before
    anything is made for a new collection, whose every row is new."""
    first: RowFailure | None = None
    rows = 0
    for item in source:
        rows += 1
        failure = item if isinstance(item, RowFailure) else _unusable(item, vectors)
        if failure is None:
            return
        first = first or failure
    if first is None:
        raise ManifestError(f"{source.path}: no works to ingest; give a manifest with rows (nothing was created)")
    raise ManifestError(
        f"{source.path}: none of its {rows} row(s) can be ingested (line {first.line}, work_id {first.work_id!r}: "
        f"{first.reason}); fix the manifest (nothing was created)"
    )


def _refuse_other_dimension(path: Path, table: dict[str, np.ndarray], held: int | None, embedder: str) -> None:
    """ManifestError when the precomputed vectors' size is not the collection's (or, before it exists, the
    embedder's): checked before anything is written."""
    if not table:
        return
    found = len(next(iter(table.values())))
    expected, what = (held, "the collection holds") if held is not None else (known_dim(embedder), "the embedder gives")
    if expected is not None and found != expected:
        raise ManifestError(
            f"{path}: the vectors are {found}-d but {what} {expected}-d vectors ({embedder}); give embeddings of "
            "that size, or ingest them with their own --embedder into another data dir"
        )


def _refuse_name_collision(audit: AuditStore, name: str, path: Path) -> None:
    """ConflictError when catalogue ``name`` was ingested from another source than ``path``."""
    sources = audit.catalogue.sources_of(name)
    if sources and str(path.resolve()) not in sources:
        raise ConflictError(
            f"{path}: catalogue {name!r} (named after the file) was ingested from {sources[0]}; pass --catalogue "
            f"{name} to add these works to it, or --catalogue NEW_NAME for a separate catalogue"
        )
