"""Labelled query sets, evaluation runs with their per-query results, and calibration models in the audit database.
Every query on those tables lives here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from attribution_audit.domain.confidence import FEATURES, LOGGED_INDICATORS, STORED_MODEL_PREFIX, LogisticModel
from attribution_audit.domain.params import DEFAULT_K
from attribution_audit.domain.results import as_utc
from attribution_audit.errors import ConflictError, DatabaseError, ManifestError, NotFoundError
from attribution_audit.store import runs
from attribution_audit.store.database import read_scope, session_scope
from attribution_audit.store.models import (
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
    CalibrationModel,
    EvaluationResult,
    EvaluationRun,
    LabelledQueryRecord,
    LearnedSpaceVersion,
    NoiseNeighbours,
    QuerySet,
    utcnow,
)

NEIGHBOUR_PAGE = 500
TABLE = EvaluationRun.__tablename__


class LabelledLike(Protocol):
    """A labelled query as read from a file: its image, true artist, true works and subset."""

    @property
    def path(self) -> Any: ...
    @property
    def artist(self) -> str: ...
    @property
    def work_ids(self) -> tuple[str, ...]: ...
    @property
    def subset(self) -> str | None: ...


@dataclass(frozen=True)
class StoredQuery:
    """A labelled query as stored in a query set."""

    id: int
    path: str
    artist: str
    work_ids: tuple[str, ...]
    subset: str | None


@dataclass(frozen=True)
class QueryResult:
    """One labelled query's result in an evaluation run: its logged request, or why it failed, and HNSW vs exact."""

    labelled_query_id: int
    request_id: str | None = None
    error: str | None = None
    hnsw_ms: float | None = None
    exact_ms: float | None = None
    hnsw_ids: list[str] = field(default_factory=list)
    exact_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoggedResult:
    """A successful result of a run with its query's labels and the logged neighbours (rank order)."""

    query: StoredQuery
    result: QueryResult
    artists: list[str]
    work_ids: list[str]
    similarities: list[float]
    top_artist: str | None = None  # the request's reported artist (under the ``centroid`` rule, K-independent)
    recorded_k: int | None = None  # the request's K
    logged: dict[str, float | None] = field(default_factory=dict)  # its indicators of LOGGED_INDICATORS


@dataclass(frozen=True)
class RunInfo:
    id: int
    kind: str
    status: str
    created_at: datetime
    embedder_name: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class CalibrationEvidence:
    """What a confidence model was fitted on, stored with it: the embedder, the labelled queries (their path and
    ``labelled_sha256``, which fingerprints them), how many samples and how many right, and the fit's scores."""

    embedder_fingerprint: str
    labelled_path: str
    labelled_sha256: str
    n_samples: int
    n_positive: int
    fit_metrics: dict[str, Any]


SPACE_FIT_SOURCE = "spaces fit"  # the source of a learned space version's own confidence model


@dataclass(frozen=True)
class OffParameters:
    """Records a stored model scored at parameters it is not stored for: ``recorded`` (``space``, ``space_version``,
    ``top``, and ``k`` for a learned space version's own model) differ from ``stored``, its row's; ``records`` of
    them, the first at ``first_seq`` (request ``first_request``). ``stored`` is None with ``problem`` where the row's
    parameters are no JSON object (changed by hand)."""

    model: str
    stored: dict[str, Any] | None
    recorded: dict[str, Any]
    records: int
    first_seq: int
    first_request: str
    problem: str | None = None


