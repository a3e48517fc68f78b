"""The audit DB's per-request and per-work lookups are served by indexes: their cost does not grow with the works
table (checked on the query plan of every statement the store issues, on SQLite and on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import event, text

from attribution_audit.domain.results import Neighbour, Outcome, RequestDraft
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import WorkRecord


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


def works(numbers: range) -> list[WorkRecord]:
    return [WorkRecord(f"w{i}", f"artist {i % 7}", None, f"/img/{i}.png", f"{i:064x}", {}, 1, f"p{i}") for i in numbers]


def test_writing_works_and_a_request_never_scans_the_works_table(audit: AuditStore) -> None:
    catalogue = audit.catalogue
    run, catalogue_id = catalogue.start_ingestion(
        "museum",
        source_format="csv",
        manifest_path="/m.csv",
        manifest_sha256="0" * 64,
        collection="works_x",
        embedder_fingerprint="x",
        requester="t",
    )

    def write(numbers: range) -> None:
        catalogue.record_works(
            catalogue_id, "works_x", run_id=run, embedder_fingerprint="x", spaces="content", works=works(numbers)
        )

    write(range(5000))  # a catalogue, then one more batch of its ingestion and a request
    with statements(audit) as seen:
        write(range(5000, 5050))
        catalogue.known_works(catalogue_id, "works_x", ["w1", "w2"])
        neighbours = [Neighbour(r, f"w{r}", "museum", "artist 1", 0.9, 0.1, 0.5, "artist 1", 1) for r in (1, 2)]
        outcome = Outcome(neighbours, [], None, None, "v1", {"entropy": 0.0, "nn_distance": 0.1, "margin": 0.2})
        draft = RequestDraft(
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
            2,
            outcome,
            0.9,
            "default-v1",
        )
        recorded = audit.requests.record(draft)
    assert recorded.neighbours[0].work_id == "w1"
    assert any("works" in sql for sql, _ in seen)  # the check looked at the statements that matter
    assert works_scans(audit, seen) == []
    with audit.engine.connect() as connection:  # and the request did find its works through the index
        linked = connection.execute(text("SELECT COUNT(*) FROM attribution_neighbours WHERE work_pk IS NOT NULL"))
        assert linked.scalar() == 2
