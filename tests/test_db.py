"""Audit database: the migration on SQLite and PostgreSQL, schema checks, an unreachable server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cli
from dbtools import complete_request, downgrade
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from attribution_audit.errors import DatabaseError, SchemaOutOfDateError
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import (
    check_schema,
    create_db_engine,
    current_revision,
    head_revision,
    upgrade,
)
from attribution_audit.store.keys import key_digest
from attribution_audit.store.models import Base

TABLES = {
    "artists",
    "catalogues",
    "works",
    "ingestion_runs",
    "attribution_requests",
    "attribution_neighbours",
    "attribution_metrics",
}


def test_upgrade_creates_every_table_at_head(database_url: str) -> None:
    engine = create_db_engine(database_url)
    assert upgrade(engine) == head_revision(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    check_schema(engine)  # does not raise
    assert upgrade(engine) == head_revision(engine)  # idempotent


def test_unmigrated_database_is_refused_with_the_fix(database_url: str) -> None:
    engine = create_db_engine(database_url)
    with pytest.raises(SchemaOutOfDateError, match=r"run `attribution-audit db upgrade`") as info:
        check_schema(engine)
    assert "has no audit schema yet" in str(info.value) and "revision none" not in str(info.value)
    assert "\n" not in str(info.value)


def test_database_behind_head_is_refused(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'a.sqlite'}")
    upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'old'")
    with pytest.raises(SchemaOutOfDateError, match="revision old"):
        check_schema(engine)


def test_unreachable_server_gives_one_line_with_what_to_do() -> None:
    engine = create_db_engine("postgresql://postgres:secret@127.0.0.1:1/none")
    with pytest.raises(DatabaseError) as info:
        current_revision(engine)
    message = str(info.value)
    assert "cannot reach the audit database" in message and "--database-url" in message
    assert "secret" not in message and "\n" not in message


@pytest.mark.postgres
def test_postgres_connections_detect_a_dead_peer_unless_the_url_says_otherwise(postgres_url: str) -> None:
    # Without keepalives or a user timeout, a request holding a connection to a server that stopped answering (a
    # partition, packets dropped) waited forever, /v1/health too.
    def parameters(url: str) -> dict[str, str]:
        engine = create_db_engine(url)
        try:
            with engine.connect() as connection:
                given: dict[str, str] = connection.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
                return given
        finally:
            engine.dispose()

    expected = {
        "keepalives": "1",
        "keepalives_idle": "30",
        "keepalives_interval": "10",
        "keepalives_count": "3",
        "tcp_user_timeout": "60000",
        "connect_timeout": "10",
    }
    assert expected.items() <= parameters(postgres_url).items()
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)  # (normalised to psycopg)
    own = parameters(f"{plain}?tcp_user_timeout=5000&keepalives_idle=7&connect_timeout=3")
    assert (
        own.items() >= (expected | {"tcp_user_timeout": "5000", "keepalives_idle": "7", "connect_timeout": "3"}).items()
    )


def test_keys_created_before_revocation_stay_valid_after_upgrading_and_the_migration_reverts(
    database_url: str,
) -> None:
    """A key stored at schema 0013 (before revocation) works after 0014, can be revoked, and 0014 downgrades."""
    engine = create_db_engine(database_url)
    try:
        upgrade(engine, "0013")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO api_keys (name, role, key_hash, created_at) "
                    "VALUES ('old-client', 'writer', :digest, CURRENT_TIMESTAMP)"
                ),
                {"digest": key_digest("aa_old-key")},
            )
        upgrade(engine)
        keys = AuditStore(engine).keys
        holder = keys.holder("aa_old-key")
        assert holder is not None and holder.name == "old-client" and holder.revoked_at is None
        keys.revoke("old-client")
        assert keys.holder("aa_old-key") is None
        assert [h.revoked_at is not None for h in keys.holders()] == [True]
        downgrade(engine, "0013")
        assert current_revision(engine) == "0013"
        assert "revoked_at" not in {c["name"] for c in inspect(engine).get_columns("api_keys")}
        assert upgrade(engine) == head_revision(engine)
    finally:
        engine.dispose()


def test_a_downgrade_refuses_to_drop_the_neighbours_image_digest_that_holds_values(database_url: str) -> None:
    """The same for the neighbours' image digests (revision 0015), covered by the hash when set: refused while a
    neighbour holds one, and the chain stays intact."""
    engine = create_db_engine(database_url)
    try:
        upgrade(engine)
        request = complete_request("digest")
        request.neighbours[0].image_sha256 = "cd" * 32
        chain.append(engine, request)
        with pytest.raises(DatabaseError) as info:
            downgrade(engine, "0014")
        message = str(info.value)
        assert "attribution_neighbours.image_sha256" in message and "in 1 row(s)" in message and "\n" not in message
        assert current_revision(engine) == head_revision(engine)
        assert AuditStore(engine).requests.verify_chain().ok
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("table", "column", "value", "before"),
    [
        ("attribution_metrics", "centroid_log_odds_others", 30.0, "0016"),
        ("attribution_metrics", "other_space_versions", "fontboth:3,fontstyle:2", "0017"),
        ("attribution_metrics", "confidence_model_sha256", "ab" * 32, "0018"),
        ("attribution_metrics", "crop_log_odds", -2.5, "0021"),
        ("attribution_requests", "crop_vectors", b"\x00\x00\x80\x3f" * 8, "0021"),
        ("attribution_metrics", "one_colour", 1, "0023"),
    ],
)
def test_a_downgrade_refuses_to_drop_a_hashed_column_that_holds_values(
    database_url: str, table: str, column: str, value: object, before: str
) -> None:
    """Dropping a column a record's hash covers would leave the chain broken for good: refused while a row holds a
    value in it (the chain stays intact), done once the column is empty."""
    engine = create_db_engine(database_url)
    try:
        upgrade(engine)
        chain.append(engine, complete_request("before"))  # none of the later indicators: the column empty
        downgrade(engine, before)
        assert column not in {c["name"] for c in inspect(engine).get_columns(table)}
        upgrade(engine)
        for label in ("one", "two"):
            request = complete_request(label)
            assert request.metrics is not None
            setattr(request if table == "attribution_requests" else request.metrics, column, value)
            chain.append(engine, request)
        with pytest.raises(DatabaseError) as info:
            downgrade(engine, before)
        message = str(info.value)
        assert f"{table}.{column}" in message and "in 2 row(s)" in message
        assert "hashes" in message and "\n" not in message
        assert current_revision(engine) == head_revision(engine)
        assert AuditStore(engine).requests.verify_chain().ok
    finally:
        engine.dispose()


def test_every_audit_column_added_after_the_first_revision_is_hashed_only_when_set(tmp_path: Path) -> None:
    """A record written before a column existed was hashed without it: a column added to an audit table since
    revision 0001 leaves the canonical content when empty (else every older record would fail `audit verify` once the
    schema is upgraded), and is covered once set."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'first.sqlite'}")
    try:
        upgrade(engine)
        downgrade(engine, "0001")
        hashed = ("attribution_requests", "attribution_neighbours", "attribution_artist_shares", "attribution_metrics")
        first = {table: {c["name"] for c in inspect(engine).get_columns(table)} for table in hashed}
    finally:
        engine.dispose()
    added = []
    for table, columns in first.items():
        model = Base.metadata.tables[table]
        for name in (c.name for c in model.columns if c.name not in columns):
            added.append(name)
            assert chain._canonical_row({name: None}, model) == {}, (table, name)
            assert chain._canonical_row({name: 1}, model) == {name: 1}, (table, name)
    assert {"one_colour", "crop_vectors", "agreement"} <= set(added)


