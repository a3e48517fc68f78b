"""The hash chain over attribution requests: append one record, read records back, verify the whole log.

Each request's ``record_hash`` is ``sha256(prev_hash || canonical JSON of the request, its neighbours, artist
shares and metrics)``. Appends take a database-wide lock (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``)
so that concurrent writers still form one linear chain with consecutive ``seq`` numbers.

Records are read back as :class:`StoredRequest`: every hashed column, the query vectors only as their digests (what
the hash covers). On PostgreSQL they are read through the audit views (migration 0004), the same for the owner and
for a read-only role (``db grant-reader``), which can read nothing else; SQLite, which has no roles, is read from
the tables.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby, islice
from json.encoder import encode_basestring
from operator import itemgetter, mod
from typing import Any

import numpy as np
from sqlalchemy import (
    ARRAY,
    JSON,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Float,
    FromClause,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from attribution_audit.domain.chain import (
    GENESIS_HASH,
    ChainCheck,
    ChainRecord,
    ChainReport,
    UnreadableRecord,
    canonical_encoder,
    canonical_json,
    hash_content,
    link_hash,
)
from attribution_audit.domain.results import as_utc
from attribution_audit.errors import DatabaseError, VectorStoreError
from attribution_audit.store.database import (
    DriverStatement,
    UnconvertibleValue,
    disk_full_error,
    display_url,
    is_disk_full,
    is_permission_error,
    is_read_only,
    is_undecodable,
    pipelined,
    positional,
    read_connection,
    read_only_error,
    reader,
    write_connection,
)
from attribution_audit.store.models import (
    Artist,
    AttributionArtistShare,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
    Base,
    Catalogue,
    ChainVerification,
    Work,
    WorkVersion,
    utcnow,
)


class UnreadableRecordError(DatabaseError, UnreadableRecord):
    """A record of the audit log holds a value that cannot be read or hashed: ``seq`` and ``request_id`` name it,
    ``reason`` says which value and why (the message adds what to do); pickled whole (a process reading the log hands
    it to the one checking it)."""


CHAIN_LOCK_ID = 0x41545452  # pg_advisory_xact_lock key of the audit chain
_EXCLUDED = {"request_id", "record_hash"}
_DIGEST = "sha256:"  # a binary column's canonical value: "sha256:" + hex digest of its bytes

_REQUESTS, _NEIGHBOURS, _SHARES, _METRICS, _WORKS, _WORK_VERSIONS, _CATALOGUES, _ARTISTS = (
    Base.metadata.tables[model.__tablename__]
    for model in (
        AttributionRequest,
        AttributionNeighbour,
        AttributionArtistShare,
        AttributionMetrics,
        Work,
        WorkVersion,
        Catalogue,
        Artist,
    )
)
_BINARY = frozenset(c.key for c in _REQUESTS.columns if isinstance(c.type, LargeBinary))


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds")
    if isinstance(value, bytes | bytearray | memoryview):
        return _DIGEST + hashlib.sha256(bytes(value)).hexdigest()
    if isinstance(value, float) and value == 0.0:
        return 0.0  # SQLite does not keep the sign of -0.0: hash what every database reads back
    return value


@dataclass(frozen=True)
class StoredRequest:
    """One request of the log as stored: the values of every column of its row and of its children's rows, the
    binary columns (the query vectors) as ``"sha256:<hex>"`` of their bytes. Exactly what its hash covers, and all
    that reading, showing or verifying a record needs."""

    columns: dict[str, Any]
    neighbours: list[dict[str, Any]]
    artist_shares: list[dict[str, Any]]
    metrics: dict[str, Any] | None

    @property
    def id(self) -> str:
        return str(self.columns["id"])

    @property
    def seq(self) -> int:
        return int(self.columns["seq"])

    @property
    def prev_hash(self) -> str:
        return str(self.columns["prev_hash"])

    @property
    def record_hash(self) -> str:
        return str(self.columns["record_hash"])

    @classmethod
    def of(cls, request: AttributionRequest) -> StoredRequest:
        """The record of an ORM request with its children attached."""

        def values(row: Base) -> dict[str, Any]:
            return {c.key: getattr(row, c.key) for c in row.__table__.columns}

        columns = values(request)
        for key in _BINARY:
            columns[key] = _canonical_value(columns[key])
        return cls(
            columns,
            _ordered(map(values, request.neighbours), "rank"),
            _ordered(map(values, request.artist_shares), "artist"),
            values(request.metrics) if request.metrics is not None else None,
        )


# Columns added after records were hashed, by table: covered when set, left out when empty (older records keep their
# hash). attribution_requests.image_sha256 (the query's) is always covered: only the neighbours' is added here.
_COVERED_WHEN_SET = {
    _REQUESTS.name: frozenset({"crop_vectors"}),
    _NEIGHBOURS.name: frozenset({"image_sha256"}),
    _SHARES.name: frozenset[str](),
    _METRICS.name: frozenset(
        {
            "copy_of",
            "copy_score",
            "copy_status",
            "copy_method",
            "agreement",
            "agreement_spaces",
            "centroid_log_odds",
            "centroid_log_odds_others",
            "other_space_versions",
            "confidence_model_sha256",
            "crop_log_odds",
            "one_colour",
        }
    ),
}
_PLAIN = frozenset({str, int, bool, type(None), dict, list})  # values that are canonical as they are


def _ordered(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Child rows by ``key`` (rank, artist). A key of another type than the others (written by hand, which SQLite
    keeps) is ordered by its type and text instead of raising: the record is read, and fails its hash."""
    rows = list(rows)
    try:
        return sorted(rows, key=itemgetter(key))
    except TypeError:
        return sorted(rows, key=lambda row: (type(row[key]).__name__, repr(row[key])))


def _canonical_row(values: dict[str, Any], table: Table) -> dict[str, Any]:
    row = {}
    covered = _COVERED_WHEN_SET[table.name]
    for key, value in values.items():
        if key in _EXCLUDED or (key in covered and value is None):
            continue
        kind = type(value)
        if kind is float:
            row[key] = value or 0.0  # -0.0 hashes as 0.0 (see _canonical_value)
        else:
            row[key] = value if kind in _PLAIN else _canonical_value(value)
    return row


def canonical_content(request: StoredRequest | AttributionRequest) -> dict[str, Any]:
    """What the hash covers: the request and its neighbours, artist shares and metrics, as plain JSON values."""
    record = request if isinstance(request, StoredRequest) else StoredRequest.of(request)
    return {
        "request": _canonical_row(record.columns, _REQUESTS),
        "neighbours": [_canonical_row(n, _NEIGHBOURS) for n in _ordered(record.neighbours, "rank")],
        "artist_shares": [_canonical_row(s, _SHARES) for s in _ordered(record.artist_shares, "artist")],
        "metrics": _canonical_row(record.metrics, _METRICS) if record.metrics is not None else None,
    }


def record_hash(prev_hash: str, request: StoredRequest | AttributionRequest) -> str:
    return hash_content(prev_hash, canonical_content(request))


_KEYS = {table: tuple(c.key for c in table.columns) for table in (_REQUESTS, _NEIGHBOURS, _SHARES, _METRICS)}


def _row(table: Table, given: dict[str, Any]) -> dict[str, Any]:
    """Every column of ``table``: those given, None for the others (what the hash covers is what is stored)."""
    return {key: given.get(key) for key in _KEYS[table]}


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})  # plain as they are (most values of a record)


