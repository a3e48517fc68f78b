"""The long-running attribution service: the model, the vector store and the audit store opened once, and two
worker threads in a pipeline: the embedder embeds the queued images of concurrent requests together
(micro-batching), and the recorder searches, re-ranks and appends each request to the audit chain, one at a time,
while the next batch is being embedded. A caller gets its results only once they are committed."""

from __future__ import annotations

import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from attribution_audit.config import Settings, checked_requester
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.results import Attribution
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.embedding.copy_match import copy_view
from attribution_audit.embedding.layout import layout_vector, one_colour
from attribution_audit.errors import PartlyRecordedError, StorageError
from attribution_audit.services.attribute import LearnedNote, learned_notes
from attribution_audit.services.attribution import Attributor, FlatImage
from attribution_audit.services.audit_log import (
    browse_attributions,
    get_attribution,
    request_notes,
    shares_over_time,
)
from attribution_audit.services.checkpoints import Verification, auto_checkpoint, guard_witness, verify_database
from attribution_audit.services.pixel_budget import PixelBudget, Reservation
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.images import LoadedImage, decode_image, image_pixels, printable_path, read_image_file
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.browse import RequestFilter

DEFAULT_MAX_BATCH = 32  # images embedded in one forward pass at most
HOLD_WAIT_S = 10.0  # how long a starting service waits for a shard another process holds
PIXEL_WAIT_S = 30.0  # how long a request waits for room in the budget of decoded pixels before it is refused (503)
EMBED_SIZE = 224  # the embedders' input side: images are decoded for it (a JPEG downscaled, an elongated one cut)
KEPT_SUFFIX = re.compile(r"\.[a-z0-9]{1,9}")  # and its extension, if a plain one
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """An image received by the service: the client's name for it (used in messages) and its bytes."""

    name: str
    data: bytes

    @classmethod
    def from_path(cls, path: str | Path) -> Upload:
        """An image file as an upload (a missing, empty, oversized or special file is an ImageError)."""
        return cls(printable_path(path), read_image_file(path))


@dataclass(frozen=True)
class Attributed:
    """A request's committed attributions, why the automatic checkpoint after them failed, if it did (they are in
    the log all the same: a client must not send them again), and the notes that go with them (in a learned space
    fitted before some of its works' artists were ingested, a :class:`SpaceSinceFit`; in one whose own confidence
    model was fitted at another K, an :class:`OwnConfidenceAtOtherK`: :func:`learned_notes`; an image's own:
    :meth:`notes_of`)."""

    attributions: list[Attribution]
    checkpoint_problem: str | None = None
    notes: tuple[LearnedNote, ...] = ()

    def notes_of(self, index: int) -> list[str]:
        """The notes of attribution ``index``: a :class:`FlatImage` where its image is one colour, then the notes of
        them all."""
        flat = [str(FlatImage(self.attributions[index].image))] if self.attributions[index].one_colour else []
        return flat + [str(note) for note in self.notes]


@dataclass
class _Job:
    images: list[tuple[str, LoadedImage]]  # (recorded path, decoded image; once embedded, its copy view)
    layouts: list[np.ndarray | None]  # each image's layout (layout_vector of the decoded image)
    one_colour: tuple[bool, ...]  # whether each image is one colour throughout
    params: AttributionParams
    requester: str
    pixels: Reservation  # the decoded pixels the job holds from the service's budget until it is embedded
    done: Future[Attributed] = field(default_factory=Future)