def test_db_upgrade_says_what_it_did(cli_on: Callable[[str], Cli], tmp_path: Path) -> None:
    """Created, upgraded from one revision to another, or already at the newest: the one line says which."""
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    cli = cli_on(url)
    head = head_revision(create_db_engine(url))
    assert f"audit schema created in database {url} at revision {head}" in cli("db", "upgrade").stdout
    assert f"is at revision {head} (the newest: nothing to do)" in cli("db", "upgrade").stdout
    engine = create_db_engine(url)
    try:
        downgrade(engine, "0016")
    finally:
        engine.dispose()
    assert f"upgraded from revision 0016 to {head}" in cli("db", "upgrade").stdout


def test_learned_spaces_become_append_only_at_0020_and_the_downgrade_lifts_it(database_url: str) -> None:
    engine = create_db_engine(database_url)
    statement = text("DELETE FROM learned_spaces")
    try:
        upgrade(engine)
        with engine.begin() as connection:  # a row for the row triggers to fire on
            connection.execute(
                text(
                    "INSERT INTO learned_spaces (created_at, name, version, base, method, embedder_fingerprint, "
                    "collection, input_dim, dim, mean, matrix, fingerprint, n_works, n_artists, validation) "
                    "VALUES (CURRENT_TIMESTAMP, 's', 1, 'style', 'lda', 'fp', 'c', 2, 1, :b, :b, 'f', 2, 2, '{}')"
                ),
                {"b": b"x"},
            )
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(statement)
        downgrade(engine, "0019")
        with engine.begin() as connection:
            connection.execute(statement)
        assert upgrade(engine) == head_revision(engine)
    finally:
        engine.dispose()
