"""SQLAlchemy 2.0 models of the audit schema (migrations/ holds the matching Alembic history)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


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
    __tablename__ = "artists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Work(Base):
    __tablename__ = "works"
    __table_args__ = (UniqueConstraint("catalogue_id", "work_id", name="uq_works_catalogue_work"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    catalogue_id: Mapped[int] = mapped_column(ForeignKey("catalogues.id"), index=True)
    work_id: Mapped[str] = mapped_column(String(300))
    artist_id: Mapped[int] = mapped_column(ForeignKey("artists.id"), index=True)
    title: Mapped[str | None] = mapped_column(String(500))
    image_path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64))
    point_id: Mapped[str] = mapped_column(String(36), index=True)
    embedder_fingerprint: Mapped[str] = mapped_column(String(300))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    catalogue: Mapped[Catalogue] = relationship()
    artist: Mapped[Artist] = relationship()


class IngestionRun(Base):
    __tablename__ = "ingestion_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    catalogue_id: Mapped[int] = mapped_column(ForeignKey("catalogues.id"), index=True)
    manifest_path: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    embedder_fingerprint: Mapped[str] = mapped_column(String(300))
    requester: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    added: Mapped[int] = mapped_column(default=0)
    updated: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(20), default="running")


class AttributionRequest(Base):
    """One attribution: what was asked, with which model and index, and when."""

    __tablename__ = "attribution_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    requester: Mapped[str] = mapped_column(String(200))
    image_path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    embedder_name: Mapped[str] = mapped_column(String(300))
    embedder_fingerprint: Mapped[str] = mapped_column(String(300))
    store_kind: Mapped[str] = mapped_column(String(40))
    collection: Mapped[str] = mapped_column(String(200))
    index_params: Mapped[dict[str, Any]]
    k: Mapped[int] = mapped_column(Integer)

    neighbours: Mapped[list[AttributionNeighbour]] = relationship(
        order_by="AttributionNeighbour.rank", back_populates="request"
    )
    metrics: Mapped[AttributionMetrics | None] = relationship(back_populates="request")


class AttributionNeighbour(Base):
    """One ranked neighbour of a request, with the artist as recorded at the time."""

    __tablename__ = "attribution_neighbours"

    request_id: Mapped[str] = mapped_column(ForeignKey("attribution_requests.id"), primary_key=True)
    rank: Mapped[int] = mapped_column(primary_key=True)
    work_pk: Mapped[int | None] = mapped_column(ForeignKey("works.id"), index=True)
    catalogue: Mapped[str] = mapped_column(String(200))
    work_id: Mapped[str] = mapped_column(String(300))
    artist: Mapped[str] = mapped_column(String(300))
    similarity: Mapped[float] = mapped_column(Float)
    distance: Mapped[float] = mapped_column(Float)

    request: Mapped[AttributionRequest] = relationship(back_populates="neighbours")


class AttributionMetrics(Base):
    """The note's confidence indicators for one request."""

    __tablename__ = "attribution_metrics"

    request_id: Mapped[str] = mapped_column(ForeignKey("attribution_requests.id"), primary_key=True)
    entropy: Mapped[float] = mapped_column(Float)
    nn_distance: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)

    request: Mapped[AttributionRequest] = relationship(back_populates="metrics")
