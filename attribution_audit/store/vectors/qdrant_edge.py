"""Embedded default: Qdrant's own engine in-process (qdrant-edge), one on-disk shard per collection."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from attribution_audit.domain.points import HIT_FIELDS
from attribution_audit.errors import DamagedShardError, VectorStoreError
from attribution_audit.store.vectors import shard_seal
from attribution_audit.store.vectors.base import (
    CONTENT,
    LAYOUT,
    STYLE,
    FusedQuery,
    HnswParams,
    Selection,
    StorageParams,
    VectorStore,
    WorkPoint,
    point_vectors,
)

log = logging.getLogger(__name__)
META_FILE = "attribution-audit.json"
ANNOUNCE_WAIT_S = 1.0  # a wait for the shard's lock longer than this is logged once
# The metadata key of each space's vector size (``dim`` predates named spaces).
SIZE_KEYS = {CONTENT: "dim", STYLE: "style_dim", LAYOUT: "layout_dim"}


class EdgeStore(VectorStore):
    """A Qdrant Edge shard under ``root/collection``.

    A shard can be open in one process at a time: the store takes an exclusive file lock, waiting up to
    ``lock_timeout`` seconds for another process to finish, so concurrent CLI calls queue instead of failing.
    The indexing thresholds are set to 1 KB so that the HNSW graph is always built (Qdrant's default builds
    none below ~5k vectors of 512-d, which would silently make every search exact). The shard's recorded HNSW
    parameters win over those given when it already exists (but a ``search_ef`` given is the searches' ef); its
    style space can be added later.
    """

    kind = "qdrant-edge"
    adds_spaces = True

    def __init__(
        self,
        root: Path | str,
        collection: str,
        params: HnswParams | None = None,
        lock_timeout: float = 120.0,
        storage: StorageParams | None = None,
        search_ef: int | None = None,
    ) -> None:
        super().__init__(collection, params, storage, search_ef=search_ef)
        self.path = Path(root) / collection
        self._lock_timeout = lock_timeout
        self._lock_file: IO[str] | None = None
        self._shard: Any = None
        self._sizes: dict[str, int] | None = None
        # the write counter of the meta file as this process last wrote it (the shard is opened and created by a
        # write of the file, under the exclusive lock, so no other process writes it while the shard is open): a
        # request's content_version need not read the file again (~60 us, each time); kept as the file holds it (a
        # hand-edited value too: it only names the exact cache's version)
        self._epoch: object = None

    @property
    def location(self) -> str:
        return str(self.path)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        if self._lock_file is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.path.parent / f"{self.collection}.lock", "w")  # noqa: SIM115
        except OSError as exc:
            raise VectorStoreError(
                f"{self.path.parent}: cannot write the shard's lock file ({exc.strerror}); the embedded store needs a "
                "writable data dir: mount it read-write or fix its permissions (or use a Qdrant server, --qdrant-url)"
            ) from None
        started = time.monotonic()
        deadline, announced = started + self._lock_timeout, False
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_file = lock_file
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock_file.close()
                    raise VectorStoreError(
                        f"{self.path}: the embedded Qdrant shard is busy in another process for over "
                        f"{self._lock_timeout:g} s; wait for it to finish (a running `serve` holds it until it stops: "
                        "send it the request instead), or use a Qdrant server (--qdrant-url)"
                    ) from None
                if not announced and time.monotonic() > started + ANNOUNCE_WAIT_S:  # a silent wait looks like a hang
                    log.warning(
                        "%s: the embedded Qdrant shard is busy in another process; waiting up to %g s for it",
                        self.path,
                        self._lock_timeout,
                    )
                    announced = True
                time.sleep(0.05)

    def _meta(self) -> dict[str, Any] | None:
        meta = self.path / META_FILE
        return json.loads(meta.read_text()) if meta.exists() else None

    def _write_meta(self, meta: dict[str, Any]) -> None:
        temporary = self.path / f"{META_FILE}.tmp"
        temporary.write_text(json.dumps(meta, indent=2))
        os.replace(temporary, self.path / META_FILE)
        self._epoch = meta.get("epoch", 0)

    def _mark_changed(self, writing: bool) -> None:
        """Count writes in the meta file's epoch, which :meth:`content_version` reads (no other process reads the
        shard while this one holds its lock: a write cut short by a crash ends the process's readers too)."""
        meta = self._meta() or {}
        meta["epoch"] = int(meta.get("epoch", 0)) + 1
        self._write_meta(meta)

    def _unended_writes(self) -> dict[str, str]:
        """None: a writer holds the shard's lock, and a killed one ended its readers too."""
        return {}

    def _wrote_alone_since(self, version: str) -> bool:
        """Always: the shard is written by the process that holds its lock alone."""
        return True

    def _settle(self) -> None:
        """Nothing to end: a process killed while writing held the shard's lock, so it ended every reader too."""

    def hold(self, wait_s: float) -> None:
        waited, self._lock_timeout = self._lock_timeout, wait_s
        try:
            self._vector_sizes()  # takes the lock, and opens the shard if it exists
        finally:
            self._lock_timeout = waited

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
            self._sizes = None
            self._write_meta({**(self._meta() or {}), "seal": shard_seal.seal(self.path, META_FILE)})
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
        self._epoch = None  # another process may write it from now on

    # -- engine primitives ---------------------------------------------------------------------------------
    def _vector_sizes(self) -> dict[str, int] | None:
        """Opens the shard (taking the lock) on first use; None while nothing has been created at the path."""
        if self._shard is None:
            from qdrant_edge import EdgeShard

            self._acquire_lock()
            try:
                meta = self._meta()
                if meta is None and any(self.path.glob("*")):
                    raise FileNotFoundError(f"{META_FILE} is missing beside the shard's files")
                if meta is None:
                    return None
                sealed = meta.pop("seal", None)
                problem = shard_seal.broken(self.path, sealed, META_FILE) if sealed is not None else None
                if problem:
                    raise OSError(problem)
                self._write_meta(meta)  # unsealed while open: after a crash, nothing is refused
                self.params = self._searched_with(HnswParams(**meta["hnsw"]))
                self.storage = StorageParams(**meta.get("storage", {}))
                self._sizes = {space: int(meta[key]) for space, key in SIZE_KEYS.items() if meta.get(key)}
                with _engine_panics_quiet():
                    self._shard = EdgeShard.load(str(self.path))
            except BaseException as exc:  # the engine panics (a BaseException) on some damaged files
                raise self._damaged(exc) from None
        return self._sizes

    def _damaged(self, exc: BaseException) -> BaseException:
        """What to raise where the shard cannot be opened (``exc``): DamagedShardError, the store left closed (its
        next use opens the shard again); an interrupt as it is."""
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return exc
        self._shard, self._sizes = None, None
        return DamagedShardError(
            f"{self.path}: the embedded shard is damaged ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); run `attribution-audit catalogue "
            "check --repair` to set it aside, then `attribution-audit ingest` to embed the catalogue again",
            str(self.path),
        )

    def _config(self, sizes: dict[str, int]) -> Any:
        """The shard's engine configuration for spaces of these ``sizes``."""
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeOptimizersConfig,
            EdgeVectorParams,
            HnswIndexConfig,
            Memory,
            ScalarQuantizationConfig,
            ScalarType,
        )

        quantized = self.storage.quantization == "int8"
        return EdgeConfig(
            # Quantised: the int8 vectors pinned in RAM, the originals (read only to rescore) memory-mapped cold (not
            # pre-warmed into the page cache, which would keep them resident as well: docs/benchmarks.md, int8 at 1M).
            vectors={
                space: EdgeVectorParams(size=size, distance=Distance.Cosine, memory=Memory.Cold if quantized else None)
                for space, size in sizes.items()
            },
            hnsw_config=HnswIndexConfig(m=self.params.m, ef_construct=self.params.ef_construct, full_scan_threshold=1),
            optimizers=EdgeOptimizersConfig(indexing_threshold=1, default_segment_number=1),
            quantization_config=ScalarQuantizationConfig(ScalarType.Int8, quantile=0.99, memory=Memory.Pinned)
            if quantized
            else None,
        )

    def _create(self, sizes: dict[str, int]) -> None:
        from qdrant_edge import EdgeShard, PayloadSchemaType, UpdateOperation

        self._acquire_lock()
        shard = EdgeShard.create(str(self.path), self._config(sizes))
        shard.update(UpdateOperation.create_field_index("artist", PayloadSchemaType.Keyword))
        self._write_meta(
            {
                **{key: sizes.get(space) for space, key in SIZE_KEYS.items()},
                "hnsw": self.params.as_dict(),
                "storage": self.storage.as_dict(),
                "distance": "cosine",
                "epoch": 0,
            }
        )
        self._shard, self._sizes = shard, dict(sizes)

    def _add_space(self, space: str, size: int) -> bool:
        from qdrant_edge import Distance, EdgeShard, UpdateOperation

        sizes = {**(self._sizes or {}), space: size}
        self._shard.update(UpdateOperation.create_dense_vector(space, size, Distance.Cosine))
        self._write_meta({**(self._meta() or {}), SIZE_KEYS[space]: size})
        self._sizes = sizes
        if self.storage.quantization != "none":  # the engine adds a space without the shard's memory tier: the shard
            self._shard.flush()  # is reopened with its whole configuration, so that the new originals stay cold too
            self._shard.close()
            try:
                with _engine_panics_quiet():
                    self._shard = EdgeShard.load(str(self.path), self._config(sizes))
            except BaseException as exc:  # (not a closed shard's handle kept: the next use opens it again)
                raise self._damaged(exc) from None
        return True

    def _upsert(self, points: Sequence[WorkPoint]) -> None:
        from qdrant_edge import Point, UpdateOperation

        batch = [Point(id=p.point_id, vector=point_vectors(p), payload=p.payload) for p in points]
        self._shard.update(UpdateOperation.upsert_points(batch))

    def _set_vectors(self, space: str, vectors: dict[str, list[float]]) -> None:
        from qdrant_edge import PointVectors, UpdateOperation

        batch = [PointVectors(point_id, {space: vector}) for point_id, vector in vectors.items()]
        self._shard.update(UpdateOperation.update_vectors(batch))

    def _optimize(self) -> None:
        self._shard.optimize()

    def _query(self, vector: list[float], space: str, limit: int, *, exact: bool, with_vectors: bool) -> list[Any]:
        from qdrant_edge import Query, QueryRequest

        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(vector, using=space),
            with_payload=list(HIT_FIELDS),
            with_vector=with_vectors,
            params=self._search_params(exact),
        )
        return list(self._shard.query(request))

    def _search_params(self, exact: bool = False) -> Any:
        """HNSW ef, and for a quantised collection a rescoring on the original vectors (exact scores)."""
        from qdrant_edge import QuantizationSearchParams, SearchParams

        rescored = QuantizationSearchParams(rescore=True) if self.storage.quantization != "none" else None
        return SearchParams(hnsw_ef=self.params.hnsw_ef, exact=exact, quantization=rescored)

    def _query_fused(self, query: FusedQuery, limit: int, *, with_vectors: bool) -> list[Any]:
        from qdrant_edge import Fusion, Prefetch, Query, QueryRequest

        request = QueryRequest(
            limit=limit,
            prefetches=[
                Prefetch(
                    limit=query.prefetch,
                    query=Query.Nearest(vector, using=space),
                    params=self._search_params(),
                )
                for space, vector in query.vectors.items()
            ],
            query=Fusion.Rrf(k=query.rrf_k, weights=query.weights),  # type: ignore[arg-type]  # the stub leaves Rrf out of Fusion
            with_payload=list(HIT_FIELDS),
            with_vector=with_vectors,
        )
        return list(self._shard.query(request))

    def _scroll(
        self, offset: Any, limit: int, *, with_vector: Selection, with_payload: Selection
    ) -> tuple[list[Any], Any]:
        from qdrant_edge import ScrollRequest

        records, next_offset = self._shard.scroll(
            ScrollRequest(offset=offset, limit=limit, with_payload=with_payload, with_vector=with_vector)
        )
        return list(records), next_offset

    def _delete(self, point_ids: list[str]) -> None:
        from qdrant_edge import UpdateOperation

        ids: list[int | UUID | str] = list(point_ids)
        self._shard.update(UpdateOperation.delete_points(ids))

    def _retrieve(self, point_ids: list[str], *, with_vector: Selection, with_payload: bool = False) -> list[Any]:
        return list(self._shard.retrieve(point_ids, with_payload=with_payload, with_vector=with_vector))

    def _count(self) -> int:
        return int(self._shard.info().points_count)

    def _count_with(self, space: str) -> int:
        from qdrant_edge import CountRequest, Filter, HasVectorCondition

        return int(self._shard.count(CountRequest(exact=True, filter=Filter(must=[HasVectorCondition(space)]))))

    def _indexed_count(self) -> int:
        return int(self._shard.info().indexed_vectors_count)

    def _version(self) -> str:
        """The shard's write counter (bumped before and after every write run) and its point count."""
        return f"{self.collection}-epoch{self._epoch}-n{self._count()}"


