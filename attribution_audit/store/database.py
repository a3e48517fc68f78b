"""Engines, sessions and schema migrations of the audit database (SQLite or PostgreSQL)."""

from __future__ import annotations

import copy
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from sqlalchemy import ClauseElement, Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.sql.compiler import SQLCompiler

from attribution_audit.errors import (
    DatabaseError,
    DiskFullError,
    PermissionDeniedError,
    ReadOnlyError,
    SchemaOutOfDateError,
    UnreadableValueError,
    UnsendableValueError,
)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
READ_ONLY = "attribution_audit_read_only"  # execution option of reader() engines
SCHEMA_VERSION_VIEW = "v_schema_version"  # PostgreSQL: alembic_version's revision, for roles that cannot read it
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL SQLSTATE
DISK_FULL = "53100"  # PostgreSQL SQLSTATE
FULL_DISK_READ = "attribution_audit_full_disk_read"  # pool record info: a SQLite file read as it is (its disk full)
SQLITE_URI_PARAMETERS = frozenset({"mode", "cache", "immutable", "nolock", "psow", "vfs", "modeof"})
SQLITE_READ_ONLY = {"mode": "ro"}  # the only SQLite URI parameter an audit log's URL may carry
# libpq connection parameters of a PostgreSQL engine, unless its URL's query string sets them: a server that stops
# answering (packets dropped, a partition) fails the connection within about a minute instead of hanging its request
# for good. Keepalive probes after 30 s idle, every 10 s, 3 unanswered: dead; data left unacknowledged 60 s: dead.
POSTGRES_CONNECT_ARGS: dict[str, int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # milliseconds
}


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs use psycopg 3; a SQLite URL with ``?mode=ro`` opens its file as a
    SQLite URI (SQLAlchemy would drop the parameter, and open it read-write). Any other SQLite URI parameter
    (``immutable``, ``nolock``, ``vfs``, ``mode=memory``...) is refused: it would let SQLite read past the log's
    write-ahead log or write without its locks."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite"):
        parsed = make_url(url)
        _refuse_unsafe_parameters(parsed)
        if parsed.database and SQLITE_URI_PARAMETERS & parsed.query.keys() and "uri" not in parsed.query:
            as_uri = parsed.set(database=f"file:{quote(parsed.database)}").update_query_dict({"uri": "true"})
            return as_uri.render_as_string(hide_password=False)
    return url


def _refuse_unsafe_parameters(parsed: URL) -> None:
    """DatabaseError naming a SQLite URI parameter of the URL, or of the ``file:`` URI it names, other than
    ``mode=ro``."""
    given = [(k, v) for k, v in parsed.query.items() if k in SQLITE_URI_PARAMETERS]
    if parsed.database and parsed.database.startswith("file:"):
        given += [(k, v) for k, v in parse_qsl(urlsplit(parsed.database).query) if k in SQLITE_URI_PARAMETERS]
    unsafe = [f"{k}={v}" for k, v in given if SQLITE_READ_ONLY.get(k) != v]
    if unsafe:
        raise DatabaseError(
            f"database URL {parsed.render_as_string(hide_password=True)}: SQLite parameter {', '.join(unsafe)} is "
            "refused (it would let SQLite skip the audit log's locks or write-ahead log); remove it, or use ?mode=ro "
            "to read the log without writing"
        )


SECRET_QUERY_KEY = re.compile(r"pass|token|secret|key|options", re.IGNORECASE)  # options may carry "-c password=..."


