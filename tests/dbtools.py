"""Helpers shared by test modules that need to act like a database superuser."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, text

from attribution_audit.store.models import (
    AttributionArtistShare,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
)


def request_row(label: str, **fields: Any) -> AttributionRequest:
    """An attribution request row with plausible values (no children); ``fields`` override any column."""
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "requester": label,
        "image_path": f"/images/{label}.png",
        "image_sha256": "ab" * 32,
        "query_vector": b"\x00\x00\x80?" * 4,
        "embedder_name": "test",
        "embedder_fingerprint": "test@sha256:0",
        "store_kind": "qdrant-edge",
        "collection": "works_test",
        "catalogue_version": "v1",
        "index_params": {"m": 16, "hnsw_ef": 128},
        "parameters": {"k": 2, "temperature": 0.05},
        "k": 2,
    }
    return AttributionRequest(**(values | fields))


def superuser_edit(engine: Engine, statement: str) -> None:
    """What a superuser can still do: switch the append-only triggers off for one statement."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(statement))
        else:
            triggers = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
            for name, _ in triggers:
                connection.execute(text(f"DROP TRIGGER {name}"))
            connection.execute(text(statement))
            for _, sql in triggers:
                connection.execute(text(sql))


def two_neighbours(artist: str = "A") -> list[AttributionNeighbour]:
    """Ranks 1 and 2 by one artist, each with half of the shares."""
    return [
        AttributionNeighbour(
            rank=r,
            catalogue="c",
            work_id=f"w{r}",
            artist=artist,
            canonical_artist=artist,
            similarity=0.9 - r / 10,
            distance=0.1 + r / 10,
            share=0.5,
        )
        for r in (1, 2)
    ]


def complete_request(label: str) -> AttributionRequest:
    """A request with two neighbours, shares and metrics, as the Attributor builds one."""
    request = request_row(label)
    request.neighbours = two_neighbours()
    request.artist_shares = [AttributionArtistShare(artist="A", share=1.0)]
    request.metrics = AttributionMetrics(
        entropy=0.0,
        nn_distance=0.2,
        margin=0.1,
        top_artist="A",
        top_artist_share=1.0,
        confidence=0.8,
        confidence_model="default-v1",
    )
    return request
