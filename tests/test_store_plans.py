"""The audit DB's per-request and per-work lookups are served by indexes: their cost does not grow with the works
table (checked on the query plan of every statement the store issues, on SQLite and on PostgreSQL)."""

from __future__ import annotations

import random
import sqlite3
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from dbtools import catalogue_with
from sqlalchemy import event, text

from attribution_audit.domain.results import Neighbour, Outcome, RequestDraft
from attribution_audit.errors import DatabaseError
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import WorkRecord
from attribution_audit.store.database import read_scope, session_scope


@contextmanager
def statements(audit: AuditStore) -> Iterator[list[tuple[str, Any]]]:
    """Every SQL statement (with its parameters) the store sends while the block runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, executemany: bool) -> None:
        seen.append((sql, params))

    event.listen(audit.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(audit.engine, "before_cursor_execute", record)


BOUNDED = ("work_id=?", "image_sha256=?", "rowid=?", "INTEGER PRIMARY KEY")


def works_scans(audit: AuditStore, seen: list[tuple[str, Any]]) -> list[str]:
    """The SELECTs whose plan reads more of the works table than the rows asked for: a full scan, or an index used
    by its catalogue prefix only (every work of the catalogue)."""
    if audit.engine.dialect.name == "postgresql":
        return pg_works_scans(audit, seen)
    scans = []
    with audit.engine.connect() as connection:
        for sql, params in seen:
            if not sql.lstrip().upper().startswith("SELECT") or "works" not in sql:
                continue
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
            for row in plan:
                step = str(row[-1])
                if step.split(" ")[1:2] == ["works"] and not any(key in step for key in BOUNDED):
                    scans.append(f"{step}  <-  {sql}")
    return scans


def pg_works_scans(audit: AuditStore, seen: list[tuple[str, Any]]) -> list[str]:
    """PostgreSQL's plan of each SELECT on works, with sequential scans priced out (a tiny table is otherwise always
    scanned): a Seq Scan of works left in a plan is one that no index can serve; an index scan must filter on the
    work itself (work_id or image_sha256), not on the catalogue alone."""
    scans = []
    with audit.engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")  # statistics of the rows written, as autovacuum would gather
        connection.exec_driver_sql("SET enable_seqscan = off")
        for sql, params in seen:
            if not sql.lstrip().upper().startswith("SELECT") or "works" not in sql:
                continue
            plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params).scalar()
            for node in plan_nodes(plan[0]["Plan"]):
                if node.get("Relation Name") != "works":
                    continue
                condition = str(node.get("Index Cond", ""))
                if node["Node Type"] == "Seq Scan" or not ("work_id" in condition or "image_sha256" in condition):
                    scans.append(f"{node['Node Type']} {condition}  <-  {sql}")
    return scans


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def artist_of(number: int) -> str:
    """The artist of work ``w<number>``, in the catalogue and in a request's neighbours alike (a neighbour naming
    another artist than the catalogue's is refused)."""
    return f"artist {number % 3}"


def works(numbers: range) -> list[WorkRecord]:
    return [WorkRecord(f"w{i}", artist_of(i), None, f"/img/{i}.png", f"{i:064x}", {}, 1, f"p{i}") for i in numbers]


def request_draft(k: int) -> RequestDraft:
    """A request of the catalogue "museum" whose K neighbours are works w1..wK."""
    neighbours = [
        Neighbour(r, f"w{r}", "museum", artist_of(r), 0.9, 0.1, 1 / k, artist_of(r), 1) for r in range(1, k + 1)
    ]
    outcome = Outcome(neighbours, [], None, None, "v1", {"entropy": 0.0, "nn_distance": 0.1, "margin": 0.2})
    artists = {n.artist: 1 / k for n in neighbours}
    outcome = replace(outcome, artist_shares=artists)
    return RequestDraft(
        "/q.png",
        "ab" * 32,
        np.ones(4, dtype=np.float32),
        None,
        "t",
        "x",
        "x",
        "edge",
        "works_x",
        {},
        {},
        k,
        outcome,
        0.9,
        "default-v1",
    )