def display_url(url: str) -> str:
    """The URL with any secret hidden, for messages: the password, and secret query parameters (``?password=``); a
    SQLite URI that :func:`normalise_url` made (``sqlite:///file:PATH?mode=ro&uri=true``) as the user types it
    (``sqlite:///PATH?mode=ro``)."""
    try:
        parsed = make_url(normalise_url(url))
    except DatabaseError:  # (a refused parameter: shown as given)
        parsed = make_url(url)
    if parsed.database and parsed.database.startswith("file:") and "uri" in parsed.query:
        parsed = parsed.set(database=_uri_path(parsed.database)).difference_update_query(["uri"])
    hidden = {key: "***" for key in parsed.query if SECRET_QUERY_KEY.search(key)}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def _first_line(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def is_permission_error(exc: BaseException) -> bool:
    """Whether the server refused for lack of a privilege (SQLSTATE 42501), as opposed to being unreachable or
    failing. The append-only triggers reuse that SQLSTATE, but no privilege lifts them: they are not one."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return sqlstate == INSUFFICIENT_PRIVILEGE and "append-only" not in _first_line(exc)


def is_disk_full(exc: BaseException) -> bool:
    """Whether the database refused a write because its disk is full (SQLite: SQLITE_FULL; PostgreSQL: 53100)."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.Error):
        return orig.sqlite_errorcode == sqlite3.SQLITE_FULL
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) == DISK_FULL


def is_read_only(exc: BaseException) -> bool:
    """Whether SQLite refused a write on a read-only connection (SQLITE_READONLY: a ``?mode=ro`` URL, ``PRAGMA
    query_only``, a file this user may not write)."""
    orig = getattr(exc, "orig", None)
    return isinstance(orig, sqlite3.Error) and orig.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY


def read_only_error(engine: Engine, exc: BaseException) -> ReadOnlyError:
    """The one-line error for a write refused on a SQLite log open read-only (:func:`is_read_only`) or to a user that
    may only read (:func:`is_permission_error`: a ``db grant-reader`` role): why, and what to do."""
    if is_permission_error(exc):
        return ReadOnlyError(
            f"{_who(engine)} may only read the audit database {display_url(str(engine.url))} ({_first_line(exc)}: a "
            "`db grant-reader` role); run the command as a user granted a role made by `attribution-audit "
            "db grant-writer ROLE` (or the schema owner)"
        )
    return ReadOnlyError(
        f"{sqlite_file(str(engine.url)) or display_url(str(engine.url))}: the audit log is open read-only here "
        f"({_first_line(exc)}: a ?mode=ro URL, or a file this user may not write); run the command again with a URL "
        "without mode=ro, as a user that may write the file"
    )


def disk_full_error(engine: Engine, exc: BaseException | None = None) -> DiskFullError:
    """The one-line error for a write refused by a full disk: the SQLite file or the server, and what to do."""
    database = sqlite_file(str(engine.url))
    where = str(database) if database else f"the audit database {display_url(str(engine.url))}"
    why = f" ({_first_line(exc)})" if exc is not None else ""
    return DiskFullError(f"{where}: its disk is full{why}; free some space on it, then run the command again")


PSYCOPG_NUL = "cannot contain NUL"  # psycopg refusing to send a text holding U+0000 (no SQLSTATE: never sent)
_UNCONVERTIBLE = (None, "22P02", "22003")  # psycopg's own; invalid text representation, numeric value out of range


def is_undecodable(exc: DBAPIError) -> bool:
    """Whether the driver could not turn a stored value into a Python one (SQLite: a text that is not UTF-8;
    psycopg: a time outside Python's years 1 to 9999, such as 'infinity'), or the database a stored value into the
    type a read asks for (SQLite: JSON functions on a text that is not JSON; PostgreSQL: a JSON field cast to a
    number it does not hold): a row changed by hand, not a failing database."""
    orig = exc.orig
    if is_unsendable(exc):
        return False  # a value given, not stored
    if isinstance(exc, DataError) and orig is not None and getattr(orig, "sqlstate", "") in _UNCONVERTIBLE:
        return True  # (psycopg's own conversion has none: an error of the server has an SQLSTATE)
    # SQLite: "Could not decode to UTF-8 column 'x' with text '...'", "malformed JSON"
    return any(said in str(orig) for said in ("Could not decode", "malformed JSON"))


