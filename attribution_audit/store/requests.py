"""The attribution requests of the audit log: append one (hash-chained), read them back as plain results, and the
batch recall checks appended after them. Every query on those tables lives here."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain as concatenated
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
from sqlalchemy import Engine, FromClause, Select, column, func, null, select, table

from attribution_audit.domain.chain import ChainRecord, ChainReport
from attribution_audit.domain.confidence import STORED_MODEL_PREFIX
from attribution_audit.domain.results import (
    Attribution,
    Neighbour,
    RequestDraft,
    as_utc,
    parse_space_versions,
    space_versions,
)
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.errors import DatabaseError, NotFoundError
from attribution_audit.store import chain
from attribution_audit.store.chain import StoredRequest
from attribution_audit.store.database import read_scope, session_scope, write_connection
from attribution_audit.store.models import (
    AttributionMetrics,
    AttributionRequest,
    RecallCheck,
)


@dataclass(frozen=True)
class RecordedQuery:
    """A logged request with the vectors it was made with (to replay it or check it exactly)."""

    attribution: Attribution
    vectors: QueryVectors


@dataclass(frozen=True)
class RecallResult:
    """A later exact check of one request."""

    request_id: str
    exact_method: str
    catalogue_version: str
    overlap_at_k: float


def _number(value: Any) -> float:
    """A stored number as a float; NaN for a value that is none (a row changed by hand: its record hash fails)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _optional(value: Any) -> float | None:
    return None if value is None else _number(value)


def to_attribution(
    record: StoredRequest, intact: bool | None = None, neighbours: list[Neighbour] | None = None
) -> Attribution:
    """The plain result of a stored request, marked ``intact=False`` when it no longer matches its record hash (a
    record changed by hand is still shown, with NaN for what is no longer a number, never a crash); ``intact``
    given: known (a record just written), not recomputed; ``neighbours`` given: the record's, known (those a record
    was just written from, when they are what it reads back as: :func:`_as_read`)."""
    r, m = record.columns, record.metrics or {}
    return Attribution(
        request_id=r["id"],
        seq=r["seq"],
        record_hash=r["record_hash"],
        created_at=as_utc(r["created_at"]),
        image=r["image_path"],
        image_sha256=r["image_sha256"],
        k=r["k"],
        neighbours=neighbours
        if neighbours is not None
        else [
            Neighbour(
                n["rank"],
                n["work_id"],
                n["catalogue"],
                n["artist"],
                _number(n["similarity"]),
                _number(n["distance"]),
                _number(n["share"]),
                n["canonical_artist"],
                n["work_version"],
                n.get("image_sha256"),
            )
            for n in sorted(record.neighbours, key=lambda n: n["rank"])
        ],
        artist_shares={
            str(s["artist"]): _number(s["share"])
            for s in sorted(record.artist_shares, key=lambda s: (-_number(s["share"]), str(s["artist"])))
        },
        entropy=_number(m.get("entropy")),
        nn_distance=_optional(m.get("nn_distance")),
        margin=_optional(m.get("margin")),
        top_artist=m.get("top_artist"),
        top_artist_share=_optional(m.get("top_artist_share")),
        overlap_at_k=_optional(m.get("overlap_at_k")),
        confidence=_number(m.get("confidence")),
        confidence_model=str(m.get("confidence_model")),
        embedder_fingerprint=r["embedder_fingerprint"],
        catalogue_version=r["catalogue_version"],
        index_params=r["index_params"],
        parameters=r["parameters"],
        requester=r["requester"],
        embedder_name=r["embedder_name"],
        store_kind=r["store_kind"],
        collection=r["collection"],
        prev_hash=r["prev_hash"],
        replay_of=r["replay_of"],
        evaluation_run_id=r.get("evaluation_run_id"),
        copy_of=m.get("copy_of"),
        copy_score=m.get("copy_score"),
        copy_status=m.get("copy_status"),
        copy_method=m.get("copy_method"),
        agreement=_optional(m.get("agreement")),
        agreement_spaces=_optional(m.get("agreement_spaces")),
        centroid_log_odds=_optional(m.get("centroid_log_odds")),
        centroid_log_odds_others=_optional(m.get("centroid_log_odds_others")),
        crop_log_odds=_optional(m.get("crop_log_odds")),
        other_space_versions=m.get("other_space_versions"),
        confidence_model_sha256=m.get("confidence_model_sha256"),
        one_colour=None if m.get("one_colour") is None else m["one_colour"] == 1,
        intact=chain.record_hash(record.prev_hash, record) == record.record_hash if intact is None else intact,
    )


def _float32_bytes(vectors: np.ndarray | None) -> bytes | None:
    """Vectors as the audit record keeps them: little-endian float32 bytes (None stays None)."""
    return None if vectors is None else np.asarray(vectors, dtype="<f4").tobytes()


