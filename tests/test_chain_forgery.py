"""The hash chain against rows a writer slips in beside it, and against values whose stored form differs from the
written one (-0.0 read back from SQLite): on SQLite and PostgreSQL, since both are about what the database keeps."""

from __future__ import annotations

import pytest
from dbtools import request_row
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from attribution_audit.store import chain
from attribution_audit.store.models import (
    AttributionArtistShare,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
)

FORGE = (
    "INSERT INTO attribution_requests (id, seq, prev_hash, record_hash, created_at, requester, image_path,"
    " image_sha256, query_vector, embedder_name, embedder_fingerprint, store_kind, collection, catalogue_version,"
    " index_params, parameters, k) SELECT :id, :seq, prev_hash, :hash, created_at, requester, '/forged.png',"
    " image_sha256, query_vector, embedder_name, embedder_fingerprint, store_kind, collection, catalogue_version,"
    " index_params, parameters, k FROM attribution_requests WHERE seq = 1"
)


def complete_request(label: str) -> AttributionRequest:
    """A request with two neighbours, shares and metrics, as the Attributor builds one."""
    request = request_row(label)
    request.neighbours = [
        AttributionNeighbour(
            rank=r,
            catalogue="c",
            work_id=f"w{r}",
            artist="A",
            canonical_artist="A",
            similarity=0.9 - r / 10,
            distance=0.1 + r / 10,
            share=0.5,
        )
        for r in (1, 2)
    ]
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


def test_a_row_inserted_outside_the_chain_fails_verification(fresh_db: Engine) -> None:
    for i in range(3):
        chain.append(fresh_db, complete_request(str(i)))
    with pytest.raises(DBAPIError), fresh_db.begin() as connection:  # the schema refuses positions below 1
        connection.execute(text(FORGE), {"id": "forged-0", "seq": 0, "hash": "e" * 64})
    with fresh_db.begin() as connection:  # INSERT is allowed (append-only), but this row is not in the chain
        connection.execute(text(FORGE), {"id": "forged-1", "seq": 10_000, "hash": "f" * 64})
    report = chain.verify_chain(fresh_db)
    assert not report.ok and "sequence gap" in (report.reason or "")


def test_negative_zero_round_trips_through_the_chain(fresh_db: Engine) -> None:
    request = complete_request("zero")
    request.neighbours[0].similarity = -0.0
    request.metrics.margin = -0.0  # type: ignore[union-attr]
    chain.append(fresh_db, request)
    assert chain.verify_chain(fresh_db).ok
