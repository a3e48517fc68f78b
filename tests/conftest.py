"""Shared fixtures: throwaway audit databases (SQLite file and PostgreSQL, copied from a database migrated once per
session), the audit store over them, the packaged model loaded once, one CLI runner, the demo catalogue.

Which fixture to use:
- ``sqlite_audit`` / ``sqlite_db``: tests whose behaviour does not depend on the database (most of them);
- ``audit`` / ``fresh_db`` / ``database_url``: tests of database behaviour (locks, triggers, SQL, types), run once on
  SQLite and once on PostgreSQL;
- ``cli``: the real CLI in-process, on a SQLite log in the test's folder (``cli_on(url)`` for another database).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from attribution_audit.cli import app
from attribution_audit.embedding.base import Embedder
from attribution_audit.services.wiring import load_embedder
from attribution_audit.sources.synthetic import DemoCatalogue, make_demo_catalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import create_db_engine, upgrade

POSTGRES_URL = os.environ.get(
    "ATTRIBUTION_AUDIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
EMBEDDER = "efficientnet-lite0"  # the packaged offline model


@pytest.fixture(autouse=True)
def checkpoint_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test signs checkpoints with its own key, never the user's (the default lives in the user's config)."""
    path = tmp_path / "keys" / "checkpoint-ed25519.pem"
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_KEY", str(path))
    return path


# -- databases ---------------------------------------------------------------------------------------------------
def _postgres_admin() -> Engine | None:
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable in CI: {exc}")
        engine.dispose()
        return None
    return engine


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = _postgres_admin()
    if engine is None:
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable (required when CI=true)")
    yield engine
    engine.dispose()


def _pg_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def _create_pg_database(admin: Engine, template: str | None = None) -> str:
    name = f"aa_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    return name


def _drop_pg_database(admin: Engine, name: str) -> None:
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = _create_pg_database(postgres_admin)
    yield _pg_url(name)
    _drop_pg_database(postgres_admin, name)


@pytest.fixture(scope="session")
def postgres_template(postgres_admin: Engine) -> Iterator[str]:
    """A PostgreSQL database migrated once; tests get copies (CREATE DATABASE ... TEMPLATE)."""
    name = _create_pg_database(postgres_admin)
    engine = create_db_engine(_pg_url(name))
    upgrade(engine)
    engine.dispose()
    yield name
    _drop_pg_database(postgres_admin, name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite audit file migrated once; tests get copies."""
    path = tmp_path_factory.mktemp("template") / "audit.sqlite"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty (unmigrated) audit database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


def _migrated_sqlite(template: Path, folder: Path) -> str:
    path = folder / "audit.sqlite"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a migrated SQLite audit file of this test."""
    return _migrated_sqlite(sqlite_template, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a migrated audit database of this test, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield _migrated_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    name = _create_pg_database(admin, template=request.getfixturevalue("postgres_template"))
    yield _pg_url(name)
    _drop_pg_database(admin, name)


@pytest.fixture
def fresh_db(migrated_url: str) -> Iterator[Engine]:
    """A migrated throwaway audit database (SQLite and PostgreSQL)."""
    engine = create_db_engine(migrated_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Engine]:
    """A migrated throwaway SQLite audit database, for tests the database kind does not matter to."""
    engine = create_db_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def audit(fresh_db: Engine) -> AuditStore:
    """The audit store over a migrated database (SQLite and PostgreSQL)."""
    return AuditStore(fresh_db)


@pytest.fixture
def sqlite_audit(sqlite_db: Engine) -> AuditStore:
    """The audit store over a migrated SQLite database."""
    return AuditStore(sqlite_db)


# -- the model and the CLI ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The packaged offline model, loaded once per test session (the CLI's in-process calls reuse it too)."""
    return load_embedder(EMBEDDER)


@dataclass
class Cli:
    """The real CLI, in-process, on one data dir and audit database; ``code`` is the exit code expected."""

    data_dir: Path
    database_url: str
    runner: CliRunner

    def __call__(self, *args: str, code: int | None = 0) -> Result:
        result = self.runner.invoke(app, ["--data-dir", str(self.data_dir), "--database-url", self.database_url, *args])
        if code is not None:
            assert result.exit_code == code, result.output + repr(result.exception)
        return result

    def engine(self) -> Engine:
        return create_db_engine(self.database_url)

    def restore(self, ingested: Ingested) -> None:
        """Give this CLI's data dir and SQLite log the ingested catalogue, as copies the test may change."""
        shutil.copytree(ingested.data_dir, self.data_dir)
        source = sqlite3.connect(ingested.database)
        target = sqlite3.connect(str(make_url(self.database_url).database))
        try:
            source.backup(target)  # the committed state, WAL included
        finally:
            source.close()
            target.close()

    def audit(self) -> AuditStore:
        return AuditStore(self.engine())


@dataclass(frozen=True)
class Ingested:
    """A data dir and SQLite audit log with a catalogue ingested by the CLI (tests get copies: ``Cli.restore``)."""

    data_dir: Path
    database: Path
    printed: str  # what `ingest` printed


def ingest_once(root: Path, template: Path, manifest: Path) -> Ingested:
    """Run the real ``ingest`` of ``manifest`` once into a data dir and SQLite log under ``root`` (a module fixture
    then hands copies to its tests, instead of embedding the catalogue for each test)."""
    database = root / "audit.sqlite"
    shutil.copyfile(template, database)
    cli = Cli(root / "data", f"sqlite:///{database}", CliRunner())
    printed = cli("ingest", str(manifest), "--embedder", EMBEDDER).stdout
    return Ingested(cli.data_dir, database, printed)


@pytest.fixture
def cli_on(tmp_path: Path) -> Callable[[str], Cli]:
    """A CLI on the given database URL (unmigrated ones need ``db upgrade`` first). A command that needs the model
    loads it once per session (``services.wiring.load_embedder``)."""
    return lambda url: Cli(tmp_path / "data", url, CliRunner())


@pytest.fixture
def cli(cli_on: Callable[[str], Cli], sqlite_url: str) -> Cli:
    """The CLI on a migrated SQLite audit log in the test's folder."""
    return cli_on(sqlite_url)


def save_tiny_clip(directory: Path, seed: int = 0, layers: int = 2) -> None:
    """A tiny random CLIP checkpoint (16-d projection, 32 px images) saved like a real one: the real loading code
    runs on it, and nothing is downloaded."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": layers, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)


def save_tiny_clip_tokenizer(directory: Path) -> None:
    """A CLIP tokenizer for the tiny checkpoint: lowercase letters only (ids below its 99-token vocabulary), no
    merges; the text tower then embeds captions offline."""
    import json
    import string

    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in string.ascii_lowercase:
        vocab[letter] = len(vocab)
        vocab[f"{letter}</w>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt")).save_pretrained(directory)


# -- data --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def demo_catalogue(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalogue:
    """The synthetic demo catalogue: 6 artists x 8 works, one generated query per artist."""
    return make_demo_catalogue(tmp_path_factory.mktemp("demo"))
