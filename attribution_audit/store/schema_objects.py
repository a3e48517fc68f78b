"""The schema objects that the reports and ``audit verify`` rely on (every view, every trigger on the tables, and on
PostgreSQL the trigger functions, row-level security, its policies and rules on the tables), compared with what the
migrations create at the DB's revision.

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

from attribution_audit.errors import DatabaseError, SchemaCheckError
from attribution_audit.store.database import (
    alembic_config,
    current_revision,
    display_url,
    is_permission_error,
    permission_error,
    read_connection,
)
from attribution_audit.store.models import Base
from attribution_audit.store.roles import grant_to_readers

_SQLITE = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('view', 'trigger') ORDER BY rowid"
_PG_VIEWS = """
SELECT 'view', c.relname, c.relname, pg_get_viewdef(c.oid)
FROM pg_class c
WHERE c.relkind IN ('v', 'm') AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :schema)
ORDER BY c.oid
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
# What else changes what a query of a table returns, which no migration creates (so any is unexpected): row-level
# security and its policies (rows hidden from the reports), rules other than a view's own ``_RETURN``.
_PG_ROW_FILTERS = """
SELECT 'row security', c.relname, c.relname,
       'ENABLE ROW LEVEL SECURITY' || CASE WHEN c.relforcerowsecurity THEN ', FORCE ROW LEVEL SECURITY' ELSE '' END
FROM pg_class c
WHERE (c.relrowsecurity OR c.relforcerowsecurity)
  AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :schema)
UNION ALL
SELECT 'policy', p.polname, c.relname,
       'POLICY ' || p.polname || ' USING ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '')
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :schema)
UNION ALL
SELECT 'rule', r.rulename, c.relname, pg_get_ruledef(r.oid)
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
WHERE r.rulename <> '_RETURN' AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :schema)
"""
# The schema a PostgreSQL definition names its own object in (public., pg_temp.): not part of the definition.
_QUALIFIER = re.compile(r"(?<=\bON )(?:\"[^\"]+\"|\w+)\.|(?<=\bFUNCTION )(?:\"[^\"]+\"|\w+)\.")
_ENABLED = re.compile(r" \[enabled: \w\]$")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SchemaObject:
    """A view, trigger or (PostgreSQL) function: ``table``, the table a trigger is on (a view's or function's own
    name); ``sql``, its definition as the server prints it (PostgreSQL: a trigger's ends with whether it is
    enabled)."""

    kind: str
    name: str
    table: str
    sql: str
    postgres: bool

    @property
    def normalised(self) -> str:
        """Whitespace collapsed; on PostgreSQL, the schema that a trigger's table or a function is named in left
        out (public. or pg_temp.)."""
        definition = _QUALIFIER.sub("", self.sql, count=1) if self.postgres else self.sql
        return _SPACE.sub(" ", definition).strip()

    def create(self, schema: str | None) -> str:
        """The statement that creates it in ``schema`` (PostgreSQL) or the SQLite file."""
        if not self.postgres:
            return self.sql
        if self.kind == "view":
            return f'CREATE OR REPLACE VIEW "{self.name}" AS {self.sql}'
        return _QUALIFIER.sub(f"{_quoted(schema)}.", _ENABLED.sub("", self.sql), count=1)

    def drop(self) -> str:
        if self.kind == "row security":
            return f'ALTER TABLE "{self.table}" NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY'
        if self.kind in ("trigger", "policy", "rule") and self.postgres:
            return f'DROP {self.kind.upper()} IF EXISTS "{self.name}" ON "{self.table}"'
        return f'DROP {self.kind.upper()} IF EXISTS "{self.name}"'


Definitions = dict[tuple[str, str], SchemaObject]
_expected: dict[tuple[str, str], Definitions] = {}


@dataclass(frozen=True)
class Difference:
    """One schema object that is not what the migrations create: ``problem`` is ``changed``, ``missing`` or
    ``unexpected`` (present, but created by no migration); ``expected`` and ``live``: its two versions."""

    kind: str
    name: str
    problem: str
    expected: SchemaObject | None
    live: SchemaObject | None

    def line(self, revision: str | None) -> str:
        what = {
            "changed": f"differs from what the migrations at revision {revision} create",
            "missing": f"is missing (the migrations at revision {revision} create it)",
            "unexpected": "was added outside the migrations",
        }[self.problem]
        return f"{self.kind} {self.name} {what}"


