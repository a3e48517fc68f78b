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
