"""Production: a Qdrant server (or cluster) through qdrant-client.

``url=":memory:"`` selects qdrant-client's in-process mode. That mode is NumPy brute force (no HNSW) and exists
here only so the tests can exercise this code path without a server.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from attribution_audit.domain.points import HIT_FIELDS
from attribution_audit.errors import VectorStoreError
from attribution_audit.store.vectors.base import (
    FusedQuery,
    HnswParams,
    Selection,
    StorageParams,
    VectorStore,
    WorkPoint,
    point_vectors,
)

SECRET_KEY = re.compile(r"pass|token|secret|key", re.IGNORECASE)
# The collection metadata key of the write mark, a random value this class sets before and after each write run so
# that any process's content_version changes with it (a server keeps no write counter of its own); and the prefix of
# one key per run writing now (its start mark, to the time it last wrote): set before its first write, removed with
# its end mark, left by a writer killed in between.
WRITE_MARK, WRITING = "attribution_audit_write_mark", "attribution_audit_writing:"
# A writing run's key is refreshed once a minute; one 15 minutes old is a dead run's (the writers' clocks must agree
# within minutes: a live run's key, read by a clock 14 minutes ahead of its writer's, would be taken for a dead one).
HEARTBEAT_S, ABANDONED_S = 60.0, 900.0


class ServerStore(VectorStore):
    """A collection on a Qdrant server; HNSW thresholds set so the graph is always built. A server collection's
    spaces are fixed at creation (ingest with every space wanted from the start)."""

    kind = "qdrant-server"

    def __init__(
        self,
        url: str,
        collection: str,
        params: HnswParams | None = None,
        api_key: str | None = None,
        storage: StorageParams | None = None,
        search_ef: int | None = None,
    ) -> None:
        from qdrant_client import QdrantClient

        super().__init__(collection, params, storage, search_ef=search_ef)
        self.url = url
        self._sizes: dict[str, int] | None = None
        self._run = _Run("", "", 0.0, end="")  # none yet
        if url == ":memory:":
            self.kind, self.index_kind = "qdrant-local", "exact"
            self._client = QdrantClient(location=":memory:")
        else:
            self._client = QdrantClient(url=url, api_key=api_key, timeout=30)

    @property
    def location(self) -> str:
        return f"Qdrant at {shown_url(self.url)}"

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A client method called on this collection; any failure becomes one VectorStoreError line."""
        try:
            return fn(self.collection, *args, **kwargs)
        except Exception as exc:  # connection refused, timeouts, HTTP errors: one line for the user
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VectorStoreError(
                f"{self.location}: {what} failed ({first_line}); check that the server is up and --qdrant-url is right"
            ) from exc

    def close(self) -> None:
        self._client.close()

    # -- engine primitives ---------------------------------------------------------------------------------
    def _vector_sizes(self) -> dict[str, int] | None:
        """Read once the collection exists, since a server collection's spaces are fixed."""
        if self._sizes is None and self._call("listing collections", self._client.collection_exists):
            config = self._call("reading the collection", self._client.get_collection).config
            vectors = config.params.vectors
            self._sizes = {name: p.size for name, p in vectors.items()} if isinstance(vectors, dict) else {}
            self.storage = _reported_storage(config, self.storage, local=self.kind == "qdrant-local")
        return self._sizes

    def _create(self, sizes: dict[str, int]) -> None:
        from qdrant_client import models

        quantized = self.storage.quantization == "int8"  # then the originals stay on disk, read only to rescore
        self._call(
            "creating the collection",
            self._client.create_collection,
            vectors_config={
                space: models.VectorParams(size=size, distance=models.Distance.COSINE, on_disk=quantized or None)
                for space, size in sizes.items()
            },
            hnsw_config=models.HnswConfigDiff(
                m=self.params.m, ef_construct=self.params.ef_construct, full_scan_threshold=1
            ),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1),
            quantization_config=models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            )
            if quantized
            else None,
            shard_number=self.storage.shard_number,
            replication_factor=self.storage.replication_factor,
            write_consistency_factor=self.storage.write_consistency_factor,
            metadata={WRITE_MARK: uuid.uuid4().hex},
        )
        self._call(
            "creating the artist index",
            self._client.create_payload_index,
            field_name="artist",
            field_schema=models.PayloadSchemaType.KEYWORD,
        )
        self._sizes = dict(sizes)

    def _upsert(self, points: Sequence[WorkPoint]) -> None:
        from qdrant_client import models

        batch = [models.PointStruct(id=p.point_id, vector=point_vectors(p), payload=p.payload) for p in points]
        self._beat()
        self._call("upserting points", self._client.upsert, points=batch, wait=True)

    def _set_vectors(self, space: str, vectors: dict[str, list[float]]) -> None:
        from qdrant_client import models

        batch = [models.PointVectors(id=point_id, vector={space: v}) for point_id, v in vectors.items()]
        self._beat()
        self._call("updating vectors", self._client.update_vectors, points=batch, wait=True)

    def _optimize(self) -> None:
        """The server indexes in the background; upserts already waited for their segments."""

    def _query(self, vector: list[float], space: str, limit: int, *, exact: bool, with_vectors: bool) -> list[Any]:

        response = self._call(
            "searching",
            self._client.query_points,
            query=vector,
            using=space,
            limit=limit,
            with_payload=list(HIT_FIELDS),
            with_vectors=with_vectors,
            search_params=self._search_params(exact),
        )
        return list(response.points)

    def _query_fused(self, query: FusedQuery, limit: int, *, with_vectors: bool) -> list[Any]:
        from qdrant_client import models

        response = self._call(
            "searching",
            self._client.query_points,
            prefetch=[
                models.Prefetch(
                    query=vector,
                    using=space,
                    limit=query.prefetch,
                    params=self._search_params(),
                )
                for space, vector in query.vectors.items()
            ],
            query=models.RrfQuery(rrf=models.Rrf(k=query.rrf_k, weights=query.weights)),
            limit=limit,
            with_payload=list(HIT_FIELDS),
            with_vectors=with_vectors,
        )
        return list(response.points)

    def _search_params(self, exact: bool = False) -> Any:
        """HNSW ef, and for a quantised collection a rescoring on the original vectors (exact scores)."""
        from qdrant_client import models

        rescored = models.QuantizationSearchParams(rescore=True) if self.storage.quantization != "none" else None
        return models.SearchParams(hnsw_ef=self.params.hnsw_ef, exact=exact, quantization=rescored)

    def _scroll(
        self, offset: Any, limit: int, *, with_vector: Selection, with_payload: Selection
    ) -> tuple[list[Any], Any]:
        records, next_offset = self._call(
            "scrolling",
            self._client.scroll,
            offset=offset,
            limit=limit,
            with_payload=with_payload,
            with_vectors=with_vector,
        )
        return list(records), next_offset

    def _delete(self, point_ids: list[str]) -> None:
        from qdrant_client import models

        ids: list[models.ExtendedPointId] = list(point_ids)
        self._beat()
        self._call("deleting points", self._client.delete, points_selector=models.PointIdsList(points=ids), wait=True)

    def _retrieve(self, point_ids: list[str], *, with_vector: Selection, with_payload: bool = False) -> list[Any]:
        records = self._call(
            "retrieving points",
            self._client.retrieve,
            ids=point_ids,
            with_payload=with_payload,
            with_vectors=with_vector,
        )
        return list(records)

    def _count(self) -> int:
        return int(self._call("counting", self._client.count, exact=True).count)

    def _count_with(self, space: str) -> int:
        from qdrant_client import models

        having = models.Filter(must=[models.HasVectorCondition(has_vector=space)])
        return int(self._call("counting", self._client.count, count_filter=having, exact=True).count)

    def _indexed_count(self) -> int:
        return int(self._call("reading the collection", self._client.get_collection).indexed_vectors_count or 0)

    def _mark_changed(self, writing: bool) -> None:
        """Before a run's first write: the version it starts from, a new mark and the run's writing key (its
        heartbeat, refreshed as it writes). After its last: whether another writer marked the collection meanwhile,
        a new mark, the run's key removed with those of runs that stopped beating (killed writers)."""
        metadata = self._metadata()
        marks: dict[str, str | None]
        if writing:
            since = self._marked_version(metadata)  # (none where it would read every point: then never alone)
            self._run = _Run(since or "", uuid.uuid4().hex, time.monotonic())
            marks = {WRITE_MARK: self._run.mark, f"{WRITING}{self._run.mark}": _now()}
        else:
            self._run.alone = metadata.get(WRITE_MARK) == self._run.mark and _writing(metadata) == {self._run.mark}
            self._run.end = uuid.uuid4().hex
            marks = {WRITE_MARK: self._run.end, **_ended({self._run.mark} | _abandoned(metadata))}
        self._set_metadata(marks)

    def _beat(self) -> None:
        """Before each write of a run: its key's time, refreshed at most once a minute (a key not refreshed for
        ABANDONED_S is a killed writer's; one another run removed as such comes back before this run writes again).
        A refresh that fails is tried again at the next write (a server gone fails the write itself)."""
        if self._run.end is None and time.monotonic() - self._run.beat > HEARTBEAT_S:
            with contextlib.suppress(VectorStoreError):
                self._set_metadata({f"{WRITING}{self._run.mark}": _now()})
                self._run.beat = time.monotonic()

    def _unended_writes(self) -> dict[str, str]:
        metadata = self._metadata()
        return {run: str(_time(metadata[f"{WRITING}{run}"]) or "") for run in sorted(_writing(metadata))}

    def _wrote_alone_since(self, version: str) -> bool:
        if not (self._run.alone and self._run.since == version):
            return False
        metadata = self._metadata()  # (a run begun since this one's end, or as it ended, is not alone with it)
        return metadata.get(WRITE_MARK) == self._run.end and not _writing(metadata)

    def _settle(self) -> None:
        """Remove the writing keys of runs that stopped beating (killed writers), with a new mark: until then the
        collection is versioned by reading every point on each request."""
        if self._vector_sizes() is None or not (abandoned := _abandoned(self._metadata())):
            return
        self._set_metadata({WRITE_MARK: uuid.uuid4().hex, **_ended(abandoned)})

    def _set_metadata(self, values: dict[str, str | None]) -> None:
        """Merge ``values`` into the collection's metadata (a None removes its key)."""
        self._call("marking the collection as written", self._client.update_collection, metadata=values)

    def _metadata(self) -> dict[str, Any]:
        return self._call("reading the collection", self._client.get_collection).config.metadata or {}

    def _marked_version(self, metadata: dict[str, Any]) -> str | None:
        """The version by the write mark and exact count; None while a run is writing or without a mark."""
        if metadata.get(WRITE_MARK) and not _writing(metadata):
            return f"{self.collection}-m{metadata[WRITE_MARK]}-n{self._count()}"
        return None

    def _version(self) -> str:
        """The collection's write mark and exact point count: two calls, whatever the collection holds. While a run
        is writing (or after a writer was killed mid-run, until a run ends ABANDONED_S after its last heartbeat),
        and for a collection without a mark (made by a release before the marks and not written since, or on a
        server that keeps no collection metadata), the collection is read whole instead: a digest of every point id
        and image hash (a vector rewritten under the same image, as `catalogue check --repair` does, is not seen in
        it)."""
        marked = self._marked_version(self._metadata())
        if marked is not None:
            return marked
        digest = hashlib.sha256()
        hashes = self.image_hashes()
        for point_id in sorted(hashes):
            digest.update(f"{point_id}:{hashes[point_id]};".encode())
        return f"{self.collection}-{digest.hexdigest()[:16]}-n{len(hashes)}"


