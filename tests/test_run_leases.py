"""Runs of killed processes: an ingestion or evaluation run whose process was killed (SIGKILL: nothing of it can
clean up) is shown ``interrupted`` when runs are listed or a new run starts; a run whose process is alive stays
``running``; on SQLite and PostgreSQL (where the process might be on another machine: its lease is the proof)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Cli
from sqlalchemy import Connection, Engine, create_engine, select, text

from attribution_audit.domain.results import as_utc
from attribution_audit.store import runs
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import RunCounts
from attribution_audit.store.database import create_db_engine, upgrade
from attribution_audit.store.models import Base, IngestionRun

# A process that starts an evaluation run and an ingestion run through the store, as `evaluate run` and `ingest` do,
# prints their ids, and works on them until killed.
OWNER = """
import sys, time
from attribution_audit.store.audit_store import AuditStore
audit = AuditStore.open(sys.argv[1])
name = sys.argv[2]
query_set = audit.evaluations.import_query_set(name, name + ".csv", "0" * 64, [])
run = audit.evaluations.start_run(
    kind="attribution", requester=name, query_set_id=query_set, embedder_name="e", collection="c", settings={}
)
ingestion, _ = audit.catalogue.start_ingestion(
    name, source_format="csv", manifest_path=name + ".csv", manifest_sha256="0" * 64, collection="c",
    embedder_fingerprint="e", requester=name,
)
print(run, ingestion, flush=True)
time.sleep(600)
"""


@contextmanager
def owner(url: str, name: str) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    process = subprocess.Popen([sys.executable, "-c", OWNER, url, name], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        run, ingestion = (int(part) for part in process.stdout.readline().split())
        yield process, run, ingestion
    finally:
        process.kill()
        process.wait()


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def _evaluation_statuses(cli: Cli) -> dict[int, str]:
    return {run["id"]: run["status"] for run in json.loads(cli("evaluate", "list", "--format", "json").stdout)}


def _ingestion_statuses(audit: AuditStore) -> dict[int, str]:
    with audit.engine.connect() as connection:
        return {run: status for run, status in connection.execute(select(IngestionRun.id, IngestionRun.status))}


def _start_ingestion(audit: AuditStore) -> int:
    source = {"source_format": "csv", "manifest_path": "mine.csv", "manifest_sha256": "0" * 64}
    run, _ = audit.catalogue.start_ingestion("mine", **source, collection="c", embedder_fingerprint="e", requester="t")
    return run


def test_a_killed_run_is_interrupted_and_a_live_one_stays_running(
    cli_on: Callable[[str], Cli], migrated_url: str
) -> None:
    cli = cli_on(migrated_url)
    audit = AuditStore.open(migrated_url)
    try:
        with owner(migrated_url, "killed") as (dead, dead_run, dead_ingestion), owner(migrated_url, "alive") as live:
            _, live_run, live_ingestion = live
            _kill(dead)
            listed = _evaluation_statuses(cli)
            assert listed[dead_run] == "interrupted" and listed[live_run] == "running"
            assert _ingestion_statuses(audit)[dead_ingestion] == "running"  # not yet looked at
            mine = _start_ingestion(audit)  # a new ingestion run marks the dead one
            statuses = _ingestion_statuses(audit)
            assert statuses[dead_ingestion] == "interrupted" and statuses[live_ingestion] == "running"
            assert statuses[mine] == "running"
            _kill(live[0])
        assert set(_evaluation_statuses(cli).values()) == {"interrupted"}
        assert _start_ingestion(audit) > mine
        statuses = _ingestion_statuses(audit)
        assert statuses[live_ingestion] == "interrupted" and statuses[mine] == "running"  # this process is alive
    finally:
        audit.close()


def test_a_run_whose_lease_connection_was_ended_finishes_without_error(fresh_db: Engine) -> None:
    """The server ended the lease's session (a restart, pg_terminate_backend): its lock went with it. Finishing the
    run records its outcome and gives no traceback (the unlock's error hid the run's own outcome)."""
    if fresh_db.dialect.name != "postgresql":
        pytest.skip("a lease is a server session's lock on PostgreSQL alone")
    audit = AuditStore(fresh_db)
    run = _start_ingestion(audit)
    with fresh_db.connect() as connection:
        ended = (
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = :run "
                    "AND pid <> pg_backend_pid()"
                ),
                {"run": run},
            )
            .scalars()
            .all()
        )
    assert ended == [True]
    counts = RunCounts(added=1, updated=0, unchanged=0, withdrawn=0, failed=0, failures_path=None, status="completed")
    audit.catalogue.finish_ingestion(run, counts)
    assert _ingestion_statuses(audit)[run] == "completed"


def test_a_sqlite_run_without_a_lease_is_not_called_dead(cli_on: Callable[[str], Cli], tmp_path: Path) -> None:
    """A run whose lease file is gone (started before leases existed) cannot be proved dead: shown as unconfirmed."""
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    cli = cli_on(url)
    cli("db", "upgrade")
    with owner(url, "old") as (process, run, _):
        (tmp_path / "audit.sqlite.runs" / f"evaluation_runs-{run}.lock").unlink()
        _kill(process)
        status = _evaluation_statuses(cli)[run]
    assert status.startswith("running (unconfirmed: no lease; started ")


def test_a_lease_file_gone_or_unopenable_proves_nothing(tmp_path: Path) -> None:
    """A run ending between the listing and the check removes its lease file: that run is neither proved dead nor
    alive, and the check does not fail (the same when the file cannot be opened: here a dangling link)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    assert runs._dead(engine, None, "ingestion_runs", 7) is None
    folder = tmp_path / "audit.db.runs"
    folder.mkdir()
    (folder / "ingestion_runs-7.lock").symlink_to(tmp_path / "gone")
    assert runs._dead(engine, None, "ingestion_runs", 7) is None


