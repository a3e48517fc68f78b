"""Reading the audit log never waits for a writer: on SQLite, readers take no write lock (WAL snapshot)."""

from __future__ import annotations

import sqlite3

from sqlalchemy.engine import make_url

from attribution_audit.store.audit_store import AuditStore


def test_sqlite_reads_go_on_while_a_writer_holds_the_write_lock(sqlite_audit: AuditStore) -> None:
    path = make_url(str(sqlite_audit.engine.url)).database
    assert path
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # what every audit write starts with
    try:
        reading = sqlite_audit
        # Each of these would wait for the lock (busy timeout) and then fail if readers took it too.
        assert reading.requests.latest(5) == []
        assert reading.requests.verify_chain().ok
        assert reading.revisions()[0] == reading.revisions()[1]
        assert reading.catalogue.canonical_artists() == {}
        assert reading.reports.counts().requests == 0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
