"""The VectorStore protocol and the small value types that cross it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

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
    """One work's vector and payload (work_id, artist, title, catalogue, image_sha256, extra columns)."""

    point_id: str
    vector: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result: cosine similarity in [-1, 1] and the stored payload."""

    point_id: str
    similarity: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None


class VectorStore(Protocol):
    """The operations attribution-audit uses, over an embedded shard or a Qdrant server."""

    kind: str
    collection: str
    params: HnswParams

    def ensure_collection(self, dim: int) -> None:
        """Create the collection (cosine, HNSW, artist payload index) or check its dimension."""
        ...

    def upsert(self, points: Sequence[WorkPoint]) -> None:
        """Insert or replace points by id (idempotent)."""
        ...

    def build_index(self) -> None:
        """Make sure the HNSW graph covers every point (blocks until done where the engine allows)."""
        ...

    def search(self, vector: np.ndarray, limit: int, *, exact: bool = False, with_vectors: bool = False) -> list[Hit]:
        """The ``limit`` nearest points to a unit ``vector``, best first (stored vectors included on request)."""
        ...

    def fetch_all(self) -> tuple[list[str], np.ndarray]:
        """Every point id and its stored (unit) vector, for the exact index."""
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
