"""``evaluate run`` and ``evaluate report``: attribute every labelled query (logged, tagged with the run), measure
HNSW against exact search, and compute the metrics from what the audit DB holds, so a report equals its run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from attribution_audit.attribution import AttributionParams, Attributor, canonical_artists
from attribution_audit.audit.db import session_scope
from attribution_audit.audit.models import (
    AttributionNeighbour,
    CalibrationModel,
    EvaluationResult,
    EvaluationRun,
    LabelledQueryRecord,
    QuerySet,
    utcnow,
)
from attribution_audit.calibration import LogisticModel, load_model
from attribution_audit.errors import ImageError, NotFoundError
from attribution_audit.evaluation.metrics import QueryOutcome, evaluate
from attribution_audit.images import load_image
from attribution_audit.labelled import read_labelled


def import_query_set(engine: Engine, source: str | Path, name: str | None = None) -> int:
    """The id of a labelled query set: a stored set's name, or a CSV file imported (idempotently) under its name."""
    path = Path(source)
    with session_scope(engine) as session:
        if not path.is_file():
            stored = session.scalar(select(QuerySet).where(QuerySet.name == str(source)))
            if stored is None:
                raise NotFoundError(
                    f"{source}: neither a labelled query file nor a stored query set; give a CSV (path,artist"
                    "[,work_ids][,subset]) or the name of a set imported by `ingest --format wang`"
                )
            return stored.id
        queries = read_labelled(path)
        set_name = name or path.stem
        query_set = session.scalar(select(QuerySet).where(QuerySet.name == set_name))
        if query_set is None:
            query_set = QuerySet(name=set_name, source_path=str(path.resolve()))
            session.add(query_set)
            session.flush()
        known = set(
            session.scalars(select(LabelledQueryRecord.path).where(LabelledQueryRecord.query_set_id == query_set.id))
        )
        session.add_all(
            LabelledQueryRecord(
                query_set_id=query_set.id, path=str(q.path), artist=q.artist, work_ids=list(q.work_ids), subset=q.subset
            )
            for q in queries
            if str(q.path) not in known
        )
        return query_set.id


@dataclass(frozen=True)
class EvaluationSummary:
    run_id: int
    queries: int
    failed: int
    metrics: dict[str, Any]


def run_evaluation(
    attributor: Attributor, query_set_id: int, *, k_max: int = 100, k: int = 10, batch_size: int = 32
) -> EvaluationSummary:
    """Attribute each labelled query with K = k_max (logged), time HNSW and exact search, store and compute."""
    if attributor.embedder is None:
        raise ValueError("an evaluation needs an Attributor with an embedder")
    engine = attributor.engine
    params = AttributionParams(k=k_max, verify="off")
    model = attributor.calibration
    with session_scope(engine) as session:
        run = EvaluationRun(
            kind="attribution",
            requester=attributor.requester,
            query_set_id=query_set_id,
            embedder_name=attributor.embedder_name,
            collection=attributor.store.collection,
            settings={
                "k_max": k_max,
                "k": k,
                "params": params.as_json(),
                "confidence_model": model.name if model else None,
            },
        )
        session.add(run)
        session.flush()
        run_id = run.id
        queries = session.scalars(
            select(LabelledQueryRecord)
            .where(LabelledQueryRecord.query_set_id == query_set_id)
            .order_by(LabelledQueryRecord.id)
        ).all()
    index, _ = attributor.exact_index(params.exact_method)
    failed = 0
    for start in tqdm(range(0, len(queries), batch_size), desc="evaluate", unit="batch", disable=None, leave=False):
        batch = queries[start : start + batch_size]
        loaded, results = [], []
        for query in batch:
            try:
                loaded.append((query, load_image(query.path, target_size=224)))
            except ImageError as exc:
                failed += 1
                results.append(EvaluationResult(run_id=run_id, labelled_query_id=query.id, error=str(exc)))
        vectors = attributor.embedder.embed([image.image for _, image in loaded]) if loaded else []
        for (query, image), vector in zip(loaded, vectors, strict=True):
            started = time.perf_counter()
            hits = attributor.store.search(vector, k_max)
            hnsw_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            rows, _ = index.search(vector[None, :], k_max)
            exact_ms = (time.perf_counter() - started) * 1000
            outcome = attributor.compute(vector, params)
            record = attributor.record(
                str(image.path), image.sha256, vector, params, outcome, evaluation=(run_id, query.id)
            )
            results.append(
                EvaluationResult(
                    run_id=run_id,
                    labelled_query_id=query.id,
                    request_id=record.request_id,
                    hnsw_ms=hnsw_ms,
                    exact_ms=exact_ms,
                    hnsw_ids=[h.point_id for h in hits],
                    exact_ids=[index.ids[r] for r in rows[0]],
                )
            )
        with session_scope(engine) as session:
            session.add_all(results)
    metrics = compute_metrics(engine, run_id)
    with session_scope(engine) as session:
        run = session.get_one(EvaluationRun, run_id)
        run.metrics, run.status, run.finished_at = metrics, "completed", utcnow()
    return EvaluationSummary(run_id, len(queries), failed, metrics)