def request_of_works(work_numbers: Sequence[int]) -> RequestDraft:
    """A request of the catalogue "museum" whose neighbours are the works numbered ``work_numbers``, in that order."""
    draft = request_draft(len(work_numbers))
    near = [
        replace(n, work_id=f"w{i}", artist=artist_of(i), canonical_artist=artist_of(i))
        for n, i in zip(draft.outcome.neighbours, work_numbers, strict=True)
    ]
    shares = {artist: sum(n.share for n in near if n.artist == artist) for artist in {n.artist for n in near}}
    return replace(draft, outcome=replace(draft.outcome, neighbours=near, artist_shares=shares))


def start_catalogue(audit: AuditStore, numbers: range) -> tuple[int, int]:
    """The catalogue "museum" with the works numbered ``numbers``; its ingestion run and catalogue ids."""
    return catalogue_with(audit, {f"w{i}": artist_of(i) for i in numbers})


def test_the_audit_write_issues_the_same_few_statements_whatever_k(audit: AuditStore) -> None:
    start_catalogue(audit, range(200))
    audit.requests.record(request_draft(3))  # the log has a head
    issued: dict[int, list[str]] = {}
    for k in (2, 50):
        with statements(audit) as seen:
            recorded = audit.requests.record(request_draft(k))
        assert len(recorded.neighbours) == k and recorded.intact
        issued[k] = [" ".join(sql.split()[:3]) for sql, _ in seen]
    assert issued[2] == issued[50]  # the same statements for 2 and 50 neighbours: no statement per row
    # BEGIN IMMEDIATE (SQLite) or the chain lock (PostgreSQL), the work keys, the head, the request, neighbours,
    # shares, metrics
    assert len(issued[50]) <= 7, issued[50]
    assert audit.requests.get(recorded.request_id).intact  # and what was written reads back as hashed


def test_the_postgres_audit_write_is_pipelined(audit: AuditStore) -> None:
    """On PostgreSQL every statement of the write is sent in pipeline mode: the lock, the work keys and the head in
    one round trip, the inserts in another (then COMMIT), not one round trip per statement."""
    if audit.engine.dialect.name != "postgresql":
        pytest.skip("pipeline mode is PostgreSQL's")
    from psycopg import pq

    start_catalogue(audit, range(20))
    modes: list[Any] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, executemany: bool) -> None:
        modes.append(cursor.connection.pgconn.pipeline_status)

    event.listen(audit.engine, "before_cursor_execute", record)
    try:
        recorded = audit.requests.record(request_draft(5))
    finally:
        event.remove(audit.engine, "before_cursor_execute", record)
    assert len(modes) == 7 and set(modes) == {pq.PipelineStatus.ON}, modes
    assert audit.requests.get(recorded.request_id).intact


@pytest.mark.parametrize("reads_after", [False, True])
def test_a_connection_lost_inside_a_scope_is_one_database_error_or_none(audit: AuditStore, reads_after: bool) -> None:
    """The server ends a read's or a write's session (a restart, pg_terminate_backend): a statement after that (a
    write's commit too) fails with the one-line DatabaseError, and closing the scope adds no raw driver error (a read
    whose session was ended after its last statement raised one from its close: the service answered 500, not 503)."""
    if audit.engine.dialect.name != "postgresql":
        pytest.skip("a session the server ends is PostgreSQL's")

    def end(pid: int) -> None:
        with audit.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    for scope in (read_scope, session_scope):
        if reads_after or scope is session_scope:  # (a write's commit is such a statement)
            with pytest.raises(DatabaseError) as info, scope(audit.engine) as session:
                end(session.scalar(text("SELECT pg_backend_pid()")))
                if reads_after:
                    session.scalar(text("SELECT 1"))
            assert "\n" not in str(info.value)
        else:
            with scope(audit.engine) as session:
                end(session.scalar(text("SELECT pg_backend_pid()")))
        with read_scope(audit.engine) as session:  # the pool gives a live connection again
            assert session.scalar(text("SELECT 1")) == 1


