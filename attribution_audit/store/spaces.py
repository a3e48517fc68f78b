"""Learned spaces in the audit DB: every fit a new version (projection, fingerprint, validation scores)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select, tuple_

from attribution_audit.domain.confidence import LogisticModel
from attribution_audit.domain.params import DEFAULT_K
from attribution_audit.domain.projection import Projection
from attribution_audit.domain.results import as_utc
from attribution_audit.errors import DatabaseError
from attribution_audit.store.database import read_connection, read_scope, session_scope
from attribution_audit.store.evaluations import SPACE_FIT_SOURCE, CalibrationEvidence, calibration_row, model_name
from attribution_audit.store.models import CalibrationModel, LearnedSpaceVersion

ARTISTS = "artists"  # the key of a version's fitted artists in its validation


@dataclass(frozen=True)
class SpaceInfo:
    """One stored version of a learned space, without its matrices."""

    name: str
    version: int
    base: str
    method: str
    embedder_fingerprint: str
    collection: str
    input_dim: int
    dim: int
    fingerprint: str
    n_works: int
    n_artists: int
    validation: dict[str, Any]
    created_at: datetime

    @property
    def artists(self) -> tuple[str, ...] | None:
        """The (canonical) artists whose works the version was fitted on; None for a version stored before they were
        kept (``validation["artists"]``)."""
        found = self.validation.get(ARTISTS)
        return None if found is None else tuple(found)

    @property
    def fitted_k(self) -> int:
        """The K the version's own confidence model was fitted at (``spaces fit --k``; the default K when not
        recorded)."""
        return int(self.validation.get("confidence", {}).get("parameters", {}).get("k", DEFAULT_K))

    def fitted_artists(self, canonical: Mapping[str, str]) -> set[str] | None:
        """:attr:`artists` under their canonical names now (``canonical``: alias -> canonical name, after merges)."""
        return None if self.artists is None else {canonical.get(a, a) for a in self.artists}


@dataclass(frozen=True)
class SpaceConfidence:
    """A learned space's own confidence model, fitted by ``spaces fit`` on its held-out validation works: stored
    with the version as a calibration model (``logistic-v<N>``) whose evidence is ``evidence_sha256``."""

    model: LogisticModel
    evidence_sha256: str
    fit_metrics: dict[str, Any]


def _to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> np.ndarray:
    return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))


def _fingerprint(mean: bytes, matrix: bytes, validation: dict[str, Any]) -> str:
    """SHA-256 of the projection and, for a version that keeps them, of its fitted artists (they decide which artists
    get a centroid): the canonical JSON of their sorted list. A version stored without them keeps its old formula."""
    artists = validation.get(ARTISTS)
    kept = b"" if artists is None else json.dumps(sorted(artists), separators=(",", ":")).encode()
    return hashlib.sha256(mean + matrix + kept).hexdigest()


_MARKER = select(
    *(
        aggregate.scalar_subquery()
        for table in (LearnedSpaceVersion, CalibrationModel)
        for aggregate in (select(func.max(table.id)), select(func.count(table.id)))
    )
)


class SpaceRepository:
    """Learned space versions; a version is never changed once stored."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self,
        name: str,
        projection: Projection,
        *,
        base: str,
        method: str,
        embedder_fingerprint: str,
        collection: str,
        n_works: int,
        n_artists: int,
        validation: dict[str, Any],
        confidence: SpaceConfidence | None = None,
    ) -> SpaceInfo:
        """Store a fit as the next version of ``name`` (1 for a new name), with its own confidence model when given
        (in the same transaction): requests in that version use it unless a ``calibrate`` model was fitted there."""
        mean, matrix = _to_bytes(projection.mean), _to_bytes(projection.matrix)
        with session_scope(self.engine) as session:
            latest = session.scalar(
                select(func.max(LearnedSpaceVersion.version)).where(LearnedSpaceVersion.name == name)
            )
            version = (latest or 0) + 1
            if confidence is not None:
                parameters = {**confidence.fit_metrics["parameters"], "space": name, "space_version": version}
                evidence = CalibrationEvidence(
                    embedder_fingerprint=embedder_fingerprint,
                    labelled_path=f"{SPACE_FIT_SOURCE} {name} version {version}: held-out validation works",
                    labelled_sha256=confidence.evidence_sha256,
                    n_samples=confidence.fit_metrics["held_out_works"],
                    n_positive=confidence.fit_metrics["right"],
                    fit_metrics={**confidence.fit_metrics, "parameters": parameters, "source": SPACE_FIT_SOURCE},
                )
                model = calibration_row(confidence.model, evidence)
                session.add(model)
                session.flush()
                validation = {
                    **validation,
                    "confidence": {
                        **validation.get("confidence", {}),
                        "parameters": parameters,
                        "model": model_name(model),
                    },
                }
            row = LearnedSpaceVersion(
                name=name,
                version=version,
                base=base,
                method=method,
                embedder_fingerprint=embedder_fingerprint,
                collection=collection,
                input_dim=int(projection.matrix.shape[0]),
                dim=projection.dim,
                mean=mean,
                matrix=matrix,
                fingerprint=_fingerprint(mean, matrix, validation),
                n_works=n_works,
                n_artists=n_artists,
                validation=validation,
            )
            session.add(row)
            session.flush()
            return _info(row)

    def versions(self, embedder_fingerprint: str | None = None) -> list[SpaceInfo]:
        """Every stored version (of one embedder's spaces when given), by name then version."""
        query = select(LearnedSpaceVersion).order_by(LearnedSpaceVersion.name, LearnedSpaceVersion.version)
        if embedder_fingerprint is not None:
            query = query.where(LearnedSpaceVersion.embedder_fingerprint == embedder_fingerprint)
        with read_scope(self.engine) as session:
            return [_info(row) for row in session.scalars(query)]

    def marker(self) -> tuple[int | None, ...]:
        """What changes whenever a learned space version or a calibration model is stored (or one is removed): the
        highest id and the row count of each table, in one query over their primary keys. A reader keeps what it
        read of them while the marker stays the same."""
        with read_connection(self.engine) as connection:  # Core, no ORM session: a third of the time
            return tuple(connection.execute(_MARKER).one())

    def names(self, embedder_fingerprint: str, collection: str) -> list[tuple[str, str]]:
        """(name, base) of the learned spaces fitted on ``collection`` with this embedder, sorted."""
        query = (
            select(LearnedSpaceVersion.name, LearnedSpaceVersion.base)
            .where(
                LearnedSpaceVersion.embedder_fingerprint == embedder_fingerprint,
                LearnedSpaceVersion.collection == collection,
            )
            .distinct()
            .order_by(LearnedSpaceVersion.name)
        )
        with read_scope(self.engine) as session:
            return [(name, base) for name, base in session.execute(query)]

    def load(self, name: str, version: int | None = None) -> tuple[SpaceInfo, Projection] | None:
        """A version of ``name`` (the newest without ``version``) with its projection, checked against its fingerprint;
        None when absent."""
        query = select(LearnedSpaceVersion).where(LearnedSpaceVersion.name == name)
        query = (
            query.where(LearnedSpaceVersion.version == version)
            if version is not None
            else query.order_by(LearnedSpaceVersion.version.desc()).limit(1)
        )
        with read_scope(self.engine) as session:
            row = session.scalar(query)
            if row is None:
                return None
            mean, matrix = bytes(row.mean), bytes(row.matrix)
            if _fingerprint(mean, matrix, row.validation) != row.fingerprint:  # requests would answer otherwise
                raise DatabaseError(
                    f"learned space {row.name} version {row.version} in the audit database does not match its "
                    f"fingerprint {row.fingerprint[:12]}: its projection or fitted artists were changed outside "
                    "attribution-audit; restore the database from a backup or fit the space again"
                )
            return _info(row), Projection(_from_bytes(mean), _from_bytes(matrix))

    def unmatched(self, named: Collection[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """Of the versions ``named`` (name, version), in one query: those absent ("missing") and those whose row no
        longer matches its stored fingerprint ("changed")."""
        if not named:
            return {}
        query = select(LearnedSpaceVersion).where(
            tuple_(LearnedSpaceVersion.name, LearnedSpaceVersion.version).in_(list(named))
        )
        with read_scope(self.engine) as session:
            found = {
                (row.name, row.version): _fingerprint(bytes(row.mean), bytes(row.matrix), row.validation)
                == row.fingerprint
                for row in session.scalars(query)
            }
        return {key: "missing" if key not in found else "changed" for key in sorted(named) if not found.get(key, False)}


def _info(row: LearnedSpaceVersion) -> SpaceInfo:
    return SpaceInfo(
        name=row.name,
        version=row.version,
        base=row.base,
        method=row.method,
        embedder_fingerprint=row.embedder_fingerprint,
        collection=row.collection,
        input_dim=row.input_dim,
        dim=row.dim,
        fingerprint=row.fingerprint,
        n_works=row.n_works,
        n_artists=row.n_artists,
        validation=dict(row.validation),
        created_at=as_utc(row.created_at),
    )
