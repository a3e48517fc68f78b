"""Works as points of a vector space and search hits: the values that cross every vector store."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

CONTENT, STYLE = "content", "style"
SPACES = (CONTENT, STYLE)
LAYOUT = "layout"  # the named vector copy detection draws candidates from (embedding.layout), not a query space
# The payload fields a search hit carries: what a request reads of its K x oversampling candidates (each one's artist;
# the K kept become the record's neighbours). A catalogue's other metadata (title, a manifest's own columns) stays in
# the store, so a request does not read more with each column a catalogue adds.
HIT_FIELDS = ("work_id", "artist", "catalogue", "version", "image_sha256")

_HEX_DIGITS = frozenset("0123456789abcdef")  # a digest as ingestion writes it: lowercase hex
# Namespace of the deterministic point ids: uuid5(POINT_NAMESPACE, "<catalogue>/<work_id>").
POINT_NAMESPACE = uuid.UUID("5b0d6c1e-3f6a-4f0e-9a57-6c2f1d7e8a90")
_NAMESPACE_BYTES = POINT_NAMESPACE.bytes


def point_id_for(catalogue: str, work_id: str) -> str:
    """The stable Qdrant point id of a work: the same work always lands on the same point."""
    return str(uuid.UUID(bytes=_point_bytes(catalogue, work_id)))


def _point_bytes(catalogue: str, work_id: str) -> bytes:
    """The 16 bytes of ``uuid5(POINT_NAMESPACE, "<catalogue>/<work_id>")``, built without a ``uuid.UUID`` (a third of
    ``uuid.uuid5``'s time: a request checks each of its K neighbours' points with it)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{catalogue}/{work_id}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return bytes(digest)


def vector_digest(content: np.ndarray, style: np.ndarray | None = None) -> str:
    """sha256 of a point's vectors as stored: the content vector's float32 little-endian bytes, then the style
    vector's, if any (recorded at ingest; ``catalogue check`` recomputes it from the store)."""
    digest = hashlib.sha256(np.ascontiguousarray(content, dtype="<f4").tobytes())
    if style is not None:
        digest.update(np.ascontiguousarray(style, dtype="<f4").tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph parameters (``m``, ``ef_construct``: fixed when a collection is built) and the search's ``hnsw_ef``
    (a search-time parameter: the engine searches with max(hnsw_ef, limit)); recorded with every attribution."""

    m: int = 16
    ef_construct: int = 128
    hnsw_ef: int = 128

    def __post_init__(self) -> None:
        for name in ("m", "ef_construct", "hnsw_ef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


QUANTIZATIONS = ("none", "int8")


@dataclass(frozen=True)
class StorageParams:
    """How a new collection stores its vectors; recorded with every attribution. ``quantization="int8"``: Qdrant's
    scalar quantisation (4x less memory for the searched vectors), every search rescored by the engine on the
    original vectors, so scores stay exact. ``shard_number``, ``replication_factor``, ``write_consistency_factor``:
    a Qdrant server's (cluster's) distribution of the collection (None: the server's default)."""

    quantization: str = "none"
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {self.quantization!r}")
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")

    @property
    def distributed(self) -> bool:
        """Whether any cluster setting is given (they need a Qdrant server)."""
        return any(v is not None for v in (self.shard_number, self.replication_factor, self.write_consistency_factor))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PointIdentity(NamedTuple):
    """What a point says of the work it holds (its payload), and what the catalogue says of the work embedded under
    that point: the two must agree (``catalogue check``). Each field as text; ``version`` "" where a payload holds
    none (a point written before versions)."""

    image_sha256: str
    catalogue: str
    work_id: str
    artist: str
    version: str

    def agrees_with(self, recorded: PointIdentity) -> bool:
        """Whether this point's identity is the one the catalogue ``recorded`` (a point without a version agrees
        on the rest alone: it was written before versions, and ingest rewrites it when its image changes)."""
        return self == recorded or (not self.version and self._replace(version=recorded.version) == recorded)


@dataclass(frozen=True)
class WorkPoint:
    """One work's content vector, optional style and layout vectors, and payload (work_id, artist, catalogue,
    image_sha256...)."""

    point_id: str
    vector: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)
    style: np.ndarray | None = None
    layout: np.ndarray | None = None


class _Scored(Protocol):
    """An engine's scored point, as far as a hit reads it: its ``id`` (a ``uuid.UUID`` or a string)."""

    @property
    def id(self) -> Any: ...


class Hit:
    """One search result: cosine similarity in [-1, 1] and the stored payload (an engine's hit: its :data:`HIT_FIELDS`
    alone; a learned space's, searched in memory: the whole payload its points were read with). Slotted and not
    frozen, as no code changes one: a request makes hundreds (K x oversampling), and a frozen dataclass's
    ``__init__`` costs ~4x.

    ``point_id`` is a string, or the engine's scored point whose id is read and made a string when first asked: a
    request names the ids of its K neighbours, not of its K x oversampling candidates, and qdrant-edge builds each
    id as a ``uuid.UUID`` (~2 us, and as much again to make it a string). Until its id is read, a hit holds the
    engine's point, which cannot be pickled: hits stay in the process that searched."""

    __slots__ = ("_point_id", "payload", "similarity", "vector", "vectors")

    def __init__(
        self,
        point_id: str | _Scored,
        similarity: float,
        payload: dict[str, Any],
        vector: np.ndarray | None = None,  # of the searched space, when asked for
        vectors: dict[str, np.ndarray] | None = None,  # every named vector, when asked for
    ) -> None:
        self._point_id, self.similarity, self.payload = point_id, similarity, payload
        self.vector, self.vectors = vector, vectors

    @property
    def point_id(self) -> str:
        point_id = self._point_id
        if not isinstance(point_id, str):
            point_id = self._point_id = str(point_id.id)
        return point_id

    def __repr__(self) -> str:
        return f"Hit({self.point_id!r}, {self.similarity!r}, {self.payload!r})"

    def is_point_of(self, catalogue: str, work_id: str) -> bool:
        """Whether this hit's point is that work's (:func:`point_id_for`): a payload that names another work than its
        point's was rewritten behind the catalogue. Compared as bytes, the engine's id not made a string."""
        expected = _point_bytes(catalogue, work_id)
        point = self._point_id
        found = point if isinstance(point, str) else point.id
        if isinstance(found, uuid.UUID):
            return found.bytes == expected
        return isinstance(found, str) and found.replace("-", "").lower() == expected.hex()

    @property
    def image_sha256(self) -> str | None:
        """The sha256 of the image the work was embedded from, as ingestion wrote it into the payload (with the
        vectors: what this hit's similarity measured); None where the payload holds no such digest."""
        digest = self.payload.get("image_sha256")
        if isinstance(digest, str) and len(digest) == 64 and _HEX_DIGITS.issuperset(digest):
            return digest
        return None