class EvaluationRepository:
    """Query sets, evaluation runs and results, calibration models."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- labelled query sets ---------------------------------------------------------------------------------
    def find_query_set(self, name: str) -> int | None:
        with read_scope(self.engine) as session:
            return session.scalar(select(QuerySet.id).where(QuerySet.name == name))

    def import_query_set(self, name: str, source_path: str, sha256: str, queries: Sequence[LabelledLike]) -> int:
        """The id of query set ``name``, imported from ``source_path`` if new; ManifestError when a set of that name
        came from other content (past runs keep their labels)."""
        with session_scope(self.engine) as session:
            query_set = session.scalar(select(QuerySet).where(QuerySet.name == name))
            if query_set is not None:
                if (query_set.source_path, query_set.source_sha256) != (source_path, sha256):
                    edited = " with other content" if query_set.source_sha256 != sha256 else ""
                    raise ManifestError(
                        f"{source_path}: query set {name!r} was imported from {query_set.source_path}{edited}; past "
                        f"runs keep their labels: give {name!r} instead of the file to reuse that set, or rename the "
                        "file (evaluate run: --name) to import it as a new set"
                    )
                return query_set.id
            query_set = QuerySet(name=name, source_path=source_path, source_sha256=sha256)
            session.add(query_set)
            session.flush()
            session.add_all(_labelled_rows(query_set.id, queries))
            return query_set.id

    def add_labelled_queries(self, name: str, source_path: str, queries: Sequence[LabelledLike]) -> int:
        """Add the queries not yet in set ``name`` (created if new); the set's size after."""
        with session_scope(self.engine) as session:
            query_set = session.scalar(select(QuerySet).where(QuerySet.name == name))
            if query_set is None:
                query_set = QuerySet(name=name, source_path=source_path)
                session.add(query_set)
                session.flush()
            paths = select(LabelledQueryRecord.path).where(LabelledQueryRecord.query_set_id == query_set.id)
            known = set(session.scalars(paths))
            new = [q for q in queries if str(q.path) not in known]
            session.add_all(_labelled_rows(query_set.id, new))
            return len(known) + len(new)

    def queries(self, query_set_id: int) -> list[StoredQuery]:
        """The set's queries in the order they were stored."""
        query = (
            select(LabelledQueryRecord)
            .where(LabelledQueryRecord.query_set_id == query_set_id)
            .order_by(LabelledQueryRecord.id)
        )
        with read_scope(self.engine) as session:
            return [_stored(q) for q in session.scalars(query)]

    # -- runs ------------------------------------------------------------------------------------------------
    def start_run(
        self,
        *,
        kind: str,
        requester: str,
        query_set_id: int,
        embedder_name: str,
        collection: str,
        settings: dict[str, Any],
        metrics: dict[str, Any] | None = None,
    ) -> int:
        """A new run (``running``, its lease held by this process until :meth:`finish_run`, the runs of killed
        processes marked ``interrupted`` first; ``completed`` at once when its metrics are given)."""
        runs.sweep(self.engine, TABLE)
        with session_scope(self.engine) as session:
            run = EvaluationRun(
                kind=kind,
                requester=requester,
                query_set_id=query_set_id,
                embedder_name=embedder_name,
                collection=collection,
                settings=settings,
            )
            if metrics is not None:
                run.status, run.finished_at = "completed", utcnow()
            session.add(run)
            session.flush()
            if metrics is not None:
                run.metrics = {**metrics, "run_id": run.id}
            else:
                runs.hold(self.engine, TABLE, run.id)
            return run.id

    def add_results(self, run_id: int, results: Sequence[QueryResult]) -> None:
        with session_scope(self.engine) as session:
            session.add_all(
                EvaluationResult(
                    run_id=run_id,
                    labelled_query_id=r.labelled_query_id,
                    request_id=r.request_id,
                    error=r.error,
                    hnsw_ms=r.hnsw_ms,
                    exact_ms=r.exact_ms,
                    hnsw_ids=r.hnsw_ids,
                    exact_ids=r.exact_ids,
                )
                for r in results
            )

    def finish_run(self, run_id: int, metrics: dict[str, Any]) -> None:
        with session_scope(self.engine) as session:
            run = session.get_one(EvaluationRun, run_id)
            run.metrics, run.status, run.finished_at = metrics, "completed", utcnow()
        runs.release(self.engine, TABLE, run_id)

    def fail_run(self, run_id: int, reason: str) -> None:
        """Record that the run stopped without results (status ``failed``, the reason in its metrics)."""
        with session_scope(self.engine) as session:
            run = session.get_one(EvaluationRun, run_id)
            run.metrics, run.status, run.finished_at = {"run_id": run_id, "error": reason}, "failed", utcnow()
        runs.release(self.engine, TABLE, run_id)

    def run(self, run_id: int, kind: str | None = "attribution") -> RunInfo:
        """A run of that kind (of any kind when None); NotFoundError otherwise."""
        with read_scope(self.engine) as session:
            run = session.get(EvaluationRun, run_id)
            if run is None or kind not in (None, run.kind):
                raise NotFoundError(f"no evaluation run {run_id}; `attribution-audit evaluate list` shows the runs")
            return _run_info(run)

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first, once the runs of killed processes are marked ``interrupted``."""
        shown = runs.sweep(self.engine, TABLE)
        with read_scope(self.engine) as session:
            return [
                _run_info(r, shown.get(r.id)) for r in session.scalars(select(EvaluationRun).order_by(EvaluationRun.id))
            ]

    def logged_results(self, run_id: int) -> list[LoggedResult]:
        """The run's successful results with their labels and logged neighbours, in query order."""
        with read_scope(self.engine) as session:
            rows = session.execute(
                select(
                    EvaluationResult,
                    LabelledQueryRecord,
                    AttributionMetrics.top_artist,
                    AttributionRequest.k,
                    *(getattr(AttributionMetrics, name) for name in LOGGED_INDICATORS),
                )
                .join(LabelledQueryRecord, LabelledQueryRecord.id == EvaluationResult.labelled_query_id)
                .outerjoin(AttributionRequest, AttributionRequest.id == EvaluationResult.request_id)
                .outerjoin(AttributionMetrics, AttributionMetrics.request_id == EvaluationResult.request_id)
                .where(EvaluationResult.run_id == run_id, EvaluationResult.request_id.is_not(None))
                .order_by(LabelledQueryRecord.id)
            ).all()
            neighbours: dict[str, list[AttributionNeighbour]] = {}
            request_ids = [row[0].request_id for row in rows]
            for start in range(0, len(request_ids), NEIGHBOUR_PAGE):
                for n in session.scalars(
                    select(AttributionNeighbour)
                    .where(AttributionNeighbour.request_id.in_(request_ids[start : start + NEIGHBOUR_PAGE]))
                    .order_by(AttributionNeighbour.request_id, AttributionNeighbour.rank)
                ):
                    neighbours.setdefault(n.request_id, []).append(n)
        logged = []
        for result, query, top, recorded_k, *indicators in rows:
            ranked = neighbours.get(result.request_id or "", [])
            logged.append(
                LoggedResult(
                    query=_stored(query),
                    result=QueryResult(
                        labelled_query_id=query.id,
                        request_id=result.request_id,
                        hnsw_ms=result.hnsw_ms,
                        exact_ms=result.exact_ms,
                        hnsw_ids=list(result.hnsw_ids or []),
                        exact_ids=list(result.exact_ids or []),
                    ),
                    artists=[n.canonical_artist for n in ranked],
                    work_ids=[n.work_id for n in ranked],
                    similarities=[n.similarity for n in ranked],
                    top_artist=top,
                    recorded_k=recorded_k,
                    logged=dict(zip(LOGGED_INDICATORS, indicators, strict=True)),
                )
            )
        return logged

    def add_noise_neighbours(self, run_id: int, rows: Sequence[tuple[int, float, list[str]]]) -> None:
        """Per (labelled query id, noise level, ranked work keys) of a noise run; level 0 is the clean index."""
        with session_scope(self.engine) as session:
            session.add_all(
                NoiseNeighbours(run_id=run_id, labelled_query_id=q, level=level, work_keys=keys)
                for q, level, keys in rows
            )

    def noise_neighbours(self, run_id: int) -> dict[float, dict[int, list[str]]]:
        """A noise run's ranked work keys: level -> labelled query id -> keys."""
        query = select(NoiseNeighbours).where(NoiseNeighbours.run_id == run_id).order_by(NoiseNeighbours.id)
        by_level: dict[float, dict[int, list[str]]] = {}
        with read_scope(self.engine) as session:
            for row in session.scalars(query):
                by_level.setdefault(row.level, {})[row.labelled_query_id] = list(row.work_keys)
        return by_level

    # -- calibration models ----------------------------------------------------------------------------------
    def add_calibration(self, model: LogisticModel, evidence: CalibrationEvidence) -> str:
        """Store a fitted model; its name (``logistic-v<N>``), recorded by every later request that uses it."""
        with session_scope(self.engine) as session:
            row = calibration_row(model, evidence)
            session.add(row)
            session.flush()
            return model_name(row)

    def latest_calibration(
        self,
        embedder_fingerprint: str,
        space: str = "content",
        space_version: int | None = None,
        top: str = "share",
        k: int | None = None,
    ) -> LogisticModel | None:
        """The newest calibration for this embedder fitted in ``space`` (a learned space: in that version) under the
        top-artist rule ``top`` by ``calibrate``, else the learned space version's own (``spaces fit``) when it was
        fitted at K = ``k`` (at any K when None), if any; a model stored without its parameters counts as fitted in
        the content space, one without a rule under ``share`` (the only rule before ``top`` was recorded)."""
        own = None
        for row, fitted, source in self._calibrations(embedder_fingerprint):
            if fitted != (space, space_version, top):
                continue
            if source != SPACE_FIT_SOURCE:
                return self.unchanged(_model(row))
            if own is None and (k is None or _fitted_k(row) == k):
                own = _model(row)
        return None if own is None else self.unchanged(own)

    def unchanged(self, model: LogisticModel) -> LogisticModel:
        """``model``, to score with; ConflictError where records it scored hold another fingerprint of it (its
        row was changed by hand since, which `audit verify` names): one lookup of ``ix_attribution_metrics_model``."""
        sha = AttributionMetrics.confidence_model_sha256
        query = (
            select(sha)
            .where(AttributionMetrics.confidence_model == model.name, sha.is_not(None), sha != model.fingerprint())
            .limit(1)
        )
        with read_scope(self.engine) as session:
            held = session.scalar(query)
        if held is not None:
            raise ConflictError(
                f"confidence model {model.name} no longer matches the fingerprint {held[:12]} that requests it scored "
                "hold (its stored row was changed since): it scores no more requests; run `attribution-audit audit "
                "verify`, and restore the audit DB from a backup"
            )
        return model

    def off_parameters(self) -> list[OffParameters]:
        """Where records a stored model scored (those holding its fingerprint, revision 0019; not replays, scored by
        their original's model) were attributed at other parameters than its row says it scores (space, space
        version, top rule; K for a learned space version's own model: what :meth:`latest_calibration` selects by):
        its row's ``fit_metrics.parameters`` were changed after them. One grouped pass over the records; then each
        model's row read once."""
        params = AttributionRequest.parameters
        scored = (
            select(
                AttributionMetrics.confidence_model.label("model"),
                params["space"].as_string().label("space"),
                params["space_version"].as_integer().label("space_version"),
                params["top"].as_string().label("top"),
                params["k"].as_integer().label("k"),
                AttributionRequest.seq.label("seq"),
            )
            .join(AttributionRequest, AttributionRequest.id == AttributionMetrics.request_id)
            .where(
                AttributionMetrics.confidence_model_sha256.is_not(None),
                AttributionMetrics.confidence_model.startswith(STORED_MODEL_PREFIX),
                AttributionRequest.replay_of.is_(None),
            )
            .subquery()
        )
        keys = (scored.c.model, scored.c.space, scored.c.space_version, scored.c.top, scored.c.k)
        groups = select(*keys, func.count(), func.min(scored.c.seq)).group_by(*keys).order_by(func.min(scored.c.seq))
        off: list[OffParameters] = []
        with read_scope(self.engine) as session:
            stored: dict[str, dict[str, Any] | str | None] = {}
            for name, space, version, top, k, n, first in session.execute(groups).all():
                if name not in stored:
                    stored[name] = _stored_parameters(session, name)
                selects = stored[name]
                recorded = {"space": space or "content", "space_version": version, "top": top or "share", "k": k}
                if selects is None or (isinstance(selects, dict) and selects.items() <= recorded.items()):
                    continue  # a row that is missing (or no model) fails the fingerprint's check
                request = session.scalar(select(AttributionRequest.id).where(AttributionRequest.seq == first))
                entry = OffParameters(str(name), None, recorded, int(n), int(first), str(request))
                if isinstance(selects, str):
                    off.append(replace(entry, problem=selects))
                else:
                    off.append(replace(entry, stored=selects, recorded={key: recorded[key] for key in selects}))
        return off

    def calibrated_in(self, embedder_fingerprint: str, space: str, space_version: int) -> dict[str, str]:
        """Model name -> top-artist rule of the ``calibrate`` models of this embedder fitted in a learned space's
        version (not the version's own), oldest first."""
        return {
            model_name(row): fitted[2]
            for row, fitted, source in reversed(list(self._calibrations(embedder_fingerprint)))
            if fitted[:2] == (space, space_version) and source != SPACE_FIT_SOURCE
        }

    def _calibrations(self, embedder_fingerprint: str) -> Iterator[tuple[CalibrationModel, tuple[Any, Any, Any], Any]]:
        """This embedder's calibration rows, newest first, each with the (space, space version, top rule) it was
        fitted in (content and share when not recorded) and its source; read as they are asked for (a lookup that
        stops at the newest match never reads, nor refuses, an older row changed by hand)."""
        query = (
            select(CalibrationModel)
            .where(CalibrationModel.embedder_fingerprint == embedder_fingerprint)
            .order_by(CalibrationModel.id.desc())
        )
        with read_scope(self.engine) as session:
            for row in session.scalars(query):
                yield row, _fitted(row), _fit_metrics(row).get("source")

    def calibration_source(self, name: str) -> tuple[str, str]:
        """The labelled queries a stored model (``logistic-v<N>``) was fitted on: their recorded path and sha256."""
        with read_scope(self.engine) as session:
            row = session.get_one(CalibrationModel, int(name.removeprefix(STORED_MODEL_PREFIX)))
            return row.labelled_path, row.labelled_sha256

    def calibration(self, name: str) -> LogisticModel:
        """A stored model by its recorded name (``logistic-v<N>``); NotFoundError for a name no stored model has."""
        number = name.removeprefix(STORED_MODEL_PREFIX)
        with read_scope(self.engine) as session:
            row = session.get(CalibrationModel, int(number)) if number.isdigit() else None
            if row is None:
                raise NotFoundError(f"no stored confidence model is named {name!r} (`calibrate` stores logistic-v<N>)")
            return _model(row)