def _recorded_query(request_id: str, content: object, style: object, crops: object) -> QueryVectors:
    """The query vectors a request recorded (float32 bytes; ``crops`` rows as :meth:`QueryVectors.crop_rows` wrote
    them, or None); one DatabaseError line for a value no request writes (changed by hand)."""

    def floats(name: str, raw: object) -> np.ndarray:
        if isinstance(raw, bytes | bytearray | memoryview) and len(raw) and not len(raw) % 4:
            return np.frombuffer(raw, dtype="<f4")
        raise DatabaseError(
            f"request {request_id} records {name} {_described(raw)}, which no request writes: the record was changed "
            "by hand; run `attribution-audit audit verify`"
        )

    query = QueryVectors(floats("query vector", content), None if style is None else floats("style vector", style))
    if crops is None:
        return query
    try:
        return query.with_crop_rows(floats("crop vectors", crops))
    except ValueError:
        raise DatabaseError(
            f"request {request_id} records crop vectors {_described(crops)}, which are no rows of its query's "
            "vectors: the record was changed by hand; run `attribution-audit audit verify`"
        ) from None


def _described(raw: object) -> str:
    size = len(raw) if isinstance(raw, bytes | bytearray | memoryview) else None
    return f"of {size} bytes" if size is not None else f"of type {type(raw).__name__}"


def _unverified() -> Select[Any]:
    """Requests that were not exact-checked when they ran and have no later recall check."""
    return (
        select(AttributionRequest)
        .join(AttributionMetrics, AttributionMetrics.request_id == AttributionRequest.id)
        .where(
            AttributionMetrics.overlap_at_k.is_(None),
            ~select(RecallCheck.id).where(RecallCheck.request_id == AttributionRequest.id).exists(),
        )
    )


_NEIGHBOUR_VALUES = attrgetter(*chain.NEIGHBOUR_VALUES)  # a Neighbour's fields are named as the table's columns
_RANK = attrgetter("rank")
_FLOATS = itemgetter(*(chain.NEIGHBOUR_VALUES.index(key) for key in ("similarity", "distance", "share")))
_AS_READ = frozenset({str, int, float, type(None)})


def _as_read(rows: list[tuple[Any, ...]]) -> bool:
    """Whether neighbours' values (of :data:`chain.NEIGHBOUR_VALUES`) are those :func:`to_attribution` reads their
    record's rows back as: plain str, int and None, and a float of each number (no numpy scalar, no bool)."""
    return frozenset(map(type, concatenated.from_iterable(rows))) <= _AS_READ and all(
        type(value) is float for value in concatenated.from_iterable(map(_FLOATS, rows))
    )


