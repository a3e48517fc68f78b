"""Verifying and exporting the audit chain stream it: memory does not grow with the log; ``report summary`` starts
from the last full verification and checks only what was appended since."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from dbtools import fill_chain, superuser_edit
from sqlalchemy import Engine

from attribution_audit.errors import AttributionAuditError
from attribution_audit.reporting import export
from attribution_audit.services import audit_log
from attribution_audit.services.report import summary
from attribution_audit.store.audit_store import AuditStore


def peak_bytes(action: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # tracemalloc makes every allocation slow
def test_verify_and_export_memory_stays_flat_as_the_log_grows(fresh_db: Engine, tmp_path: Path) -> None:
    audit = AuditStore(fresh_db)
    peaks: dict[str, list[int]] = {"verify": [], "export": [], "offline": []}
    for size in (2000, 6000):
        fill_chain(fresh_db, size - audit.requests.count())
        out = tmp_path / f"log{size}.jsonl"
        assert audit_log.verify_chain(audit)[0].checked == size  # warm the caches before measuring
        peaks["verify"].append(peak_bytes(lambda: audit_log.verify_chain(audit)))
        peaks["export"].append(peak_bytes(lambda: audit_log.export_records(audit, out)))  # noqa: B023
        peaks["offline"].append(peak_bytes(lambda: export.verify_export(out)))  # noqa: B023
        assert export.verify_export(out).records == size
    for what, (small, large) in peaks.items():
        assert large < 1.5 * small, f"{what}: peak {small} B at 2k records, {large} B at 6k"


def test_summary_checks_only_what_was_appended_since_the_last_full_verification(fresh_db: Engine) -> None:
    audit = AuditStore(fresh_db)
    fill_chain(fresh_db, 30)
    first = summary(audit)["chain"]  # nothing remembered: the whole chain
    assert (first["ok"], first["records"], first["checked_now"], first["verified_in_full_at"]) == (True, 30, 30, None)
    full = audit_log.verify_chain(audit)[0]
    fill_chain(fresh_db, 5)
    chain = summary(audit)["chain"]
    assert (chain["ok"], chain["records"], chain["checked_now"]) == (True, 35, 5)
    assert chain["verified_in_full_at"] is not None and chain["verified_in_full_age_s"] >= 0
    assert chain["head_hash"] == audit_log.verify_chain(audit)[0].head_hash != full.head_hash
    json.dumps(chain)  # printable as --format json


def appending_after_the_last_page(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer commits a record right after the streaming read has found no further page, before the rows
    are counted: what a busy service does to a running `audit verify` or `audit export`."""
    from attribution_audit.store import chain

    original = chain.iter_chain

    def then_append(*args: Any, **kwargs: Any) -> Any:
        yield from original(*args, **kwargs)
        fill_chain(engine, 1)

    monkeypatch.setattr(chain, "iter_chain", then_append)


def test_a_record_appended_during_verify_or_export_is_not_a_broken_chain(
    fresh_db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = AuditStore(fresh_db)
    fill_chain(fresh_db, 12)
    appending_after_the_last_page(fresh_db, monkeypatch)
    report = audit_log.verify_chain(audit)[0]
    assert (report.ok, report.checked, report.reason) == (True, 12, None)
    assert audit_log.export_records(audit, tmp_path / "log.jsonl") == (13, None)  # the one appended: next time
    assert export.verify_export(tmp_path / "log.jsonl").ok
    assert summary(audit)["chain"]["ok"]  # nothing false was remembered either


def test_summary_names_records_removed_before_the_last_full_verification(fresh_db: Engine) -> None:
    from dbtools import superuser_edit

    audit = AuditStore(fresh_db)
    fill_chain(fresh_db, 6, neighbours=1)
    audit_log.verify_chain(audit)
    for table in ("attribution_neighbours", "attribution_artist_shares", "attribution_metrics"):
        removed = "(SELECT id FROM attribution_requests WHERE seq = 2)"
        superuser_edit(fresh_db, f"DELETE FROM {table} WHERE request_id = {removed}")
    superuser_edit(fresh_db, "DELETE FROM attribution_requests WHERE seq = 2")
    chain = summary(audit)["chain"]
    assert not chain["ok"]
    assert chain["reason"] == "1 record(s) at or before seq 6 are missing (removed after they were verified)"


def test_a_tail_cut_after_a_full_verification_is_not_remembered_as_intact(fresh_db: Engine, tmp_path: Path) -> None:
    audit = AuditStore(fresh_db)
    fill_chain(fresh_db, 12)
    assert audit_log.verify_chain(audit)[0].ok  # remembered: 12 records
    for table in ("attribution_neighbours", "attribution_artist_shares", "attribution_metrics", "attribution_requests"):
        key = "id" if table == "attribution_requests" else "request_id"
        cut = "SELECT id FROM attribution_requests WHERE seq > 8"
        superuser_edit(fresh_db, f"DELETE FROM {table} WHERE {key} IN ({cut})")
    for _ in range(2):  # nor by the verification after the one that found it; an export refuses the cut log
        report = audit_log.verify_chain(audit)[0]
        assert (report.ok, report.checked) == (False, 8) and "4 record(s) after seq 8" in (report.reason or "")
        with pytest.raises(AttributionAuditError, match=r"broken: 4 record\(s\) after seq 8 are missing"):
            audit_log.export_records(audit, tmp_path / "cut.jsonl")
        assert not (tmp_path / "cut.jsonl").exists()
        assert summary(audit)["chain"]["ok"] is False


def test_a_log_missing_records_is_said_broken_without_a_seq_of_none(cli: Cli) -> None:
    engine = cli.engine()
    fill_chain(engine, 5)
    cli("audit", "verify")
    last = "(SELECT id FROM attribution_requests WHERE seq = 5)"
    for table in ("attribution_neighbours", "attribution_artist_shares", "attribution_metrics"):
        superuser_edit(engine, f"DELETE FROM {table} WHERE request_id = {last}")
    superuser_edit(engine, "DELETE FROM attribution_requests WHERE seq = 5")
    for args in (("audit", "verify"), ("report", "summary"), ("audit", "verify", "--format", "json")):
        result = cli(*args, code=1 if args[1] == "verify" else 0)
        assert "after seq 4 are missing" in result.output and "None" not in result.output, result.output
