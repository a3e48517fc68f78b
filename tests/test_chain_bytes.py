"""Verify and export stream the log through a fast reader (column-wise canonical JSON): its bytes must be exactly those
that ``chain.append`` hashed and that the record-by-record path (``canonical_bytes`` of a stored record) gives, for
every kind of value a record holds; values it cannot write exactly go through that path."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Cli
from dbtools import complete_request, fill_chain, request_row, superuser_edit, two_neighbours
from sqlalchemy import Connection, Engine

from attribution_audit.errors import AttributionAuditError, DatabaseError
from attribution_audit.services import audit_log
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import write_connection
from attribution_audit.store.models import AttributionArtistShare, AttributionMetrics, AttributionRequest

ODD = 'Zoë "quoted" \\ back\nline\ttab\x01 畫家 🎨 %s'  # escapes, non-ASCII, a percent sign


def every_field_set(label: str) -> AttributionRequest:
    request = complete_request(label)
    request.requester = f"{label} {ODD}"
    request.style_vector = b"\x01\x02" * 8
    request.replay_of = "a-replayed-request"
    request.index_params = {"m": 16, "ef": 0.3, "ä": [1, None, "x"], "b": {"z": 1, "a": -0.0}}
    request.parameters = {"k": 2, "temperature": 0.1 + 0.2, "note": ODD}
    request.neighbours[0].artist = request.neighbours[0].canonical_artist = ODD
    request.neighbours[1].similarity, request.neighbours[1].distance = 1e-07, 1e16
    request.neighbours[0].distance, request.neighbours[0].share = 5e-324, 1.7976931348623157e308  # the extremes
    request.artist_shares = [
        AttributionArtistShare(artist=name, share=share)
        for name, share in (("Zoë", 0.25), ("Émile", 0.25), ("anna", 0.125), ("Ärger", 0.375))  # not locale order
    ]
    metrics = request.metrics
    assert metrics is not None
    metrics.overlap_at_k, metrics.exact_method, metrics.copy_of, metrics.copy_score = 0.9, "brute", ODD, 0.75
    return request


def every_field_unset(label: str) -> AttributionRequest:
    request = request_row(label)  # no neighbours, shares or metrics
    request.metrics = None
    return request


def nulls_in_metrics(label: str) -> AttributionRequest:
    request = complete_request(label)
    request.metrics = AttributionMetrics(entropy=0.5, confidence=0.25, confidence_model="default-v1")
    request.neighbours = two_neighbours("B")
    request.neighbours[1].work_version = 3
    return request


def negative_zero(label: str) -> AttributionRequest:
    request = complete_request(label)
    request.neighbours[0].similarity = -0.0  # hashed as 0.0, whatever the database keeps
    request.neighbours[1].similarity = -0.05  # a negative number is no negative zero
    return request


def not_a_number(label: str) -> AttributionRequest:
    request = complete_request(label)
    request.metrics.nn_distance = math.nan  # type: ignore[union-attr]  # JSON NaN; SQLite keeps no NaN
    return request


def appended(engine: Engine) -> tuple[list[AttributionRequest], set[int]]:
    """A log of records with every kind of value (PostgreSQL: also NaN and a time given in another zone); the seqs
    of those the column-wise writer must leave to canonical_content."""
    postgres = engine.dialect.name == "postgresql"
    made: list[tuple[AttributionRequest, datetime | None, bool]] = [
        (every_field_set("set"), None, False),
        (every_field_unset("unset"), None, False),
        (nulls_in_metrics("nulls"), None, False),
        (negative_zero("zero"), None, postgres),  # SQLite reads 0.0 back
        (every_field_set("later"), datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), False),
    ]
    if postgres:
        made += [
            (not_a_number("nan"), None, True),
            (every_field_set("zoned"), datetime(2026, 3, 1, 17, 0, 0, 5, tzinfo=timezone(timedelta(hours=5))), False),
        ]
    records = [chain.append(engine, request, at) for request, at, _ in made]
    return records, {r.seq for r, (_, _, irregular) in zip(records, made, strict=True) if irregular}


def test_streamed_bytes_are_those_the_append_hashed(fresh_db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    records, irregular = appended(fresh_db)
    written = [chain.canonical_bytes(chain.StoredRequest.of(r)) for r in records]  # what append hashed
    read = [chain.canonical_bytes(r) for r in chain.load_requests(fresh_db)]  # the record-by-record read
    left: list[int] = []
    stored = chain._Reader._stored

    def record_by_record(reader: Any, requests: list[Any], children: Any) -> list[bytes]:
        left.extend(row[reader.seq] for row in requests)
        return stored(reader, requests, children)

    monkeypatch.setattr(chain._Reader, "_stored", record_by_record)
    one_by_one = list(chain.iter_chain(fresh_db, block=1))
    assert [r.canonical for r in one_by_one] == written == read
    assert set(left) == irregular  # every other record was written column by column
    streamed = list(chain.iter_chain(fresh_db, block=3))
    assert [r.canonical for r in streamed] == written
    assert [(r.seq, r.request_id, r.record_hash) for r in streamed] == [(r.seq, r.id, r.record_hash) for r in records]
    assert [r.created_at for r in streamed] == [r.created_at.astimezone(UTC) for r in records]
    report = chain.verify_chain(fresh_db)
    assert report.ok and report.checked == len(records)


def test_the_append_hashes_column_by_column_the_bytes_canonical_content_makes(
    fresh_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    left: list[str] = []  # the records the append left to canonical_content
    by_content = chain.record_hash

    def record_by_content(prev_hash: str, request: Any) -> str:
        left.append(request.columns["image_path"])
        return by_content(prev_hash, request)

    monkeypatch.setattr(chain, "record_hash", record_by_content)
    records, _ = appended(fresh_db)
    monkeypatch.undo()
    assert left == ["/images/zero.png"]  # a neighbour's -0.0 is hashed as 0.0 (a metric's NaN is JSON's either way)
    assert [r.record_hash for r in records] == [chain.record_hash(r.prev_hash, r) for r in records]
    assert chain.verify_chain(fresh_db).ok


def test_bulk_filled_log_streams_the_bytes_of_each_stored_record(fresh_db: Engine) -> None:
    fill_chain(fresh_db, 25, neighbours=3)
    expected = [chain.canonical_bytes(r) for r in chain.load_requests(fresh_db)]
    assert [r.canonical for r in chain.iter_chain(fresh_db, block=7)] == expected
    assert [r.canonical for r in chain.iter_chain(fresh_db, after_seq=20)] == expected[20:]


def test_a_value_of_another_type_written_by_hand_breaks_the_chain_at_its_record(sqlite_db: Engine) -> None:
    records = [chain.append(sqlite_db, complete_request(str(i))) for i in range(3)]
    target = records[1].id
    superuser_edit(sqlite_db, f"UPDATE attribution_neighbours SET similarity = 'high' WHERE request_id = '{target}'")
    report = chain.verify_chain(sqlite_db)  # SQLite keeps the text in a float column
    assert (report.ok, report.broken_seq, report.checked) == (False, 2, 1)
    assert "content does not match" in (report.reason or "")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE attribution_neighbours SET rank = 'x' WHERE rank = 2 AND request_id = '{id}'",
        "UPDATE attribution_artist_shares SET artist = X'41' WHERE artist = 'A' AND request_id = '{id}'",
    ],
)
def test_children_that_cannot_be_ordered_break_the_chain_at_their_record(sqlite_db: Engine, statement: str) -> None:
    records = [chain.append(sqlite_db, complete_request(str(i))) for i in range(3)]
    if "artist_shares" in statement:  # a second share, so that an int and a str must be ordered
        superuser_edit(sqlite_db, f"INSERT INTO attribution_artist_shares VALUES ('{records[1].id}', 'B', 0.0)")
    superuser_edit(sqlite_db, statement.format(id=records[1].id))
    report = chain.verify_chain(sqlite_db)  # SQLite keeps a text rank and a blob artist as they were written
    assert (report.ok, report.broken_seq, report.checked) == (False, 2, 1)
    assert [r.seq for r in chain.load_requests(sqlite_db)] == [1, 2, 3]  # audit show and list still read it


UNREADABLE = {  # a value changed by hand that the SQLite log cannot give back: statement, what the error names
    "time": ("UPDATE attribution_requests SET created_at = 'garbage' WHERE id = '{id}'", "requests.created_at"),
    "time of another type": ("UPDATE attribution_requests SET created_at = 5 WHERE id = '{id}'", "created_at"),
    "JSON": ("UPDATE attribution_requests SET parameters = '{{\"k\":' WHERE id = '{id}'", "requests.parameters"),
    "not UTF-8": ("UPDATE attribution_requests SET requester = CAST(X'FF' AS TEXT) WHERE id = '{id}'", "requester"),
    "no UTF-8 form": (r"""UPDATE attribution_requests SET parameters = '["\udc80"]' WHERE id = '{id}'""", "surrogate"),
}


@pytest.mark.parametrize("value", UNREADABLE, ids=list(UNREADABLE))
def test_an_unreadable_value_breaks_the_chain_at_its_record(sqlite_db: Engine, tmp_path: Path, value: str) -> None:
    statement, named = UNREADABLE[value]
    records = [chain.append(sqlite_db, complete_request(str(i))) for i in range(6)]
    superuser_edit(sqlite_db, statement.format(id=records[3].id))
    for block in (1, 4, 1000):  # the records before it are read, then an error that names it
        read = []
        with pytest.raises(chain.UnreadableRecordError) as raised:
            read.extend(record.seq for record in chain.iter_chain(sqlite_db, block=block))
        assert read == [1, 2, 3] and (raised.value.seq, raised.value.request_id) == (4, records[3].id)
    report = chain.verify_chain(sqlite_db)
    assert (report.ok, report.broken_seq, report.broken_request_id, report.checked) == (False, 4, records[3].id, 3)
    assert named in (report.reason or "") and "restore the record from a backup" in (report.reason or "")
    out = tmp_path / "log.jsonl"
    with pytest.raises(AttributionAuditError, match=f"broken at seq 4 \\(request {records[3].id}\\): .*{named}"):
        audit_log.export_records(AuditStore(sqlite_db), out)
    assert not out.exists()


def test_audit_verify_and_export_name_the_unreadable_record(cli: Cli, tmp_path: Path) -> None:
    engine = cli.engine()
    records = [chain.append(engine, complete_request(str(i))) for i in range(3)]
    superuser_edit(engine, UNREADABLE["time"][0].format(id=records[1].id))
    verified = cli("audit", "verify", code=1)
    assert verified.exception is None or isinstance(verified.exception, SystemExit)
    line = verified.stderr.strip()
    assert line.startswith(f"chain BROKEN at seq 2 (request {records[1].id}): the value of attribution_requests.")
    assert "'garbage'" in line and "1 records before it verify" in line and "\n" not in line
    exported = cli("audit", "export", str(tmp_path / "log.jsonl"), code=1)
    assert f"broken at seq 2 (request {records[1].id})" in exported.stderr and "audit verify" in exported.stderr
    assert not (tmp_path / "log.jsonl").exists()


Rows = tuple[dict[str, Any], list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, Any]]


def logged_rows(number: Any, whole: Any) -> Rows:
    """The rows of a request whose numbers are made by ``number`` (floats) and ``whole`` (integers), as append_rows
    takes them (its neighbours have no works to link: their work_pk is None)."""

    def values(row: Any) -> dict[str, Any]:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns}

    made = every_field_set("numbers")
    request = values(made) | {
        "id": "numbers",
        "k": whole(2),
        "parameters": {"k": whole(2), "temperature": number(0.05), "weights": [number(0.1), number(-0.0)]},
    }
    neighbours = [
        values(n) | {"rank": whole(n.rank), "similarity": number(n.similarity), "distance": number(n.distance)}
        for n in made.neighbours
    ]
    neighbours[1]["similarity"] = number(-0.0)
    shares = [values(s) | {"share": number(s.share)} for s in made.artist_shares]
    metrics = values(made.metrics) | {"entropy": number(math.inf), "margin": number(1e-07)}
    return (
        request,
        [tuple(n[key] for key in chain.NEIGHBOUR_VALUES) for n in neighbours],
        [tuple(s[key] for key in chain.SHARE_VALUES) for s in shares],
        metrics,
    )


def append(connection: Connection, rows: Rows, at: datetime | None = None) -> chain.StoredRequest:
    return chain.append_rows(connection, *rows, at=at, work_pks=[None] * len(rows[1]))


@pytest.mark.parametrize("floats", [np.float32, np.float64], ids=["float32", "float64"])
def test_numpy_scalars_are_logged_as_the_python_numbers_they_hold(fresh_db: Engine, floats: Any) -> None:
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    with fresh_db.connect() as connection, connection.begin() as transaction:  # hashed in place of the numpy one
        python = append(connection, logged_rows(lambda x: float(floats(x)), int), at)
        transaction.rollback()
    with write_connection(fresh_db) as connection:
        logged = append(connection, logged_rows(floats, np.int64), at)
    assert chain.canonical_bytes(logged) == chain.canonical_bytes(python)
    assert logged.record_hash == python.record_hash
    assert [chain.canonical_bytes(r) for r in chain.load_requests(fresh_db)] == [chain.canonical_bytes(python)]
    assert [r.canonical for r in chain.iter_chain(fresh_db)] == [chain.canonical_bytes(python)]
    assert chain.verify_chain(fresh_db).ok


def test_a_numpy_nan_is_refused_in_a_sqlite_log_as_a_python_one_is(sqlite_db: Engine) -> None:
    at = chain.NEIGHBOUR_VALUES.index("similarity")
    for nan in (math.nan, np.float32("nan"), np.float64("nan")):
        request, neighbours, shares, metrics = logged_rows(float, int)
        with write_connection(sqlite_db) as connection, pytest.raises(DatabaseError, match="nn_distance = NaN"):
            append(connection, (request, neighbours, shares, metrics | {"nn_distance": nan}))
        neighbours[-1] = (*neighbours[-1][:at], nan, *neighbours[-1][at + 1 :])
        with write_connection(sqlite_db) as connection, pytest.raises(DatabaseError, match="similarity = NaN"):
            append(connection, (request, neighbours, shares, metrics))
    assert chain.verify_chain(sqlite_db).checked == 0


def test_a_text_longer_than_its_column_is_refused_on_a_server_whatever_its_excess(fresh_db: Engine) -> None:
    """PostgreSQL refuses a text longer than its column, but cuts spaces past the length without a word: a record
    holding such a text would be logged, then fail its own verification. Both are refused there, naming the column,
    before anything is written; SQLite keeps such a text whole, and the record verifies."""
    at = chain.NEIGHBOUR_VALUES.index("artist")
    for excess in ("  ", "xx"):
        request, neighbours, shares, metrics = logged_rows(float, int)
        request["id"] = f"long-{excess.strip()}"
        neighbours[0] = (*neighbours[0][:at], "x" * 300 + excess, *neighbours[0][at + 1 :])
        if fresh_db.dialect.name == "sqlite":
            with write_connection(fresh_db) as connection:
                append(connection, (request, neighbours, shares, metrics))
            continue
        with write_connection(fresh_db) as connection, pytest.raises(DatabaseError) as refused:
            append(connection, (request, neighbours, shares, metrics))
        assert str(refused.value).startswith("cannot log attribution_neighbours.artist = 'xxx")
        assert "(302 characters): the column holds at most 300; shorten it; nothing was recorded" in str(refused.value)
    report = chain.verify_chain(fresh_db)
    assert report.ok and report.checked == (2 if fresh_db.dialect.name == "sqlite" else 0)
