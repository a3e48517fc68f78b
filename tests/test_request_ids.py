"""A request is named by its whole id or by the first 8 or more characters of it (as git takes a commit's): `audit
show`, `audit replay` and `report request` take either; a prefix of several requests' ids is a usage error that says
how many, one that matches none says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cli
from dbtools import complete_request

from attribution_audit.errors import AmbiguousIdError, NotFoundError
from attribution_audit.services.audit_log import resolve_request_id
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore

IDS = (
    "0123abcd-0000-4000-8000-000000000001",
    "0123abcd-0000-4000-8000-000000000002",
    "01239999-0000-4000-8000-000000000003",  # its prefix's range ends at 0123999a
    "0123a000-0000-4000-8000-000000000004",
    "fffffff0-0000-4000-8000-000000000005",
)


def append_known(audit: AuditStore) -> None:
    for number, request_id in enumerate(IDS):
        request = complete_request(str(number))
        request.id = request_id
        chain.append(audit.engine, request)


def test_a_prefix_resolves_to_its_one_request(audit: AuditStore) -> None:
    append_known(audit)
    assert resolve_request_id(audit, IDS[1]) == IDS[1]
    assert resolve_request_id(audit, "01239999") == IDS[2]
    assert resolve_request_id(audit, "0123A000-") == IDS[3]  # any case; a hyphen where the id has one
    assert resolve_request_id(audit, "fffffff0") == IDS[4]
    assert resolve_request_id(audit, "0123abcd-0000-4000-8000-000000000002") == IDS[1]
    for ambiguous in ("0123abcd", "0123abcd-", IDS[0][:-1]):
        with pytest.raises(AmbiguousIdError, match=f"^2 requests have an id that starts with '{ambiguous}'"):
            resolve_request_id(audit, ambiguous)
    for missing in ("0123abce", "0123zzzz", "0123_%%%", "ffffffff"):
        with pytest.raises(NotFoundError, match=f"^no attribution request '{missing}' in the audit log"):
            resolve_request_id(audit, missing)
    with pytest.raises(AmbiguousIdError, match=r"^'0123abc' is too short to name a request: give its whole id or at"):
        resolve_request_id(audit, "0123abc")


def test_the_cli_takes_a_prefix_and_refuses_an_ambiguous_one(cli: Cli, tmp_path: Path) -> None:
    audit = cli.audit()
    try:
        append_known(audit)
    finally:
        audit.close()
    shown = json.loads(cli("audit", "show", "01239999", "--json").stdout)
    assert shown["request_id"] == IDS[2]
    cli("report", "request", "0123A000", "--html", str(tmp_path / "page.html"))
    assert IDS[3] in (tmp_path / "page.html").read_text(encoding="utf-8")
    for command in (["audit", "show"], ["audit", "replay"], ["report", "request", "--html", str(tmp_path / "x.html")]):
        refused = cli(*command, "0123abcd", code=2)
        assert refused.stderr.startswith(
            "error: Invalid value for 'REQUEST_ID': 2 requests have an id that starts with '0123abcd': give more of "
            "its characters; see '"
        )
        assert refused.stderr.endswith(f" {' '.join(command[:2])} --help'\n") and refused.stderr.count("\n") == 1
        missing = cli(*command, "0123abce", code=1)
        assert missing.stderr.startswith("error: no attribution request '0123abce' in the audit log (no id starts")
        assert missing.stderr.count("\n") == 1