@dataclass
class _Run:
    """This store's latest write run: the version it started from ("" where unknown), its start mark, when it last
    refreshed its writing key (monotonic), its end mark once ended, and whether no other writer marked the collection
    between its start and end marks."""

    since: str
    mark: str
    beat: float
    end: str | None = None
    alone: bool = False


def _writing(metadata: dict[str, Any]) -> set[str]:
    """The start marks of the runs that a collection's metadata says are writing."""
    return {key.removeprefix(WRITING) for key in metadata if key.startswith(WRITING)}


def _ended(runs: set[str]) -> dict[str, str | None]:
    """The metadata update that removes the writing keys of ``runs``."""
    return {f"{WRITING}{run}": None for run in runs}


def _abandoned(metadata: dict[str, Any]) -> set[str]:
    """The writing runs whose key was not refreshed for ABANDONED_S (or holds no time, or a time ABANDONED_S or more
    ahead, which no writer whose clock agrees writes: it would never be ended): killed writers."""
    now = datetime.now(UTC)
    return {
        key.removeprefix(WRITING)
        for key, beat in metadata.items()
        if key.startswith(WRITING)
        and abs((_time(beat) or now - timedelta(seconds=ABANDONED_S)) - now).total_seconds() >= ABANDONED_S
    }


def _time(value: Any) -> datetime | None:
    try:
        read = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return read if read.tzinfo is not None else read.replace(tzinfo=UTC)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def shown_url(url: str) -> str:
    """A server URL for messages: user info and secret query parameters (api-key, token, password) hidden."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    netloc = ("***@" if parts.username or parts.password else "") + host + (f":{parts.port}" if parts.port else "")
    query = "&".join(
        f"{key}=***" if SECRET_KEY.search(key) else f"{key}={value}"
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _reported_storage(config: Any, asked: StorageParams, local: bool) -> StorageParams:
    """The storage parameters of an existing collection as the server reports them. qdrant-client's in-process mode
    (``local``) keeps none of them: there they are those the collection was created with in this process."""
    if local:
        return asked
    params = config.params
    return StorageParams(
        "int8" if getattr(config.quantization_config, "scalar", None) is not None else "none",
        params.shard_number,
        params.replication_factor,
        params.write_consistency_factor,
    )
