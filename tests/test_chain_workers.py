"""Verifying and exporting the audit chain by several processes gives what one gives: the same verdict, the same
first bad record, the same export bytes, the same one-line error when the database fails mid-run."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from dbtools import fill_chain, superuser_edit
from sqlalchemy import Engine, text

from attribution_audit.errors import AttributionAuditError, DatabaseError
from attribution_audit.services import audit_log
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import create_db_engine, display_url

RECORDS, BLOCK = 95, 10


@pytest.fixture
def parallel_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Blocks of BLOCK records; the sizes of the blocks the worker processes returned (the parallel path ran)."""
    monkeypatch.setattr(chain, "BLOCK", BLOCK)
    sizes: list[int] = []
    original = chain._in_parallel

    def counted(*args: Any) -> Iterator[list[Any]]:
        for records in original(*args):
            sizes.append(len(records))
            yield records

    monkeypatch.setattr(chain, "_in_parallel", counted)
    return sizes


def remove(engine: Engine, where: str) -> None:
    """Delete the requests ``where`` (a condition on attribution_requests) and their children."""
    for table in ("attribution_neighbours", "attribution_artist_shares", "attribution_metrics"):
        superuser_edit(
            engine, f"DELETE FROM {table} WHERE request_id IN (SELECT id FROM attribution_requests WHERE {where})"
        )
    superuser_edit(engine, f"DELETE FROM attribution_requests WHERE {where}")


TAMPERED = {
    "intact": None,
    "modified": "UPDATE attribution_neighbours SET similarity = 0.5 "
    "WHERE rank = 1 AND request_id = (SELECT id FROM attribution_requests WHERE seq = 47)",
    "relinked": f"UPDATE attribution_requests SET prev_hash = '{'1' * 64}' WHERE seq = 63",
    "deleted": "seq = 47",
    "truncated": "seq > 80",
    "renumbered": "UPDATE attribution_requests SET seq = 1000000000 WHERE seq = 95",  # read here: no empty ranges
}


def outcome(audit: AuditStore, out: Path, workers: int) -> tuple[Any, ...]:
    report = audit_log.verify_chain(audit, workers)[0]
    try:
        written: Any = audit_log.export_records(audit, out, workers=workers)[0]
        lines = out.read_bytes().split(b"\n", 1)[1]  # after the header, which names the time of the export
    except AttributionAuditError as exc:
        written, lines = str(exc), b""
    return (
        report.ok,
        report.checked,
        report.head_hash,
        report.broken_seq,
        report.broken_request_id,
        report.reason,
        written,
        lines,
    )


@pytest.mark.parametrize("tampering", list(TAMPERED))
def test_workers_give_the_verdict_and_export_of_one_process(
    fresh_db: Engine, tmp_path: Path, parallel_blocks: list[int], tampering: str
) -> None:
    audit = AuditStore(fresh_db)
    fill_chain(fresh_db, RECORDS, neighbours=3)
    assert audit_log.verify_chain(audit)[0].ok  # remembered: a cut tail is then broken too
    change = TAMPERED[tampering]
    if change is not None:
        superuser_edit(fresh_db, change) if change.startswith("UPDATE") else remove(fresh_db, change)
    one = outcome(audit, tmp_path / "one.jsonl", 1)
    assert not parallel_blocks
    two = outcome(audit, tmp_path / "two.jsonl", 2)
    assert (max(parallel_blocks, default=0) == BLOCK) is (tampering != "renumbered")
    assert two == one
    broken = {"intact": None, "modified": 47, "relinked": 63, "deleted": 48, "truncated": None, "renumbered": 10**9}
    assert one[0] is (tampering == "intact") and one[3] == broken[tampering]
    if tampering == "intact":
        assert one[6] == RECORDS and one[7].count(b"\n") == RECORDS


@pytest.mark.parametrize(
    "value", ["created_at = 'garbage'", "requester = CAST(X'FF' AS TEXT)"], ids=["time", "not UTF-8"]
)
def test_workers_stop_at_an_unreadable_record_as_one_process_does(
    sqlite_db: Engine, tmp_path: Path, parallel_blocks: list[int], value: str
) -> None:
    audit = AuditStore(sqlite_db)
    fill_chain(sqlite_db, RECORDS, neighbours=3)
    superuser_edit(sqlite_db, f"UPDATE attribution_requests SET {value} WHERE seq = 47")  # what SQLite keeps
    one = outcome(audit, tmp_path / "one.jsonl", 1)
    two = outcome(audit, tmp_path / "two.jsonl", 2)
    assert parallel_blocks and two == one
    assert (one[0], one[1], one[3]) == (False, 46, 47) and "restore the record from a backup" in one[5]