def is_unsendable(exc: DBAPIError) -> bool:
    """Whether psycopg refused to send a parameter (a text holding a NUL character, which PostgreSQL cannot store):
    the input is bad, the database was not even asked."""
    return isinstance(exc, DataError) and PSYCOPG_NUL in str(exc.orig)


def unsendable_error(exc: DBAPIError) -> UnsendableValueError:
    """The one-line error for a parameter the driver refused to send (:func:`is_unsendable`)."""
    return UnsendableValueError(
        f"a value given holds a NUL character, which the audit database cannot hold ({_first_line(exc)}); no record "
        "has one: give the value without it"
    )


def _who(engine: Engine) -> str:
    user = engine.url.username
    return f"database user {user!r}" if user else "this database user"


def permission_error(engine: Engine, exc: BaseException, needs: str | None = None) -> DatabaseError:
    """The one-line error for a refused privilege: the database is up, this user may not do that; what to do.

    ``needs`` says who may do it; by default a writer (a user given a role from ``db grant-writer``, or the schema
    owner), or, to read, a user given a role from ``db grant-reader``.
    """
    todo = needs or (
        "commands that write (ingest, attribute, ...) or read more than the reporting and audit views (spaces list, "
        "evaluate list, ...) need a user granted a role made by `attribution-audit db grant-writer ROLE` (or the "
        "schema owner); read-only users (granted a role made by `attribution-audit "
        "db grant-reader ROLE`: GRANT ROLE TO <user>) can run db current, audit list/show/verify/export and report"
    )
    return PermissionDeniedError(
        f"permission denied: the audit database {display_url(str(engine.url))} refused {_who(engine)} "
        f"({_first_line(exc)}); this is a permissions problem, not an outage: {todo}"
    )


def _refused(engine: Engine, exc: BaseException, message: str) -> DatabaseError:
    """``message`` as a DatabaseError, unless its disk is full (:func:`disk_full_error`), the SQLite log is open
    read-only (:func:`read_only_error`) or the server refused a privilege (:func:`permission_error`)."""
    if is_disk_full(exc):
        return disk_full_error(engine, exc)
    if is_read_only(exc):
        return read_only_error(engine, exc)
    return permission_error(engine, exc) if is_permission_error(exc) else DatabaseError(message)


