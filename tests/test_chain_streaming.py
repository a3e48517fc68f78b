"""Verifying and exporting the audit chain stream it: memory does not grow with the log; ``report summary`` starts
from the last full verification and checks only what was appended since."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbtools import fill_chain
from sqlalchemy import Engine

from attribution_audit.reporting.export import verify_export
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
        assert audit_log.verify_chain(audit).checked == size  # warm the caches before measuring
        peaks["verify"].append(peak_bytes(lambda: audit_log.verify_chain(audit)))
        peaks["export"].append(peak_bytes(lambda: audit_log.export_records(audit, out)))  # noqa: B023
        peaks["offline"].append(peak_bytes(lambda: verify_export(out)))  # noqa: B023
        assert verify_export(out).records == size
    for what, (small, large) in peaks.items():
        assert large < 1.5 * small, f"{what}: peak {small} B at 2k records, {large} B at 6k"


def test_summary_checks_only_what_was_appended_since_the_last_full_verification(fresh_db: Engine) -> None:
    audit = AuditStore(fresh_db)
    fill_chain(fresh_db, 30)
    first = summary(audit)["chain"]  # nothing remembered: the whole chain
    assert (first["ok"], first["records"], first["checked_now"], first["verified_in_full_at"]) == (True, 30, 30, None)
    full = audit_log.verify_chain(audit)
    fill_chain(fresh_db, 5)
    chain = summary(audit)["chain"]
    assert (chain["ok"], chain["records"], chain["checked_now"]) == (True, 35, 5)
    assert chain["verified_in_full_at"] is not None and chain["verified_in_full_age_s"] >= 0
    assert chain["head_hash"] == audit_log.verify_chain(audit).head_hash != full.head_hash
    json.dumps(chain)  # printable as --format json