class AttributionService:
    """Attributes uploads for many concurrent callers over one loaded model and one open store."""

    def __init__(
        self,
        settings: Settings,
        audit: AuditStore,
        attributor: Attributor,
        uploads: Path,
        max_batch: int = DEFAULT_MAX_BATCH,
    ):
        self.settings = settings
        self.audit = audit
        self.attributor = attributor
        self.uploads = uploads
        self.max_batch = max_batch
        self.pixels = PixelBudget(settings.max_inflight_pixels, settings.max_request_pixels)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0  # images queued or being attributed
        self._lock = threading.Lock()
        self.attributed = 0  # images attributed and committed since start
        self.batches = 0
        self.embed_seconds = 0.0  # the embedder's busy time since start
        self.record_seconds = 0.0  # the recorder's busy time (search, re-rank, exact check, audit write)
        self.checkpoint_failures = 0  # automatic checkpoints that failed after their records were committed
        self.last_verification: Verification | None = None
        self._embedded: queue.Queue[tuple[_Job, list[QueryVectors]] | None] = queue.Queue()
        self._workers = (
            threading.Thread(target=self._embed_batches, name="attribution-embedder", daemon=True),
            threading.Thread(target=self._record_jobs, name="attribution-recorder", daemon=True),
        )

    @classmethod
    @contextmanager
    def open(cls, settings: Settings, max_batch: int = DEFAULT_MAX_BATCH) -> Iterator[AttributionService]:
        """The service over the settings' stores and embedder (loaded now), stopped and closed after."""
        audit = open_audit(settings)
        try:
            guard_witness(settings, audit)  # refused when the witness file names another audit DB
            with open_attributor(settings, audit, settings.embedder, batch_size=max_batch) as attributor:
                # The embedded shard's lock for the service's whole life: a second service on the data dir is refused
                # now, instead of serving requests that each wait for the lock and fail.
                attributor.store.hold(HOLD_WAIT_S)
                service = cls(settings, audit, attributor, settings.uploads_path, max_batch)
                for worker in service._workers:
                    worker.start()
                try:
                    yield service
                finally:
                    service._queue.put(None)  # the embedder finishes its queue, then stops the recorder
                    for worker in service._workers:
                        worker.join()
        finally:
            audit.close()

    # -- attributing -------------------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Images waiting for, or in, the worker."""
        return self._pending

    def attribute(
        self, uploads: Sequence[Upload], params: AttributionParams | None = None, requester: str | None = None
    ) -> list[Attribution]:
        """Each upload's committed attribution, in order (``requester`` defaults to the settings' requester). Every
        upload is decoded first: one that cannot be used is an ImageError naming it, and nothing is attributed. Each
        is committed on its own: one that fails after others were recorded is a PartlyRecordedError holding those."""
        return self.submit(uploads, params, requester).attributions

    def submit(
        self, uploads: Sequence[Upload], params: AttributionParams | None = None, requester: str | None = None
    ) -> Attributed:
        """As :meth:`attribute`, with the failure of the automatic checkpoint that followed, if any (logged, and
        counted in :attr:`checkpoint_failures`).

        The uploads' decoded pixels (from their headers) are reserved from the service's budget before any is
        decoded, waiting up to PIXEL_WAIT_S for room (else BusyError), and given back once they are embedded or the
        request fails; a request over the per-request limit is a TooLargeError at once."""
        requester = self.attributor.requester if requester is None else checked_requester(requester)
        pixels = sum(image_pixels(u.data, Path(u.name), target_size=EMBED_SIZE) for u in uploads)
        reservation = self.pixels.reserve(pixels, len(uploads), PIXEL_WAIT_S)
        try:
            job = self._queued(uploads, params or AttributionParams(), requester, reservation)
            return job.done.result()
        finally:
            reservation.release()  # (a no-op once the embedder gave it back)

    def _queued(
        self, uploads: Sequence[Upload], params: AttributionParams, requester: str, reservation: Reservation
    ) -> _Job:
        """Decode and keep the uploads, and queue them as one job (the decoded images are the job's alone)."""
        decoded = [decode_image(u.data, Path(u.name), target_size=EMBED_SIZE) for u in uploads]
        kept = [self._keep(upload.data, image) for upload, image in zip(uploads, decoded, strict=True)]
        layouts = [layout_vector(image.image) for image in decoded]  # of the decoded colours, as `attribute` reads it
        colours = tuple(one_colour(image.image, layout) for image, layout in zip(decoded, layouts, strict=True))
        job = _Job(list(zip(kept, decoded, strict=True)), layouts, colours, params, requester, reservation)
        with self._lock:
            self._pending += len(job.images)
        self._queue.put(job)
        return job

    def _keep(self, data: bytes, image: LoadedImage) -> str:
        """Store the upload under its sha256 (once), so that the recorded path shows what was attributed."""
        suffix = Path(image.path.name).suffix.lower()  # the client's: kept only when a plain extension
        target = self.uploads / f"{image.sha256}{suffix if KEPT_SUFFIX.fullmatch(suffix) else ''}"
        try:
            self.uploads.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                handle, temporary = tempfile.mkstemp(dir=self.uploads, suffix=".part")
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.replace(temporary, target)
        except OSError as exc:  # the server's folder, not the client's image: a StorageError (503), not a 400
            raise StorageError(
                f"the service cannot keep uploads in its folder {printable_path(self.uploads)} "
                f"({exc.strerror or exc}); free disk space there or fix the data dir's permissions"
            ) from exc
        return printable_path(target.resolve())

    def _embed_batches(self) -> None:
        while (job := self._queue.get()) is not None:
            batch = [job]
            size = len(job.images)
            while size < self.max_batch:  # whatever queued up meanwhile joins this batch: no waiting
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
                size += len(more.images)
            started = time.perf_counter()
            self._embed(batch)
            self.embed_seconds += time.perf_counter() - started
            self.batches += 1
        self._embedded.put(None)

    def _embed(self, batch: list[_Job]) -> None:
        """Embed the batch's images with one forward pass per space; hand each job's vectors to the recorder."""
        for space in {job.params.space for job in batch}:
            jobs = [job for job in batch if job.params.space == space]
            try:
                images = [image.image for job in jobs for _, image in job.images]
                queries = iter(self.attributor.embed(images, space, crops=True))
            except Exception as exc:
                for job in jobs:
                    self._finish(job, exc)
                continue
            for job in jobs:
                vectors = [next(queries) for _ in job.images]
                try:  # the recorder needs no more of an image than its copy check looks at: the decoded one goes now
                    job.images = [(path, replace(image, image=copy_view(image.image))) for path, image in job.images]
                except Exception as exc:
                    self._finish(job, exc)
                    continue
                job.pixels.release()
                self._embedded.put((job, vectors))

    def _record_jobs(self) -> None:
        """Search, re-rank and append each job's requests to the chain, one writer, in the order embedded."""
        while (item := self._embedded.get()) is not None:
            job, queries = item
            started = time.perf_counter()
            results: list[Attribution] = []  # (this job's: the failure names them)
            try:
                # What is stored now, read once for the job: its learned space's version (pinned in the params its
                # requests are computed, scored and recorded with, and its notes read), the other spaces, the models.
                self.attributor.refresh()
                params = self.attributor.space_of(job.params)[1]
                for (path, image), query, layout, flat in zip(
                    job.images, queries, job.layouts, job.one_colour, strict=True
                ):
                    results.append(
                        self.attributor.record_image(path, image, query, params, layout, flat, requester=job.requester)
                    )
                notes = tuple(learned_notes(self.attributor, params))
            except Exception as exc:  # the caller gets the error; nothing unrecorded is returned, the recorded named
                self.record_seconds += time.perf_counter() - started
                self.attributed += len(results)
                self._finish(job, PartlyRecordedError(exc, results, len(job.images)) if results else exc)
                continue
            self.attributed += len(results)
            problem = self._checkpoint(results)
            self.record_seconds += time.perf_counter() - started
            self._finish(job, Attributed(results, problem, notes))

    def _checkpoint(self, results: list[Attribution]) -> str | None:
        """The automatic checkpoints due after these committed records; why they failed, if they did (logged and
        counted, never the request's failure: its records are in the log)."""
        try:
            for attribution in results:
                auto_checkpoint(self.settings, self.audit, attribution)
        except Exception as exc:
            self.checkpoint_failures += 1
            problem = f"the automatic checkpoint after seq {results[-1].seq} failed: {exc}"
            logger.error("%s; the attributions are logged; run `attribution-audit audit checkpoint`", problem)
            return problem
        return None

    def _finish(self, job: _Job, outcome: Attributed | BaseException) -> None:
        with self._lock:
            self._pending -= len(job.images)
        if isinstance(outcome, BaseException):
            job.done.set_exception(outcome)
        else:
            job.done.set_result(outcome)

    # -- the log -----------------------------------------------------------------------------------------------
    def attribution(self, request_id: str) -> Attribution:
        """One logged attribution; NotFoundError if absent."""
        return get_attribution(self.audit, request_id)

    def notes(self, attribution: Attribution) -> list[str]:
        """The notes of a logged attribution, as its page shows them (:func:`request_notes`)."""
        return request_notes(self.audit, attribution)

    def attributions(self, where: RequestFilter | None = None) -> list[Attribution]:
        """A page of logged attributions that match ``where``, newest first."""
        return browse_attributions(self.audit, where or RequestFilter())

    def shares(self, period: str = "day") -> list[dict[str, Any]]:
        """Attributions and share sums per artist and day or month."""
        return shares_over_time(self.audit, period)

    def verify(self) -> Verification:
        """Verify the whole chain and compare it with the witness file's last checkpoint now, as ``audit verify``
        does (the same verdict); remembered as the latest verification."""
        self.last_verification = verify_database(self.settings, self.audit)
        return self.last_verification

    def health(self) -> dict[str, str]:
        """What the service runs on; raises the store's one-line DatabaseError when the audit DB is unreachable."""
        current, _ = self.audit.revisions()
        return {
            "database": self.audit.url,
            "schema": current or "",
            "vector_store": f"{self.attributor.store.kind}:{self.attributor.store.collection}",
            "embedder": self.attributor.embedder_name,
        }
