"""Least privilege on the real PostgreSQL: grants refuse reserved and superuser roles and warn about a role that reads
more than the views; the writer role appends and maintains the catalogue but cannot change, delete or truncate an
audit row, nor drop the append-only triggers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Cli, _create_pg_database, _drop_pg_database, _pg_url
from dbtools import complete_request, downgrade
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from attribution_audit.store import chain
from attribution_audit.store.database import create_db_engine, upgrade

pytestmark = pytest.mark.postgres


@dataclass
class Cluster:
    """A migrated database of this test, its owner's URL, and roles to drop after the test (roles are cluster-wide)."""

    url: str
    admin: Engine
    roles: list[str]

    def role(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.roles.append(name)
        return name

    def execute(self, sql: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(sql))


@pytest.fixture
def cluster(postgres_admin: Engine, postgres_template: str) -> Iterator[Cluster]:
    name = _create_pg_database(postgres_admin, template=postgres_template)
    found = Cluster(_pg_url(name), postgres_admin, [])
    yield found
    _drop_pg_database(postgres_admin, name)
    for role in found.roles:
        found.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize("command", ["grant-reader", "grant-writer"])
def test_grants_refuse_reserved_and_superuser_roles(
    cluster: Cluster, cli_on: Callable[[str], Cli], command: str
) -> None:
    cli = cli_on(cluster.url)
    boss = cluster.role("boss")
    cluster.execute(f'CREATE ROLE "{boss}" SUPERUSER NOLOGIN')
    for role, reason in (
        ("public", "reserved by PostgreSQL"),
        ("pg_monitor", "reserved by PostgreSQL"),
        ("pg_read_all_data", "reserved by PostgreSQL"),
        (boss, "is a superuser"),
        ("postgres", "is a superuser"),
    ):
        result = cli("db", command, role, code=1)
        assert result.stderr.startswith("error: ") and reason in result.stderr, (role, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    with create_db_engine(cluster.url).connect() as connection:  # nothing was granted to everyone
        assert not connection.scalar(text("SELECT has_table_privilege('public', 'v_attributions', 'SELECT')"))


def test_grant_reader_warns_about_a_role_that_reads_the_base_tables(
    cluster: Cluster, cli_on: Callable[[str], Cli]
) -> None:
    cli = cli_on(cluster.url)
    broad = cluster.role("broad")
    cluster.execute(f'CREATE ROLE "{broad}" NOLOGIN IN ROLE pg_read_all_data')
    result = cli("db", "grant-reader", broad)
    assert "warning: role" in result.stderr and "can still read the base tables" in result.stderr
    assert "(and nothing else)" not in result.stdout
    narrow = cluster.role("narrow")
    result = cli("db", "grant-reader", narrow)
    assert result.stderr == "" and "(and nothing else)" in result.stdout


def test_grant_writer_warns_about_a_role_that_can_rewrite_audit_rows_otherwise(
    cluster: Cluster, cli_on: Callable[[str], Cli]
) -> None:
    """A role in pg_write_all_data, or in a role granted UPDATE/DELETE/TRUNCATE on an audit table, keeps those
    rights whatever grant-writer revokes from it directly: it is told, not promised "no UPDATE/DELETE/TRUNCATE"."""
    cli = cli_on(cluster.url)
    wide, group, member = cluster.role("wide"), cluster.role("group"), cluster.role("member")
    cluster.execute(f'CREATE ROLE "{wide}" NOLOGIN IN ROLE pg_write_all_data')
    cluster.execute(f'CREATE ROLE "{group}" NOLOGIN')
    with create_db_engine(cluster.url).begin() as connection:  # in the test's database
        connection.execute(text(f'GRANT TRUNCATE ON attribution_metrics TO "{group}"'))
    cluster.execute(f'CREATE ROLE "{member}" NOLOGIN IN ROLE "{group}"')
    for role, rights in ((wide, "UPDATE, DELETE"), (member, "TRUNCATE")):
        result = cli("db", "grant-writer", role)
        assert f"warning: role {role} can still {rights}" in result.stderr, result.stderr
        assert "no UPDATE/DELETE/TRUNCATE" not in result.stdout
    narrow = cluster.role("narrow")
    result = cli("db", "grant-writer", narrow)
    assert result.stderr == "" and "no UPDATE/DELETE/TRUNCATE" in result.stdout


def _as(url: str, user: str, password: str) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


def test_the_writer_appends_and_maintains_but_cannot_rewrite_the_log(
    cluster: Cluster, cli_on: Callable[[str], Cli], tmp_path: Path
) -> None:
    owner = cli_on(cluster.url)
    writers, user = cluster.role("writers"), cluster.role("app")
    owner("db", "grant-writer", writers)
    owner("db", "grant-writer", writers)  # granting twice is fine
    cluster.execute(f'CREATE ROLE "{user}" LOGIN PASSWORD \'s3cret-pw\' IN ROLE "{writers}"')
    url = _as(cluster.url, user, "s3cret-pw")
    engine = create_db_engine(url)
    try:
        for i in range(3):  # the attribute path: append under the chain lock
            chain.append(engine, complete_request(f"w{i}"))
        writer = cli_on(url)
        assert "chain OK: 3 records" in writer("audit", "verify").stdout
        writer("audit", "checkpoint", "--out", str(tmp_path / "checkpoint.json"))
        assert "intact" in writer("audit", "list").stdout
        with engine.begin() as connection:  # the catalogue is the writer's to maintain
            connection.execute(text("INSERT INTO catalogues (name, created_at) VALUES ('c', now())"))
            connection.execute(text("UPDATE catalogues SET name = 'c2' WHERE name = 'c'"))
        for sql in (
            "UPDATE attribution_requests SET requester = 'mallory'",
            "DELETE FROM attribution_metrics",
            "TRUNCATE attribution_neighbours",
            "DROP TRIGGER attribution_requests_append_only ON attribution_requests",
            "ALTER TABLE attribution_requests DISABLE TRIGGER ALL",
            "UPDATE audit_identity SET identity = 'x'",
            "UPDATE learned_spaces SET matrix = mean",
            "DELETE FROM learned_spaces",
            "UPDATE calibration_models SET fit_metrics = '{}'",
            "DELETE FROM calibration_models",
            "CREATE TABLE mallory (i int)",
        ):
            with pytest.raises(DBAPIError) as refused, engine.begin() as connection:
                connection.execute(text(sql))
            message = str(refused.value.orig)
            assert "permission denied" in message or "must be owner" in message, (sql, message)
        # a command the writer may not run says so in one line, without the password
        result = writer("db", "grant-reader", cluster.role("other"), code=1)
        assert result.stderr.startswith("error: permission denied") and "s3cret-pw" not in result.output
    finally:
        engine.dispose()
    assert chain.verify_chain(create_db_engine(cluster.url)).ok


def test_the_writer_creates_and_revokes_keys_and_the_reader_can_do_neither(
    cluster: Cluster, cli_on: Callable[[str], Cli]
) -> None:
    owner = cli_on(cluster.url)
    writers, readers = cluster.role("writers"), cluster.role("readers")
    writer_user, reader_user = cluster.role("app"), cluster.role("officer")
    owner("db", "grant-writer", writers)
    owner("db", "grant-reader", readers)
    cluster.execute(f'CREATE ROLE "{writer_user}" LOGIN PASSWORD \'s3cret-pw\' IN ROLE "{writers}"')
    cluster.execute(f'CREATE ROLE "{reader_user}" LOGIN PASSWORD \'s3cret-pw\' IN ROLE "{readers}"')
    writer, reader = (
        cli_on(_as(cluster.url, writer_user, "s3cret-pw")),
        cli_on(_as(cluster.url, reader_user, "s3cret-pw")),
    )
    writer("keys", "create", "generator-1")
    writer("keys", "create", "generator-2")
    assert "revoked key 'generator-1'" in writer("keys", "revoke", "generator-1").stdout
    for args in (("keys", "revoke", "generator-2"), ("keys", "create", "generator-3")):
        refused = reader(*args, code=1)
        assert refused.stderr.startswith("error: permission denied") and "s3cret-pw" not in refused.output
    assert '"revoked_at": null' in writer("keys", "list", "--format", "json").stdout  # generator-2 is still valid


def test_a_writer_granted_before_0020_loses_update_and_delete_of_learned_spaces(cluster: Cluster) -> None:
    engine = create_db_engine(cluster.url)
    writers = cluster.role("writers")
    try:
        downgrade(engine, "0019")
        with engine.begin() as connection:  # what db grant-writer granted then on the table
            connection.execute(text(f'CREATE ROLE "{writers}" NOLOGIN'))
            connection.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON learned_spaces TO "{writers}"'))
        rights = "SELECT has_table_privilege(:role, 'learned_spaces', :right)"
        with engine.connect() as connection:
            assert connection.scalar(text(rights), {"role": writers, "right": "UPDATE"})
        upgrade(engine)
        with engine.connect() as connection:
            kept = [r for r in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE") if connection.scalar(
                text(rights), {"role": writers, "right": r}
            )]  # fmt: skip
        assert kept == ["SELECT", "INSERT"]
    finally:
        engine.dispose()
