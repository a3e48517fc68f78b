"""Every field shown is covered by the record hash or checked against it: audit list/show mark a record changed by
hand, rows that cannot even be decoded give one line (never a traceback), and every field of an export line and of
its header is checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cli
from dbtools import complete_request, superuser_edit
from sqlalchemy import Engine

from attribution_audit.store import chain
from attribution_audit.store.database import create_db_engine

# One change per hashed column that audit show prints (request, neighbours, shares, metrics).
EDITS = [
    "UPDATE attribution_requests SET image_path = '/other.png' WHERE id = :id",
    "UPDATE attribution_requests SET image_sha256 = 'cd' WHERE id = :id",
    "UPDATE attribution_requests SET requester = 'mallory' WHERE id = :id",
    "UPDATE attribution_requests SET embedder_fingerprint = 'other' WHERE id = :id",
    "UPDATE attribution_requests SET catalogue_version = 'v9' WHERE id = :id",
    "UPDATE attribution_requests SET k = 7 WHERE id = :id",
    "UPDATE attribution_requests SET collection = 'works_other' WHERE id = :id",
    "UPDATE attribution_neighbours SET artist = 'Mallory' WHERE request_id = :id AND rank = 1",
    "UPDATE attribution_neighbours SET work_id = 'w9' WHERE request_id = :id AND rank = 1",
    "UPDATE attribution_neighbours SET similarity = 0.99 WHERE request_id = :id AND rank = 2",
    "UPDATE attribution_neighbours SET canonical_artist = 'Mallory' WHERE request_id = :id AND rank = 2",
    "UPDATE attribution_neighbours SET image_sha256 = 'cd' WHERE request_id = :id AND rank = 1",
    "UPDATE attribution_artist_shares SET share = 0.5 WHERE request_id = :id",
    "UPDATE attribution_metrics SET confidence = 0.99 WHERE request_id = :id",
    "UPDATE attribution_metrics SET top_artist = 'Mallory' WHERE request_id = :id",
    "UPDATE attribution_metrics SET exact_method = 'none' WHERE request_id = :id",
    "UPDATE attribution_metrics SET agreement = 0.5 WHERE request_id = :id",
    "UPDATE attribution_metrics SET agreement_spaces = 0.5 WHERE request_id = :id",
    "UPDATE attribution_metrics SET centroid_log_odds = 0.5 WHERE request_id = :id",
    "UPDATE attribution_metrics SET centroid_log_odds_others = 0.5 WHERE request_id = :id",
    "UPDATE attribution_metrics SET other_space_versions = 'fontboth:3' WHERE request_id = :id",
    "UPDATE attribution_metrics SET confidence_model_sha256 = 'cd' WHERE request_id = :id",
    "UPDATE attribution_metrics SET crop_log_odds = 0.5 WHERE request_id = :id",
    "UPDATE attribution_requests SET crop_vectors = X'0000803f' WHERE id = :id",
    "DELETE FROM attribution_metrics WHERE request_id = :id",
    "DELETE FROM attribution_neighbours WHERE request_id = :id AND rank = 2",
]


def _log(engine: Engine) -> list[str]:
    return [chain.append(engine, complete_request(f"r{i}")).id for i in range(3)]


@pytest.mark.parametrize("edit", EDITS)
def test_list_and_show_mark_a_record_changed_by_hand(cli: Cli, edit: str) -> None:
    engine = cli.engine()
    ids = _log(engine)
    superuser_edit(engine, edit.replace(":id", f"'{ids[1]}'"))
    listed = {r["request_id"]: r["intact"] for r in json.loads(cli("audit", "list", "--format", "json").stdout)}
    assert listed == {ids[0]: True, ids[1]: False, ids[2]: True}
    table = cli("audit", "list").stdout
    assert [line.split()[0] for line in table.splitlines() if "NO: hash fails" in line] == [ids[1]]
    assert "NOT INTACT" in cli("audit", "show", ids[1]).stdout
    assert "NOT INTACT" not in cli("audit", "show", ids[0]).stdout


@pytest.mark.postgres
def test_list_and_show_mark_a_changed_record_on_postgres(cli_on: Callable[[str], Cli], migrated_url: str) -> None:
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    ids = _log(engine)
    superuser_edit(engine, f"UPDATE attribution_metrics SET confidence = 0.01 WHERE request_id = '{ids[0]}'")
    assert [r["intact"] for r in json.loads(cli("audit", "list", "--json").stdout)] == [True, True, False]
    assert "NOT INTACT" in cli("audit", "show", ids[0]).stdout


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE attribution_requests SET index_params = 'not json' WHERE id = :id",
        "UPDATE attribution_requests SET created_at = 'garbage' WHERE id = :id",
        "UPDATE attribution_neighbours SET similarity = 'abc' WHERE request_id = :id",
        "UPDATE attribution_artist_shares SET share = 'x' WHERE request_id = :id",
    ],
)
def test_rows_that_cannot_be_decoded_give_one_line_not_a_traceback(cli: Cli, edit: str, tmp_path: Path) -> None:
    engine = cli.engine()
    ids = _log(engine)
    superuser_edit(engine, edit.replace(":id", f"'{ids[1]}'"))  # SQLite keeps any value in any column
    for args in (
        ("audit", "verify"),
        ("audit", "list"),
        ("audit", "list", "--format", "json"),
        ("audit", "show", ids[1]),
        ("audit", "export", str(tmp_path / "export.jsonl")),
        ("report", "request", ids[1], "--html", str(tmp_path / "page.html")),
        ("report", "summary"),
    ):
        result = cli(*args, code=None)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        assert "Traceback" not in result.output, args
        if result.exit_code:
            assert result.stderr.startswith("error: ") or "BROKEN" in result.stderr, (args, result.stderr)
    assert cli("audit", "verify", code=1)


def _export(cli: Cli, tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    _log(cli.engine())
    out = tmp_path / "export.jsonl"
    cli("audit", "export", str(out))
    return out, [json.loads(line) for line in out.read_text().splitlines()]


def _write(path: Path, lines: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_every_field_of_an_export_line_is_checked(cli: Cli, tmp_path: Path) -> None:
    out, lines = _export(cli, tmp_path)
    checkpoint = tmp_path / "checkpoint.json"
    cli("audit", "checkpoint", "--out", str(checkpoint))
    cli("audit", "verify", "--file", str(out), "--checkpoint", str(checkpoint))
    header, records = lines[0], lines[1:]
    changes: list[tuple[str, dict[str, object]]] = [
        ("records", {"records": 2}),
        ("from", {"from": "2999-01-01"}),
        ("to", {"to": "2000-01-01"}),
        ("exported_at", {"exported_at": "2000-01-01T00:00:00+00:00"}),
        ("chain_head", {"chain_head": {"seq": 1, "hash": "0" * 64}}),
        ("db_identity", {"db_identity": "another-db"}),
    ]
    assert {name for name, _ in changes} == set(header) - {"format"}, "a header field is not covered by this test"
    for name, change in changes:
        _write(out, [{**header, **change}, *records])
        result = cli("audit", "verify", "--file", str(out), "--checkpoint", str(checkpoint), code=1)
        assert "BROKEN" in result.stderr or "FAILS" in result.stderr, name
    second = records[1]
    record_changes = {
        "seq": {"seq": 7},
        "request_id": {"request_id": records[0]["request_id"]},
        "prev_hash": {"prev_hash": "1" * 64},
        "record_hash": {"record_hash": "2" * 64},
        "content": {"content": {**second["content"], "metrics": None}},  # type: ignore[dict-item]
    }
    assert set(record_changes) == set(second), "a record field is not covered by this test"
    for name, change in record_changes.items():
        _write(out, [header, records[0], {**second, **change}, records[2]])
        assert "export BROKEN" in cli("audit", "verify", "--file", str(out), code=1).stderr, name