@contextlib.contextmanager
def _engine_panics_quiet() -> Iterator[None]:
    """While the engine loads a shard, its panic report (written by Rust straight to file descriptor 2, with a
    backtrace) is discarded: the panic itself arrives as an exception, which becomes one error line."""
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def set_aside(path: str | Path) -> Path:
    """Move a damaged shard's folder out of the way (``<name>.damaged-<UTC time>``, kept for inspection), so that the
    next ingest creates the collection again; where it went."""
    folder = Path(path)
    target = folder.with_name(f"{folder.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    try:
        os.replace(folder, target)
    except OSError as exc:
        raise VectorStoreError(f"{folder}: cannot move the damaged shard aside ({exc.strerror})") from None
    return target


def require_free_space(folder: Path, min_free_mb: int) -> None:
    """Refuse to open a shard under ``folder`` with less than ``min_free_mb`` MB free on its disk: the engine writes
    through memory-mapped files, and a write that finds the disk full kills the process (SIGBUS) mid-update."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    free_mb = shutil.disk_usage(existing).free // (1024 * 1024)
    if free_mb < min_free_mb:
        raise VectorStoreError(
            f"{existing}: only {free_mb} MB free on its disk, under the {min_free_mb} MB the embedded shard needs; "
            "free some space (or move the data dir), then run the command again; nothing was changed"
        )