def _plain(value: Any) -> Any:
    """``value`` with every numpy scalar in it (in rows, lists and JSON objects) as the Python value it holds
    (np.float32 -> float, np.int64 -> int): stored and hashed as that value is."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):  # a plain item as it is, without a call (a record holds hundreds)
        return {key: item if type(item) in _SCALARS else _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [item if type(item) in _SCALARS else _plain(item) for item in value]
    return value


def _accepted(kind: Any) -> frozenset[type] | None:
    """The types of the values a column of ``kind`` stores as given (None: a JSON column, any JSON value)."""
    if isinstance(kind, Float):
        return frozenset({float, type(None)})
    if isinstance(kind, Integer):
        return frozenset({int, type(None)})
    if isinstance(kind, String):
        return frozenset({str, type(None)})
    if isinstance(kind, DateTime):
        return frozenset({datetime, type(None)})
    if isinstance(kind, LargeBinary):
        return frozenset({bytes, bytearray, memoryview, type(None)})
    if isinstance(kind, JSON):
        return None
    raise RuntimeError(f"no rule for the values of a {kind!r} column of the audit log")


_ACCEPTED = {
    table: {c.key: _accepted(c.type) for c in table.columns} for table in (_REQUESTS, _NEIGHBOURS, _SHARES, _METRICS)
}


def _as_stored(table: Table, column: str, value: Any, kinds: frozenset[type]) -> Any:
    """``value`` as its column (of the types ``kinds``) stores it: a numpy scalar as the Python value it holds, an
    int in a Float column as its float where that is exact; DatabaseError for a value of any other type (a bool, a
    float or text in an Integer column...), which the record would be hashed over as given but stored converted."""
    if isinstance(value, np.generic):
        value = value.item()
    if type(value) in kinds:
        return value
    kind = table.columns[column].type
    if isinstance(kind, Float) and type(value) is int:
        try:
            if float(value) == value:
                return float(value)
        except OverflowError:
            pass
    stores = {Float: "a float", Integer: "an int", String: "a str", DateTime: "a datetime", LargeBinary: "bytes"}
    what = next(name for base, name in stores.items() if isinstance(kind, base))
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise DatabaseError(
        f"cannot log {table.name}.{column} = {shown} (a {type(value).__name__}): the column stores {what}, so the "
        f"record would not verify; pass {what} (or None where the column allows it); nothing was recorded"
    )


def _stored_rows(table: Table, keys: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """``rows`` (the values of ``keys``) as tuples of the values ``table`` stores, so that what is hashed is what is
    read back: each value of its column's type as it is, any other as :func:`_as_stored` makes it (or refuses it).
    Checked column by column (most records hold no other)."""
    stored = [tuple(row) for row in rows]
    accepted = _ACCEPTED[table]
    for i, (key, values) in enumerate(zip(keys, zip(*stored, strict=True), strict=False)):
        kinds = accepted.get(key)  # (None too for a key that is no column: not stored)
        if kinds is not None and not set(map(type, values)) <= kinds:
            stored = [(*row[:i], _as_stored(table, key, row[i], kinds), *row[i + 1 :]) for row in stored]
    return stored


def _stored_row(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """A row given by column (request, metrics) as ``table`` stores it (:func:`_stored_rows`)."""
    return dict(zip(row, _stored_rows(table, tuple(row), [tuple(row.values())])[0], strict=True))


_LENGTHS = {
    table: {c.key: c.type.length for c in table.columns if isinstance(c.type, String) and c.type.length}
    for table in (_REQUESTS, _NEIGHBOURS, _SHARES)
}


def _refuse_too_long(table: Table, keys: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A database server keeps at most its column's length of a text: PostgreSQL refuses a longer one, but cuts one
    whose excess is spaces without a word (the SQL standard), and the record would not match its own hash when read
    back. Refused alike, before anything is written. ``rows``: the values of ``keys``."""
    lengths = _LENGTHS[table]
    for key, values in zip(keys, zip(*rows, strict=True), strict=False):
        limit = lengths.get(key)
        # (a text column's values are texts or None here: _stored_rows)
        if limit is not None and max(map(len, filter(None, values)), default=0) > limit:
            value = next(v for v in values if v and len(v) > limit)
            raise DatabaseError(
                f"cannot log {table.name}.{key} = {value[:40]!r}... ({len(value)} characters): the column holds "
                f"at most {limit}; shorten it; nothing was recorded"
            )


