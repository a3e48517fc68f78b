"""Vectors checked against the DB's digests (``catalogue check``), and bad ones rewritten from their source image.

Ingest records, per point, the sha256 of the vectors it wrote (``work_embeddings.vector_digest``). A vector changed
behind the DB's back (a shard file edited, rows rotated, bytes flipped) no longer matches: ``catalogue check`` samples
points (``--deep``: all of them) and names those. ``--repair`` embeds each one's recorded image again, when that file
still has the recorded hash, and rewrites the point (with its layout, embedding.layout); the others are dropped so
that the next ``ingest`` embeds them. The layout is not in the digest: it only chooses candidates for copy
detection, whose verdict compares the files themselves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from attribution_audit.domain.points import WorkPoint, vector_digest
from attribution_audit.embedding.layout import layout_vector
from attribution_audit.errors import ImageError
from attribution_audit.sources.images import load_image
from attribution_audit.store.catalogue import StoredVector
from attribution_audit.store.vectors import VectorStore

QUICK_SAMPLE = 256  # points whose vectors a quick check compares
BATCH = 512

# Embeds images: (content vectors, style vectors or None), one row per image.
Embed = Callable[[list[Image.Image]], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class VectorCheck:
    """How many points' vectors were compared, those that differ from their digest, and what a repair did."""

    checked: int = 0
    unrecorded: int = 0  # points embedded before digests were recorded (migration 0007): not comparable
    corrupt: list[str] = field(default_factory=list)
    reembedded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # corrupt points whose image is gone or changed


def compare(
    store: VectorStore, recorded: dict[str, StoredVector], present: set[str], deep: bool, seed: int | None = None
) -> VectorCheck:
    """Compare the stored vectors of a sample of points (``deep``: every point) with their recorded digests."""
    comparable = sorted(p for p in present if p in recorded and recorded[p].digest is not None)
    result = VectorCheck(unrecorded=sum(1 for p in present if p in recorded and recorded[p].digest is None))
    chosen = comparable if deep else random.Random(seed).sample(comparable, min(QUICK_SAMPLE, len(comparable)))
    for start in range(0, len(chosen), BATCH):
        batch = chosen[start : start + BATCH]
        points = store.points_of(batch)
        for point_id in batch:  # a point the store lists but serves without its vector is corrupt too
            point = points.get(point_id)
            if point is None or vector_digest(point.vector, point.style) != recorded[point_id].digest:
                result.corrupt.append(point_id)
        result.checked += len(batch)
    result.corrupt.sort()
    return result


def repair(
    store: VectorStore, recorded: dict[str, StoredVector], result: VectorCheck, embed: Callable[[], Embed]
) -> list[str]:
    """Rewrite each corrupt point from its recorded image (``embed`` builds the embedder, only when needed); the
    point ids that could not be rewritten (image gone or changed, or a vector that does not come out the same)."""
    if not result.corrupt:
        return []
    stored = store.points_of(result.corrupt)
    images: list[Image.Image] = []
    targets: list[str] = []
    for point_id in result.corrupt:
        source = recorded[point_id]
        try:
            loaded = load_image(source.image_path, target_size=224)
        except ImageError:
            continue
        if loaded.sha256 == source.image_sha256 and point_id in stored:
            images.append(loaded.image)
            targets.append(point_id)
    if images:
        contents, styles = embed()(images)
        rewritten = [
            WorkPoint(
                point_id,
                contents[i],
                stored[point_id].payload,
                None if styles is None or stored[point_id].style is None else styles[i],
                layout_vector(images[i]),
            )
            for i, point_id in enumerate(targets)
        ]
        same = [p for p in rewritten if vector_digest(p.vector, p.style) == recorded[p.point_id].digest]
        store.upsert(same)
        result.reembedded = sorted(p.point_id for p in same)
    result.dropped = sorted(set(result.corrupt) - set(result.reembedded))
    return result.dropped
