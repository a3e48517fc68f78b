"""The VectorStore base class that both stores derive from, and the helpers that turn engine records into values.

Every operation is written here once, with its edge cases settled for both engines: a collection not created yet,
an absent or unknown space, vectors of the wrong size, empty or malformed id lists, a limit below one. A store
(:class:`~attribution_audit.store.vectors.qdrant_edge.EdgeStore`,
:class:`~attribution_audit.store.vectors.qdrant_server.ServerStore`) supplies only the engine primitives, the
abstract ``_`` methods, and ``close``; the public operations are final, so a store cannot drift from them.
"""

from __future__ import annotations

import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, final

import numpy as np

from attribution_audit.domain.points import (
    CONTENT,
    LAYOUT,
    SPACES,
    STYLE,
    Hit,
    HnswParams,
    PointIdentity,
    StorageParams,
    WorkPoint,
    point_id_for,
)
from attribution_audit.errors import VectorStoreError

__all__ = [
    "CONTENT",
    "LAYOUT",
    "SPACES",
    "STYLE",
    "Hit",
    "HnswParams",
    "StorageParams",
    "VectorStore",
    "WorkPoint",
    "hit_from",
    "named_vectors",
    "point_id_for",
    "point_vectors",
]

UPSERT_BATCH = 512
SCROLL_PAGE = 2048

# What an engine's scroll takes for vectors and payload: all, none, or the named ones.
Selection = bool | list[str]


def point_vectors(point: WorkPoint) -> dict[str, Any]:
    """The named vectors of a point as the engines take them: {space: list of floats}."""
    vectors = {CONTENT: np.asarray(point.vector, dtype=np.float32).tolist()}
    if point.style is not None:
        vectors[STYLE] = np.asarray(point.style, dtype=np.float32).tolist()
    if point.layout is not None:
        vectors[LAYOUT] = np.asarray(point.layout, dtype=np.float32).tolist()
    return vectors


def named_vectors(raw: Any) -> dict[str, np.ndarray]:
    """The {name: vector} dict an engine returns, as float32 arrays."""
    return {name: np.asarray(v, dtype=np.float32) for name, v in (raw or {}).items()}


def hit_from(point: Any, with_vectors: bool, space: str) -> Hit:
    """A Hit from an engine's scored point (qdrant-edge and qdrant-client have the same fields): its payload as the
    engine returned it (nothing changes a hit's payload), its id read when first asked."""
    vectors = named_vectors(point.vector) if with_vectors else None
    return Hit(point, float(point.score), point.payload or {}, vectors[space] if vectors else None, vectors)


def checked_ids(point_ids: Iterable[str]) -> list[str]:
    """The ids as a list; ValueError for one that is not a point id (a lowercase UUID string, as point_id_for makes).

    Both engines would return such an id in another spelling or not at all, so it could never match what was asked.
    """
    ids = list(point_ids)
    for point_id in ids:
        try:
            canonical = isinstance(point_id, str) and str(uuid.UUID(point_id)) == point_id
        except ValueError:
            canonical = False
        if not canonical:
            raise ValueError(f"{point_id!r} is not a point id (a lowercase UUID string, see point_id_for)")
    return ids


def _work_point(record: Any) -> WorkPoint:
    vectors = named_vectors(record.vector)
    return WorkPoint(
        str(record.id), vectors[CONTENT], dict(record.payload or {}), vectors.get(STYLE), vectors.get(LAYOUT)
    )


def _space_matrix(records: Iterable[Any], space: str, size: int) -> tuple[list[str], np.ndarray]:
    """The ids of the records with a vector in ``space`` and those vectors as one float32 matrix (``(0, size)``
    when there are none)."""
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for record in records:
        vectors = named_vectors(record.vector)
        if space in vectors:
            ids.append(str(record.id))
            rows.append(vectors[space])
    return ids, np.vstack(rows) if rows else np.zeros((0, size), dtype=np.float32)


def _identity_text(field: str, value: Any) -> str:
    """A payload value as :class:`PointIdentity` holds it: "" where absent; a version other than an integer as its
    repr (a version "1" must not read as version 1: requests refuse it)."""
    if value is None:
        return ""
    return repr(value) if field == "version" and type(value) is not int else str(value)


