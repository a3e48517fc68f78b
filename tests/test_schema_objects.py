"""`audit verify` also checks what the reports and the verification read through: a view redefined, an append-only
trigger dropped or switched off, a trigger function rewritten or a trigger added makes it fail naming the object,
even where the chain and the checkpoints still hold (on SQLite and PostgreSQL, through the real CLI)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from conftest import EMBEDDER, Cli
from dbtools import complete_request
from sqlalchemy import Engine, text

from attribution_audit import load_settings, open_service
from attribution_audit.store import chain
from attribution_audit.store.database import create_db_engine


@pytest.fixture
def logged(cli_on: Callable[[str], Cli], migrated_url: str) -> Iterator[tuple[Cli, Engine]]:
    """A CLI on a log of two records, checkpointed."""
    cli, engine = cli_on(migrated_url), create_db_engine(migrated_url)
    for label in ("r1", "r2"):
        chain.append(engine, complete_request(label))
    cli("audit", "checkpoint")
    yield cli, engine
    engine.dispose()


def _ddl(engine: Engine, *statements: str) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def _fails(cli: Cli, *names: str) -> str:
    """verify's stderr, checked to fail on the schema alone (chain and checkpoint hold) naming each of ``names``;
    the JSON says the same."""
    result = cli("audit", "verify", code=1)
    assert "chain OK: 2 records" in result.stdout and "checkpoint seq 2" in result.stdout, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("schema FAILS: ")]
    assert all(name in line for name in names) and "run `attribution-audit db repair`" in line, line
    data = json.loads(cli("audit", "verify", "--format", "json", code=1).stdout)
    assert data["ok"] is False and data["checkpoints"][0]["ok"] is True
    assert data["schema"]["ok"] is False and all(any(n in p for p in data["schema"]["problems"]) for n in names)
    return line


def test_an_untouched_database_passes(logged: tuple[Cli, Engine]) -> None:
    cli, _ = logged
    assert "schema OK" in cli("audit", "verify").stdout
    data = json.loads(cli("audit", "verify", "--format", "json").stdout)
    assert data["ok"] is True and data["schema"] == {"ok": True, "problems": [], "unchecked": None}
    assert "schema OK" in cli("report", "summary").stdout


def _inflate_shares(engine: Engine) -> None:
    """v_artist_shares recreated with ten times each sum of shares (the attacker review's repro)."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            select = connection.scalar(text("SELECT pg_get_viewdef('v_artist_shares')"))
            assert "sum(per_request.share) AS share_sum" in select
            inflated = select.replace("sum(per_request.share) AS", "sum(per_request.share) * 10 AS")
            connection.execute(text(f"CREATE OR REPLACE VIEW v_artist_shares AS {inflated}"))
        else:
            sql = connection.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'v_artist_shares'"))
            connection.execute(text("DROP VIEW v_artist_shares"))
            connection.execute(text(sql.replace("SUM(share) AS share_sum", "SUM(share) * 10 AS share_sum")))


def test_a_redefined_view_fails_naming_it(logged: tuple[Cli, Engine]) -> None:
    cli, engine = logged
    before = json.loads(cli("report", "artists", "--format", "json").stdout)
    _inflate_shares(engine)
    after = json.loads(cli("report", "artists", "--format", "json").stdout)
    assert [row["share_sum"] for row in after] == [10 * row["share_sum"] for row in before]  # what users now see
    line = _fails(cli, "view v_artist_shares")
    assert "differs from what the migrations at revision" in line
    summary = cli("report", "summary")  # a summary beside the inflated report says so too
    assert "schema FAILS: view v_artist_shares differs" in summary.stdout and "schema OK" not in summary.stdout
    assert json.loads(cli("report", "summary", "--format", "json").stdout)["schema"]["ok"] is False


def test_the_service_and_console_verdict_names_it_too(logged: tuple[Cli, Engine]) -> None:
    """The HTTP API and the console show the service's Verification: its problem line and JSON carry the schema."""
    cli, engine = logged
    _inflate_shares(engine)
    settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url, embedder=EMBEDDER)
    with open_service(settings) as service:
        verification = service.verify()
    assert not verification.ok and verification.report.ok
    assert verification.problem and verification.problem.startswith("view v_artist_shares differs")
    assert verification.as_json()["schema"]["problems"] == [verification.schema[0]]


def test_a_dropped_trigger_fails_naming_it(logged: tuple[Cli, Engine]) -> None:
    cli, engine = logged
    if engine.dialect.name == "postgresql":
        name, drop = (
            "attribution_requests_append_only",
            "DROP TRIGGER attribution_requests_append_only ON attribution_requests",
        )
    else:
        name, drop = "attribution_requests_no_update", "DROP TRIGGER attribution_requests_no_update"
    _ddl(engine, drop)
    assert f"trigger {name} is missing" in _fails(cli, f"trigger {name}")