def _fitted(row: CalibrationModel) -> tuple[Any, Any, Any]:
    """The (space, space version, top rule) a model was fitted in (content and share when not recorded)."""
    params = _fit_metrics(row).get("parameters") or {}
    if not isinstance(params, dict):
        raise _tampered(row, "its fit parameters are not a JSON object")
    return params.get("space", "content"), params.get("space_version"), params.get("top", "share")


def _stored_parameters(session: Session, name: str) -> dict[str, Any] | str | None:
    """The request parameters the stored model ``name`` scores (:func:`_fitted`, with ``k`` for a learned space
    version's own); why they cannot be read (a row changed by hand); None where no row has that name."""
    number = name.removeprefix(STORED_MODEL_PREFIX)
    row = session.get(CalibrationModel, int(number)) if number.isdigit() else None
    if row is None:
        return None
    try:
        selects = dict(zip(("space", "space_version", "top"), _fitted(row), strict=True))
        source = _fit_metrics(row).get("source")
    except DatabaseError as exc:
        return str(exc)
    named = _named_own(session, name, selects["space"], selects["space_version"])
    if named and source != SPACE_FIT_SOURCE:  # it would score any K, and outrank the version's calibrate models
        return (
            f"its fit source is {source!r}, not {SPACE_FIT_SOURCE!r}, though learned space {selects['space']} version "
            f"{selects['space_version']} names it its own model: its calibration_models row was changed after them; "
            "restore it from a backup"
        )
    if source == SPACE_FIT_SOURCE and not named:  # it would outrank calibrate models where no version says it is own
        return (
            f"its fit source is {SPACE_FIT_SOURCE!r}, though no learned space version names it its own model: its "
            "calibration_models row was changed after them; restore it from a backup"
        )
    return {**selects, "k": _fitted_k(row)} if named else selects