def _quoted(schema: str | None) -> str:
    return '"' + (schema or "public").replace('"', '""') + '"'


def _read(connection: Connection, schema: str | None) -> Definitions:
    """Every view, trigger and (PostgreSQL) function in ``schema``, or in the SQLite file, in the order they were
    created (views)."""
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        queries = (_PG_FUNCTIONS, _PG_VIEWS, _PG_TRIGGERS, _PG_ROW_FILTERS)
        rows = [row for query in queries for row in connection.execute(text(query), {"schema": schema})]
    else:
        rows = list(connection.execute(text(_SQLITE)))
    return {(kind, name): SchemaObject(kind, name, table, sql or "", postgres) for kind, name, table, sql in rows}


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
                return _read(connection, None)
        finally:
            scratch.dispose()
    with engine.connect() as connection, connection.begin() as transaction:
        # Temporary objects first, the live schema after: the trigger function is looked up there (functions are
        # never looked up in pg_temp), its definition is compared with the scratch's own copy.
        connection.execute(text(f"SET LOCAL search_path = pg_temp, {_quoted(schema)}"))
        connection.execute(text("CREATE TEMPORARY TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        found = _read(
            connection, connection.scalar(text("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()"))
        )
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
        schema = _schema(connection)
        found = _read(connection, schema)
    wanted = expected(engine, revision, schema)
    # What concerns this project: its views and functions, any view named like one of its tables, any trigger on
    # one of them (a view, function or trigger of one's own beside them is no concern).
    ours = set(Base.metadata.tables) | {name for _, name in wanted}
    live = {key: found[key] for key in found if found[key].table in ours}
    differ = [
        Difference(*key, "missing" if key not in live else "changed", wanted[key], live.get(key))
        for key in wanted
        if key not in live or live[key].normalised != wanted[key].normalised
    ]
    differ += [Difference(*key, "unexpected", None, live[key]) for key in live if key not in wanted]
    return revision, differ


def _schema(connection: Connection) -> str | None:
    return connection.scalar(text("SELECT current_schema()")) if connection.dialect.name == "postgresql" else None


def repair(engine: Engine) -> tuple[str | None, list[Difference]]:
    """Re-create, in one transaction, each view, trigger and trigger function that is not what the migrations at the
    DB's revision create, as they create it, and drop the triggers added to the project's tables; (revision, what
    was repaired). Needs the schema owner. A view named like one of the tables (the table is gone) cannot be."""
    revision, found = differences(engine)
    unrepairable = [d for d in found if d.expected is None and d.kind == "view"]
    if unrepairable:
        raise DatabaseError(
            f"view {unrepairable[0].name} stands where a table of the audit DB was: restore the audit DB from a backup"
        )
    order = {"function": 0, "view": 1, "trigger": 2}  # functions before the triggers that call them; row filters last
    try:
        with engine.begin() as connection:
            schema = _schema(connection)
            for difference in sorted(found, key=lambda d: order.get(d.kind, 3)):  # (stable: views in creation order)
                live, wanted = difference.live, difference.expected
                # PostgreSQL replaces a view or function in place: its grants and the views over it stay.
                if live is not None and (wanted is None or not live.postgres or live.kind == "trigger"):
                    connection.execute(text(live.drop()))
                if wanted is not None:
                    connection.execute(text(wanted.create(schema)))
            created = [d.name for d in found if d.kind == "view" and d.live is None]
            if created and engine.dialect.name == "postgresql":
                connection.execute(text(grant_to_readers(created)))
    except DBAPIError as exc:
        if is_permission_error(exc):
            raise permission_error(engine, exc, "`db repair` needs the user that owns the schema") from exc
        raise DatabaseError(
            f"the audit database {display_url(str(engine.url))} refused to re-create the views and triggers "
            f"({str(exc.orig or exc).strip().splitlines()[0]}); nothing was changed: restore the audit DB from a backup"
        ) from exc
    return revision, found
