"""Leases of long runs (``ingestion_runs``, ``evaluation_runs``): the process running one holds a lock for its life,
which dies with the process, so that a run left ``running`` by a killed process is told from one still at work.

PostgreSQL: a session advisory lock ``(table's key, run id)`` on a connection of its own, released by the server when
the connection drops (the process was killed, on any machine). SQLite: an ``flock`` on ``<database>.runs/TABLE-ID.lock``
beside the database file, released by the OS. A ``running`` run with no end recorded whose lock is free is provably
dead: :func:`sweep` marks it ``interrupted`` (a run with an end keeps its status and its end, whatever its lock). A
SQLite run without a lock file (started before leases existed) cannot be proved dead: it stays ``running`` and
:func:`sweep` names it among the unconfirmed. PostgreSQL cannot tell a lease never taken from one released: a run
still running when a version before leases was upgraded is marked ``interrupted``.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import DBAPIError

from attribution_audit.errors import DatabaseError
from attribution_audit.store.database import is_permission_error, read_scope, sqlite_file
from attribution_audit.store.models import Base, utcnow

TABLE_KEYS = {"ingestion_runs": 0x52554E31, "evaluation_runs": 0x52554E32}  # the advisory locks' first key
RUNNING, INTERRUPTED = "running", "interrupted"

_held: dict[tuple[str, str, int], Connection | int] = {}  # (database, table, run id) -> the lock's connection or fd
_guard = threading.Lock()


def lease_folder(database: Path) -> Path:
    """The folder of the run leases of the SQLite database file ``database``."""
    return Path(f"{database}.runs")


def _lock_file(engine: Engine, table: str, run_id: int) -> Path | None:
    database = sqlite_file(str(engine.url))
    return None if database is None else lease_folder(database) / f"{table}-{run_id}.lock"


def hold(engine: Engine, table: str, run_id: int) -> None:
    """Take the lease of a run this process has just created (before its row is committed: no other process sees it
    running without its lease)."""
    key = (str(engine.url), table, run_id)
    if engine.dialect.name == "postgresql":
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(select(func.pg_advisory_lock(TABLE_KEYS[table], run_id)))
        lease: Connection | int = connection
    else:
        path = _lock_file(engine, table, run_id)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        lease = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(lease, fcntl.LOCK_EX)
    with _guard:
        _held[key] = lease


def release(engine: Engine, table: str, run_id: int) -> None:
    """Give the lease of a finished run back (nothing when this process does not hold it)."""
    with _guard:
        lease = _held.pop((str(engine.url), table, run_id), None)
    if isinstance(lease, int):
        path = _lock_file(engine, table, run_id)
        if path is not None:
            path.unlink(missing_ok=True)
        os.close(lease)
    elif lease is not None:
        try:
            lease.execute(select(func.pg_advisory_unlock(TABLE_KEYS[table], run_id)))
        except DBAPIError:  # its connection is gone (the server restarted, the session was ended), and with it the
            lease.invalidate()  # lock, a session's; one still alive is ended here; an error would hide the outcome
        finally:
            lease.close()


def _dead(engine: Engine, connection: Connection | None, table: str, run_id: int) -> bool | None:
    """Whether the run's owner is gone (its lock is free), None when that cannot be known."""
    if connection is not None:
        taken = connection.execute(select(func.pg_try_advisory_lock(TABLE_KEYS[table], run_id))).scalar_one()
        if taken:
            connection.execute(select(func.pg_advisory_unlock(TABLE_KEYS[table], run_id)))
        return bool(taken)
    path = _lock_file(engine, table, run_id)
    if path is None:
        return None
    try:  # read-only is enough for flock; the file may vanish as its run ends, or be unreadable to this user
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
    return True


def sweep(engine: Engine, table: str) -> dict[int, str]:
    """Mark the table's ``running`` runs with no end whose owner is provably gone ``interrupted`` (where this user may
    write); the status to show of each such run not proved alive: ``interrupted``, or ``running (unconfirmed: ...)``
    when it cannot be proved alive or dead."""
    runs: Any = Base.metadata.tables[table]
    started = runs.c.started_at if "started_at" in runs.c else runs.c.created_at
    with read_scope(engine) as session:
        running = session.execute(select(runs.c.id, started).where(*_unfinished(runs))).all()
    shown: dict[int, str] = {}
    postgres = engine.dialect.name == "postgresql"
    probe = engine.connect().execution_options(isolation_level="AUTOCOMMIT") if postgres and running else nullcontext()
    with probe as connection:
        for run_id, at in running:
            if (str(engine.url), table, run_id) in _held:
                continue
            verdict = _dead(engine, connection, table, run_id)
            if verdict is None:
                shown[run_id] = f"{RUNNING} (unconfirmed: no lease; started {at:%Y-%m-%d %H:%M:%S} UTC)"
            elif verdict:
                shown[run_id] = INTERRUPTED
    dead = [run_id for run_id, status in shown.items() if status == INTERRUPTED]
    if dead:
        _mark_interrupted(engine, runs, dead)
    return shown


def _unfinished(runs: Any) -> tuple[Any, ...]:
    """The runs still ``running``, no end recorded (the only ones a free lock can prove interrupted)."""
    return runs.c.status == RUNNING, runs.c.finished_at.is_(None)


def _mark_interrupted(engine: Engine, runs: Any, dead: list[int]) -> None:
    try:
        with engine.begin() as connection:
            connection.execute(
                update(runs)
                .where(runs.c.id.in_(dead), *_unfinished(runs))
                .values(status=INTERRUPTED, finished_at=utcnow())
            )
    except DBAPIError as exc:
        if is_permission_error(exc):  # a read-only user: shown interrupted, recorded by the next writer
            return
        raise DatabaseError(f"cannot mark the interrupted runs of {runs.name} ({exc.orig})") from exc
    for run_id in dead:
        path = _lock_file(engine, runs.name, run_id)
        if path is not None:
            path.unlink(missing_ok=True)
