"""The attribution requests of the audit log: append one (hash-chained), read them back as plain results, and the
batch recall checks appended after them. Every query on those tables lives here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from attribution_audit.domain.chain import ChainRecord, ChainReport
from attribution_audit.domain.results import Attribution, Neighbour, RequestDraft, as_utc
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.errors import NotFoundError
from attribution_audit.store import chain
from attribution_audit.store.database import read_scope, session_scope
from attribution_audit.store.models import (
    AttributionArtistShare,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
    Catalogue,
    RecallCheck,
    Work,
    WorkVersion,
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


def to_attribution(request: AttributionRequest) -> Attribution:
    """The plain result of a request row loaded with its children."""
    m = request.metrics
    assert m is not None, "every request is written with its metrics"
    return Attribution(
        request_id=request.id,
        seq=request.seq,
        record_hash=request.record_hash,
        created_at=as_utc(request.created_at),
        image=request.image_path,
        image_sha256=request.image_sha256,
        k=request.k,
        neighbours=[
            Neighbour(
                n.rank,
                n.work_id,
                n.catalogue,
                n.artist,
                n.similarity,
                n.distance,
                n.share,
                n.canonical_artist,
                n.work_version,
            )
            for n in sorted(request.neighbours, key=lambda n: n.rank)
        ],
        artist_shares={s.artist: s.share for s in sorted(request.artist_shares, key=lambda s: (-s.share, s.artist))},
        entropy=m.entropy,
        nn_distance=m.nn_distance,
        margin=m.margin,
        top_artist=m.top_artist,
        top_artist_share=m.top_artist_share,
        overlap_at_k=m.overlap_at_k,
        confidence=m.confidence,
        confidence_model=m.confidence_model,
        embedder_fingerprint=request.embedder_fingerprint,
        catalogue_version=request.catalogue_version,
        index_params=request.index_params,
        parameters=request.parameters,
        requester=request.requester,
        embedder_name=request.embedder_name,
        store_kind=request.store_kind,
        collection=request.collection,
        prev_hash=request.prev_hash,
        replay_of=request.replay_of,
    )


def _vector(raw: bytes | None) -> np.ndarray | None:
    return None if raw is None else np.frombuffer(raw, dtype="<f4")


def _query_vectors(request: AttributionRequest) -> QueryVectors:
    content = _vector(request.query_vector)
    assert content is not None
    return QueryVectors(content, _vector(request.style_vector))


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


class RequestRepository:
    """Attribution requests and their recall checks."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writing ---------------------------------------------------------------------------------------------
    def record(self, draft: RequestDraft) -> Attribution:
        """Append the request to the audit chain (one transaction) and return it as committed."""
        outcome = draft.outcome
        with session_scope(self.engine) as session:  # a database that is down gives a one-line error
            work_pks = self._work_pks(session, outcome.neighbours)
        request = AttributionRequest(
            id=str(uuid.uuid4()),
            requester=draft.requester,
            image_path=draft.image,
            image_sha256=draft.image_sha256,
            query_vector=np.asarray(draft.content_vector, dtype="<f4").tobytes(),
            style_vector=None if draft.style_vector is None else np.asarray(draft.style_vector, dtype="<f4").tobytes(),
            embedder_name=draft.embedder_name,
            embedder_fingerprint=draft.embedder_fingerprint,
            store_kind=draft.store_kind,
            collection=draft.collection,
            catalogue_version=outcome.catalogue_version,
            index_params=draft.index_params,
            parameters=draft.parameters,
            k=draft.k,
            replay_of=draft.replay_of,
            evaluation_run_id=draft.evaluation[0] if draft.evaluation else None,
            labelled_query_id=draft.evaluation[1] if draft.evaluation else None,
        )
        request.neighbours = [
            AttributionNeighbour(
                rank=n.rank,
                work_pk=work_pks.get((n.catalogue, n.work_id)),
                catalogue=n.catalogue,
                work_id=n.work_id,
                work_version=n.work_version,
                artist=n.artist,
                canonical_artist=n.canonical_artist,
                similarity=n.similarity,
                distance=n.distance,
                share=n.share,
            )
            for n in outcome.neighbours
        ]
        request.artist_shares = [AttributionArtistShare(artist=a, share=s) for a, s in outcome.artist_shares.items()]
        request.metrics = AttributionMetrics(
            entropy=outcome.features["entropy"],
            nn_distance=outcome.features["nn_distance"],
            margin=outcome.features["margin"],
            top_artist=outcome.top_artist,
            top_artist_share=outcome.top_artist_share,
            overlap_at_k=outcome.overlap_at_k,
            exact_method=outcome.exact_method,
            confidence=draft.confidence,
            confidence_model=draft.confidence_model,
        )
        return to_attribution(chain.append(self.engine, request))

    @staticmethod
    def _work_pks(session: Session, neighbours: Sequence[Neighbour]) -> dict[tuple[str, str], int]:
        """Audit-DB primary keys of the neighbour works, keyed by (catalogue, work_id), through the
        (catalogue, work_id) unique index."""
        if not neighbours:
            return {}
        rows = session.execute(
            select(Catalogue.name, Work.work_id, Work.id)
            .join(Catalogue, Work.catalogue_id == Catalogue.id)
            .where(
                Catalogue.name.in_({n.catalogue for n in neighbours}),
                Work.work_id.in_({n.work_id for n in neighbours}),
            )
        )
        return {(cat, wid): pk for cat, wid, pk in rows}

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
    def _load(self, request_id: str) -> AttributionRequest:
        with read_scope(self.engine) as session:
            request = session.scalar(chain.select_requests().where(AttributionRequest.id == request_id))
        if request is None:
            raise NotFoundError(
                f"no attribution request {request_id!r} in the audit log; `attribution-audit audit list` shows ids"
            )
        return request

    def get(self, request_id: str) -> Attribution:
        """One request by id; NotFoundError if absent."""
        return to_attribution(self._load(request_id))

    def get_with_vectors(self, request_id: str) -> RecordedQuery:
        """One request and the query vectors it was made with."""
        request = self._load(request_id)
        return RecordedQuery(to_attribution(request), _query_vectors(request))

    def intact(self, request_id: str) -> bool:
        """Whether the stored record still matches its own hash."""
        request = self._load(request_id)
        return chain.record_hash(request.prev_hash, request) == request.record_hash

    def latest(self, limit: int = 50) -> list[Attribution]:
        """The most recent requests, newest first."""
        with read_scope(self.engine) as session:
            rows = session.scalars(chain.select_requests().order_by(AttributionRequest.seq.desc()).limit(limit))
            return [to_attribution(r) for r in rows]

    def neighbour_images(self, request_id: str) -> dict[int, str]:
        """rank -> image path of the work version each neighbour was attributed as (one query)."""
        query = (
            select(AttributionNeighbour.rank, WorkVersion.image_path, Work.image_path)
            .join(Work, Work.id == AttributionNeighbour.work_pk)
            .outerjoin(
                WorkVersion,
                (WorkVersion.work_pk == AttributionNeighbour.work_pk)
                & (WorkVersion.version == AttributionNeighbour.work_version),
            )
            .where(AttributionNeighbour.request_id == request_id)
        )
        with read_scope(self.engine) as session:
            return {rank: version or current for rank, version, current in session.execute(query)}

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
        """Requests with their query vectors, in the order given (one query)."""
        with read_scope(self.engine) as session:
            rows = {
                r.id: r
                for r in session.scalars(chain.select_requests().where(AttributionRequest.id.in_(list(request_ids))))
            }
        return [RecordedQuery(to_attribution(rows[i]), _query_vectors(rows[i])) for i in request_ids if i in rows]

    # -- the chain -------------------------------------------------------------------------------------------
    def verify_chain(self) -> ChainReport:
        """Recompute every hash of the log; the first broken record, if any."""
        return chain.verify_chain(self.engine)

    def chain_records(self) -> Iterator[ChainRecord]:
        """Every record in chain order, page by page, with what its hash covers."""
        for request in chain.iter_chain(self.engine):
            yield ChainRecord(
                request.seq,
                request.id,
                request.prev_hash,
                request.record_hash,
                as_utc(request.created_at),
                chain.canonical_content(request),
            )
