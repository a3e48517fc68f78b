"""SQLAlchemy 2.0 models of the audit schema (migrations/ holds the matching Alembic history)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from attribution_audit.config import MAX_REQUESTER


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Catalogue(Base):
    __tablename__ = "catalogues"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artist(Base):
    """An artist as spelled in some manifest; ``canonical_id`` points to the artist it was merged into."""

    __tablename__ = "artists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), unique=True)
    canonical_id: Mapped[int | None] = mapped_column(ForeignKey("artists.id"), index=True)
    merged_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Work(Base):
    """A catalogued work: its current version, and whether it is withdrawn from new attributions."""

    __tablename__ = "works"
    __table_args__ = (
        UniqueConstraint("catalogue_id", "work_id", name="uq_works_catalogue_work"),
        Index("ix_works_catalogue_image", "catalogue_id", "image_sha256"),  # the same-image check of ingestion
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    catalogue_id: Mapped[int] = mapped_column(ForeignKey("catalogues.id"), index=True)
    work_id: Mapped[str] = mapped_column(String(300))
    artist_id: Mapped[int] = mapped_column(ForeignKey("artists.id"), index=True)
    title: Mapped[str | None] = mapped_column(String(500))
    image_path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    withdrawn_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    catalogue: Mapped[Catalogue] = relationship()
    artist: Mapped[Artist] = relationship()


class WorkVersion(Base):
    """Every image a work has had: a changed image creates a new version; old ones stay for old audit records."""

    __tablename__ = "work_versions"
    __table_args__ = (UniqueConstraint("work_pk", "version", name="uq_work_versions"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    work_pk: Mapped[int] = mapped_column(ForeignKey("works.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    image_path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64))
    ingestion_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingestion_runs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkEmbedding(Base):
    """Which version of a work is in which collection (one collection per embedder), under which point id."""

    __tablename__ = "work_embeddings"
    __table_args__ = (UniqueConstraint("work_pk", "collection", name="uq_work_embeddings"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    work_pk: Mapped[int] = mapped_column(ForeignKey("works.id"), index=True)
    collection: Mapped[str] = mapped_column(String(200), index=True)
    point_id: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[int] = mapped_column(Integer)
    image_sha256: Mapped[str] = mapped_column(String(64))
    embedder_fingerprint: Mapped[str] = mapped_column(String(300))
    spaces: Mapped[str] = mapped_column(String(40), default="content")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    vector_digest: Mapped[str | None] = mapped_column(String(64))  # sha256 of the vectors written (0007)


class IngestionRun(Base):
    __tablename__ = "ingestion_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    catalogue_id: Mapped[int] = mapped_column(ForeignKey("catalogues.id"), index=True)
    source_format: Mapped[str] = mapped_column(String(20), default="csv")
    manifest_path: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    collection: Mapped[str] = mapped_column(String(200))
    embedder_fingerprint: Mapped[str] = mapped_column(String(300))
    requester: Mapped[str] = mapped_column(String(MAX_REQUESTER))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    added: Mapped[int] = mapped_column(default=0)
    updated: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    withdrawn: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    failures_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="running")


class QuerySet(Base):
    """A named set of labelled generated images (e.g. imported from the Wang et al. 2023 layout)."""

    __tablename__ = "query_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source_path: Mapped[str] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LabelledQueryRecord(Base):
    """One labelled generated image: its true artist and, when known, the true inspiration works."""

    __tablename__ = "labelled_queries"
    __table_args__ = (UniqueConstraint("query_set_id", "path", name="uq_labelled_queries"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    query_set_id: Mapped[int] = mapped_column(ForeignKey("query_sets.id"), index=True)
    path: Mapped[str] = mapped_column(Text)
    artist: Mapped[str] = mapped_column(String(300))
    work_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    subset: Mapped[str | None] = mapped_column(String(100))


class AuditIdentity(Base):
    """The audit DB's identity: one random id written by migration 0007, never changed (checkpoints name it)."""

    __tablename__ = "audit_identity"

    identity: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AttributionRequest(Base):
    """One attribution: what was asked, with which model, index and parameters, and its place in the hash chain.

    Rows of this table and of its children are append-only (database triggers reject UPDATE and DELETE).
    ``record_hash`` is the SHA-256 of the canonical serialisation of the request with its neighbours, shares and
    metrics, chained to the previous request's hash (``prev_hash``) in ``seq`` order.
    """

    __tablename__ = "attribution_requests"
    __table_args__ = (CheckConstraint("seq >= 1", name="ck_attribution_requests_seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    requester: Mapped[str] = mapped_column(String(MAX_REQUESTER))
    image_path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    query_vector: Mapped[bytes] = mapped_column(LargeBinary)
    style_vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedder_name: Mapped[str] = mapped_column(String(300))
    embedder_fingerprint: Mapped[str] = mapped_column(String(300))
    store_kind: Mapped[str] = mapped_column(String(40))
    collection: Mapped[str] = mapped_column(String(200))
    catalogue_version: Mapped[str] = mapped_column(String(200))
    index_params: Mapped[dict[str, Any]]
    parameters: Mapped[dict[str, Any]]
    k: Mapped[int] = mapped_column(Integer)
    replay_of: Mapped[str | None] = mapped_column(String(36), index=True)
    evaluation_run_id: Mapped[int | None] = mapped_column(ForeignKey("evaluation_runs.id"), index=True)
    labelled_query_id: Mapped[int | None] = mapped_column(ForeignKey("labelled_queries.id"), index=True)
    crop_vectors: Mapped[bytes | None] = mapped_column(LargeBinary)  # migration 0022: the query's corner crops

    neighbours: Mapped[list[AttributionNeighbour]] = relationship(
        order_by="AttributionNeighbour.rank", back_populates="request"
    )
    artist_shares: Mapped[list[AttributionArtistShare]] = relationship(
        order_by="AttributionArtistShare.artist", back_populates="request"
    )
    metrics: Mapped[AttributionMetrics | None] = relationship(back_populates="request")


class AttributionNeighbour(Base):
    """One ranked neighbour of a request, with the artist as recorded at the time."""

    __tablename__ = "attribution_neighbours"

    request_id: Mapped[str] = mapped_column(ForeignKey("attribution_requests.id"), primary_key=True)
    rank: Mapped[int] = mapped_column(primary_key=True)
    work_pk: Mapped[int | None] = mapped_column(ForeignKey("works.id"))
    catalogue: Mapped[str] = mapped_column(String(200))
    work_id: Mapped[str] = mapped_column(String(300))
    work_version: Mapped[int | None] = mapped_column(Integer)
    artist: Mapped[str] = mapped_column(String(300))
    canonical_artist: Mapped[str] = mapped_column(String(300))
    similarity: Mapped[float] = mapped_column(Float)
    distance: Mapped[float] = mapped_column(Float)
    share: Mapped[float] = mapped_column(Float)
    # the sha256 of the image the work was attributed as (its vectors' payload); NULL in records before migration 0015
    image_sha256: Mapped[str | None] = mapped_column(String(64))

    request: Mapped[AttributionRequest] = relationship(back_populates="neighbours")


class AttributionArtistShare(Base):
    """An artist's part of a request: the sum of its neighbours' shares (they sum to 1 per request)."""

    __tablename__ = "attribution_artist_shares"

    request_id: Mapped[str] = mapped_column(ForeignKey("attribution_requests.id"), primary_key=True)
    artist: Mapped[str] = mapped_column(String(300), primary_key=True)
    share: Mapped[float] = mapped_column(Float)

    request: Mapped[AttributionRequest] = relationship(back_populates="artist_shares")


class AttributionMetrics(Base):
    """The note's confidence indicators for one request."""

    __tablename__ = "attribution_metrics"
    # a stored model's check before it scores (migration 0021): do records hold another fingerprint of it?
    __table_args__ = (Index("ix_attribution_metrics_model", "confidence_model", "confidence_model_sha256"),)

    request_id: Mapped[str] = mapped_column(ForeignKey("attribution_requests.id"), primary_key=True)
    entropy: Mapped[float] = mapped_column(Float)
    nn_distance: Mapped[float | None] = mapped_column(Float)
    margin: Mapped[float | None] = mapped_column(Float)
    top_artist: Mapped[str | None] = mapped_column(String(300))
    top_artist_share: Mapped[float | None] = mapped_column(Float)
    overlap_at_k: Mapped[float | None] = mapped_column(Float)
    exact_method: Mapped[str | None] = mapped_column(String(20))
    confidence: Mapped[float] = mapped_column(Float)
    confidence_model: Mapped[str] = mapped_column(String(100))
    copy_of: Mapped[str | None] = mapped_column(String(300))
    copy_score: Mapped[float | None] = mapped_column(Float)
    copy_status: Mapped[str | None] = mapped_column(Text)
    copy_method: Mapped[str | None] = mapped_column(String(40))
    agreement: Mapped[float | None] = mapped_column(Float)  # migration 0012
    agreement_spaces: Mapped[float | None] = mapped_column(Float)  # migration 0013
    centroid_log_odds: Mapped[float | None] = mapped_column(Float)  # migration 0016
    centroid_log_odds_others: Mapped[float | None] = mapped_column(Float)  # migration 0017
    other_space_versions: Mapped[str | None] = mapped_column(Text)  # migration 0018
    confidence_model_sha256: Mapped[str | None] = mapped_column(Text)  # migration 0019
    crop_log_odds: Mapped[float | None] = mapped_column(Float)  # migration 0022
    one_colour: Mapped[int | None] = mapped_column(Integer)  # migration 0024: 1 for an image of one colour

    request: Mapped[AttributionRequest] = relationship(back_populates="metrics")


class CalibrationModel(Base):
    """A logistic confidence model fitted by ``attribution-audit calibrate``; the newest one is used."""

    __tablename__ = "calibration_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    embedder_fingerprint: Mapped[str] = mapped_column(String(300))
    labelled_path: Mapped[str] = mapped_column(Text)
    labelled_sha256: Mapped[str] = mapped_column(String(64))
    features: Mapped[dict[str, Any]]
    n_samples: Mapped[int] = mapped_column(Integer)
    n_positive: Mapped[int] = mapped_column(Integer)
    fit_metrics: Mapped[dict[str, Any]]


class RecallCheck(Base):
    """A later exact check of a request that was not verified when it ran (``audit verify-recall``)."""

    __tablename__ = "recall_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("attribution_requests.id"), index=True)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    exact_method: Mapped[str] = mapped_column(String(20))
    catalogue_version: Mapped[str] = mapped_column(String(200))
    overlap_at_k: Mapped[float] = mapped_column(Float)


class ChainVerification(Base):
    """The outcome of one full verification of the hash chain (``audit verify``, ``audit export``): what ``report
    summary`` starts from instead of re-verifying the whole log. Not part of the chain: ``audit verify`` is the
    proof."""

    __tablename__ = "chain_verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    verified_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ok: Mapped[bool]
    records: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    broken_seq: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)


class EvaluationRun(Base):
    """One run of the note's experiments over a labelled query set (``attribution-audit evaluate run``)."""

    __tablename__ = "evaluation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="attribution")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    requester: Mapped[str] = mapped_column(String(MAX_REQUESTER))
    query_set_id: Mapped[int] = mapped_column(ForeignKey("query_sets.id"), index=True)
    embedder_name: Mapped[str] = mapped_column(String(300))
    collection: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20), default="running")


