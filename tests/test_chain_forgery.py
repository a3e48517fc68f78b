"""The hash chain against rows a writer slips in beside it, and against values whose stored form differs from the
written one (-0.0 read back from SQLite): on SQLite and PostgreSQL, since both are about what the database keeps."""

from __future__ import annotations

import json
import math

import pytest
from conftest import Cli
from dbtools import complete_request, fill_chain, superuser_edit
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


@pytest.mark.parametrize("seq", [5, 10], ids=["inside", "last"])
@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("'x'", "(text), not a whole number"),
        ("'5th'", "(text), not a whole number"),
        ("X'35'", "(bytes), not a whole number"),
        ("1e20", "(real), beyond the range of seqs"),
    ],
    ids=["text", "numbered text", "bytes", "real beyond the range"],
)
def test_a_seq_sqlite_keeps_as_text_breaks_the_chain_at_that_record(cli: Cli, seq: int, value: str, kind: str) -> None:
    """SQLite keeps a seq changed by hand to text or bytes that are not a number (it stores '5' as 5), or to a real
    number beyond 64 bits, and orders it after every seq: the record is out of the chain, which breaks where it stood
    (not records appended since)."""
    engine = cli.engine()
    fill_chain(engine, 10, neighbours=1)
    with engine.connect() as connection:
        key = connection.scalar(text("SELECT id FROM attribution_requests WHERE seq = :seq"), {"seq": seq})
    superuser_edit(engine, f"UPDATE attribution_requests SET seq = {value} WHERE seq = {seq}")
    line = cli("audit", "verify", code=1).stderr.strip()
    assert line.startswith(f"chain BROKEN at seq {seq} (request {key}): its seq is stored as ") and "\n" not in line
    assert f" {kind}: the row was changed outside attribution-audit; restore the record from a backup" in line


def test_a_row_appended_with_a_text_seq_breaks_the_chain_after_the_verified_head(cli: Cli) -> None:
    engine = cli.engine()
    fill_chain(engine, 3, neighbours=1)
    cli("audit", "verify")
    with engine.begin() as connection:  # INSERT is allowed (append-only); SQLite keeps the text
        connection.execute(text(FORGE), {"id": "forged", "seq": "4th", "hash": "f" * 64})
    chained = json.loads(cli("report", "summary", "--json").stdout)["chain"]  # checks what follows the verified head
    assert (chained["ok"], chained["broken_seq"], chained["records"]) == (False, 4, 3)
    assert "its seq is stored as '4th' (text)" in chained["reason"]
    assert cli("audit", "verify", code=1).stderr.startswith("chain BROKEN at seq 4 (request forged): its seq is")


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