def create_db_engine(url: str) -> Engine:
    """An engine with SQLite made safe for several processes (WAL, busy timeout, foreign keys)."""
    try:
        return _create_engine(normalise_url(url))
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseError(
            f"{url!r} is not a database URL this tool can use ({exc}); give sqlite:///PATH or postgresql://..."
        ) from None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (also a SQLite URI, ``sqlite:///file:PATH?mode=ro&uri=true``); None for
    another database, an in-memory one or a URL that does not parse (opening it says why)."""
    if not url.startswith("sqlite"):
        return None
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if database and database.startswith("file:") and "uri" in parsed.query:
        database = None if parsed.query.get("mode") == "memory" else _uri_path(database)
    return Path(database) if database and database != ":memory:" else None


def _uri_path(uri: str) -> str:
    """The file path of a SQLite ``file:`` URI."""
    return unquote(urlsplit(uri).path)


def _sqlite_connect(database: Path, record: Any, cargs: Sequence[Any], cparams: dict[str, Any]) -> Any:
    """A connection to the SQLite file ``database``. Where its disk has no room left for SQLite's shared WAL index
    (the ``-shm`` file, sized by the first process that opens the log, removed by the last), the file as it is, read
    only (``immutable``: no WAL index, no lock): a full disk does not stop the log being read and verified. That
    read is exact when no process has the log open (which would have sized the index) and its WAL file is empty (the
    last process wrote it back); a WAL holding records is refused. Marked in ``record.info`` for one checkout."""
    connection = sqlite3.connect(*cargs, **cparams)
    try:
        connection.execute("PRAGMA schema_version")  # the first read opens the WAL index
        return connection
    except sqlite3.OperationalError as exc:
        connection.close()
        if exc.sqlite_errorcode != sqlite3.SQLITE_IOERR_SHMSIZE:
            raise
    real = database.resolve()  # SQLite keeps the WAL beside the file a symlink names
    wal = real.with_name(real.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise DiskFullError(
            f"{database}: its disk is full, and its write-ahead log {wal} holds records not yet in the file, which "
            "SQLite cannot read without room for its WAL index; free some space on that disk, then run the command "
            "again"
        )
    record.info[FULL_DISK_READ] = "new"
    return sqlite3.connect(f"{real.as_uri()}?immutable=1", **{**cparams, "uri": True})


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = sqlite_file(url)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        if database is not None:
            file = database

            @event.listens_for(engine, "do_connect")
            def _connect(_dialect: Any, record: Any, cargs: Sequence[Any], cparams: dict[str, Any]) -> Any:
                return _sqlite_connect(file, record, cargs, cparams)

            @event.listens_for(engine, "checkout")
            def _once(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
                # a file read as it is sees no later write: each checkout of one opens the log again
                if record.info.get(FULL_DISK_READ) == "used":
                    raise DisconnectionError("read as it was when its disk was full")
                if FULL_DISK_READ in record.info:
                    record.info[FULL_DISK_READ] = "used"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # let the "begin" hook below emit BEGIN itself
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # Writers take the write lock at the start of their transaction: they queue (busy_timeout) instead of
            # failing on a read-to-write upgrade, and the audit chain stays linear. Readers (see reader()) begin a
            # deferred transaction: with WAL they read a snapshot and never wait for, or block, a writer.
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            if not read_only and FULL_DISK_READ in connection.info:
                raise disk_full_error(engine)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=_server_connect_args(make_url(url)))


def _server_connect_args(url: URL) -> dict[str, Any]:
    """:data:`POSTGRES_CONNECT_ARGS` for a PostgreSQL URL, less those its query string sets (the dialect passes the
    query's parameters to libpq, and ``connect_args`` would override them: the user's own settings win); none for
    another database."""
    if url.get_backend_name() != "postgresql":
        return {}
    return {key: value for key, value in POSTGRES_CONNECT_ARGS.items() if key not in url.query}


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    # Alembic's config is a ConfigParser: a literal % (percent-encoded passwords, odd paths) must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with reader(engine).connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except (OperationalError, DBAPIError) as exc:
        if is_permission_error(exc):
            # A read-only role (db grant-reader) cannot read alembic_version: it reads the same revision through
            # the view it was granted. A role granted nothing gets the error of alembic_version, which names it.
            try:
                with reader(engine).connect() as connection:
                    revision = connection.scalar(text(f"SELECT version_num FROM {SCHEMA_VERSION_VIEW}"))
                    return None if revision is None else str(revision)
            except DBAPIError:
                raise permission_error(engine, exc) from exc
        raise DatabaseError(
            f"cannot reach the audit database {display_url(str(engine.url))} ({_first_line(exc)}); start it "
            "or fix --database-url / ATTRIBUTION_AUDIT_DATABASE_URL"
        ) from exc


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Apply the Alembic migrations up to ``revision``; returns the revision now current."""
    from alembic import command

    current_revision(engine)  # a clear error when the server is down
    config = alembic_config(engine)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except DBAPIError as exc:
        if is_permission_error(exc):
            raise permission_error(
                engine, exc, "`db upgrade` needs the user that owns the schema (the one that created it)"
            ) from exc
        raise
    return current_revision(engine)


def check_schema(engine: Engine) -> None:
    """Refuse to work on a database whose schema is not at the head revision."""
    current, head = current_revision(engine), head_revision(engine)
    url = display_url(str(engine.url))
    if current is None:
        raise SchemaOutOfDateError(
            f"the audit database {url} has no audit schema yet (a server database is never created implicitly); "
            "run `attribution-audit db upgrade` once, as the user that will own the schema"
        )
    if current != head:
        raise SchemaOutOfDateError(
            f"the audit database {url} is at schema revision {current} but this version needs {head}; "
            "run `attribution-audit db upgrade`"
        )


@contextmanager
def _write_errors(engine: Engine) -> Iterator[None]:
    """DB errors of a write become one-line DatabaseErrors (nothing was recorded)."""
    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        if is_unsendable(exc):  # a value given with a NUL: never sent, nothing to retry
            raise unsendable_error(exc) from exc
        remedy = (  # a constraint is no outage: retrying would fail the same way
            "it conflicts with what is stored (a key or a rule of the schema): retrying will not help; check the input"
            if isinstance(exc, IntegrityError)
            else "retry when it is reachable"
        )
        raise _refused(
            engine,
            exc,
            f"the audit database {display_url(str(engine.url))} refused the write ({_first_line(exc)}); "
            f"nothing was recorded, {remedy}",
        ) from exc


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A Core connection in one transaction, committed on success and rolled back on error (no ORM: the audit
    write of a request); DB errors become one-line DatabaseErrors."""
    with _write_errors(engine), engine.begin() as connection:
        yield connection


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success and rolled back on error; DB errors become one-line DatabaseErrors."""
    session = Session(engine, expire_on_commit=False)  # not a sessionmaker per call: each makes a Session class
    try:
        with _write_errors(engine):
            yield session
            session.commit()
    except BaseException:
        with suppress(DBAPIError):  # a connection that is gone took its transaction with it: the error is the raised
            session.rollback()
        raise
    finally:
        _close(session)


def _close(session: Session) -> None:
    """Close ``session``; a connection lost meanwhile is no error here: what the scope did (or why it failed) is
    already known, and the lost transaction ended with it (a traceback instead of the one-line error, once)."""
    with suppress(DBAPIError):
        session.close()


def insert_or_ignore(session: Session, model: type[DeclarativeBase], unique: Sequence[str]) -> Any:
    """``INSERT ... ON CONFLICT (unique) DO NOTHING`` into ``model``'s table in the session's dialect (SQLite or
    PostgreSQL): concurrent writers of the same key both succeed, the second inserting nothing."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model).on_conflict_do_nothing(index_elements=list(unique))


def upsert(session: Session, model: type[DeclarativeBase], unique: Sequence[str], update: Sequence[str]) -> Any:
    """``INSERT ... ON CONFLICT (unique) DO UPDATE`` of the ``update`` columns, in the session's dialect."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model)
    return statement.on_conflict_do_update(
        index_elements=list(unique), set_={column: statement.excluded[column] for column in update}
    )


def reader(engine: Engine) -> Engine:
    """The same engine (same pool) for read-only work: on SQLite its transactions take no write lock."""
    return engine.execution_options(**{READ_ONLY: True})


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A session for reading: never committed, always closed, no write lock; DB errors become one-line
    DatabaseErrors."""
    session = Session(reader(engine), expire_on_commit=False)
    try:
        yield session
    except DBAPIError as exc:
        raise _cannot_read(engine, exc) from exc
    except (ValueError, TypeError) as exc:
        raise _unreadable(engine, exc) from None
    finally:
        # close() ends the transaction without committing; an explicit rollback() would also expire the rows read,
        # and callers use them (with their eagerly loaded children) after the scope.
        _close(session)


def compared_time(engine: Engine, moment: datetime) -> datetime:
    """A time as the database compares it: UTC (a time without a zone is UTC); SQLite stores it zone-less."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.replace(tzinfo=None) if engine.dialect.name == "sqlite" else utc


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A Core connection for reading (one snapshot, no write lock, never committed); DB errors become one-line
    DatabaseErrors."""
    try:
        with reader(engine).connect() as connection:
            yield connection
    except DBAPIError as exc:
        raise _cannot_read(engine, exc) from exc
    except (ValueError, TypeError) as exc:
        raise _unreadable(engine, exc) from None


def _unreadable(engine: Engine, exc: BaseException) -> DatabaseError:
    """A stored value the driver cannot decode (JSON that is not JSON, a time that is not a time): a row was changed
    outside attribution-audit."""
    problem = f"{type(exc).__name__}: {_first_line(exc)}"
    return UnreadableValueError(
        f"the audit database {display_url(str(engine.url))} holds a value that cannot be read ({problem}): a row "
        "was changed outside attribution-audit; run `attribution-audit audit verify` and restore the database from "
        "a backup",
        problem,
    )


def _cannot_read(engine: Engine, exc: DBAPIError) -> DatabaseError | UnsendableValueError:
    if is_unsendable(exc):
        return unsendable_error(exc)
    if is_undecodable(exc):
        return _unreadable(engine, exc.orig or exc)
    if exc.connection_invalidated:  # it was reached, then lost (stopped, restarted, the connection cut)
        return DatabaseError(
            f"lost the connection to the audit database {display_url(str(engine.url))} ({_first_line(exc)}); check "
            "that it is up, then run the command again"
        )
    return _refused(
        engine,
        exc,
        f"cannot read the audit database {display_url(str(engine.url))} ({_first_line(exc)}); start it "
        "or fix --database-url / ATTRIBUTION_AUDIT_DATABASE_URL",
    )


class UnconvertibleValue(ValueError):
    """A stored value its column's type cannot convert (a time that is not a time, JSON that is not JSON): ``column``
    names it as ``table.column`` (a view's table: the one it shows), ``cause`` is the conversion's error."""

    def __init__(self, column: str, cause: Exception) -> None:
        super().__init__(f"the value of {column} cannot be read ({cause})")
        self.column, self.cause = column, cause


def _positional(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The values of a row of named values at ``names``, in order, as one tuple (one C call for many names)."""
    if len(names) > 1:
        return itemgetter(*names)
    return lambda row: tuple(row[name] for name in names)


def positional(dialect: Dialect) -> Dialect:
    """``dialect`` compiling positional parameters (``%s`` where it names them, as psycopg's ``%(name)s``): a
    DriverStatement compiled with it hands the driver each row as a tuple, which the driver need not reorder."""
    if dialect.positional:
        return dialect
    twin = copy.copy(dialect)
    twin.paramstyle, twin.positional = "format", True
    return twin


class DriverStatement:
    """A Core statement compiled once for a dialect and run on the DBAPI cursor of a Core connection, without
    SQLAlchemy's per-call work (cache key, compiled-cache lookup, execution context): parameters pass through the
    column types' bind processors and rows through their result processors, as a Core execution does. For the hot
    paths (the audit write, the chain's block reads); the engine's ``before_cursor_execute`` listeners still see every
    statement, and a driver error is raised as SQLAlchemy's DBAPIError."""

    def __init__(
        self,
        statement: ClauseElement,
        dialect: Dialect,
        renamed: Mapping[str, Callable[[Any], Any] | None] | None = None,
        column_keys: Sequence[str] | None = None,
    ) -> None:
        keys = list(column_keys) if column_keys else None
        self.compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=keys))
        self.sql, self.dialect = str(self.compiled), dialect
        self.positions = _positional(self.compiled.positiontup or ()) if self.compiled.positional else None
        self.processors = [
            (name, convert)
            for name, bind in self.compiled.binds.items()
            if (convert := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]
        self.columns = list(getattr(statement, "selected_columns", ()))
        # column name -> a conversion in place of the type's own (the views' digests; None: the driver's value)
        self.renamed = renamed or {}
        self.converters: list[tuple[int, Callable[[Any], Any]]] | None = None

    def bound(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters of one row of named values (each given; no defaults are filled in)."""
        if self.processors:
            values = dict(values)
            for name, convert in self.processors:
                values[name] = convert(values[name])
        return values if self.positions is None else self.positions(values)

    def execute(
        self, connection: Connection, cursor: Any, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        """Run the statement with one row of parameters, or with several as one executemany."""
        many = not isinstance(rows, Mapping)
        params = self.bound(rows) if isinstance(rows, Mapping) else [self.bound(row) for row in rows]
        self._run(connection, cursor, params, many)

    def execute_rows(
        self, connection: Connection, cursor: Any, keys: Sequence[str], rows: Sequence[tuple[Any, ...]], converted: bool
    ) -> None:
        """Run the statement as one executemany of ``rows``, each the values of ``keys`` in that order; ``converted``:
        every value is already what its column type's bind processor makes of it (a float in a Float column), so
        that rows in the statement's own positional order go to the driver as they are."""
        if converted and self.positions is not None and tuple(self.compiled.positiontup or ()) == tuple(keys):
            params: list[Any] = list(rows)
        else:
            params = [self.bound(dict(zip(keys, row, strict=True))) for row in rows]
        self._run(connection, cursor, params, True)

    def _run(self, connection: Connection, cursor: Any, params: Any, many: bool) -> None:
        connection.dispatch.before_cursor_execute(connection, cursor, self.sql, params, None, many)
        with driver_errors(connection, self.sql, params):
            (cursor.executemany if many else cursor.execute)(self.sql, params)

    def rows(self, connection: Connection, cursor: Any, **params: Any) -> list[Any]:
        """The rows of the query (its literal parameters, LIMIT 1 say, filled in), converted."""
        values = self.compiled.construct_params(params)
        self.execute(connection, cursor, values)
        with driver_errors(connection, self.sql, values):  # SQLite: a text that does not decode, met at the fetch
            rows = cursor.fetchall()
        if self.converters is None:  # the driver's column types are known once it has run
            self.converters = self._converters(cursor.description)
        if not self.converters:
            return list(rows)
        converted = []
        for row in rows:
            fields = list(row)
            for index, convert in self.converters:
                try:
                    fields[index] = convert(fields[index])
                except (TypeError, ValueError) as exc:
                    column = self.columns[index]
                    table = column.table.info.get("table", column.table.name)
                    raise UnconvertibleValue(f"{table}.{column.name}", exc) from None
            converted.append(fields)
        return converted

    def _converters(self, description: Any) -> list[tuple[int, Callable[[Any], Any]]]:
        converters = []
        for index, (column, described) in enumerate(zip(self.columns, description, strict=True)):
            own = column.type.dialect_impl(self.dialect).result_processor(self.dialect, described[1])
            convert = self.renamed.get(column.name, own)
            if convert is not None:
                converters.append((index, convert))
        return converters


@contextmanager
def driver_errors(connection: Connection, sql: str, params: Any) -> Iterator[None]:
    """The driver's errors in the block raised as SQLAlchemy's DBAPIError of ``sql`` (what a Core execution raises,
    and what read_connection / write_connection turn into one line), ``connection_invalidated`` where the connection
    was lost."""
    dialect = connection.dialect
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, connection.connection.driver_connection, None)
        raise DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost) from exc


@contextmanager
def pipelined(connection: Connection) -> Iterator[None]:
    """PostgreSQL over psycopg 3 with a libpq that can: the statements of the block are sent without waiting for each
    answer (pipeline mode; a fetch, and the block's end, wait for what was sent before it), in the connection's
    transaction, and a failed one fails the block (raised as SQLAlchemy's DBAPIError). Elsewhere nothing changes."""
    driver = connection.connection.driver_connection
    if connection.dialect.name != "postgresql" or not _can_pipeline(driver):
        yield
        return
    with driver_errors(connection, "(pipeline)", None), driver.pipeline():  # type: ignore[union-attr]
        yield


class _RepeatedBlockError(logging.Filter):
    """Drops psycopg's warning that ending a pipeline failed after its block had (the server lost mid-append): the
    block's own error is raised and reported as one line; the warning repeated it in a service's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "_pipeline" and record.msg == "error ignored terminating %r: %s")


logging.getLogger("psycopg").addFilter(_RepeatedBlockError())


def _can_pipeline(driver: Any) -> bool:
    pipeline = getattr(type(driver), "pipeline", None)
    if pipeline is None:
        return False
    from psycopg import Pipeline

    return bool(Pipeline.is_supported())
