"""The hash chain against rows a writer slips in beside it, and against values whose stored form differs from the
written one (-0.0 read back from SQLite): on SQLite and PostgreSQL, since both are about what the database keeps."""

from __future__ import annotations

import math

import pytest
from dbtools import complete_request
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from attribution_audit.errors import DatabaseError
from attribution_audit.store import chain

FORGE = (
    "INSERT INTO attribution_requests (id, seq, prev_hash, record_hash, created_at, requester, image_path,"
    " image_sha256, query_vector, embedder_name, embedder_fingerprint, store_kind, collection, catalogue_version,"
    " index_params, parameters, k) SELECT :id, :seq, prev_hash, :hash, created_at, requester, '/forged.png',"
    " image_sha256, query_vector, embedder_name, embedder_fingerprint, store_kind, collection, catalogue_version,"
    " index_params, parameters, k FROM attribution_requests WHERE seq = 1"
)


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


def test_nan_is_logged_only_where_the_database_keeps_it(fresh_db: Engine) -> None:
    request = complete_request("nan")
    request.metrics.margin = math.nan  # type: ignore[union-attr]
    if fresh_db.dialect.name == "sqlite":  # SQLite stores NaN as NULL: the record would fail its own hash
        with pytest.raises(DatabaseError, match="margin") as info:
            chain.append(fresh_db, request)
        assert "\n" not in str(info.value) and chain.load_requests(fresh_db) == []
    else:
        chain.append(fresh_db, request)
    chain.append(fresh_db, complete_request("next"))
    assert chain.verify_chain(fresh_db).ok