def _refuse_nan(keys: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """SQLite stores NaN as NULL: a record holding one would not match its own hash when read back. ``rows``: the
    values of ``keys``."""
    for row in rows:
        for column, value in zip(keys, row, strict=True):
            if isinstance(value, float) and math.isnan(value):
                raise DatabaseError(
                    f"cannot log {column} = NaN in a SQLite audit log (it would be stored as NULL, and the record "
                    "would fail its hash); nothing was recorded"
                )


class _Append:
    """The statements of an append in one dialect, compiled once: the chain lock (PostgreSQL), the neighbours' work
    keys, the head, and one insert per table."""

    def __init__(self, dialect: Dialect) -> None:
        postgres = dialect.name == "postgresql"
        # SQLite: every transaction starts with BEGIN IMMEDIATE (see audit.db), which already serialises writers.
        lock = select(func.pg_advisory_xact_lock(bindparam("key", CHAIN_LOCK_ID)))
        self.lock = DriverStatement(lock, dialect) if postgres else None
        c, w, a = _CATALOGUES.c, _WORKS.c, _ARTISTS.c

        if postgres:  # one probe of the works' unique key per pair, however the planner's statistics stand
            keys = (  # (the pairs as one JSON text: psycopg dumps an array's items one by one, in Python)
                func.json_to_recordset(cast(bindparam("pairs", type_=String), JSON))
                .table_valued(Column("catalogue", String), Column("work_id", String))
                .render_derived(name="k", with_types=True)
            )
            probe = (
                select(w.id, a.name, w.version, w.image_sha256, w.withdrawn_at)
                .join_from(_WORKS, _CATALOGUES, w.catalogue_id == c.id)
                .join(_ARTISTS, a.id == w.artist_id)
                .where(c.name == keys.c.catalogue, w.work_id == keys.c.work_id)
                .limit(literal_column("1"))  # a LATERAL subquery with a LIMIT is never flattened into a join
                .lateral("w")
            )
            works: Select[Any] = select(
                keys.c.catalogue,
                keys.c.work_id,
                probe.c.id,
                probe.c.name,
                probe.c.version,
                probe.c.image_sha256,
                probe.c.withdrawn_at,
            ).select_from(keys.join(probe, true()))
        else:  # SQLite probes the unique key per value of the lists, statistics or not

            def listed(name: str) -> Select[Any]:
                return select(literal_column("value")).select_from(func.json_each(bindparam(name, type_=String)))

            works = (
                select(c.name, w.work_id, w.id, a.name, w.version, w.image_sha256, w.withdrawn_at)
                .join_from(_WORKS, _CATALOGUES, w.catalogue_id == c.id)
                .join(_ARTISTS, a.id == w.artist_id)
                .where(c.name.in_(listed("catalogues")), w.work_id.in_(listed("work_ids")))
            )
        self.works = DriverStatement(works, dialect)
        pks = bindparam("keys", type_=String)  # the work keys as one JSON array, as the pairs above
        work_keys: Select[Any] = (
            select(cast(func.json_array_elements_text(cast(pks, JSON)).table_valued("value").c.value, Integer))
            if postgres
            else select(literal_column("value")).select_from(func.json_each(pks))
        )
        v = _WORK_VERSIONS.c
        self.versions = DriverStatement(
            select(v.work_pk, v.version, v.image_sha256).where(v.work_pk.in_(work_keys.scalar_subquery())), dialect
        )
        self.pairs: Callable[[Sequence[tuple[str, str]]], dict[str, str]] = _as_records if postgres else _as_lists
        seq = _REQUESTS.c.seq
        self.head = DriverStatement(select(seq, _REQUESTS.c.record_hash).order_by(seq.desc()).limit(1), dialect)
        self.inserts = {  # positional: each child row goes to the driver as the tuple append_rows makes
            table: DriverStatement(table.insert(), positional(dialect), column_keys=[c.key for c in table.columns])
            for table in (_REQUESTS, _NEIGHBOURS, _SHARES, _METRICS)
        }
        # PostgreSQL: a child table's rows as one statement over one JSON array of them. An executemany is an
        # execution per row (psycopg's per-row work, and the server starting a statement for each): at K=100 about
        # 1 ms of the client's CPU and as much of the server's (scripts/bench_scale.py, docs/benchmarks.md)
        self.json_inserts = (
            {table: _json_insert(table, dialect) for table in (_NEIGHBOURS, _SHARES)} if postgres else {}
        )

    def version_images(self, connection: Connection, cursor: Any, work_pks: list[int]) -> dict[tuple[int, int], str]:
        """The image digest of every recorded version of the works ``work_pks``, by (work key, version)."""
        self.versions.execute(connection, cursor, {"keys": json.dumps(work_pks)})
        return {(pk, version): image for pk, version, image in cursor.fetchall()}


def _as_records(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The works lookup's parameter on PostgreSQL: the (catalogue, work id) pairs as a JSON array of records."""
    return {"pairs": json.dumps([{"catalogue": c, "work_id": w} for c, w in pairs])}


def _as_lists(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The works lookup's parameters on SQLite: the catalogues and the work ids as two parallel JSON lists."""
    catalogues, work_ids = zip(*pairs, strict=True)
    return {"catalogues": json.dumps(catalogues), "work_ids": json.dumps(work_ids)}


def _json_insert(table: Table, dialect: Dialect) -> DriverStatement:
    """PostgreSQL: an insert of ``table``'s rows given as one JSON array of objects (parameter ``rows``), each value
    read by its column's own type from the JSON text (a float as its shortest repr, which reads back the same
    float)."""
    quote, name = dialect.identifier_preparer.quote, dialect.identifier_preparer.format_table(table)
    columns = ", ".join(quote(c.name) for c in table.columns)
    return DriverStatement(
        text(
            f"INSERT INTO {name} ({columns}) SELECT {columns} "
            f"FROM json_populate_recordset(NULL::{name}, CAST(:rows AS json))"
        ),
        dialect,
    )


_APPENDS: dict[str, _Append] = {}
_NAMES = {table: tuple(c.name for c in table.columns) for table in (_NEIGHBOURS, _SHARES)}  # in _KEYS' order
_CHILD_KEYS = {table: _KEYS[table][1:] for table in (_NEIGHBOURS, _SHARES)}  # after the request's id
if any(_KEYS[table][0] != "request_id" for table in _CHILD_KEYS):
    raise RuntimeError("a child table of the audit log must hold its request's id in its first column")
_WORK_PK = _CHILD_KEYS[_NEIGHBOURS].index("work_pk")
NEIGHBOUR_VALUES = tuple(key for key in _CHILD_KEYS[_NEIGHBOURS] if key != "work_pk")  # a neighbour, as append_rows
# takes it (its work_pk given apart, or looked up)
SHARE_VALUES = _CHILD_KEYS[_SHARES]  # an artist share, as append_rows takes it: (artist, share)
_WORK_KEY = itemgetter(NEIGHBOUR_VALUES.index("catalogue"), NEIGHBOUR_VALUES.index("work_id"))  # of a neighbour
_ARTIST, _VERSION, _IMAGE = (NEIGHBOUR_VALUES.index(key) for key in ("artist", "work_version", "image_sha256"))


def _other_versions(neighbours: Sequence[Sequence[Any]], found: dict[tuple[str, str], Sequence[Any]]) -> list[int]:
    """The work keys of the neighbours whose payload names another version of their work than the catalogue's (an
    embedder's collection not ingested again since the work's image changed), whose images are then looked up."""
    return sorted(
        {
            work[0]
            for neighbour in neighbours
            if (work := found.get(_WORK_KEY(neighbour))) is not None
            and neighbour[_VERSION] is not None
            and neighbour[_VERSION] != work[2]
        }
    )


def _refuse_uncatalogued(
    neighbours: Sequence[Sequence[Any]],
    found: dict[tuple[str, str], Sequence[Any]],
    images: dict[tuple[int, int], str],
) -> None:
    """Refuse a neighbour that is not the catalogue's work as the catalogue records it (``found``: each work's
    (key, artist, version, image digest, withdrawal time) by (catalogue, work id); ``images``: the image digest of
    each (work key, version) of :func:`_other_versions`): one the catalogue does not hold or has withdrawn, one named
    twice, one by another artist, or one whose version the catalogue never recorded with that image. Its payload
    (what the request's shares were computed from) was rewritten behind the catalogue, or an ingest or a withdrawal
    failed before it ended; it would otherwise enter the log as a valid attribution. A payload at an older version
    with that version's image is another embedder's collection not ingested again yet: attributable as that
    version."""
    seen: set[tuple[str, str]] = set()
    for neighbour in neighbours:
        work = _WORK_KEY(neighbour)
        pk, artist, version, image, withdrawn = found.get(work, (None, None, None, None, None))
        named, named_image = neighbour[_VERSION], neighbour[_IMAGE]
        if named is not None and named != version:
            image = images.get((pk, named))  # (None: a version the catalogue never recorded)
        problem = None
        if work not in found:
            problem = "which the catalogue does not hold"
        elif withdrawn is not None:
            raise VectorStoreError(
                f"the vector store names work {work[1]!r} of catalogue {work[0]!r}, which the catalogue withdrew: "
                "its withdrawal is deleting the point now, or stopped before it did; this request was not recorded: "
                "retry once a running withdrawal ends; otherwise remove the point with `attribution-audit catalogue "
                "check --repair`"
            )
        elif work in seen:
            problem = "more than once"
        elif artist != neighbour[_ARTIST]:
            problem = f"by {neighbour[_ARTIST]!r}, the catalogue by {artist!r}"
        elif named_image is not None and named_image != image:  # (no version named: the catalogue's is compared)
            problem = (
                f"with another image than the catalogue recorded for version {version if named is None else named}"
                if image is not None
                else f"at version {named}, which the catalogue never recorded"
            )
        if problem:
            raise VectorStoreError(
                f"the vector store names work {work[1]!r} of catalogue {work[0]!r} {problem}: an ingest is writing "
                "it now, or failed before its commit, or the point was changed behind the catalogue; this request "
                "was not recorded: retry once a running ingest ends; otherwise ingest the catalogue again into this "
                "collection (it rewrites such points) or remove them with `attribution-audit catalogue check --repair`"
            )
        seen.add(work)


def append_rows(
    connection: Connection,
    request: dict[str, Any],
    neighbours: Sequence[Sequence[Any]],
    shares: Sequence[Sequence[Any]],
    metrics: dict[str, Any] | None,
    at: datetime | None = None,
    *,
    work_pks: Sequence[int | None] | None = None,
) -> StoredRequest:
    """Append one request (its columns, as plain values) to the chain in the connection's transaction (the caller
    commits), with its ``neighbours`` (each the values of :data:`NEIGHBOUR_VALUES`) and artist ``shares`` (of
    :data:`SHARE_VALUES`): its time, position and hash are taken under the chain lock, then it is written with one
    statement per table (the children by executemany): the same statements whatever the number of neighbours, run on
    the DBAPI cursor. ``work_pks``: each neighbour's ``work_pk``; None: each is looked up by its (catalogue, work_id)
    through the works' unique index. Returns the record as stored, without reading it back.

    The head is the row of the highest ``seq`` (its unique index: one index probe whatever the log's length). The
    time is taken under the lock, so chain order is time order; ``at`` backdates it (importing a log). On PostgreSQL
    the statements go in two round trips (psycopg's pipeline mode): the lock, the work keys and the head (each
    statement reads after the lock is held: a snapshot of its own), then the inserts; COMMIT is the caller's. Values
    may be numpy scalars (logged as the Python numbers they hold); one of another type than its column's is logged as
    the column stores it where that is exact (an int in a Float column: its float), any other is refused
    (DatabaseError) before anything is written: what is hashed is what the log reads back.
    """
    request, metrics = _plain([request, metrics])
    request = _stored_row(_REQUESTS, request)
    metrics = None if metrics is None else _stored_row(_METRICS, metrics)
    neighbours, shares = (
        _stored_rows(_NEIGHBOURS, NEIGHBOUR_VALUES, neighbours),
        _stored_rows(_SHARES, SHARE_VALUES, shares),
    )
    if work_pks is not None:
        work_pks = [pk for (pk,) in _stored_rows(_NEIGHBOURS, ("work_pk",), [(pk,) for pk in work_pks])]
    dialect = connection.dialect
    sqlite = dialect.name == "sqlite"
    if sqlite:  # (the children: below, where their text has not shown them to hold none)
        for row in (request, metrics):
            if row:
                _refuse_nan(tuple(row), [tuple(row.values())])
    else:
        for table, keys, rows in (
            (_REQUESTS, tuple(request), [tuple(request.values())]),
            (_NEIGHBOURS, NEIGHBOUR_VALUES, neighbours),
            (_SHARES, SHARE_VALUES, shares),
        ):
            _refuse_too_long(table, keys, rows)
    sql = _APPENDS.get(dialect.name) or _APPENDS.setdefault(dialect.name, _Append(dialect))
    key = request["id"]
    parts = sorted(((key, *s) for s in shares), key=itemgetter(1))  # by artist
    measured = None if metrics is None else _row(_METRICS, metrics) | {"request_id": key}
    # a cursor for each statement whose answer is read, and one for the lock: in a pipeline, psycopg gives a cursor
    # the answer of its earlier statement where that arrives after its next one was sent, and the head was read as
    # the lock's row (a traceback, now and then, under load)
    locks, reads, cursor = (connection.connection.cursor() for _ in range(3))
    try:
        with pipelined(connection):
            if sql.lock is not None:
                sql.lock.execute(connection, locks, {"key": CHAIN_LOCK_ID})
            if work_pks is None and neighbours:  # the distinct (catalogue, work id) pairs
                sql.works.execute(connection, reads, sql.pairs(sorted(set(map(_WORK_KEY, neighbours)))))
            last = sql.head.rows(connection, cursor)
            if work_pks is None:
                found = {(cat, wid): work for cat, wid, *work in reads.fetchall()} if neighbours else {}
                older = _other_versions(neighbours, found)  # (none but where a collection was not ingested again)
                images = sql.version_images(connection, reads, older) if older else {}
                _refuse_uncatalogued(neighbours, found, images)
                work_pks = [found[_WORK_KEY(n)][0] for n in neighbours]
            near = sorted(
                ((key, *n[:_WORK_PK], pk, *n[_WORK_PK:]) for n, pk in zip(neighbours, work_pks, strict=True)),
                key=itemgetter(1),  # by rank
            )
            seq, prev = (1, GENESIS_HASH) if not last else (last[0][0] + 1, last[0][1])
            row = _row(_REQUESTS, request) | {"created_at": at or utcnow(), "seq": seq, "prev_hash": prev}
            columns = {k: _canonical_value(v) if k in _BINARY else v for k, v in row.items()}
            text = _record_text(columns, near, parts, measured)  # (their values: of their columns' types)
            if sqlite and text is None:  # (a text holds no NaN)
                _refuse_nan(NEIGHBOUR_VALUES, neighbours)
                _refuse_nan(SHARE_VALUES, shares)
            stored = StoredRequest(
                columns,
                [dict(zip(_KEYS[_NEIGHBOURS], n, strict=True)) for n in near],
                [dict(zip(_KEYS[_SHARES], s, strict=True)) for s in parts],
                measured,
            )
            if text is None:
                row["record_hash"] = record_hash(prev, stored)
            else:
                row["record_hash"] = link_hash(prev, text)
            columns["record_hash"] = row["record_hash"]
            sql.inserts[_REQUESTS].execute(connection, cursor, row)
            for table, rows in ((_NEIGHBOURS, near), (_SHARES, parts)):
                if rows and table in sql.json_inserts and text is not None:  # (a text holds finite numbers alone)
                    names = _NAMES[table]
                    values = json.dumps([dict(zip(names, row, strict=True)) for row in rows], allow_nan=False)
                    sql.json_inserts[table].execute(connection, cursor, {"rows": values})
                elif rows:
                    sql.inserts[table].execute_rows(connection, cursor, _KEYS[table], rows, text is not None)
            if measured:
                sql.inserts[_METRICS].execute(connection, cursor, [measured])
    finally:
        for each in (locks, reads, cursor):
            each.close()
    return stored


def append(engine: Engine, request: AttributionRequest, at: datetime | None = None) -> AttributionRequest:
    """:func:`append_rows` of an ORM request with its children attached (not added to a session), in a transaction
    of its own: sets its time, chain position and hash."""

    def values(row: Base) -> dict[str, Any]:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns}

    with write_connection(engine) as connection:
        stored = append_rows(
            connection,
            values(request),
            [tuple(getattr(n, key) for key in NEIGHBOUR_VALUES) for n in request.neighbours],
            [tuple(getattr(s, key) for key in SHARE_VALUES) for s in request.artist_shares],
            values(request.metrics) if request.metrics is not None else None,
            at,
            work_pks=[n.work_pk for n in request.neighbours],
        )
    for column in ("created_at", "seq", "prev_hash", "record_hash"):
        setattr(request, column, stored.columns[column])
    return request


# -- reading ---------------------------------------------------------------------------------------------------
_VIEWS = MetaData()


def _view(name: str, table: Table) -> Table:
    """The audit view ``name`` over ``table`` (migration 0004): its columns, each binary one as ``<name>_sha256``."""
    return Table(
        name,
        _VIEWS,
        *(
            Column(f"{c.name}_sha256", String(64)) if c.key in _BINARY else Column(c.name, c.type)
            for c in table.columns
        ),
        info={"table": table.name},  # what an error about a value read from the view names
    )


@dataclass(frozen=True)
class _Source:
    """Where records are read from: the audit views (PostgreSQL) or the tables (SQLite)."""

    requests: FromClause
    neighbours: FromClause
    artist_shares: FromClause
    metrics: FromClause
    neighbour_images: FromClause  # request_id, rank, image_path and image_sha256 of the work version attributed
    digested: bool  # binary columns arrive as hex digests, in <name>_sha256

    def request_columns(self, row: Any) -> dict[str, Any]:
        mapping = row._mapping
        columns = {}
        for c in _REQUESTS.columns:
            if c.key not in _BINARY:
                columns[c.key] = mapping[c.key]
            elif self.digested:
                digest = mapping[f"{c.name}_sha256"]
                columns[c.key] = None if digest is None else _DIGEST + digest
            else:
                columns[c.key] = _canonical_value(mapping[c.key])
        return columns


def _neighbour_images_of_tables() -> FromClause:
    """The rows of the view v_audit_neighbour_images, from the tables."""
    n, w, v = _NEIGHBOURS.c, _WORKS.c, _WORK_VERSIONS.c
    return (
        select(
            n.request_id,
            n.rank,
            func.coalesce(v.image_path, w.image_path).label("image_path"),
            func.coalesce(v.image_sha256, w.image_sha256).label("image_sha256"),
        )
        .select_from(
            _NEIGHBOURS.join(_WORKS, w.id == n.work_pk).outerjoin(
                _WORK_VERSIONS, and_(v.work_pk == n.work_pk, v.version == n.work_version)
            )
        )
        .subquery("neighbour_images")
    )


_AUDIT_VIEWS = (
    _view("v_audit_requests", _REQUESTS),
    _view("v_audit_neighbours", _NEIGHBOURS),
    _view("v_audit_artist_shares", _SHARES),
    _view("v_audit_metrics", _METRICS),
    Table(
        "v_audit_neighbour_images",
        _VIEWS,
        Column("request_id", String(36)),
        Column("rank", Integer),
        Column("image_path", Text),
        Column("image_sha256", String(64)),  # migration 0007
    ),
)
AUDIT_VIEWS = tuple(view.name for view in _AUDIT_VIEWS)  # PostgreSQL only; SQLite is read from the tables
_VIEW_SOURCE = _Source(*_AUDIT_VIEWS, digested=True)
_TABLE_SOURCE = _Source(_REQUESTS, _NEIGHBOURS, _SHARES, _METRICS, _neighbour_images_of_tables(), digested=False)


def log_source(engine: Engine) -> _Source:
    """What the log is read from: the audit views on PostgreSQL (the owner reads what a read-only role reads), the
    tables on SQLite."""
    return _VIEW_SOURCE if engine.dialect.name == "postgresql" else _TABLE_SOURCE


def _kinds(requests: FromClause) -> dict[str, ColumnElement[bool] | None]:
    """The condition that selects each kind of request (None: every request)."""
    c = requests.c
    return {
        "all": None,
        "production": and_(c.evaluation_run_id.is_(None), c.replay_of.is_(None)),  # as the reports count them
        "evaluation": c.evaluation_run_id.is_not(None),
        "replay": c.replay_of.is_not(None),
    }


REQUEST_KINDS = tuple(_kinds(_REQUESTS))  # the kinds of request that load_requests selects


def load_requests(
    engine: Engine,
    *,
    ids: Sequence[str] | None = None,
    after_seq: int | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    kind: str = "all",
) -> list[StoredRequest]:
    """Records with their children, in chain order (or newest first), read in one transaction (a record is
    appended whole and never changes, so its children read a moment later are the ones it was written with); only
    those of ``kind`` (:data:`REQUEST_KINDS`): made by users (production: neither an evaluation run's nor a replay),
    by evaluation runs (``evaluate``), by ``audit replay``, or all."""
    src = log_source(engine)
    requests = src.requests.c
    query = select(src.requests).order_by(requests.seq.desc() if newest_first else requests.seq)
    kinds = _kinds(src.requests)
    if kind not in kinds:
        raise ValueError(f"kind {kind!r}: choose {', '.join(kinds)}")
    if (of_kind := kinds[kind]) is not None:
        query = query.where(of_kind)
    if ids is not None:
        query = query.where(requests.id.in_(list(ids)))
    if after_seq is not None:
        query = query.where(requests.seq > after_seq)
    if limit is not None:
        query = query.limit(limit)
    with read_connection(engine) as connection:
        rows = [src.request_columns(row) for row in connection.execute(query)]
        if not rows:
            return []
        keys = [row["id"] for row in rows]

        def children(part: FromClause) -> dict[str, list[dict[str, Any]]]:
            grouped: dict[str, list[dict[str, Any]]] = {}
            result = connection.execute(select(part).where(part.c.request_id.in_(keys)))
            names = list(result.keys())
            for child in result:
                values = dict(zip(names, child, strict=True))
                grouped.setdefault(values["request_id"], []).append(values)
            return grouped

        neighbours, shares, metrics = children(src.neighbours), children(src.artist_shares), children(src.metrics)
    return [
        StoredRequest(
            row,
            _ordered(neighbours.get(row["id"], []), "rank"),
            _ordered(shares.get(row["id"], []), "artist"),
            metrics[row["id"]][0] if row["id"] in metrics else None,
        )
        for row in rows
    ]


def count_requests(engine: Engine, up_to_seq: int | None = None) -> int:
    """Request rows in the log; with ``up_to_seq``, those at or before it (what a streaming read that reached it
    must have seen, whatever other writers appended since)."""
    src = log_source(engine)
    query = select(func.count()).select_from(src.requests)
    if up_to_seq is not None:
        query = query.where(src.requests.c.seq <= up_to_seq)
    with read_connection(engine) as connection:
        return int(connection.scalar(query) or 0)


_ID_ALPHABET = frozenset("0123456789abcdef-")  # a request id is a UUID in its canonical lowercase text


def ids_with_prefix(engine: Engine, prefix: str) -> tuple[int, str | None]:
    """How many request ids start with ``prefix``, and the least of them (one range scan of the ids' primary key
    index, LIKE keeping the prefix's: the range holds every id of the prefix in any collation, a trailing hyphen
    dropped and a digit 9 followed by 'a'); (0, None) for a prefix no UUID can start with."""
    stem = prefix.rstrip("-")
    if not stem or not set(prefix) <= _ID_ALPHABET:
        return 0, None
    last = stem[-1]
    bound = stem[:-1] + ("a" if last == "9" else chr(ord(last) + 1))
    ids = log_source(engine).requests.c.id
    query = select(func.count(), func.min(ids)).where(ids >= stem, ids < bound, ids.startswith(prefix))
    with read_connection(engine) as connection:
        count, least = connection.execute(query).one()
    return int(count), least


def neighbour_images(engine: Engine, request_id: str) -> dict[int, tuple[str, str]]:
    """rank -> (image path, sha256) that the catalogue (work_versions, outside the chain) now holds for the work
    version each neighbour of the request was attributed as (one query); the record pins the digest itself since
    revision 0015 (its neighbours' ``image_sha256``)."""
    images = log_source(engine).neighbour_images
    query = select(images.c.rank, images.c.image_path, images.c.image_sha256).where(images.c.request_id == request_id)
    with read_connection(engine) as connection:
        return {int(rank): (str(path), str(sha)) for rank, path, sha in connection.execute(query)}


# -- streaming the whole chain ---------------------------------------------------------------------------------
# Verifying and exporting read every record: block by block of seq, four queries a block (the requests, then the
# children of the block's requests, found by request_id in the index) through the DBAPI cursor (psycopg: in binary),
# the values converted by the columns' result processors (as load_requests reads them) but for the JSON columns, read
# as stored. Each table's rows are then written column by column into one template of its sorted keys: the text
# canonical_bytes gives, because each column's values are encoded by the function the JSON encoder calls for that type
# (str, int and float repr; a JSON column's stored text decoded and encoded by the encoder itself, once per distinct
# text), strictly (a value of another type raises). A block where that does not hold (such a value, NaN, infinity, or
# a negative zero, which the hash covers as 0.0) is encoded by canonical_content itself, record by record.
_ENCODE = canonical_encoder(default=_canonical_value)
_NULL = "null"
BLOCK = 1000  # records read per transaction
_LAST = 2**63 - 1  # no seq is higher
_ORPHAN_POLL_S = 0.5  # how often a worker checks that the process that started it is still there


class _Irregular(Exception):
    """A value that the column-wise encoding does not write as the JSON encoder does."""


class _Unreadable(Exception):
    """A value of a block that cannot be read or hashed; the message says which (its column where known) and why."""


def _unreadable(what: str, exc: BaseException) -> _Unreadable:
    return _Unreadable(f"{what} cannot be read ({type(exc).__name__}: {next(iter(str(exc).splitlines()), '')})")


_ColumnTexts = Callable[[Sequence[Sequence[Any]], Callable[[Sequence[Any]], Any]], list[str]]


def _typed(encode: Callable[[Any], str], irregular: frozenset[str]) -> _ColumnTexts:
    """The texts of one column of rows (its values taken by ``column``: no transposed copy of the rows)."""

    def texts(rows: Sequence[Sequence[Any]], column: Callable[[Sequence[Any]], Any]) -> list[str]:
        try:
            encoded = list(map(encode, map(column, rows)))
        except TypeError:  # a null (or a value of another type: raised again below)
            values = list(map(column, rows))
            if values.count(None) == len(values):  # (a column a block leaves empty: often)
                return [_NULL] * len(values)
            encoded = [_NULL if value is None else encode(value) for value in values]
        if irregular and not irregular.isdisjoint(encoded):
            raise _Irregular
        return encoded

    return texts


def _as_string(value: Any) -> str:
    return encode_basestring(_canonical_value(value))


_FLOAT_TEXTS = _typed(float.__repr__, frozenset({"nan", "inf", "-inf", "-0.0"}))  # JSON: NaN, Infinity
_INT_TEXTS = _typed(int.__repr__, frozenset())  # (of a bool too it writes digits; none is read from an integer)
_STR_TEXTS = _typed(encode_basestring, frozenset())
_CANONICAL_STR_TEXTS = _typed(_as_string, frozenset())  # a time as ISO UTC, bytes as "sha256:<hex>"
_SEEN_JSON: dict[Any, str] = {}  # a JSON column's stored text -> its canonical JSON
_SEEN_JSON_MAX = 4096  # distinct texts remembered (a log's requests repeat their parameters)


def _stored_json(stored: Any) -> Any:
    """The value of a JSON column's stored text (None for SQL NULL), as the column's type reads it."""
    return None if stored is None else json.loads(stored)


def _json_text(stored: Any) -> str:
    """The canonical JSON of a JSON column's stored text: each distinct text decoded and encoded once."""
    text = _SEEN_JSON.get(stored)
    if text is None:
        text = _ENCODE(_stored_json(stored))
        if len(_SEEN_JSON) >= _SEEN_JSON_MAX:
            _SEEN_JSON.clear()
        _SEEN_JSON[stored] = text
    return text


_JSON_TEXTS = _typed(_json_text, frozenset({"-0.0"}))  # keys sorted at every level; a bare -0.0 is hashed as 0.0


def _column_texts(kind: Any) -> _ColumnTexts:
    """The canonical JSON text of each of a column's values, by the column's type (JSON: read as its stored
    text)."""
    if isinstance(kind, Float):
        return _FLOAT_TEXTS
    if isinstance(kind, Integer):
        return _INT_TEXTS
    if isinstance(kind, String):
        return _STR_TEXTS
    if isinstance(kind, DateTime | LargeBinary):
        return _CANONICAL_STR_TEXTS
    return _JSON_TEXTS


class _Templates(dict[tuple[bool, ...], str]):
    """The template of a row, by which of the keys covered only when set are set: each of the others takes its value
    and writes nothing ("%.0s"), so that every template takes the whole row."""

    def __init__(self, prefixes: Sequence[str], covered: Sequence[int]) -> None:
        super().__init__()
        self.prefixes, self.covered = prefixes, covered

    def __missing__(self, mask: tuple[bool, ...]) -> str:
        left = {i for i, kept in zip(self.covered, mask, strict=True) if not kept}
        fields, written = [], 0
        for i, prefix in enumerate(self.prefixes):
            if i in left:
                fields.append("%.0s")
            else:
                fields.append(("," if written else "") + prefix.replace("%", "%%") + "%s")
                written += 1
        self[mask] = template = "{" + "".join(fields) + "}"
        return template


class _RowText:
    """The canonical JSON object of each row of a table, written column by column into one template (keys sorted;
    the keys covered only when set are left out where they are null)."""

    def __init__(self, columns: Sequence[tuple[int, str, Any]], table: Table) -> None:
        ordered = sorted(columns, key=itemgetter(1))  # (position in the row, canonical key, column type)
        self.encoders = [(itemgetter(position), _column_texts(kind)) for position, _, kind in ordered]
        prefixes = [encode_basestring(key) + ":" for _, key, _ in ordered]
        covered = _COVERED_WHEN_SET[table.name]
        self.covered = [i for i, (_, key, _) in enumerate(ordered) if key in covered]
        self.templates = _Templates(prefixes, self.covered)

    def texts(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        if not rows:
            return []
        encoded = [encode(rows, column) for column, encode in self.encoders]
        values = zip(*encoded, strict=True)
        nulls = [encoded[i].count(_NULL) for i in self.covered]
        if all(count in (0, len(rows)) for count in nulls):  # each set in every row or in none: one template
            return list(map(self.templates[tuple(count == 0 for count in nulls)].__mod__, values))
        masks = zip(*(map(_NULL.__ne__, encoded[i]) for i in self.covered), strict=True)  # which are set
        return list(map(mod, map(self.templates.__getitem__, masks), values))


def _child_text(table: Table) -> _RowText:
    return _RowText([(i, c.key, c.type) for i, c in enumerate(table.columns) if c.key not in _EXCLUDED], table)


_NEIGHBOURS_TEXT, _SHARES_TEXT = _child_text(_NEIGHBOURS), _child_text(_SHARES)


def _record_text(
    columns: dict[str, Any],
    neighbours: list[tuple[Any, ...]],
    shares: list[tuple[Any, ...]],
    metrics: dict[str, Any] | None,
) -> bytes | None:
    """The bytes a record being appended is hashed over (:func:`canonical_bytes` of it), its children's rows (their
    tables' columns, in order) written column by column; None where one of their values is not of its column's type
    or not written as JSON writes it (NaN, -0.0: :func:`canonical_bytes` is then to encode the record)."""
    try:
        near, parts = ",".join(_NEIGHBOURS_TEXT.texts(neighbours)), ",".join(_SHARES_TEXT.texts(shares))
    except (_Irregular, TypeError, ValueError):
        return None
    measured = b"null" if metrics is None else canonical_json(_canonical_row(metrics, _METRICS))
    request = canonical_json(_canonical_row(columns, _REQUESTS))
    return b"".join(
        (
            f'{{"artist_shares":[{parts}],"metrics":'.encode(),
            measured,
            f',"neighbours":[{near}],"request":'.encode(),
            request,
            b"}",
        )
    )


def _digest_of_view(digest: str | None) -> str | None:
    return None if digest is None else _DIGEST + digest


@dataclass(frozen=True)
class _Part:
    """A child table as streamed: its query (the rows of a block's requests: their request's id, on SQLite its seq,
    then the key a record's rows are ordered by, if it has several, then the other columns), the canonical keys of
    those columns (after the request's), and its rows' text."""

    statement: DriverStatement
    keys: tuple[str, ...]
    text: _RowText
    several: bool  # rows a record

    def rows(self, connection: Connection, cursor: Any, after: int, last: int) -> list[Any]:
        """The rows of the requests with ``after`` < seq <= ``last``, in no order."""
        return self.statement.rows(connection, cursor, after=after, last=last)

    def sort(self, rows: list[Any]) -> None:
        """Each record's rows together, as canonical_content orders them (in Python: its string order): as tuples,
        their first two values (the request's, the order key) being unique (the table's primary key)."""
        rows.sort()

    def joined(self, rows: list[Any]) -> dict[Any, str]:
        """The request's id or seq -> the record's rows as canonical JSON, comma-separated (of a table of one row a
        record: its first), from rows :meth:`sort` ordered."""
        pairs = groupby(zip(map(itemgetter(0), rows), self.text.texts(rows), strict=True), itemgetter(0))
        if not self.several:
            return {key: next(group)[1] for key, group in pairs}
        return {key: ",".join(map(itemgetter(1), group)) for key, group in pairs}

    def grouped(self, rows: list[Any]) -> dict[Any, list[dict[str, Any]]]:
        """The request's id or seq -> the record's rows as dicts (that left out), in any order."""
        grouped: dict[Any, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(dict(zip(self.keys, row[1:], strict=True)))
        return grouped


class _Reader:
    """The block queries of one source in one dialect."""

    json = tuple(c for c in _REQUESTS.columns if isinstance(c.type, JSON))  # (the children have none)

    def __init__(self, src: _Source, dialect: Dialect) -> None:
        requests, postgres = src.requests, dialect.name == "postgresql"
        renamed: dict[str, Callable[[Any], Any] | None] = {c.name: None for c in self.json}  # as stored
        if src.digested:
            renamed |= {f"{c.name}_sha256": _digest_of_view for c in _REQUESTS.columns if c.key in _BINARY}
        seq = requests.c.seq
        in_block = and_(seq > bindparam("after"), seq <= bindparam("last"))
        query = select(requests).where(in_block).order_by(seq)
        self.requests = DriverStatement(query.limit(bindparam("limit")), dialect, renamed)
        self.keys = tuple(c.key for c in _REQUESTS.columns)
        self.seq = self.keys.index("seq")
        self.group = self.keys.index("id" if postgres else "seq")  # what the children's rows name their request by
        self.postgres = postgres
        self.text = _RowText(
            [
                (i, c.key, String() if src.digested and c.key in _BINARY else c.type)
                for i, c in enumerate(_REQUESTS.columns)
                if c.key not in _EXCLUDED
            ],
            _REQUESTS,
        )

        def part(source: FromClause, table: Table, order: str | None) -> _Part:
            keys = tuple(c.key for c in table.columns if c.key not in _EXCLUDED and c.key != order)
            keys = (order, *keys) if order else keys
            columns = [source.c[key] for key in keys]
            if postgres:  # the block's ids as one array, each probed in the index (a join is planned as a scan of
                # the whole table once the planner has statistics; an IN (subquery) likewise)
                ids = select(func.array_agg(requests.c.id)).where(in_block).scalar_subquery()
                within = source.c.request_id == any_(cast(ids, ARRAY(String)))
                query = select(source.c.request_id, *columns).where(within)
            else:  # the block's requests by seq, each probing the child's index: its rows come in chain order
                joined = source.join(requests, requests.c.id == source.c.request_id)
                query = select(seq, *columns).select_from(joined).where(in_block)
            text = _RowText([(i, key, table.c[key].type) for i, key in enumerate(keys, start=1)], table)
            return _Part(DriverStatement(query, dialect), keys, text, order is not None)

        self.parts = (
            part(src.neighbours, _NEIGHBOURS, "rank"),
            part(src.artist_shares, _SHARES, "artist"),
            part(src.metrics, _METRICS, None),
        )

    def block(self, engine: Engine, after: int, limit: int, last: int = _LAST, keep: bool = True) -> list[ChainRecord]:
        """The records after seq ``after`` (at most ``limit``, none after seq ``last``) as chain records (their bytes
        kept if ``keep``). Where one holds a value that cannot be read or hashed (changed by hand), those before it
        (the block halved until it is the first), then UnreadableRecordError naming it."""
        try:
            return self._read(engine, after, limit, last, keep)
        except _Unreadable as exc:
            if limit > 1:
                return self.block(engine, after, limit // 2, last, keep)
            raise _unreadable_record(engine, after, str(exc)) from None

    def _read(self, engine: Engine, after: int, limit: int, last: int, keep: bool) -> list[ChainRecord]:
        """:meth:`block`, read in one transaction; _Unreadable at a value that cannot be read or hashed."""
        with read_connection(engine) as connection:
            connection.begin()  # SQLite: BEGIN (see database.py), so that the four reads see one snapshot
            cursor = self._cursor(connection)
            try:
                requests = self.requests.rows(connection, cursor, after=after, last=last, limit=limit)
                if not requests:
                    return []
                children = [part.rows(connection, cursor, after, requests[-1][self.seq]) for part in self.parts]
            except UnconvertibleValue as exc:  # a time that is not a time, JSON that is not JSON
                raise _unreadable(f"the value of {exc.column}", exc.cause) from None
            except DBAPIError as exc:  # the driver's error, as DriverStatement raises it
                if not is_undecodable(exc):
                    raise
                raise _unreadable("a stored value", exc.orig or exc) from None
            finally:
                cursor.close()
        try:
            canonical = self._texts(requests, children)
        except (_Irregular, TypeError, ValueError):
            canonical = self._stored(requests, children)
        seq, key, prev, own, at = (self.keys.index(k) for k in ("seq", "id", "prev_hash", "record_hash", "created_at"))
        return [
            ChainRecord.of(row[seq], row[key], row[prev], row[own], as_utc(row[at]), text, keep)
            for row, text in zip(requests, canonical, strict=True)
        ]

    def _cursor(self, connection: Connection) -> Any:
        """A DBAPI cursor of the connection; on PostgreSQL (psycopg) one that reads values in binary rather than
        parsing text, and JSON as its stored text."""
        if not self.postgres:
            return connection.connection.cursor()
        from psycopg.types.string import TextBinaryLoader, TextLoader

        cursor = connection.connection.cursor(binary=True)
        for loader in (TextLoader, TextBinaryLoader):
            cursor.adapters.register_loader("json", loader)
        return cursor

    def _texts(self, requests: list[Any], children: list[list[Any]]) -> list[bytes]:
        """Each record's canonical JSON, table by table and column by column."""
        for part, rows in zip(self.parts, children, strict=True):
            part.sort(rows)
        neighbours, shares, metrics = (part.joined(rows) for part, rows in zip(self.parts, children, strict=True))
        texts = []
        for row, request in zip(requests, self.text.texts(requests), strict=True):
            key = row[self.group]
            text = (
                f'{{"artist_shares":[{shares.get(key, "")}],"metrics":{metrics.get(key, _NULL)},'
                f'"neighbours":[{neighbours.get(key, "")}],"request":{request}}}'
            ).encode()
            texts.append(text)
        return texts

    def _stored(self, requests: list[Any], children: list[list[Any]]) -> list[bytes]:
        """Each record's canonical JSON by canonical_content, from its rows as dicts."""
        neighbours, shares, metrics = (part.grouped(rows) for part, rows in zip(self.parts, children, strict=True))
        texts = []
        for row in requests:
            key = row[self.group]
            measured = metrics.get(key)
            columns = dict(zip(self.keys, row, strict=True))
            for column in self.json:
                try:
                    columns[column.key] = _stored_json(columns[column.key])
                except (TypeError, ValueError) as exc:  # JSON that is not JSON (SQLite: written by hand)
                    raise _unreadable(f"the value of {_REQUESTS.name}.{column.name}", exc) from None
            record = StoredRequest(
                columns,
                neighbours.get(key, []),
                shares.get(key, []),
                measured[0] if measured else None,
            )
            try:
                texts.append(canonical_bytes(record))
            except (TypeError, ValueError) as exc:  # a value JSON cannot hold, a string UTF-8 cannot
                raise _unreadable("a value of the record", exc) from None
        return texts


def _unreadable_record(engine: Engine, after: int, problem: str) -> UnreadableRecordError:
    """The error for the record after seq ``after``, which holds a value that cannot be read (``problem``)."""
    requests = log_source(engine).requests.c
    query = select(requests.seq, requests.id).where(requests.seq > after).order_by(requests.seq).limit(1)
    with read_connection(engine) as connection:
        seq, key = connection.execute(query).one()
    return _changed_record(engine, seq, key, problem)


def _changed_record(engine: Engine, seq: int, key: str, problem: str) -> UnreadableRecordError:
    """The error for record ``seq`` (request ``key``), which holds a value written outside attribution-audit."""
    reason = f"{problem}: the row was changed outside attribution-audit; restore the record from a backup"
    return UnreadableRecordError(
        f"the audit database {display_url(str(engine.url))} cannot be read at seq {seq} (request {key}): {reason}, "
        "then run `attribution-audit audit verify`",
        seq,
        key,
        reason,
    )


# (SQLite orders text and bytes after every number)
_STRAY_KINDS: dict[type, str] = {str: "(text), not a whole number", bytes: "(bytes), not a whole number"}


def _stray_record(engine: Engine, seq: int) -> UnreadableRecordError | None:
    """The error for a record whose seq is not a number (SQLite keeps the text or bytes written by hand, and orders
    them after every number, out of the chain) or is a real number above every seq, placed at ``seq``, where the chain
    of numbered records stops; None when there is none."""
    requests = log_source(engine).requests.c
    query = select(requests.seq, requests.id).where(requests.seq > _LAST).order_by(requests.seq).limit(1)
    with read_connection(engine) as connection:
        stray = connection.execute(query).first()
    if stray is None:
        return None
    kind = _STRAY_KINDS.get(type(stray.seq), "(real), beyond the range of seqs")  # (a float above _LAST)
    return _changed_record(engine, seq, stray.id, f"its seq is stored as {stray.seq!r} {kind}")


def _placed(engine: Engine, records: Iterator[ChainRecord], after_seq: int) -> Iterator[ChainRecord]:
    """``records``; where the next seq is not the one expected (a gap, or the end of the log), first the error of a
    record whose seq is not a number (:func:`_stray_record`), if there is one."""
    expected = after_seq + 1
    for record in records:
        if record.seq != expected and (stray := _stray_record(engine, expected)):
            raise stray
        yield record
        expected = record.seq + 1
    if stray := _stray_record(engine, expected):
        raise stray


def iter_chain(
    engine: Engine, after_seq: int = 0, block: int | None = None, workers: int = 1, keep: bool = True
) -> Iterator[ChainRecord]:
    """Every record after ``after_seq`` in chain order with the bytes its hash covers (if ``keep``) and whether they
    match its hash, read ``block`` (default :data:`BLOCK`) records at a time (memory holds a few blocks whatever the
    length of the log).
    With ``workers`` > 1 the blocks up to the head found at the start are read, encoded and hashed by that many
    processes (:func:`_in_parallel`); whatever was appended since is read here, as with one. A record whose seq is
    not a number (SQLite, changed by hand) is UnreadableRecordError where the numbered records stop fitting."""
    return _placed(engine, _records(engine, after_seq, block or BLOCK, workers, keep), after_seq)


def _records(engine: Engine, after_seq: int, block: int, workers: int, keep: bool) -> Iterator[ChainRecord]:
    """:func:`iter_chain`'s records with a numbered seq."""
    reader = _Reader(log_source(engine), engine.dialect)
    last_seq = after_seq
    if workers > 1 and _forkable(engine):
        for records in _in_parallel(engine, reader, after_seq, block, workers, keep):
            last_seq = records[-1].seq
            yield from records
    while records := reader.block(engine, last_seq, block, keep=keep):
        last_seq = records[-1].seq
        yield from records
        del records  # the next block is read without this one still held


# The processes that read blocks: forked from this one (they inherit its engine, whose connections they leave to it,
# and its compiled queries), each with a connection of its own.
_WORKER: tuple[Engine, _Reader] | None = None


def _forkable(engine: Engine) -> bool:
    """Whether processes forked from this one can read the database: a fork is available, and the database is not
    an in-memory SQLite one (which only this process sees)."""
    in_memory = engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
    return "fork" in multiprocessing.get_all_start_methods() and not in_memory


def _start_worker(engine: Engine, reader: _Reader) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops the workers (no tracebacks)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    engine.dispose(close=False)  # the parent's pooled connections stay the parent's
    global _WORKER
    _WORKER = (engine, reader)


def _exit_when_orphaned(parent: int) -> None:
    """In a worker: end it once ``parent`` is gone (killed: out of memory, SIGKILL), which alone stops the workers;
    else they would wait for work forever, each holding its connection to the audit database."""
    while os.getppid() == parent:
        time.sleep(_ORPHAN_POLL_S)
    os._exit(1)


def _read_range(after: int, last: int, keep: bool) -> tuple[list[ChainRecord], UnreadableRecordError | None]:
    """In a worker: the records with ``after`` < seq <= ``last``; where one cannot be read, those before it and the
    error naming it (raised by the parent after it has checked them, as a read in the parent would)."""
    assert _WORKER is not None, "started by _start_worker"
    engine, reader = _WORKER
    records: list[ChainRecord] = []
    try:
        while after < last and (part := reader.block(engine, after, last - after, last, keep)):
            records += part
            after = part[-1].seq
    except UnreadableRecordError as exc:
        return records, exc
    return records, None


# PostgreSQL: the connections this user may still open (server, database and role limits); workers take at most
# half of them, each one connection (more workers than that would be refused: "too many clients").
_FREE_CONNECTIONS = text(
    """
    SELECT least(
        current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
            - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
        (SELECT nullif(datconnlimit, -1) FROM pg_database WHERE datname = current_database())
            - (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()),
        (SELECT nullif(rolconnlimit, -1) FROM pg_roles WHERE rolname = current_user)
            - (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user)
    )
    """
)


def _free_connections(connection: Connection) -> int | None:
    """:data:`_FREE_CONNECTIONS`; None on SQLite, or where this user may not read the server's activity."""
    if connection.dialect.name != "postgresql":
        return None
    try:
        return int(connection.scalar(_FREE_CONNECTIONS))  # (the last read of its transaction)
    except DBAPIError as exc:
        if is_permission_error(exc):
            return None
        raise


def _in_parallel(
    engine: Engine, reader: _Reader, after_seq: int, block: int, workers: int, keep: bool
) -> Iterator[list[ChainRecord]]:
    """The records after ``after_seq`` up to the highest seq at the start, in order, a non-empty block at a time:
    ranges of ``block`` seqs read by ``workers`` processes, at most two per worker in flight (bounded memory). A
    worker's error (the database down) is raised here as it would be read here; a worker killed, as a DatabaseError
    naming the database. Nothing where the log is short, or its seqs so sparse (a seq changed by hand) that most
    ranges would be empty, or PostgreSQL would refuse the workers' connections: then all is read here, block by
    block."""
    seq = log_source(engine).requests.c.seq
    with read_connection(engine) as connection:
        head, rows = connection.execute(select(func.max(seq), func.count()).where(seq > after_seq)).one()
        free = _free_connections(connection)
    if not isinstance(head, int) or head <= after_seq + block or head - after_seq > 2 * rows:
        return  # (no record, or a highest seq that SQLite keeps as text or a real: changed by hand, read here)
    workers = min(workers, -(-(head - after_seq) // block), workers if free is None else free // 2)
    if workers < 1:
        return
    starts = iter(range(after_seq, head, block))
    # Until the pool is shut down, no collection here or in a worker (forked now) traverses what is already there
    # (modules, the engine, the queries): far less work for each, and no copy of the pages the workers share. A freeze
    # already in place (the host's, or another read's) is left as it is.
    owns_freeze = gc.get_freeze_count() == 0
    if owns_freeze:
        gc.freeze()
    try:
        pool = ProcessPoolExecutor(
            workers,
            multiprocessing.get_context("fork"),
            initializer=_start_worker,
            initargs=(engine, reader),
        )
        try:
            pending: deque[Future[tuple[list[ChainRecord], UnreadableRecordError | None]]] = deque()
            while True:
                for start in islice(starts, 2 * workers - len(pending)):
                    pending.append(pool.submit(_read_range, start, min(start + block, head), keep))
                if not pending:
                    return
                records, unreadable = pending.popleft().result()
                if records:
                    yield records
                del records
                if unreadable is not None:
                    raise unreadable
        except BrokenProcessPool as exc:  # a worker killed (out of memory?): by .result(), or by .submit() after it
            raise DatabaseError(
                f"a process reading the audit database {display_url(str(engine.url))} stopped ({exc}); run the "
                "command again"
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if owns_freeze:
            gc.unfreeze()


def canonical_bytes(record: StoredRequest) -> bytes:
    """The bytes a record's hash covers (after its prev_hash)."""
    return canonical_json(canonical_content(record))


def verify_chain(engine: Engine, head: ChainReport | None = None, workers: int = 1) -> ChainReport:
    """Recompute every hash, streaming (by ``workers`` processes: :func:`iter_chain`); stop at the first row whose
    content, link or position does not match. From a verified ``head`` (ok, with its record count and hash), only its
    own record (still there, intact, with that hash) and the records appended after it are checked."""
    check = ChainCheck() if head is None else ChainCheck(head.checked, head.head_hash)
    if check.checked:  # read from the head's own record
        records = check.from_head(iter_chain(engine, after_seq=check.checked - 1, workers=workers, keep=False))
    else:
        records = iter_chain(engine, workers=workers, keep=False)
    for _record in check.accepted(records):
        pass
    report = check.report(count_requests(engine, check.checked))
    return report if head is not None else not_shorter(engine, report)


# -- remembered verifications ---------------------------------------------------------------------------------
_VERIFICATIONS = Base.metadata.tables[ChainVerification.__tablename__]


@dataclass(frozen=True)
class Verification:
    """A remembered full verification: its report and when it ran."""

    report: ChainReport
    verified_at: datetime


def remember_verification(engine: Engine, report: ChainReport) -> None:
    """Record a full verification (its report already checked against the earlier ones by :func:`not_shorter`, as
    :func:`verify_chain` and the export do); ReadOnlyError where this database user may only read (a read-only role)
    or the SQLite log is open read-only, DiskFullError where its disk is full."""
    row = {
        "verified_at": utcnow(),
        "ok": report.ok,
        "records": report.checked,
        "head_hash": report.head_hash,
        "broken_seq": report.broken_seq,
        "reason": report.reason,
    }
    try:
        with engine.begin() as connection:
            connection.execute(_VERIFICATIONS.insert(), row)
    except DBAPIError as exc:
        if is_disk_full(exc):
            raise disk_full_error(engine, exc) from None
        if is_read_only(exc) or is_permission_error(exc):
            raise read_only_error(engine, exc) from None
        raise DatabaseError(f"cannot remember the verification ({exc.orig}); the chain itself is unchanged") from exc


def not_shorter(engine: Engine, report: ChainReport) -> ChainReport:
    """A full verification's ``report``, failed where an earlier full verification that passed counted more records:
    the log's tail was cut since (a chain alone cannot show it; verifying it again must not make it look intact)."""
    v = _VERIFICATIONS.c
    query = select(v.records, v.verified_at).where(v.ok).order_by(v.records.desc()).limit(1)
    try:
        with reader(engine).connect() as connection:
            longest = connection.execute(query).first()
    except DBAPIError as exc:
        if is_permission_error(exc):  # a read-only role reads only the audit views
            return report
        raise
    if not report.ok or longest is None or longest.records <= report.checked:
        return report
    missing = longest.records - report.checked
    problem = (
        f"{missing} record(s) after seq {report.checked} are missing: the full verification of "
        f"{as_utc(longest.verified_at).isoformat()} counted {longest.records} (the log's tail was cut)"
    )
    return ChainReport(False, report.checked, report.head_hash, None, None, problem)


def last_verification(engine: Engine) -> Verification | None:
    """The latest remembered full verification; None when there is none, or this user may not read them (a
    read-only role reads only the audit views)."""
    v = _VERIFICATIONS.c
    query = select(_VERIFICATIONS).order_by(v.verified_at.desc(), v.id.desc()).limit(1)
    try:
        with reader(engine).connect() as connection:
            row = connection.execute(query).first()
    except DBAPIError as exc:
        if is_permission_error(exc):
            return None
        raise
    if row is None:
        return None
    report = ChainReport(row.ok, row.records, row.head_hash, None, row.broken_seq, row.reason)
    return Verification(report, row.verified_at)