class RequestRepository:
    """Attribution requests and their recall checks."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writing ---------------------------------------------------------------------------------------------
    def record(self, draft: RequestDraft) -> Attribution:
        """Append the request to the audit chain and return it as committed, without reading it back: one transaction
        on one Core connection (the neighbours' work keys by their unique index, the chain head, the request, then
        its neighbours and artist shares as one executemany each, and its metrics: see chain.append_rows), the same
        statements whatever K. The neighbours go as tuples of their values, made once for the hash and the insert."""
        outcome = draft.outcome
        request = {
            "id": str(uuid.uuid4()),
            "requester": draft.requester,
            "image_path": draft.image,
            "image_sha256": draft.image_sha256,
            "query_vector": _float32_bytes(draft.content_vector),
            "style_vector": _float32_bytes(draft.style_vector),
            "crop_vectors": _float32_bytes(draft.crop_vectors),
            "embedder_name": draft.embedder_name,
            "embedder_fingerprint": draft.embedder_fingerprint,
            "store_kind": draft.store_kind,
            "collection": draft.collection,
            "catalogue_version": outcome.catalogue_version,
            "index_params": draft.index_params,
            "parameters": draft.parameters,
            "k": draft.k,
            "replay_of": draft.replay_of,
            "evaluation_run_id": draft.evaluation[0] if draft.evaluation else None,
            "labelled_query_id": draft.evaluation[1] if draft.evaluation else None,
        }
        neighbours = list(map(_NEIGHBOUR_VALUES, outcome.neighbours))
        shares = list(outcome.artist_shares.items())
        metrics = {
            "entropy": outcome.features["entropy"],
            "nn_distance": outcome.features["nn_distance"],
            "margin": outcome.features["margin"],
            "top_artist": outcome.top_artist,
            "top_artist_share": outcome.top_artist_share,
            "overlap_at_k": outcome.overlap_at_k,
            "exact_method": outcome.exact_method,
            "confidence": draft.confidence,
            "confidence_model": draft.confidence_model,
            "confidence_model_sha256": draft.confidence_model_sha256,
            "copy_of": outcome.copy_of,
            "copy_score": outcome.copy_score,
            "copy_status": outcome.copy_status,
            "copy_method": outcome.copy_method,
            "agreement": outcome.features.get("agreement"),
            "agreement_spaces": outcome.features.get("agreement_spaces"),
            "centroid_log_odds": outcome.features.get("centroid_log_odds"),
            "centroid_log_odds_others": outcome.features.get("centroid_log_odds_others"),
            "crop_log_odds": outcome.features.get("crop_log_odds"),
            "other_space_versions": None if outcome.other_versions is None else space_versions(outcome.other_versions),
            "one_colour": None if outcome.one_colour is None else int(outcome.one_colour),
        }
        with write_connection(self.engine) as connection:
            stored = chain.append_rows(connection, request, neighbours, shares, metrics)
        # hashed from the values just committed
        return to_attribution(stored, True, sorted(outcome.neighbours, key=_RANK) if _as_read(neighbours) else None)

    def add_recall_checks(self, results: Sequence[RecallResult]) -> None:
        """Append later exact checks (the requests themselves are never modified)."""
        with session_scope(self.engine) as session:
            session.add_all(
                RecallCheck(
                    request_id=r.request_id,
                    exact_method=r.exact_method,
                    catalogue_version=r.catalogue_version,
                    overlap_at_k=r.overlap_at_k,
                )
                for r in results
            )

    # -- reading ---------------------------------------------------------------------------------------------
    # Records are read as the chain stores them (through the audit views on PostgreSQL, so that a read-only role
    # can list, show and verify them); the query vectors, which only replays and recall checks need, from the
    # table (the owner's commands).
    def _load(self, request_id: str) -> StoredRequest:
        records = chain.load_requests(self.engine, ids=[request_id])
        if not records:
            raise NotFoundError(
                f"no attribution request {request_id!r} in the audit log; `attribution-audit audit list` shows ids"
            )
        return records[0]

    def _vectors(self, request_ids: Sequence[str], crops: bool = False) -> dict[str, QueryVectors]:
        """The recorded query vectors of the requests; with ``crops`` those of their crops too (a replay's)."""
        r = AttributionRequest
        columns = (r.id, r.query_vector, r.style_vector, r.crop_vectors if crops else null())
        with read_scope(self.engine) as session:
            rows = session.execute(select(*columns).where(r.id.in_(list(request_ids)))).all()
        return {request_id: _recorded_query(request_id, *vectors) for request_id, *vectors in rows}

    def with_prefix(self, prefix: str) -> tuple[int, str | None]:
        """How many request ids start with ``prefix`` (lowercase, as ids are spelt), and the least of them (one
        indexed query)."""
        return chain.ids_with_prefix(self.engine, prefix)

    def get(self, request_id: str) -> Attribution:
        """One request by id; NotFoundError if absent."""
        return to_attribution(self._load(request_id))

    def get_with_vectors(self, request_id: str) -> RecordedQuery:
        """One request and the query vectors it was made with."""
        record = self._load(request_id)
        return RecordedQuery(to_attribution(record), self._vectors([request_id], crops=True)[request_id])

    def intact(self, request_id: str) -> bool:
        """Whether the stored record still matches its own hash."""
        record = self._load(request_id)
        return chain.record_hash(record.prev_hash, record) == record.record_hash

    def latest(self, limit: int = 50, kind: str = "all") -> list[Attribution]:
        """The most recent requests of ``kind`` (all, production, evaluation or replay), newest first."""
        records = chain.load_requests(self.engine, limit=limit, newest_first=True, kind=kind)
        return [to_attribution(r) for r in records]

    def neighbour_images(self, request_id: str) -> dict[int, tuple[str, str]]:
        """rank -> (image path, sha256) the catalogue now holds for the work version each neighbour was attributed as
        (one query; not covered by the chain: the record's neighbours pin their digest since revision 0015)."""
        return chain.neighbour_images(self.engine, request_id)

    def unverified_embedders(self) -> list[tuple[str, str]]:
        """(embedder name, fingerprint) of every embedder with unverified requests."""
        query = (
            _unverified()
            .with_only_columns(AttributionRequest.embedder_name, AttributionRequest.embedder_fingerprint)
            .distinct()
        )
        with read_scope(self.engine) as session:
            return [(name, fingerprint) for name, fingerprint in session.execute(query)]

    def unverified_ids(self, collection: str) -> list[str]:
        """Ids of the collection's unverified requests, in chain order."""
        query = (
            _unverified()
            .with_only_columns(AttributionRequest.id)
            .where(AttributionRequest.collection == collection)
            .order_by(AttributionRequest.seq)
        )
        with read_scope(self.engine) as session:
            return list(session.scalars(query))

    def recorded_queries(self, request_ids: Sequence[str]) -> list[RecordedQuery]:
        """Requests with their query vectors, in the order given."""
        records = {r.id: r for r in chain.load_requests(self.engine, ids=request_ids)}
        vectors = self._vectors(list(records))
        return [
            RecordedQuery(to_attribution(records[i]), vectors[i]) for i in request_ids if i in records and i in vectors
        ]

    # -- the chain -------------------------------------------------------------------------------------------
    def verify_chain(self, head: ChainReport | None = None, workers: int = 1) -> ChainReport:
        """Recompute every hash of the log (streaming, by ``workers`` processes; from a verified ``head``, only what
        follows it); the first broken record, if any."""
        return chain.verify_chain(self.engine, head, workers)

    def remember_verification(self, report: ChainReport) -> None:
        """Remember a full verification (checked by :meth:`against_earlier`) for ``report summary``; ReadOnlyError
        where it cannot be written (this user may only read, the log is open read-only, its disk is full)."""
        chain.remember_verification(self.engine, report)

    def against_earlier(self, report: ChainReport) -> ChainReport:
        """A full verification's report, failed where an earlier one that passed counted more records (a cut tail)."""
        return chain.not_shorter(self.engine, report)

    def last_verification(self) -> chain.Verification | None:
        """The latest remembered full verification (None: none, or not readable by this user)."""
        return chain.last_verification(self.engine)

    def model_fingerprints(self) -> list[tuple[str, str, int]]:
        """(model name, fingerprint, records) of every stored confidence model's fingerprint the records hold (on
        PostgreSQL through the view v_audit_metrics, which a `db grant-reader` role may read too; records of a default
        formula name no stored model: a fingerprint in them was put there by hand, which the chain's hashes show)."""
        metrics = _readable(self.engine, AttributionMetrics, "confidence_model", "confidence_model_sha256")
        name, sha = metrics.c.confidence_model, metrics.c.confidence_model_sha256
        query = (
            select(name, sha, func.count())
            .where(sha.is_not(None), name.startswith(STORED_MODEL_PREFIX))
            .group_by(name, sha)
            .order_by(name, sha)
        )
        with read_scope(self.engine) as session:
            return [(str(name), str(digest), int(n)) for name, digest, n in session.execute(query)]

    def space_versions_named(self) -> dict[tuple[str, int], int]:
        """Every learned space version (name, version) the records name (a learned-space request's ``space_version``,
        the ``other_space_versions`` of its metrics) with how many records name it (on PostgreSQL through the views
        v_audit_requests and v_audit_metrics, which a `db grant-reader` role may read too)."""
        requests = _readable(self.engine, AttributionRequest, "parameters")
        metrics = _readable(self.engine, AttributionMetrics, "other_space_versions")
        params = requests.c.parameters
        recorded = select(
            params["space"].as_string().label("space"), params["space_version"].as_integer().label("version")
        ).subquery()
        own = (
            select(recorded.c.space, recorded.c.version, func.count())
            .where(recorded.c.version.is_not(None))
            .group_by(recorded.c.space, recorded.c.version)
        )
        others = metrics.c.other_space_versions
        read = select(others, func.count()).where(others.is_not(None), others != "").group_by(others)
        named: dict[tuple[str, int], int] = {}
        with read_scope(self.engine) as session:
            for name, version, n in session.execute(own):
                named[str(name), int(version)] = int(n)
            for text, n in session.execute(read):
                for key in parse_space_versions(str(text)).items():
                    named[key] = named.get(key, 0) + int(n)
        return named

    def count(self, up_to_seq: int | None = None) -> int:
        """How many request rows the log holds (with ``up_to_seq``: at or before it)."""
        return chain.count_requests(self.engine, up_to_seq)

    def chain_records(self, workers: int = 1) -> Iterator[ChainRecord]:
        """Every record in chain order, block by block (read by ``workers`` processes), with the bytes its hash
        covers."""
        return chain.iter_chain(self.engine, workers=workers)


_AUDIT_VIEWS = {AttributionRequest: "v_audit_requests", AttributionMetrics: "v_audit_metrics"}


def _readable(engine: Engine, model: type[AttributionRequest | AttributionMetrics], *columns: str) -> FromClause:
    """``model``'s table with these columns; on PostgreSQL its audit view, which a `db grant-reader` role may read
    too."""
    base: FromClause = model.__table__
    if engine.dialect.name != "postgresql":
        return base
    return table(_AUDIT_VIEWS[model], *(column(name, base.c[name].type) for name in columns))