class EvaluationResult(Base):
    """Per labelled query of an evaluation run: its logged request and the HNSW-vs-exact measurement."""

    __tablename__ = "evaluation_results"
    __table_args__ = (UniqueConstraint("run_id", "labelled_query_id", name="uq_evaluation_results"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("evaluation_runs.id"), index=True)
    labelled_query_id: Mapped[int] = mapped_column(ForeignKey("labelled_queries.id"))
    request_id: Mapped[str | None] = mapped_column(ForeignKey("attribution_requests.id"))
    error: Mapped[str | None] = mapped_column(Text)
    hnsw_ms: Mapped[float | None] = mapped_column(Float)
    exact_ms: Mapped[float | None] = mapped_column(Float)
    hnsw_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    exact_ids: Mapped[list[str]] = mapped_column(JSON, default=list)


class NoiseNeighbours(Base):
    """Per labelled query and noise level of a noise run (level 0: the clean reference index): the ranked works
    ("catalogue/work_id") it was attributed."""

    __tablename__ = "noise_neighbours"
    __table_args__ = (UniqueConstraint("run_id", "labelled_query_id", "level", name="uq_noise_neighbours"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("evaluation_runs.id"), index=True)
    labelled_query_id: Mapped[int] = mapped_column(ForeignKey("labelled_queries.id"))
    level: Mapped[float] = mapped_column(Float)
    work_keys: Mapped[list[str]] = mapped_column(JSON)


class LearnedSpaceVersion(Base):
    """One fit of a learned space (``spaces fit``): its projection, fingerprint and validation scores; requests
    record the name and version they used, so a refit never changes what an old request replays with."""

    __tablename__ = "learned_spaces"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_learned_spaces_name_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    name: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    base: Mapped[str] = mapped_column(String(40))
    method: Mapped[str] = mapped_column(String(40))
    embedder_fingerprint: Mapped[str] = mapped_column(String(300))
    collection: Mapped[str] = mapped_column(String(200))
    input_dim: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    mean: Mapped[bytes] = mapped_column(LargeBinary)
    matrix: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprint: Mapped[str] = mapped_column(String(64))
    n_works: Mapped[int] = mapped_column(Integer)
    n_artists: Mapped[int] = mapped_column(Integer)
    validation: Mapped[dict[str, Any]]


class ApiKey(Base):
    """A key of the HTTP service: its name is recorded as the requester of every attribution made with it.

    Only the SHA-256 of the key is stored (a key is 256 random bits, so no slow hash is needed); ``role`` is
    ``writer`` (may attribute and read) or ``reader`` (may only read). A revoked key keeps its row (its name stays
    the requester of past attributions and is never reused) with ``revoked_at`` set; the service refuses it.
    """

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("role IN ('writer', 'reader')", name="ck_api_keys_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_REQUESTER), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)  # migration 0014
