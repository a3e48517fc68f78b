"""The schema objects that the reports and ``audit verify`` rely on (every view, every trigger on the tables, and on
PostgreSQL the trigger functions), compared with what the migrations create at the DB's revision.

The expected definitions come from a scratch copy migrated by the same Alembic history: an in-memory database on
SQLite; on PostgreSQL, the session's temporary schema (``pg_temp``) inside a transaction that is rolled back, so any
role allowed temporary tables (PUBLIC is, by default: the reader role too) can build it and nothing is left behind.
Both sides are printed by the same server (``pg_get_viewdef``, ``pg_get_triggerdef``, ``pg_get_functiondef``;
SQLite's stored ``sql``), so formatting that differs between server versions cancels out. The expected set is cached
per process, by database and revision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from attribution_audit.errors import SchemaCheckError
from attribution_audit.store.database import alembic_config, current_revision, is_permission_error, read_connection
from attribution_audit.store.models import Base

# (kind, name) -> normalised definition
Definitions = dict[tuple[str, str], str]

_SQLITE = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('view', 'trigger')"
_PG_VIEWS = """
SELECT 'view', c.relname, c.relname, pg_get_viewdef(c.oid)
FROM pg_class c
WHERE c.relkind IN ('v', 'm') AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :schema)
"""
_PG_TRIGGERS = """
SELECT 'trigger', t.tgname, c.relname, pg_get_triggerdef(t.oid) || ' [enabled: ' || CAST(t.tgenabled AS text) || ']'
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :schema)
"""
_PG_FUNCTIONS = """
SELECT 'function', p.proname, p.proname, pg_get_functiondef(p.oid)
FROM pg_proc p WHERE p.prokind = 'f' AND p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = :schema)
"""
# The schema a PostgreSQL definition names its own object in (public., pg_temp.): not part of the definition.
_QUALIFIER = re.compile(r"(?<=\bON )(?:\"[^\"]+\"|\w+)\.|(?<=\bFUNCTION )(?:\"[^\"]+\"|\w+)\.")
_SPACE = re.compile(r"\s+")
_expected: dict[tuple[str, str], Definitions] = {}


@dataclass(frozen=True)
class Difference:
    """One schema object that is not what the migrations create: ``problem`` is ``changed``, ``missing`` or
    ``unexpected`` (present, but created by no migration)."""

    kind: str
    name: str
    problem: str

    def line(self, revision: str | None) -> str:
        what = {
            "changed": f"differs from what the migrations at revision {revision} create",
            "missing": f"is missing (the migrations at revision {revision} create it)",
            "unexpected": "was added outside the migrations",
        }[self.problem]
        return f"{self.kind} {self.name} {what}"


def _read(connection: Connection, schema: str | None) -> list[tuple[str, str, str, str]]:
    """(kind, name, the table it belongs to (a view's or function's: its own name), normalised definition) of every
    view, trigger and (PostgreSQL) function in ``schema``, or in the SQLite file."""
    if connection.dialect.name == "postgresql":
        queries = (_PG_VIEWS, _PG_TRIGGERS, _PG_FUNCTIONS)
        rows = [row for query in queries for row in connection.execute(text(query), {"schema": schema})]
    else:
        rows = list(connection.execute(text(_SQLITE)))
    postgres = connection.dialect.name == "postgresql"
    return [(kind, name, table, _normalise(sql or "", postgres)) for kind, name, table, sql in rows]


def _normalise(definition: str, postgres: bool) -> str:
    """Whitespace collapsed; on PostgreSQL, the schema that a trigger's table or a function is named in left out
    (public. or pg_temp.)."""
    if postgres:
        definition = _QUALIFIER.sub("", definition, count=1)
    return _SPACE.sub(" ", definition).strip()


def _scratch(engine: Engine, revision: str, schema: str | None) -> Definitions:
    """The definitions the migrations create at ``revision``, from a scratch copy (see the module's docstring)."""
    from alembic import command

    if engine.dialect.name != "postgresql":
        scratch = create_engine("sqlite://")
        try:
            with scratch.begin() as connection:
                config = alembic_config(scratch)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                return {(kind, name): sql for kind, name, _, sql in _read(connection, None)}
        finally:
            scratch.dispose()
    with engine.connect() as connection, connection.begin() as transaction:
        # Temporary objects first, the live schema after: the trigger function is looked up there (functions are
        # never looked up in pg_temp), its definition is compared with the scratch's own copy below.
        quoted = (schema or "public").replace('"', '""')
        connection.execute(text(f'SET LOCAL search_path = pg_temp, "{quoted}"'))
        connection.execute(text("CREATE TEMPORARY TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        temporary = connection.scalar(text("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()"))
        found = {(kind, name): sql for kind, name, _, sql in _read(connection, temporary)}
        transaction.rollback()
    return found


def expected(engine: Engine, revision: str, schema: str | None) -> Definitions:
    """What the migrations create at ``revision`` (cached per database and revision)."""
    key = (str(engine.url), revision)
    if key not in _expected:
        try:
            _expected[key] = _scratch(engine, revision, schema)
        except DBAPIError as exc:
            orig = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            if is_permission_error(exc):
                raise SchemaCheckError(
                    f"this database user may not create temporary tables ({orig}), which the comparison needs: "
                    "GRANT TEMPORARY ON DATABASE to it"
                ) from exc
            raise SchemaCheckError(
                f"the migrations' objects cannot be rebuilt for comparison ({orig}): an object they need was dropped; "
                "restore the audit DB from a backup"
            ) from exc
    return _expected[key]


def differences(engine: Engine) -> tuple[str | None, list[Difference]]:
    """(revision, every view, trigger and trigger function that differs from what the migrations create at the
    DB's revision); raises :class:`SchemaCheckError` when that cannot be known."""
    revision = current_revision(engine)
    if revision is None:
        return None, []
    with read_connection(engine) as connection:
        schema = connection.scalar(text("SELECT current_schema()")) if engine.dialect.name == "postgresql" else None
        rows = _read(connection, schema)
    wanted = expected(engine, revision, schema)
    # What concerns this project: its views and functions, any view named like one of its tables, any trigger on
    # one of them (a view, function or trigger of one's own beside them is no concern).
    ours = set(Base.metadata.tables) | {name for _, name in wanted}
    live = {(kind, name): sql for kind, name, table, sql in rows if table in ours}
    found = [
        Difference(kind, name, "missing" if (kind, name) not in live else "changed")
        for kind, name in sorted(wanted)
        if live.get((kind, name)) != wanted[kind, name]
    ]
    found += [Difference(kind, name, "unexpected") for kind, name in sorted(live) if (kind, name) not in wanted]
    return revision, found
