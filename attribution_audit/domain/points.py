"""Works as points of a vector space and search hits: the values that cross every vector store."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

CONTENT, STYLE = "content", "style"
SPACES = (CONTENT, STYLE)

# Namespace of the deterministic point ids: uuid5(POINT_NAMESPACE, "<catalogue>/<work_id>").
POINT_NAMESPACE = uuid.UUID("5b0d6c1e-3f6a-4f0e-9a57-6c2f1d7e8a90")


def point_id_for(catalogue: str, work_id: str) -> str:
    """The stable Qdrant point id of a work: the same work always lands on the same point."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{catalogue}/{work_id}"))


def vector_digest(content: np.ndarray, style: np.ndarray | None = None) -> str:
    """sha256 of a point's vectors as stored: the content vector's float32 little-endian bytes, then the style
    vector's, if any (recorded at ingest; ``catalogue check`` recomputes it from the store)."""
    digest = hashlib.sha256(np.ascontiguousarray(content, dtype="<f4").tobytes())
    if style is not None:
        digest.update(np.ascontiguousarray(style, dtype="<f4").tobytes())
    return digest.hexdigest()


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


@dataclass(frozen=True)
class Hit:
    """One search result: cosine similarity in [-1, 1] and the stored payload."""

    point_id: str
    similarity: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None  # of the searched space, when asked for
    vectors: dict[str, np.ndarray] | None = None  # every named vector, when asked for