@pytest.mark.parametrize("seq", ["95.5", "'x'", "X'5f'"], ids=["real", "text", "blob"])
def test_a_highest_seq_sqlite_keeps_as_another_type_is_read_by_one_process(
    sqlite_db: Engine, tmp_path: Path, parallel_blocks: list[int], seq: str
) -> None:
    audit = AuditStore(sqlite_db)
    fill_chain(sqlite_db, RECORDS, neighbours=1)
    superuser_edit(sqlite_db, f"UPDATE attribution_requests SET seq = {seq} WHERE seq = {RECORDS}")  # kept as is
    one = outcome(audit, tmp_path / "one.jsonl", 1)
    two = outcome(audit, tmp_path / "two.jsonl", 2)  # TypeError from the block ranges before
    assert two == one and one[:2] == (False, RECORDS - 1)
    assert one[3] == (95.5 if seq == "95.5" else RECORDS)  # the chain breaks at that record


def test_an_undecodable_value_is_a_broken_record_not_an_outage(
    fresh_db: Engine, cli_on: Callable[[str], Cli], parallel_blocks: list[int]
) -> None:
    """A value the driver cannot convert: SQLite, a text that is not UTF-8; psycopg, a time outside Python's years
    (PostgreSQL keeps 'infinity')."""
    fill_chain(fresh_db, RECORDS, neighbours=1)
    value = "created_at = 'infinity'" if fresh_db.dialect.name == "postgresql" else "requester = CAST(X'FF' AS TEXT)"
    superuser_edit(fresh_db, f"UPDATE attribution_requests SET {value} WHERE seq = 47")
    reports = [chain.verify_chain(fresh_db, workers=workers) for workers in (1, 2)]
    assert parallel_blocks and reports[0] == reports[1]
    assert (reports[0].ok, reports[0].broken_seq) == (False, 47) and "cannot be read" in str(reports[0].reason)
    with fresh_db.connect() as connection:
        key = connection.scalar(text("SELECT id FROM attribution_requests WHERE seq = 47"))
    cli = cli_on(fresh_db.url.render_as_string(hide_password=False))
    for command in (["audit", "show", key], ["audit", "list"]):
        said = cli(*command, code=1).output
        assert "holds a value that cannot be read" in said and "start it" not in said, said  # the database is up
        assert said.count("\n") == 1
    summary = cli("report", "summary", code=None)  # (reads no text of the requests: SQLite's is shown)
    assert isinstance(summary.exception, SystemExit | None) and "start it" not in summary.output


UNHASHABLE = {  # a covered value changed to one the checks beside the chain cannot read either (at seq 47)
    "parameters not JSON": "UPDATE attribution_requests SET parameters = 'notjson' WHERE seq = 47",  # (SQLite)
    "space version not a number": 'UPDATE attribution_requests SET parameters = \'{"space_version": "x"}\' '
    "WHERE seq = 47",
    "other space versions not name:version": "UPDATE attribution_metrics SET other_space_versions = '[1]' "
    "WHERE request_id = (SELECT id FROM attribution_requests WHERE seq = 47)",
}


@pytest.mark.parametrize("value", list(UNHASHABLE))
def test_a_value_the_other_checks_cannot_read_breaks_the_chain_at_its_record(
    fresh_db: Engine, cli_on: Callable[[str], Cli], parallel_blocks: list[int], tmp_path: Path, value: str
) -> None:
    """audit verify (by one process and by several) and audit export say the chain is BROKEN at the changed record,
    never that the database cannot be read, nor to run the command just run; the spaces check says why it could
    not be made."""
    if value == "parameters not JSON" and fresh_db.dialect.name == "postgresql":
        pytest.skip("PostgreSQL's json type keeps only JSON")
    fill_chain(fresh_db, RECORDS, neighbours=1)
    superuser_edit(fresh_db, UNHASHABLE[value])
    with fresh_db.connect() as connection:
        key = connection.scalar(text("SELECT id FROM attribution_requests WHERE seq = 47"))
    cli = cli_on(fresh_db.url.render_as_string(hide_password=False))
    for workers in ("1", "3"):
        said = cli("audit", "verify", "--workers", workers, code=1).stderr
        assert said.startswith(f"chain BROKEN at seq 47 (request {key}): "), said
        assert "start it" not in said and "run `attribution-audit audit verify`" not in said, said
        verdict = json.loads(cli("audit", "verify", "--workers", workers, "--format", "json", code=1).stdout)
        assert (verdict["ok"], verdict["broken_seq"]) == (False, 47) and verdict["spaces"]["ok"] is not True, verdict
    assert max(parallel_blocks) == BLOCK
    exported = cli("audit", "export", str(tmp_path / "log.jsonl"), "--workers", "3", code=1).stderr
    assert f"broken at seq 47 (request {key})" in exported and not (tmp_path / "log.jsonl").exists()


