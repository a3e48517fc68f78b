"""One attribution request: embed -> nearest works -> indicators -> committed audit record -> result."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from attribution_audit.audit.db import session_scope
from attribution_audit.audit.models import (
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
    Work,
    utcnow,
)
from attribution_audit.embedding.base import Embedder
from attribution_audit.images import LoadedImage, load_image
from attribution_audit.metrics import artist_entropy, confidence_score
from attribution_audit.vectorstore import Hit, VectorStore

DEFAULT_K = 10


@dataclass(frozen=True)
class Neighbour:
    rank: int
    work_id: str
    catalogue: str
    artist: str
    similarity: float
    distance: float


@dataclass(frozen=True)
class Attribution:
    """A committed attribution, as printed by ``attribute`` and ``audit show``."""

    request_id: str
    created_at: datetime
    image: str
    image_sha256: str
    k: int
    neighbours: list[Neighbour]
    entropy: float
    nn_distance: float | None
    confidence: float
    embedder_fingerprint: str
    index_params: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form of the CLI."""
        return {
            "request_id": self.request_id,
            "created_at": self.created_at.isoformat(),
            "image": self.image,
            "image_sha256": self.image_sha256,
            "k": self.k,
            "neighbours": [asdict(n) for n in self.neighbours],
            "entropy": self.entropy,
            "nn_distance": self.nn_distance,
            "confidence": self.confidence,
            "embedder_fingerprint": self.embedder_fingerprint,
            "index_params": self.index_params,
        }

    @classmethod
    def from_record(cls, request: AttributionRequest) -> Attribution:
        """Rebuild the result from its audit rows."""
        metrics = request.metrics
        return cls(
            request_id=request.id,
            created_at=request.created_at,
            image=request.image_path,
            image_sha256=request.image_sha256,
            k=request.k,
            neighbours=[
                Neighbour(n.rank, n.work_id, n.catalogue, n.artist, n.similarity, n.distance)
                for n in request.neighbours
            ],
            entropy=metrics.entropy if metrics else 0.0,
            nn_distance=metrics.nn_distance if metrics else None,
            confidence=metrics.confidence if metrics else 0.0,
            embedder_fingerprint=request.embedder_fingerprint,
            index_params=request.index_params,
        )


def neighbours_from_hits(hits: Sequence[Hit]) -> list[Neighbour]:
    """Ranked neighbours; cosine distance = 1 - similarity."""
    return [
        Neighbour(
            rank=rank,
            work_id=str(hit.payload.get("work_id", hit.point_id)),
            catalogue=str(hit.payload.get("catalogue", "")),
            artist=str(hit.payload.get("artist", "")),
            similarity=hit.similarity,
            distance=1.0 - hit.similarity,
        )
        for rank, hit in enumerate(hits, start=1)
    ]


class Attributor:
    """Attributes images against one store with one embedder and writes every request to the audit log."""

    def __init__(
        self, engine: Engine, store: VectorStore, embedder: Embedder, embedder_name: str, requester: str
    ) -> None:
        self.engine = engine
        self.store = store
        self.embedder = embedder
        self.embedder_name = embedder_name
        self.requester = requester

    def attribute(self, image_path: str | Path, k: int = DEFAULT_K) -> Attribution:
        """Attribute one image; returns only after the audit record is committed."""
        if k < 1:
            raise ValueError("k must be at least 1")
        image = load_image(image_path, target_size=224)
        vector = self.embedder.embed([image.image])[0]
        hits = self.store.search(vector, k)
        return self._record(image, k, neighbours_from_hits(hits))

    def _record(self, image: LoadedImage, k: int, neighbours: list[Neighbour]) -> Attribution:
        entropy = artist_entropy([n.artist for n in neighbours])
        nn_distance = neighbours[0].distance if neighbours else None
        attribution = Attribution(
            request_id=str(uuid.uuid4()),
            created_at=utcnow(),
            image=str(image.path),
            image_sha256=image.sha256,
            k=k,
            neighbours=neighbours,
            entropy=entropy,
            nn_distance=nn_distance,
            confidence=confidence_score(entropy, nn_distance),
            embedder_fingerprint=self.embedder.fingerprint,
            index_params=self.store.index_info(),
        )
        with session_scope(self.engine) as session:
            work_pks = _work_pks(session, neighbours)
            session.add(
                AttributionRequest(
                    id=attribution.request_id,
                    created_at=attribution.created_at,
                    requester=self.requester,
                    image_path=attribution.image,
                    image_sha256=attribution.image_sha256,
                    embedder_name=self.embedder_name,
                    embedder_fingerprint=attribution.embedder_fingerprint,
                    store_kind=self.store.kind,
                    collection=self.store.collection,
                    index_params=attribution.index_params,
                    k=k,
                )
            )
            session.flush()
            session.add_all(
                AttributionNeighbour(
                    request_id=attribution.request_id,
                    rank=n.rank,
                    work_pk=work_pks.get((n.catalogue, n.work_id)),
                    catalogue=n.catalogue,
                    work_id=n.work_id,
                    artist=n.artist,
                    similarity=n.similarity,
                    distance=n.distance,
                )
                for n in neighbours
            )
            session.add(
                AttributionMetrics(
                    request_id=attribution.request_id,
                    entropy=entropy,
                    nn_distance=nn_distance,
                    confidence=attribution.confidence,
                )
            )
        return attribution


def _work_pks(session: Any, neighbours: Sequence[Neighbour]) -> dict[tuple[str, str], int]:
    """Audit-DB primary keys of the neighbour works, keyed by (catalogue, work_id)."""
    from attribution_audit.audit.models import Catalogue

    if not neighbours:
        return {}
    rows = session.execute(
        select(Catalogue.name, Work.work_id, Work.id)
        .join(Catalogue, Work.catalogue_id == Catalogue.id)
        .where(Work.work_id.in_({n.work_id for n in neighbours}))
    )
    return {(cat, wid): pk for cat, wid, pk in rows}