def test_a_connection_lost_mid_write_is_one_error_and_one_log_line_at_most(
    audit: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The server ends the connection while a record's statements are in the pipeline: the write fails as the one-line
    DatabaseError (nothing recorded), psycopg's warning that ending the failed pipeline failed too is not logged
    beside it (a service's log showed both), and the next write goes through on a new connection."""
    if audit.engine.dialect.name != "postgresql":
        pytest.skip("pipeline mode is PostgreSQL's")
    start_catalogue(audit, range(20))
    killed: list[int] = []

    def cut(conn: Any, cursor: Any, sql: str, params: Any, context: Any, executemany: bool) -> None:
        if not killed:  # at the write's first statement, its server process is ended from another connection
            killed.append(cursor.connection.info.backend_pid)
            with audit.engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed[0]})

    event.listen(audit.engine, "before_cursor_execute", cut)
    try:
        with pytest.raises(DatabaseError) as info:
            audit.requests.record(request_draft(5))
    finally:
        event.remove(audit.engine, "before_cursor_execute", cut)
    assert "nothing was recorded" in str(info.value) and "\n" not in str(info.value)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
    recorded = audit.requests.record(request_draft(5))
    assert recorded.seq == 1 and audit.requests.verify_chain().ok


def test_each_answer_the_pipelined_write_reads_comes_on_a_cursor_of_its_own(audit: AuditStore) -> None:
    """In a pipeline, psycopg gives a cursor the answer of its earlier statement where that arrives after its next one
    was sent: the head was read as the chain lock's row now and then under load (a traceback, nothing recorded). The
    work keys and the head are each read on a cursor no earlier statement of the write used."""
    if audit.engine.dialect.name != "postgresql":
        pytest.skip("pipeline mode is PostgreSQL's")
    start_catalogue(audit, range(20))
    sent: list[tuple[int, str]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, executemany: bool) -> None:
        sent.append((id(cursor), sql))

    event.listen(audit.engine, "before_cursor_execute", record)
    try:
        recorded = audit.requests.record(request_draft(5))
    finally:
        event.remove(audit.engine, "before_cursor_execute", record)
    reads = [i for i, (_, sql) in enumerate(sent) if "json_to_recordset(" in sql or "seq DESC" in sql]
    assert len(reads) == 2 and "pg_advisory_xact_lock" in sent[0][1], sent
    for i in reads:
        assert sent[i][0] not in {cursor for cursor, _ in sent[:i]}, (sent[i][1], sent[:i])
    assert audit.requests.get(recorded.request_id).intact