def _named_own(session: Session, name: str, space: Any, version: Any) -> bool:
    """Whether learned space ``space`` version ``version`` names the model ``name`` its own (``spaces fit``), as its
    row's validation records: a learned space version is append-only, the model's ``source`` is not fingerprinted."""
    if not isinstance(version, int):
        return False
    query = select(LearnedSpaceVersion.validation).where(
        LearnedSpaceVersion.name == str(space), LearnedSpaceVersion.version == version
    )
    validation = session.scalar(query)
    confidence = validation.get("confidence") if isinstance(validation, dict) else None
    return isinstance(confidence, dict) and confidence.get("model") == name


def _fitted_k(row: CalibrationModel) -> Any:
    """The K a model was fitted at, as recorded (the default K for one stored without its parameters)."""
    return (_fit_metrics(row).get("parameters") or {}).get("k", DEFAULT_K)


def calibration_row(model: LogisticModel, evidence: CalibrationEvidence) -> CalibrationModel:
    """The row of a fitted model and the evidence it was fitted on."""
    return CalibrationModel(features=model.as_json(), **asdict(evidence))


def model_name(row: CalibrationModel) -> str:
    """The name a request records of the model it used."""
    return f"{STORED_MODEL_PREFIX}{row.id}"


def _labelled_rows(query_set_id: int, queries: Sequence[LabelledLike]) -> list[LabelledQueryRecord]:
    return [
        LabelledQueryRecord(
            query_set_id=query_set_id, path=str(q.path), artist=q.artist, work_ids=list(q.work_ids), subset=q.subset
        )
        for q in queries
    ]


