"""The audit trail is append-only and tamper-evident, and stays one linear chain under concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import ForkServerContext, SpawnContext

import pytest
from dbtools import complete_request, superuser_edit
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from attribution_audit.store import chain
from attribution_audit.store.database import create_db_engine
from attribution_audit.store.models import (
    AttributionRequest,
)

WRITERS, PER_WRITER = 8, 25
TIMEOUT_FACTOR = float(os.environ.get("ATTRIBUTION_AUDIT_TEST_TIMEOUT_FACTOR", "1"))


def _writer(url: str, label: str) -> None:
    engine = create_db_engine(url)
    for i in range(PER_WRITER):
        chain.append(engine, complete_request(f"{label}-{i}"))
    engine.dispose()


def test_appended_records_verify(fresh_db: Engine) -> None:
    for i in range(3):
        chain.append(fresh_db, complete_request(str(i)))
    report = chain.verify_chain(fresh_db)
    assert report.ok and report.checked == 3
    with fresh_db.connect() as connection:
        seqs = connection.scalars(select(AttributionRequest.seq).order_by(AttributionRequest.seq)).all()
    assert seqs == [1, 2, 3]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE attribution_requests SET requester = 'mallory'",
        "DELETE FROM attribution_requests",
        "UPDATE attribution_neighbours SET artist = 'B'",
        "DELETE FROM attribution_neighbours",
        "UPDATE attribution_metrics SET confidence = 1.0",
        "UPDATE attribution_artist_shares SET share = 0.5",
        "DELETE FROM attribution_metrics",
    ],
)
def test_update_and_delete_are_rejected_by_the_database(fresh_db: Engine, statement: str) -> None:
    chain.append(fresh_db, complete_request("x"))
    with pytest.raises(DBAPIError, match="append-only"), fresh_db.begin() as connection:
        connection.execute(text(statement))
    assert chain.verify_chain(fresh_db).ok


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("UPDATE attribution_neighbours SET artist = 'Mallory' WHERE rank = 1 AND request_id = :id", "modified"),
        ("UPDATE attribution_metrics SET confidence = 0.99 WHERE request_id = :id", "modified"),
        ("UPDATE attribution_requests SET image_path = '/other.png' WHERE id = :id", "modified"),
    ],
)
def test_verify_names_the_first_changed_record(fresh_db: Engine, statement: str, reason: str) -> None:
    requests = [chain.append(fresh_db, complete_request(str(i))) for i in range(4)]
    target = requests[1]
    superuser_edit(fresh_db, statement.replace(":id", f"'{target.id}'"))
    report = chain.verify_chain(fresh_db)
    assert not report.ok
    assert (report.broken_seq, report.broken_request_id) == (2, target.id)
    assert reason in (report.reason or "") and report.checked == 1


def test_verify_detects_a_removed_record(fresh_db: Engine) -> None:
    requests = [chain.append(fresh_db, complete_request(str(i))) for i in range(3)]
    victim = requests[1].id
    for table in ("attribution_neighbours", "attribution_artist_shares", "attribution_metrics"):
        superuser_edit(fresh_db, f"DELETE FROM {table} WHERE request_id = '{victim}'")
    superuser_edit(fresh_db, f"DELETE FROM attribution_requests WHERE id = '{victim}'")
    report = chain.verify_chain(fresh_db)
    assert not report.ok and report.broken_seq == 3 and "sequence gap" in (report.reason or "")


def writer_processes() -> SpawnContext | ForkServerContext:
    """Separate processes that start fast: forked from a fork server that has imported the database code once
    (spawn, where there is no fork server, starts each from scratch)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pytest", "sqlalchemy.orm", "attribution_audit.store.chain", "dbtools"])
    return context


def test_concurrent_writers_leave_one_linear_chain(fresh_db: Engine) -> None:
    url = fresh_db.url.render_as_string(hide_password=False)
    context = writer_processes()
    workers = [context.Process(target=_writer, args=(url, f"w{i}")) for i in range(WRITERS)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(timeout=300 * TIMEOUT_FACTOR)
            assert worker.exitcode == 0
    finally:
        for worker in workers:  # a failed or hung writer must not outlive the test
            if worker.is_alive():
                worker.kill()
                worker.join()
    report = chain.verify_chain(fresh_db)
    assert report.ok, report
    assert report.checked == WRITERS * PER_WRITER
    with fresh_db.connect() as connection:
        assert (
            connection.scalar(select(func.count(func.distinct(AttributionRequest.requester)))) == WRITERS * PER_WRITER
        )