def test_the_chain_head_is_one_index_probe(sqlite_audit: AuditStore) -> None:
    start_catalogue(sqlite_audit, range(10))
    for _ in range(3):
        sqlite_audit.requests.record(request_draft(2))
    with statements(sqlite_audit) as seen:
        sqlite_audit.requests.record(request_draft(2))
    head = [(sql, params) for sql, params in seen if "ORDER BY attribution_requests.seq DESC" in sql]
    assert len(head) == 1
    with sqlite_audit.engine.connect() as connection:
        plan = [str(row[-1]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + head[0][0], head[0][1])]
    assert any("USING INDEX" in step or "USING COVERING INDEX" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan  # no sort of the whole log


def test_writing_works_and_a_request_never_scans_the_works_table(audit: AuditStore) -> None:
    run, catalogue_id = start_catalogue(audit, range(5000))  # a catalogue, then one more batch and a request
    catalogue = audit.catalogue
    with statements(audit) as seen:
        catalogue.record_works(
            catalogue_id,
            "works_x",
            run_id=run,
            embedder_fingerprint="x",
            spaces="content",
            works=works(range(5000, 5050)),
        )
        catalogue.known_works(catalogue_id, "works_x", ["w1", "w2"])
        draft = request_draft(2)
        recorded = audit.requests.record(draft)
    assert recorded.neighbours[0].work_id == "w1"
    assert any("works" in sql for sql, _ in seen)  # the check looked at the statements that matter
    assert works_scans(audit, seen) == []
    with audit.engine.connect() as connection:  # and the request did find its works through the index
        linked = connection.execute(text("SELECT COUNT(*) FROM attribution_neighbours WHERE work_pk IS NOT NULL"))
        assert linked.scalar() == 2


def test_a_request_id_prefix_is_one_index_range(audit: AuditStore) -> None:
    """`audit show 0123abcd` looks the prefix up in one statement that reads the ids' primary key index over the
    prefix's range, not the whole log."""
    start_catalogue(audit, range(1, 3))
    for _ in range(20):
        audit.requests.record(request_draft(2))
    wanted = audit.requests.latest(1)[0].request_id
    with statements(audit) as seen:
        assert audit.requests.with_prefix(wanted[:8]) == (1, wanted)
    ((sql, params),) = [(sql, params) for sql, params in seen if "_requests" in sql]  # the view on PostgreSQL
    with audit.engine.connect() as connection:
        if audit.engine.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE")
            connection.exec_driver_sql("SET enable_seqscan = off")
            plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params).scalar()
            nodes = [n for n in plan_nodes(plan[0]["Plan"]) if n.get("Relation Name") == "attribution_requests"]
            assert nodes and all("Index" in n["Node Type"] and "id" in str(n.get("Index Cond")) for n in nodes), nodes
        else:
            steps = [str(row[-1]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
            assert any("INDEX" in step and "id>?" in step and "id<?" in step for step in steps), steps


def test_a_record_writes_as_many_pages_whatever_works_its_neighbours_are(sqlite_audit: AuditStore) -> None:
    """A record's commit writes pages for its rows, not one per neighbour's work: K neighbours scattered over the
    catalogue cost the write-ahead log as many pages as K neighbouring works (no index keyed by the neighbours'
    works, whose K entries would land on K pages of it once the log is long)."""
    start_catalogue(sqlite_audit, range(5000))
    draw = random.Random(7)
    for _ in range(300):  # a log whose neighbour rows span many pages of any index on them
        sqlite_audit.requests.record(request_of_works(draw.sample(range(5000), 100)))

    log = sqlite3.connect(str(sqlite_audit.engine.url.database), isolation_level=None)  # outside any transaction

    def pages_written(work_numbers: list[int]) -> int:
        log.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sqlite_audit.requests.record(request_of_works(work_numbers))
        return int(log.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    # medians of 5: a record's random id and time decide where it lands in the B-trees (a few splits more or less)
    together = statistics.median(pages_written(list(range(i, i + 100))) for i in range(5))
    scattered = statistics.median(pages_written(draw.sample(range(5000), 100)) for _ in range(5))
    log.close()
    assert together > 0 and scattered <= together + 12, (together, scattered)  # with such an index: ~+55


def test_a_request_probes_its_works_by_key_whatever_the_statistics(audit: AuditStore) -> None:
    """PostgreSQL plans a request's lookup of its K neighbours' works as one probe of the works' unique key per
    work, as the server plans it (sequential scans allowed), both before the catalogue tables were ever analyzed (a
    fresh ingest on a server whose autovacuum has not run, or is off) and after: never a read of every work of the
    catalogue, nor a scan of the table."""
    if audit.engine.dialect.name != "postgresql":
        pytest.skip(
            "SQLite plans the lookup by the unique index without statistics "
            "(test_writing_works_and_a_request_never_scans_the_works_table)"
        )
    start_catalogue(audit, range(5000))
    draft = request_of_works(range(0, 5000, 50))
    for analyzed in (False, True):
        if analyzed:
            with audit.engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE catalogues, works")
        with statements(audit) as seen:
            recorded = audit.requests.record(draft)
        assert len(recorded.neighbours) == 100 and recorded.intact
        ((sql, params),) = [(sql, params) for sql, params in seen if "FROM json_to_recordset(" in sql]
        with audit.engine.connect() as connection:
            plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params).scalar()
        works = [node for node in plan_nodes(plan[0]["Plan"]) if node.get("Relation Name") == "works"]
        assert works and all("work_id" in str(node.get("Index Cond", "")) for node in works), (analyzed, works)