def test_runs_logged_before_leases_keep_their_status_after_upgrading(database_url: str) -> None:
    """Runs written by a version before leases (schema 0010): those with an end keep their status and end; one still
    running with no end is interrupted where a free lock proves it (PostgreSQL), unconfirmed without a lease file
    (SQLite)."""
    engine = create_db_engine(database_url)
    try:
        upgrade(engine, "0010")
        ended = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        with engine.begin() as connection:
            for status, end in (("completed", ended), ("failed", ended), ("running", ended), ("running", None)):
                _log_old_runs(connection, status, end)
        upgrade(engine)
        shown = {
            "evaluation_runs": {run.id: run.status for run in AuditStore(engine).evaluations.runs()},
            "ingestion_runs": runs.sweep(engine, "ingestion_runs"),  # what a new ingestion run does first
        }
        with engine.connect() as connection:
            tables = [Base.metadata.tables[name] for name in shown]
            stored = [connection.execute(select(t.c.status, t.c.finished_at).order_by(t.c.id)).all() for t in tables]
    finally:
        engine.dispose()
    postgres = engine.dialect.name == "postgresql"
    unended = "interrupted" if postgres else "running (unconfirmed: no lease; started 2026-01-02 00:00:00 UTC)"
    assert [shown["evaluation_runs"][i] for i in (1, 2, 3, 4)] == ["completed", "failed", "running", unended]
    assert shown["ingestion_runs"] == {4: unended}  # the runs with an end are not looked at
    for rows in stored:
        assert [(status, as_utc(end)) for status, end in rows[:3]] == [
            ("completed", ended),
            ("failed", ended),
            ("running", ended),
        ]
        assert rows[3].status == ("interrupted" if postgres else "running")
        assert (rows[3].finished_at is None) is not postgres


def _log_old_runs(connection: Connection, status: str, end: datetime | None) -> None:
    """An evaluation run and an ingestion run of ``status``, ended at ``end``, as a version of schema 0010 wrote
    them (no lease)."""
    at = {"status": status, "end": end, "at": datetime(2026, 1, 2, tzinfo=UTC)}
    connection.execute(
        text(
            "INSERT INTO query_sets (name, source_path, created_at) SELECT 'old', 'old.csv', :at "
            "WHERE NOT EXISTS (SELECT 1 FROM query_sets)"
        ),
        at,
    )
    connection.execute(
        text("INSERT INTO catalogues (name, created_at) SELECT 'old', :at WHERE NOT EXISTS (SELECT 1 FROM catalogues)"),
        at,
    )
    connection.execute(
        text(
            "INSERT INTO evaluation_runs (kind, created_at, requester, query_set_id, embedder_name, collection, "
            "settings, finished_at, status) SELECT 'attribution', :at, 'old', id, 'e', 'c', '{}', :end, :status "
            "FROM query_sets"
        ),
        at,
    )
    connection.execute(
        text(
            "INSERT INTO ingestion_runs (catalogue_id, source_format, manifest_path, manifest_sha256, collection, "
            "embedder_fingerprint, requester, started_at, finished_at, added, updated, unchanged, withdrawn, failed, "
            "status) SELECT id, 'csv', 'old.csv', :sha, 'c', 'e', 'old', :at, :end, 0, 0, 0, 0, 0, :status "
            "FROM catalogues"
        ),
        at | {"sha": "0" * 64},
    )
