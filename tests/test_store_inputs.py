"""Inputs the stores refuse in one clear line: a query vector of the wrong size (both vector stores) and a database
URL that is not one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attribution_audit.errors import DatabaseError, VectorStoreError
from attribution_audit.store.database import create_db_engine
from attribution_audit.store.vectors.qdrant_edge import EdgeStore
from attribution_audit.store.vectors.qdrant_server import ServerStore


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_a_query_of_the_wrong_size_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    store = EdgeStore(tmp_path, "dims") if kind == "edge" else ServerStore(":memory:", "dims")
    store.ensure_collection(16)
    with pytest.raises(VectorStoreError, match="16-d content vectors but the query is 1280-d"):
        store.search(np.ones(1280, dtype=np.float32), 3)
    store.close()


def test_an_unknown_database_url_is_one_line() -> None:
    with pytest.raises(DatabaseError, match="not a database URL"):
        create_db_engine("bogus://x")


def test_a_write_a_constraint_refuses_says_to_fix_the_input_not_to_retry(tmp_path: Path) -> None:
    """A unique key refusing a row is no outage: retrying fails the same way (the message told to retry)."""
    from sqlalchemy import text

    from attribution_audit.store.database import write_connection

    engine = create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with write_connection(engine) as connection:
        connection.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(DatabaseError) as info, write_connection(engine) as connection:
        connection.execute(text("INSERT INTO t VALUES (2)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    message = str(info.value)
    assert "UNIQUE constraint failed: t.k" in message and "\n" not in message
    assert message.endswith(
        "nothing was recorded, it conflicts with what is stored (a key or a rule of the schema): retrying will not "
        "help; check the input"
    )
    with engine.connect() as connection:
        assert connection.execute(text("SELECT k FROM t")).scalars().all() == [1]  # the 2 was rolled back too
    engine.dispose()


@pytest.mark.parametrize("key", ["password", "PASSWORD", "sslpassword"])
def test_secrets_in_url_query_parameters_never_reach_messages(key: str) -> None:
    from attribution_audit.store.database import display_url

    shown = display_url(f"postgresql://postgres@127.0.0.1:5999/test?{key}=QSECRET&sslmode=require")
    assert "QSECRET" not in shown and "***" in shown and "sslmode=require" in shown
    assert "pw" not in display_url("postgresql://user:pw@127.0.0.1/db")


def test_qdrant_urls_in_messages_hide_credentials_and_keys() -> None:
    from attribution_audit.store.vectors.qdrant_server import shown_url

    shown = shown_url("https://admin:pw-s3cret@qdrant.example:6333/base?api-key=XYZ&timeout=5")
    assert "pw-s3cret" not in shown and "admin" not in shown and "XYZ" not in shown
    assert shown == "https://***@qdrant.example:6333/base?api-key=***&timeout=5"
    assert shown_url(":memory:") == ":memory:"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?immutable=1", "immutable=1"),
        ("?mode=ro&immutable=1", "immutable=1"),
        ("?nolock=1", "nolock=1"),
        ("?vfs=unix-none", "vfs=unix-none"),
        ("?mode=memory", "mode=memory"),
        ("?mode=ro&cache=shared", "cache=shared"),
    ],
)
def test_sqlite_parameters_that_skip_locks_or_the_wal_are_refused(tmp_path: Path, query: str, named: str) -> None:
    """Only ?mode=ro may reach SQLite: immutable would read the file past its WAL (tampering held there unseen),
    nolock or a lock-free vfs would let two writers append at once; a URL that asks for them opens nothing."""
    database = tmp_path / "audit.sqlite"
    with pytest.raises(DatabaseError) as info:
        create_db_engine(f"sqlite:///{database}{query}")
    assert f"SQLite parameter {named} is refused" in str(info.value) and "\n" not in str(info.value)
    uri = f"sqlite:///file:{database}%3F{query[1:].replace('=', '%3D').replace('&', '%26')}?uri=true"
    with pytest.raises(DatabaseError, match="is refused"):
        create_db_engine(uri)  # the same inside a file: URI of the user's own
    assert not database.exists()


def test_a_data_dir_whose_path_holds_url_characters_keeps_its_log_inside_it(tmp_path: Path) -> None:
    from attribution_audit.config import Settings

    data_dir = tmp_path / "d?nolock=1&x=#y"
    settings = Settings(data_dir=data_dir)
    engine = create_db_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    assert (data_dir / "audit.sqlite").exists() and not (tmp_path / "d").exists()