def test_ctrl_c_reaching_the_workers_leaves_the_run_to_the_parent(
    sqlite_db: Engine, parallel_blocks: list[int]
) -> None:
    """Ctrl-C reaches the terminal's whole process group: the workers leave it to the parent, which stops them (a
    worker interrupted raised KeyboardInterrupt, its traceback printed, or broke the pool)."""
    fill_chain(sqlite_db, RECORDS, neighbours=1)
    expected = [r.record_hash for r in chain.iter_chain(sqlite_db, keep=False)]
    records = chain.iter_chain(sqlite_db, workers=2, keep=False)
    read = [next(records).record_hash]
    workers = multiprocessing.active_children()
    for worker in workers:
        os.kill(worker.pid or 0, signal.SIGINT)
    read += [r.record_hash for r in records]
    assert read == expected and len(workers) == 2
    assert [worker.exitcode for worker in workers] == [0, 0]  # stopped by the parent, not by the signal


def test_the_collector_is_frozen_while_workers_read(fresh_db: Engine, parallel_blocks: list[int]) -> None:
    """While the workers read, what the process held before they were forked is frozen (gc.freeze: no collection
    there or in them traverses it, nor copies its pages into them); as it was once the read ends, or is left."""
    fill_chain(fresh_db, RECORDS, neighbours=1)
    expected = [r.record_hash for r in chain.iter_chain(fresh_db, keep=False)]
    records = chain.iter_chain(fresh_db, workers=2, keep=False)
    read = [next(records).record_hash]
    assert gc.get_freeze_count() > 0
    read += [r.record_hash for r in records]
    assert read == expected and gc.get_freeze_count() == 0 and parallel_blocks
    records = chain.iter_chain(fresh_db, workers=2, keep=False)
    next(records)
    records.close()
    assert gc.get_freeze_count() == 0


def test_a_database_failing_mid_run_gives_one_process_s_error(fresh_db: Engine, parallel_blocks: list[int]) -> None:
    fill_chain(fresh_db, RECORDS, neighbours=1)
    table = "v_audit_metrics" if fresh_db.dialect.name == "postgresql" else "attribution_metrics"
    kind = "VIEW" if fresh_db.dialect.name == "postgresql" else "TABLE"
    errors = []
    for workers in (1, 2):
        records = chain.iter_chain(fresh_db, workers=workers, keep=False)
        next(records)
        with fresh_db.begin() as connection:
            connection.execute(text(f"ALTER {kind} {table} RENAME TO gone"))
        with pytest.raises(DatabaseError) as failed:
            list(records)
        errors.append(str(failed.value))
        with fresh_db.begin() as connection:
            connection.execute(text(f"ALTER {kind} gone RENAME TO {table}"))
    assert errors[0] == errors[1] and "cannot read the audit database" in errors[0] and "\n" not in errors[0]
    assert parallel_blocks  # the second run read blocks in workers before the failure


def _cut_the_waiting_reads(engine: Engine, locked: threading.Event) -> None:
    """Hold a lock that the log's next reads wait for, then end the connections of those waiting, as a server
    restart or an operator does (pg_terminate_backend); then let go of the lock."""
    cut = text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as connection, connection.begin():
        connection.execute(text("LOCK TABLE attribution_requests IN ACCESS EXCLUSIVE MODE"))
        locked.set()
        for _ in range(1000):  # until a read waits (at once, unless the machine is very busy)
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))  # (else read once per transaction)
            if connection.execute(cut).all():
                return
            time.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.parametrize("migrated_url", ["postgres"], indirect=True)
def test_a_connection_lost_mid_run_gives_one_process_s_error(fresh_db: Engine, parallel_blocks: list[int]) -> None:
    """The server ends the connection of a read under way (in a worker, or in the one process): the same one line,
    naming the database and saying to run the command again."""
    fill_chain(fresh_db, RECORDS, neighbours=1)
    errors = []
    for workers in (1, 2):
        records = chain.iter_chain(fresh_db, workers=workers, keep=False)
        next(records)
        locked = threading.Event()
        cutter = threading.Thread(target=_cut_the_waiting_reads, args=(fresh_db, locked))
        cutter.start()
        locked.wait()
        with pytest.raises(DatabaseError) as failed:
            list(records)
        cutter.join()
        errors.append(str(failed.value))
    assert errors[0] == errors[1] and parallel_blocks
    assert errors[0].startswith(f"lost the connection to the audit database {display_url(str(fresh_db.url))} (")
    assert errors[0].endswith("check that it is up, then run the command again") and "\n" not in errors[0]