def test_an_added_trigger_fails_naming_it(logged: tuple[Cli, Engine]) -> None:
    cli, engine = logged
    if engine.dialect.name == "postgresql":
        body = "BEGIN NEW.share := NEW.share * 10; RETURN NEW; END"
        _ddl(
            engine,
            f"CREATE FUNCTION inflate() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$",
            "CREATE TRIGGER inflate BEFORE INSERT ON attribution_artist_shares FOR EACH ROW EXECUTE FUNCTION inflate()",
        )
    else:
        _ddl(engine, "CREATE TRIGGER inflate AFTER INSERT ON attribution_artist_shares BEGIN SELECT 1; END")
    assert "trigger inflate was added outside the migrations" in _fails(cli, "trigger inflate")


@pytest.mark.parametrize(
    ("statements", "name"),
    [
        (["ALTER TABLE recall_checks DISABLE TRIGGER recall_checks_no_truncate"], "trigger recall_checks_no_truncate"),
        (
            [
                "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RETURN NEW; END $$"
            ],
            "function audit_append_only",
        ),
        # The view audit verify reads shares through (a copy kept of the original rows would read the same)
        (
            [
                "CREATE OR REPLACE VIEW v_audit_artist_shares AS "
                "SELECT request_id, artist, share FROM attribution_artist_shares WHERE share >= 0"
            ],
            "view v_audit_artist_shares",
        ),
    ],
)
def test_a_disabled_trigger_a_rewritten_function_or_audit_view_fails(
    logged: tuple[Cli, Engine], statements: list[str], name: str
) -> None:
    cli, engine = logged
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has neither trigger functions, disabled triggers nor audit views")
    _ddl(engine, *statements)
    _fails(cli, name)


def test_row_level_security_a_policy_or_a_rule_on_the_tables_fails_and_db_repair_removes_them(
    logged: tuple[Cli, Engine],
) -> None:
    """A policy that hides rows from the reports (row-level security: the attacker review's repro) or a rule on a
    table changes what queries of the tables return: verify names each, `db repair` drops them."""
    cli, engine = logged
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has neither row-level security nor rules")
    _ddl(
        engine,
        "ALTER TABLE attribution_artist_shares ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE attribution_artist_shares FORCE ROW LEVEL SECURITY",
        "CREATE POLICY hide ON attribution_artist_shares FOR SELECT USING (artist <> 'nobody')",
        "CREATE RULE quiet AS ON DELETE TO recall_checks DO INSTEAD NOTHING",
    )
    data = json.loads(cli("audit", "verify", "--format", "json", code=1).stdout)
    assert data["checkpoints"][0]["ok"] is True and sorted(data["schema"]["problems"]) == [
        "policy hide was added outside the migrations",
        "row security attribution_artist_shares was added outside the migrations",
        "rule quiet was added outside the migrations",
    ]
    cli("db", "repair")
    assert "schema OK" in cli("audit", "verify").stdout


def test_a_view_of_ones_own_beside_them_is_no_concern(logged: tuple[Cli, Engine]) -> None:
    cli, engine = logged
    _ddl(engine, "CREATE VIEW my_shares AS SELECT artist, share_sum FROM v_artist_shares")
    assert "schema OK" in cli("audit", "verify").stdout


def test_a_dropped_trigger_function_fails_naming_it(logged: tuple[Cli, Engine]) -> None:
    cli, engine = logged
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite triggers call no function")
    _ddl(engine, "DROP FUNCTION audit_append_only() CASCADE")  # the triggers go with it
    (line,) = [line for line in cli("audit", "verify", code=1).stderr.splitlines() if line.startswith("schema FAILS")]
    assert "function audit_append_only() does not exist" in line and "restore the audit DB from a backup" in line


def test_db_repair_recreates_what_the_migrations_create(logged: tuple[Cli, Engine]) -> None:
    cli, engine = logged
    before = cli("report", "artists", "--format", "json").stdout
    _inflate_shares(engine)
    if engine.dialect.name == "postgresql":
        _ddl(
            engine,
            "DROP TRIGGER attribution_requests_append_only ON attribution_requests",
            "ALTER TABLE recall_checks DISABLE TRIGGER recall_checks_no_truncate",
            "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NEW; END $$",
            "DROP VIEW v_ann_disagreements",
            "CREATE TRIGGER inflate AFTER INSERT ON attribution_artist_shares "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
        )
        names = ["trigger attribution_requests_append_only", "trigger recall_checks_no_truncate"]
        names += ["function audit_append_only", "view v_ann_disagreements", "trigger inflate"]
    else:
        _ddl(
            engine,
            "DROP TRIGGER attribution_requests_no_update",
            "DROP VIEW v_ann_disagreements",
            "CREATE TRIGGER inflate AFTER INSERT ON attribution_artist_shares BEGIN SELECT 1; END",
        )
        names = ["trigger attribution_requests_no_update", "view v_ann_disagreements", "trigger inflate"]
    _fails(cli, "view v_artist_shares", *names)
    repaired = cli("db", "repair").stdout.splitlines()
    assert sorted(line.split()[1] + " " + line.split()[2] for line in repaired) == sorted(
        ["view v_artist_shares", *names]
    ), repaired
    assert "schema OK" in cli("audit", "verify").stdout
    assert cli("report", "artists", "--format", "json").stdout == before
    assert "nothing to repair" in cli("db", "repair").stdout
    with pytest.raises(Exception, match="append-only"), engine.begin() as connection:  # the trigger works again
        connection.execute(text("UPDATE attribution_requests SET requester = 'mallory'"))