def _stored(row: LabelledQueryRecord) -> StoredQuery:
    return StoredQuery(row.id, row.path, row.artist, tuple(row.work_ids or ()), row.subset)


def _run_info(run: EvaluationRun, shown: str | None = None) -> RunInfo:
    return RunInfo(run.id, run.kind, shown or run.status, as_utc(run.created_at), run.embedder_name, run.settings)


def _model(row: CalibrationModel) -> LogisticModel:
    """The stored model; DatabaseError naming it where its stored values are no model (changed by hand)."""
    f = row.features
    try:
        names = tuple(f.get("names", FEATURES))
        model = LogisticModel(model_name(row), f["mean"], f["std"], f["coef"], f["intercept"], names)
        problem = model.problem()
    except (AttributeError, KeyError, TypeError) as exc:  # not an object, a key missing, names not a list
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        raise _tampered(row, problem)
    return model


def _fit_metrics(row: CalibrationModel) -> dict[str, Any]:
    """The stored model's fit metrics (empty when none were stored); DatabaseError where they are not an object."""
    if row.fit_metrics is None or isinstance(row.fit_metrics, dict):
        return row.fit_metrics or {}
    raise _tampered(row, "its fit metrics are not a JSON object")


def _tampered(row: CalibrationModel, problem: str) -> DatabaseError:
    return DatabaseError(
        f"calibration model {model_name(row)} in the audit database is not a model ({problem}): it was changed "
        "outside attribution-audit; restore the database from a backup or fit a new one (`attribution-audit "
        "calibrate`)"
    )