def test_a_worker_killed_mid_run_is_one_line_naming_the_database(fresh_db: Engine, parallel_blocks: list[int]) -> None:
    fill_chain(fresh_db, RECORDS, neighbours=1)
    records = chain.iter_chain(fresh_db, workers=2, keep=False)
    next(records)
    for worker in multiprocessing.active_children():
        os.kill(worker.pid or 0, signal.SIGKILL)  # as the out-of-memory killer does
    with pytest.raises(DatabaseError) as failed:
        list(records)
    said = str(failed.value)
    assert said.startswith(f"a process reading the audit database {display_url(str(fresh_db.url))} stopped (")
    assert said.endswith("run the command again") and "\n" not in said


_READ_AND_WAIT = """
import multiprocessing, sys, time
from attribution_audit.store import chain
from attribution_audit.store.database import create_db_engine
chain.BLOCK = {block}
records = chain.iter_chain(create_db_engine(sys.argv[1]), workers=2, keep=False)
next(records)
print(*(worker.pid for worker in multiprocessing.active_children()), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (not gone, not a zombie that nobody reaps)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_workers_end_when_the_process_that_started_them_is_killed(fresh_db: Engine) -> None:
    """The command killed mid-run (out of memory, SIGKILL): its workers end too, instead of waiting for work forever
    with a connection to the audit database each."""
    fill_chain(fresh_db, RECORDS, neighbours=1)
    script = _READ_AND_WAIT.format(block=BLOCK)
    command = subprocess.Popen(
        [sys.executable, "-c", script, fresh_db.url.render_as_string(hide_password=False)], stdout=subprocess.PIPE
    )
    workers = [int(pid) for pid in (command.stdout.readline() if command.stdout else b"").split()]
    command.kill()
    command.wait()
    assert len(workers) == 2
    try:
        for _ in range(600):  # they notice within a second
            if not any(_running(pid) for pid in workers):
                break
            time.sleep(0.05)
        assert not any(_running(pid) for pid in workers)
    finally:
        for pid in filter(_running, workers):  # (a failure leaves none behind)
            os.kill(pid, signal.SIGKILL)


@pytest.mark.postgres
@pytest.mark.parametrize("migrated_url", ["postgres"], indirect=True)
def test_workers_open_no_more_connections_than_postgresql_allows(fresh_db: Engine, parallel_blocks: list[int]) -> None:
    """A user allowed 3 connections (CONNECTION LIMIT), asking for 8 workers: those the limit leaves (it refused the
    ninth connection: 'too many connections for role')."""
    fill_chain(fresh_db, RECORDS, neighbours=1)
    role = f"aa_limited_{os.getpid()}"
    with fresh_db.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 3"))
        connection.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    limited = create_db_engine(fresh_db.url.set(username=role).render_as_string(hide_password=False))
    try:
        read = [r.record_hash for r in chain.iter_chain(limited, workers=8, keep=False)]
        with fresh_db.begin() as connection:  # a server that hides its activity: as many workers as asked
            connection.execute(text("REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC"))
        assert [r.record_hash for r in chain.iter_chain(limited, workers=2, keep=False)] == read
    finally:
        limited.dispose()
        with fresh_db.begin() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE {role}"))
    assert read == [r.record_hash for r in chain.iter_chain(fresh_db, keep=False)] and parallel_blocks


def test_cli_workers_option(cli: Cli, tmp_path: Path, parallel_blocks: list[int]) -> None:
    fill_chain(cli.engine(), RECORDS, neighbours=2)
    verified = [cli("audit", "verify", "--workers", str(n)).output for n in (1, 2)]
    assert verified[0] == verified[1] and f"chain OK: {RECORDS} records" in verified[0]
    exported = []
    for n in (1, 2):
        cli("audit", "export", str(tmp_path / f"{n}.jsonl"), "--workers", str(n))
        exported.append((tmp_path / f"{n}.jsonl").read_bytes().split(b"\n", 1)[1])
    assert exported[0] == exported[1] and parallel_blocks
    assert "--workers" in cli("audit", "verify", "--workers", "0", code=2).output


def test_a_freeze_already_in_place_is_left_as_it_is(fresh_db: Engine, parallel_blocks: list[int]) -> None:
    """A host that froze its own objects (or another read in progress) keeps its freeze after a parallel read."""
    fill_chain(fresh_db, RECORDS, neighbours=1)
    gc.freeze()
    try:
        read = list(chain.iter_chain(fresh_db, workers=2, keep=False))
        assert len(read) == RECORDS and parallel_blocks
        assert gc.get_freeze_count() > 0  # not thawed by the read (frozen objects freed since may lower the count)
    finally:
        gc.unfreeze()