def load_outcomes(engine: Engine, run_id: int) -> list[QueryOutcome]:
    """Per-query outcomes of a run, rebuilt from the audit DB (labels, logged neighbours, exact measurements)."""
    canonical = canonical_artists(engine)
    with Session(engine) as session:
        rows = session.execute(
            select(EvaluationResult, LabelledQueryRecord)
            .join(LabelledQueryRecord, LabelledQueryRecord.id == EvaluationResult.labelled_query_id)
            .where(EvaluationResult.run_id == run_id, EvaluationResult.request_id.is_not(None))
            .order_by(LabelledQueryRecord.id)
        ).all()
        neighbours: dict[str, list[AttributionNeighbour]] = {}
        request_ids = [result.request_id for result, _ in rows]
        for start in range(0, len(request_ids), 500):
            for n in session.scalars(
                select(AttributionNeighbour)
                .where(AttributionNeighbour.request_id.in_(request_ids[start : start + 500]))
                .order_by(AttributionNeighbour.request_id, AttributionNeighbour.rank)
            ):
                neighbours.setdefault(n.request_id, []).append(n)
    outcomes = []
    for result, query in rows:
        ranked = neighbours.get(result.request_id, [])
        outcomes.append(
            QueryOutcome(
                query_id=query.id,
                path=query.path,
                true_artist=canonical.get(query.artist, query.artist),
                true_works=tuple(query.work_ids or ()),
                subset=query.subset,
                artists=[n.canonical_artist for n in ranked],
                work_ids=[n.work_id for n in ranked],
                similarities=[n.similarity for n in ranked],
                hnsw_ids=list(result.hnsw_ids or []),
                exact_ids=list(result.exact_ids or []),
                hnsw_ms=result.hnsw_ms,
                exact_ms=result.exact_ms,
            )
        )
    return outcomes


def _model(engine: Engine, name: str | None) -> LogisticModel | None:
    if not name:
        return None
    with Session(engine) as session:
        return load_model(session.get_one(CalibrationModel, int(name.removeprefix("logistic-v"))))


def compute_metrics(engine: Engine, run_id: int) -> dict[str, Any]:
    """The metrics of a run, purely from the audit DB."""
    with Session(engine) as session:
        run = session.get(EvaluationRun, run_id)
        if run is None or run.kind != "attribution":
            raise NotFoundError(f"no evaluation run {run_id}; `attribution-audit evaluate list` shows the runs")
        settings = run.settings
    metrics = evaluate(
        load_outcomes(engine, run_id),
        settings["k_max"],
        settings["k"],
        _model(engine, settings.get("confidence_model")),
        settings["params"]["shares"],
    )
    return {"run_id": run_id, **metrics}
