"""The VectorStore protocol and the small value types that cross it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

CONTENT, STYLE = "content", "style"
SPACES = (CONTENT, STYLE)

# Namespace of the deterministic point ids: uuid5(POINT_NAMESPACE, "<catalogue>/<work_id>").
POINT_NAMESPACE = uuid.UUID("5b0d6c1e-3f6a-4f0e-9a57-6c2f1d7e8a90")


def point_id_for(catalogue: str, work_id: str) -> str:
    """The stable Qdrant point id of a work: the same work always lands on the same point."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{catalogue}/{work_id}"))


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph and search parameters; recorded with every attribution."""

    m: int = 16
    ef_construct: int = 128
    hnsw_ef: int = 128

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class WorkPoint:
    """One work's content vector, optional style vector, and payload (work_id, artist, catalogue, image_sha256...)."""

    point_id: str
    vector: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)
    style: np.ndarray | None = None


def point_vectors(point: WorkPoint) -> dict[str, list[float]]:
    """The named vectors of a point as the engines take them."""
    vectors = {CONTENT: np.asarray(point.vector, dtype=np.float32).tolist()}
    if point.style is not None:
        vectors[STYLE] = np.asarray(point.style, dtype=np.float32).tolist()
    return vectors


@dataclass(frozen=True)
class Hit:
    """One search result: cosine similarity in [-1, 1] and the stored payload."""

    point_id: str
    similarity: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None  # of the searched space, when asked for
    vectors: dict[str, np.ndarray] | None = None  # every named vector, when asked for


class VectorStore(Protocol):
    """The operations attribution-audit uses, over an embedded shard or a Qdrant server."""

    kind: str
    collection: str
    params: HnswParams

    def ensure_collection(self, dim: int, style_dim: int | None = None) -> None:
        """Create the collection (named cosine vectors ``content`` [+ ``style``], HNSW, artist payload index) or
        check its dimensions; a style space can be added to an embedded collection later."""
        ...

    def spaces(self) -> tuple[str, ...]:
        """The vector spaces the collection holds: ``("content",)`` or ``("content", "style")``."""
        ...

    def upsert(self, points: Sequence[WorkPoint]) -> None:
        """Insert or replace points by id (idempotent)."""
        ...

    def build_index(self) -> None:
        """Make sure the HNSW graph covers every point (blocks until done where the engine allows)."""
        ...

    def search(
        self,
        vector: np.ndarray,
        limit: int,
        *,
        exact: bool = False,
        with_vectors: bool = False,
        space: str = CONTENT,
    ) -> list[Hit]:
        """The ``limit`` nearest points to a unit ``vector`` in ``space``, best first (vectors on request)."""
        ...

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
        """The engine's own fusion: ``prefetch`` nearest in each space, merged by weighted reciprocal rank fusion
        (see ``attribution.rrf_fuse`` for the exact formula); ``similarity`` of the hits is that fused score."""
        ...

    def fetch_all(self, space: str = CONTENT) -> tuple[list[str], np.ndarray]:
        """Every point id and its stored (unit) vector in ``space``, for the exact index."""
        ...

    def delete(self, point_ids: Sequence[str]) -> None:
        """Remove points by id (missing ids are ignored)."""
        ...

    def iter_points(self) -> Iterator[WorkPoint]:
        """Every point with its vector and payload (to copy a collection into a scratch one)."""
        ...

    def image_hashes(self) -> dict[str, str]:
        """Point id -> the ``image_sha256`` in its payload, for every point (consistency checks)."""
        ...

    def content_version(self) -> str:
        """A string that changes whenever the collection's content may have changed (keys the exact-index cache)."""
        ...

    def existing_ids(self, point_ids: Sequence[str]) -> set[str]:
        """The subset of ``point_ids`` present in the collection."""
        ...

    def count(self) -> int:
        """Number of points in the collection."""
        ...

    def index_info(self) -> dict[str, Any]:
        """Store kind, collection, HNSW parameters and how many vectors the graph indexes."""
        ...

    def close(self) -> None:
        """Flush and release the store."""
        ...


def named_vectors(raw: Any) -> dict[str, np.ndarray]:
    """The {name: vector} dict an engine returns, as float32 arrays."""
    return {name: np.asarray(v, dtype=np.float32) for name, v in (raw or {}).items()}


def hit_from(point: Any, with_vectors: bool, space: str) -> Hit:
    """A Hit from an engine's scored point (qdrant-edge and qdrant-client have the same fields)."""
    vectors = named_vectors(point.vector) if with_vectors else None
    return Hit(
        str(point.id), float(point.score), dict(point.payload or {}), vectors[space] if vectors else None, vectors
    )