def _pages(ids: list[str]) -> Iterator[list[str]]:
    """``ids`` in pages of at most SCROLL_PAGE, for the engines' retrieve by id."""
    return (ids[start : start + SCROLL_PAGE] for start in range(0, len(ids), SCROLL_PAGE))


def _floats(vector: np.ndarray) -> list[float]:
    floats: list[float] = np.asarray(vector, dtype=np.float32).tolist()  # each float32 as the float it is
    return floats


@dataclass(frozen=True)
class FusedQuery:
    """An engine's fusion query: the ``prefetch`` nearest in each space of ``vectors``, merged by reciprocal rank
    fusion with ``rrf_k`` and ``weights`` (in the order of ``vectors``)."""

    vectors: dict[str, list[float]]
    prefetch: int
    weights: list[float]
    rrf_k: int


class VectorStore(ABC):
    """One Qdrant collection of works (named cosine vectors ``content`` [+ ``style``], payload per point)."""

    kind: str  # "qdrant-edge", "qdrant-server" or "qdrant-local" (qdrant-client's in-process mode)
    index_kind: str = "hnsw"  # what answers a search: "hnsw", or "exact" where the engine only brute-forces
    adds_spaces: bool = False  # whether a space can be added to an existing collection (:meth:`_add_space`)

    def __init__(
        self,
        collection: str,
        params: HnswParams | None = None,
        storage: StorageParams | None = None,
        *,
        search_ef: int | None = None,
    ) -> None:
        self.collection = collection
        self.search_ef = search_ef  # the searches' hnsw_ef when set; else the collection's recorded one (128)
        self.params = self._searched_with(params or HnswParams())
        self.storage = storage or StorageParams()  # what a new collection gets; an existing one reports its own
        self._run_marked: bool | None = None  # inside :meth:`writing`: whether the run has marked its change yet

    def _searched_with(self, params: HnswParams) -> HnswParams:
        """``params`` with the configured search ef, if any: a search-time parameter, so no re-ingest is needed."""
        return params if self.search_ef is None else replace(params, hnsw_ef=self.search_ef)

    # -- operations --------------------------------------------------------------------------------------------
    @final
    def ensure_collection(
        self, dim: int, style_dim: int | None = None, layout_dim: int | None = None, *, layouts_later: bool = False
    ) -> None:
        """Create the collection (cosine ``content`` [+ ``style``] [+ ``layout``] vectors, HNSW, artist payload
        index) or check its sizes. An engine that can (the embedded shard) adds a missing style or layout space in
        place; where one cannot, a collection without a layout space stays so (its points are written without
        layouts: :meth:`upsert`). ``layouts_later``: this run writes no layouts (precomputed vectors), so the layout
        space is made now only where a later run could not add it: an empty space still takes its size in storage for
        every point (1 GiB per million works at 256 floats). On a mismatch the store is closed (an embedded shard's
        lock released) and VectorStoreError raised."""
        wanted = {CONTENT: dim} | ({STYLE: style_dim} if style_dim else {})
        if layouts_later and self.adds_spaces:
            layout_dim = None
        held = self._vector_sizes()
        if held is None:
            self._create(wanted | ({LAYOUT: layout_dim} if layout_dim else {}))
            return
        if layout_dim and held.get(LAYOUT, layout_dim) != layout_dim:
            self.close()
            raise VectorStoreError(f"{self._named} holds {held[LAYOUT]}-d layouts, not {layout_dim}-d")
        for space, size in wanted.items():
            if held.get(space) == size or (space not in held and self._adds(space, size)):
                continue
            have = f"{held[space]}-d" if space in held else "no"
            self.close()
            raise VectorStoreError(
                f"{self._named} holds {have} {space} vectors but the embedder gives {size}-d; "
                "use the embedder and spaces the catalogue was ingested with"
            )
        if layout_dim and LAYOUT not in held:  # once the sizes match: a refused embedder changes nothing
            self._adds(LAYOUT, layout_dim)

    def _adds(self, space: str, size: int) -> bool:
        """Add a space to the existing collection where the engine can (:meth:`_add_space`); False elsewhere."""
        if not self.adds_spaces:
            return False
        with self._changing():
            return self._add_space(space, size)

    @final
    def sizes(self) -> dict[str, int]:
        """The vector size of each space the collection holds; empty before it is created."""
        return self._vector_sizes() or {}

    @final
    def spaces(self) -> tuple[str, ...]:
        """The spaces the collection holds, in SPACES order: ``("content",)`` or ``("content", "style")``;
        ``()`` before it is created (``layout`` is not a query space: :meth:`sizes` names it)."""
        held = self._vector_sizes() or {}
        return tuple(space for space in SPACES if space in held)

    @final
    def upsert(self, points: Sequence[WorkPoint]) -> None:
        """Insert or replace points by id (idempotent), in batches; every vector must fit its space. Layouts are
        left out where the collection has no layout space (one made before layouts, on a server)."""
        checked_ids(p.point_id for p in points)
        if LAYOUT not in self._require():
            points = [replace(p, layout=None) if p.layout is not None else p for p in points]
        shapes = {
            (space, len(vector)): point.point_id
            for point in points
            for space, vector in ((CONTENT, point.vector), (STYLE, point.style), (LAYOUT, point.layout))
            if vector is not None
        }
        for (space, length), point_id in shapes.items():  # one check per distinct vector size
            self._space_size(space, length, f"point {point_id}")
        if not points:
            return
        with self._changing():
            for start in range(0, len(points), UPSERT_BATCH):
                self._upsert(points[start : start + UPSERT_BATCH])

    @final
    def build_index(self) -> None:
        """Make sure the HNSW graph covers every point (blocks until done where the engine allows)."""
        self._require()
        self._optimize()

    @final
    def search(
        self,
        vector: np.ndarray,
        limit: int,
        *,
        exact: bool = False,
        with_vectors: bool = False,
        space: str = CONTENT,
    ) -> list[Hit]:
        """The ``limit`` nearest points to a unit ``vector`` in ``space``, best first, each with its payload's
        ``HIT_FIELDS`` (``domain.points``; every named vector of each hit on request); ``[]`` for a limit below one."""
        self._space_size(space, len(vector), "the query")
        if limit < 1:
            return []
        found = self._query(_floats(vector), space, limit, exact=exact, with_vectors=with_vectors)
        return [hit_from(p, with_vectors, space) for p in found]

    @final
    def search_fused(
        self,
        vectors: dict[str, np.ndarray],
        limit: int,
        *,
        prefetch: int,
        weights: dict[str, float],
        rrf_k: int = 60,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """The engine's own fusion: ``prefetch`` nearest in each space of ``vectors``, merged by weighted reciprocal
        rank fusion (``domain.ranking.rrf_fuse`` mirrors the formula); ``similarity`` of the hits is that fused
        score, ``vector`` their content vector. ``[]`` for a limit or prefetch below one."""
        if not vectors:
            raise ValueError("a fused search needs the query vector of at least one space")
        unweighted = sorted(set(vectors) - set(weights))
        if unweighted:
            raise ValueError(f"a fused search needs a weight for every space; none for {', '.join(unweighted)}")
        for space, vector in vectors.items():
            self._space_size(space, len(vector), "the query")
        if limit < 1 or prefetch < 1:
            return []
        fusion = FusedQuery(
            {space: _floats(v) for space, v in vectors.items()},
            prefetch,
            [float(weights[space]) for space in vectors],
            rrf_k,
        )
        found = self._query_fused(fusion, limit, with_vectors=with_vectors)
        return [hit_from(p, with_vectors, CONTENT) for p in found]

    @final
    def fetch_all(self, space: str = CONTENT) -> tuple[list[str], np.ndarray]:
        """Every point id with a vector in ``space`` and that (unit) vector, in id order, for the exact index:
        ``(ids, float32 matrix of shape (len(ids), size of the space))``, ``(0, size)`` when there are none."""
        size = self._space_size(space)
        return _space_matrix(self._records(with_vector=[space], with_payload=False), space, size)

    @final
    def delete(self, point_ids: Sequence[str]) -> int:
        """Remove points by id; ids not present, and a collection not created yet, are ignored (with none present,
        nothing is written: the content version stays). The number of points removed."""
        ids = checked_ids(point_ids)
        if not ids or self._vector_sizes() is None:
            return 0
        stored = [str(r.id) for page in _pages(ids) for r in self._retrieve(page, with_vector=False)]
        if stored:
            with self._changing():
                self._delete(stored)
        return len(stored)

    @final
    def iter_points(self) -> Iterator[WorkPoint]:
        """Every point with its base spaces' vectors (not its layout) and payload, in id order (to copy a collection
        into a scratch one, to fit a space)."""
        return map(_work_point, self._records(with_vector=list(self.spaces()), with_payload=True))

    @final
    def set_layouts(self, layouts: dict[str, np.ndarray]) -> None:
        """Write the layout vector of existing points (point id -> vector), leaving their other vectors and payload
        as they are; nothing where the collection has no layout space."""
        ids = checked_ids(layouts)
        if LAYOUT not in self._require() or not ids:
            return
        self._space_size(LAYOUT, len(next(iter(layouts.values()))), f"the layout of point {ids[0]}")
        with self._changing():
            for start in range(0, len(ids), UPSERT_BATCH):
                batch = ids[start : start + UPSERT_BATCH]
                self._set_vectors(LAYOUT, {point: _floats(layouts[point]) for point in batch})

    @final
    def image_hashes(self, point_ids: Sequence[str] | None = None) -> dict[str, str]:
        """Point id -> the ``image_sha256`` of its payload ("" where absent) for every point (consistency checks; the
        Qdrant server's content version, per request), or for those of ``point_ids`` the collection holds; ``{}``
        before the collection is created."""
        return {
            point: str(payload.get("image_sha256", ""))
            for point, payload in self._payloads(point_ids, ["image_sha256"])
        }

    @final
    def identities(self, point_ids: Sequence[str] | None = None) -> dict[str, PointIdentity]:
        """Point id -> the work its payload names (image digest, catalogue, work id, artist, version; "" where
        absent) for every point, or for those of ``point_ids`` the collection holds: what ``catalogue check`` and
        ingest compare with the catalogue's. ``{}`` before the collection is created."""
        fields = PointIdentity._fields
        return {
            point: PointIdentity(*(_identity_text(field, payload.get(field)) for field in fields))
            for point, payload in self._payloads(point_ids, list(fields))
        }

    def _payloads(self, point_ids: Sequence[str] | None, fields: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """(point id, payload) of every point, read with ``fields`` only, or of those of ``point_ids`` the
        collection holds; none before the collection is created."""
        ids = None if point_ids is None else checked_ids(point_ids)
        if ids == [] or self._vector_sizes() is None:
            return []
        records = (
            self._records(with_vector=False, with_payload=fields)
            if ids is None
            else self._retrieve(ids, with_vector=False, with_payload=True)
        )
        return [(str(r.id), r.payload or {}) for r in records]

    @final
    def content_version(self) -> str:
        """A string that changes whenever the collection's content may have changed through this class: the same
        string means the same content, between write runs (keys the exact and learned-space caches; recorded with
        each request). Read per request; see each store's ``_version`` for what it reads."""
        self._require()
        return self._version()

    @final
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold around a run of writes (an ingest): the store marks its content as changed (:meth:`_mark_changed`)
        once before the run's first write and once after the run, not around every operation (on a Qdrant cluster
        each mark is a consensus operation). A run that writes nothing marks nothing (on a server, it ends the keys
        of runs a killed writer left: :meth:`_settle`)."""
        if self._run_marked is not None:  # inside an outer run
            yield
            return
        self._run_marked = False
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            marked, self._run_marked = self._run_marked, None
            if marked:
                self._mark_after(failed)
            elif not failed:
                self._settle()

    @final
    def unended_writes(self) -> dict[str, str]:
        """The write runs the collection says are writing now (a server's: another process's run at work, or one a
        killed writer left), each as its start mark -> the time it last wrote ("" unknown); while there is one,
        every request reads every point to version the collection. ``{}`` for the embedded shard."""
        return self._unended_writes() if self._vector_sizes() is not None else {}

    @final
    def wrote_alone_since(self, version: str) -> bool:
        """Whether this store's latest write run (or operation) was all that changed the collection since its
        content :meth:`content_version` was ``version``: no other writer wrote before the run began or while it ran
        (then the run's own points are all the change, and an exact cache of ``version`` can be brought forward from
        them alone)."""
        return self._wrote_alone_since(version)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Around one write operation: marked before it and after it, or once for the whole :meth:`writing` run."""
        if self._run_marked is not None:
            if not self._run_marked:
                self._mark_changed(writing=True)
                self._run_marked = True
            yield
            return
        self._mark_changed(writing=True)
        try:
            yield
        except BaseException:
            self._mark_after(failed=True)
            raise
        self._mark_after(failed=False)

    def _mark_after(self, failed: bool) -> None:
        """The mark after a write, failed or not: a reader that read the content while it was written reads it
        again. After a failed write, a failure to mark is left unsaid (the write's own error is the one to
        report)."""
        if not failed:
            self._mark_changed(writing=False)
            return
        with contextlib.suppress(Exception):
            self._mark_changed(writing=False)

    @final
    def fetch(self, point_ids: Sequence[str], space: str = CONTENT) -> tuple[list[str], np.ndarray]:
        """Those of ``point_ids`` with a vector in ``space``, and those vectors, as :meth:`fetch_all` gives them (to
        bring the exact index up to date with the points an ingest wrote, without reading the rest)."""
        ids = checked_ids(point_ids)
        size = self._space_size(space)
        return _space_matrix(
            (record for page in _pages(ids) for record in self._retrieve(page, with_vector=[space])), space, size
        )

    @final
    def points_of(self, point_ids: Sequence[str]) -> dict[str, WorkPoint]:
        """Point id -> the stored point (vectors and payload) of those of ``point_ids`` the collection holds with
        their content vector (a damaged vector file can leave a point without it)."""
        ids = checked_ids(point_ids)
        if not ids or self._vector_sizes() is None:
            return {}
        records = self._retrieve(ids, with_vector=True, with_payload=True)
        return {str(r.id): _work_point(r) for r in records if CONTENT in (r.vector or {})}

    @final
    def count(self) -> int:
        """Number of points in the collection (0 before it is created)."""
        return 0 if self._vector_sizes() is None else self._count()

    @final
    def count_with(self, space: str) -> int:
        """Number of points holding a vector in ``space`` (a point may lack its layout); 0 where the collection does
        not hold the space."""
        if space not in (self._vector_sizes() or {}):
            return 0
        return self._count_with(space)

    @final
    def index_info(self) -> dict[str, Any]:
        """Store kind, collection, HNSW and storage parameters (quantisation, shards, replication), points, vectors in
        the graph, spaces, and what answers a search."""
        created = self._vector_sizes() is not None
        return {
            "store": self.kind,
            "collection": self.collection,
            **self.params.as_dict(),
            **self.storage.as_dict(),
            "points": self._count() if created else 0,
            "indexed_vectors": self._indexed_count() if created else 0,
            "spaces": list(self.spaces()),
            "index": self.index_kind,
        }

    def hold(self, wait_s: float) -> None:
        """Open the store now and keep it until :meth:`close` (a long-running service); an embedded shard busy in
        another process for over ``wait_s`` is a VectorStoreError. A server is only asked for the collection."""
        self.spaces()

    @abstractmethod
    def close(self) -> None:
        """Flush and release the store (an embedded shard's lock: the next operation takes it again)."""

    # -- checks shared by the operations ----------------------------------------------------------------------
    @property
    def _named(self) -> str:
        return f"{self.location}: collection '{self.collection}'"

    def _require(self) -> dict[str, int]:
        """The collection's vector sizes; the one-line VectorStoreError when it has not been created yet."""
        held = self._vector_sizes()
        if held is None:
            raise VectorStoreError(
                f"{self.location}: no catalogue has been ingested into collection '{self.collection}' yet; "
                "run `attribution-audit ingest MANIFEST.csv` with the same --embedder first"
            )
        return held

    def _space_size(self, space: str, length: int | None = None, what: str = "") -> int:
        """The vector size of a space the collection holds, checked against ``length`` (of ``what``) when given."""
        held = self._require()
        if space not in (*SPACES, LAYOUT):
            raise VectorStoreError(f"unknown vector space '{space}'; the spaces are {', '.join(SPACES)}")
        if space == LAYOUT and space not in held:
            raise VectorStoreError(f"{self._named} holds no layouts; ingest the catalogue from its images again")
        if space not in held:
            raise VectorStoreError(
                f"{self._named} has no {space} vectors; ingest with --spaces {CONTENT},{space} first"
            )
        if length is not None and length != held[space]:
            raise VectorStoreError(
                f"{self._named} holds {held[space]}-d {space} vectors but {what} is {length}-d; "
                "use the embedder the catalogue was ingested with"
            )
        return held[space]

    def _records(self, *, with_vector: Selection, with_payload: Selection) -> Iterator[Any]:
        """Every record of the collection page by page, in id order (checked to exist now, read as iterated)."""
        self._require()
        return self._pages(with_vector, with_payload)

    def _pages(self, with_vector: Selection, with_payload: Selection) -> Iterator[Any]:
        offset = None
        while True:
            records, offset = self._scroll(offset, SCROLL_PAGE, with_vector=with_vector, with_payload=with_payload)
            yield from records
            if offset is None or not records:
                return

    # -- engine primitives (called only once the collection exists, except _vector_sizes and _create) ---------
    @property
    @abstractmethod
    def location(self) -> str:
        """Where the collection lives, as messages name it (a shard path, ``Qdrant at <url>``)."""

    @abstractmethod
    def _vector_sizes(self) -> dict[str, int] | None:
        """{space: size} of the collection's named vectors; None when it has not been created."""

    @abstractmethod
    def _create(self, sizes: dict[str, int]) -> None:
        """Create the collection with these named cosine vectors, the HNSW parameters and the artist index."""

    def _add_space(self, space: str, size: int) -> bool:
        """Add an empty named vector space to the existing collection; False where the engine cannot (default)."""
        return False

    @abstractmethod
    def _upsert(self, points: Sequence[WorkPoint]) -> None:
        """Write one batch of checked points."""

    @abstractmethod
    def _set_vectors(self, space: str, vectors: dict[str, list[float]]) -> None:
        """Write one space's vector of existing points (one batch), leaving the rest of each point as it is."""

    @abstractmethod
    def _optimize(self) -> None:
        """Bring the HNSW graph up to date."""

    @abstractmethod
    def _query(self, vector: list[float], space: str, limit: int, *, exact: bool, with_vectors: bool) -> list[Any]:
        """The engine's scored points, best first, with payload."""

    @abstractmethod
    def _query_fused(self, query: FusedQuery, limit: int, *, with_vectors: bool) -> list[Any]:
        """The engine's weighted RRF fusion of one prefetch per space, scored points best first, with payload."""

    @abstractmethod
    def _scroll(
        self, offset: Any, limit: int, *, with_vector: Selection, with_payload: Selection
    ) -> tuple[list[Any], Any]:
        """One page of records in id order from ``offset`` (None: the first), and the next offset (None: done)."""

    @abstractmethod
    def _delete(self, point_ids: list[str]) -> None:
        """Delete these (checked) ids."""

    @abstractmethod
    def _retrieve(self, point_ids: list[str], *, with_vector: Selection, with_payload: bool = False) -> list[Any]:
        """The records of those of the (checked) ids the collection holds."""

    @abstractmethod
    def _count(self) -> int:
        """Exact number of points."""

    @abstractmethod
    def _count_with(self, space: str) -> int:
        """Number of points holding a vector in ``space``, counted exactly."""

    @abstractmethod
    def _indexed_count(self) -> int:
        """Number of vectors the HNSW graph indexes."""

    @abstractmethod
    def _version(self) -> str:
        """See :meth:`content_version`."""

    @abstractmethod
    def _unended_writes(self) -> dict[str, str]:
        """See :meth:`unended_writes`."""

    @abstractmethod
    def _wrote_alone_since(self, version: str) -> bool:
        """See :meth:`wrote_alone_since`."""

    @abstractmethod
    def _settle(self) -> None:
        """At the end of a :meth:`writing` run that wrote nothing: end the mark of a run killed before its end."""

    @abstractmethod
    def _mark_changed(self, writing: bool) -> None:
        """Change :meth:`content_version` for every process that reads the collection: called before the first
        write of an operation or :meth:`writing` run (``writing``: a write cut short has changed it) and after its
        last (a reader that read while it was written reads again)."""
