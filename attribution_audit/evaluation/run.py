"""``evaluate run`` and ``evaluate report``: attribute every labelled query (logged, tagged with the run), measure
HNSW against exact search, and compute the metrics from what the audit DB holds, so a report equals its run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from attribution_audit.errors import ImageError, ManifestError, NotFoundError
from attribution_audit.evaluation.metrics import QueryOutcome, evaluate
from attribution_audit.images import load_image, sha256_file
from attribution_audit.labelled import read_labelled
from attribution_audit.vectorstore import Hit
from attribution_audit.vectorstore.base import CONTENT, STYLE


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
        set_name, digest = name or path.stem, sha256_file(path)
        query_set = session.scalar(select(QuerySet).where(QuerySet.name == set_name))
        if query_set is not None:
            if (query_set.source_path, query_set.source_sha256) != (str(path.resolve()), digest):
                raise ManifestError(
                    f"{path}: query set {set_name!r} was imported from {query_set.source_path} with other content; "
                    "past runs keep their labels, so import this file under a new --name"
                )
            return query_set.id
        query_set = QuerySet(name=set_name, source_path=str(path.resolve()), source_sha256=digest)
        session.add(query_set)
        session.flush()
        session.add_all(
            LabelledQueryRecord(
                query_set_id=query_set.id, path=str(q.path), artist=q.artist, work_ids=list(q.work_ids), subset=q.subset
            )
            for q in queries
        )
        return query_set.id


@dataclass(frozen=True)
class EvaluationSummary:
    run_id: int
    queries: int
    failed: int
    metrics: dict[str, Any]


def run_evaluation(
    attributor: Attributor,
    query_set_id: int,
    *,
    k_max: int = 100,
    k: int = 10,
    batch_size: int = 32,
    space: str = CONTENT,
) -> EvaluationSummary:
    """Attribute each labelled query with K = k_max in ``space`` (logged), time the engine's search against the
    exact one, store, and compute the metrics from the DB."""
    if attributor.embedder is None:
        raise ValueError("an evaluation needs an Attributor with an embedder")
    engine = attributor.engine
    params = AttributionParams(k=k_max, verify="off", space=space)
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
        if not loaded:
            vectors, styles = [], None
        else:
            vectors, styles = attributor.embed([image.image for _, image in loaded], space)
        for i, ((query, image), vector) in enumerate(zip(loaded, vectors, strict=True)):
            style = None if styles is None else styles[i]
            started = time.perf_counter()
            hits = engine_search(attributor, vector, style, params)
            hnsw_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            exact_ids = attributor.exact_top(vector, params, style)[0][0]
            exact_ms = (time.perf_counter() - started) * 1000
            outcome = attributor.compute(vector, params, style)
            record = attributor.record(
                str(image.path), image.sha256, vector, params, outcome, evaluation=(run_id, query.id), style=style
            )
            results.append(
                EvaluationResult(
                    run_id=run_id,
                    labelled_query_id=query.id,
                    request_id=record.request_id,
                    hnsw_ms=hnsw_ms,
                    exact_ms=exact_ms,
                    hnsw_ids=[h.point_id for h in hits],
                    exact_ids=exact_ids,
                )
            )
        with session_scope(engine) as session:
            session.add_all(results)
    metrics = compute_metrics(engine, run_id)
    with session_scope(engine) as session:
        run = session.get_one(EvaluationRun, run_id)
        run.metrics, run.status, run.finished_at = metrics, "completed", utcnow()
    return EvaluationSummary(run_id, len(queries), failed, metrics)


def engine_search(
    attributor: Attributor, vector: np.ndarray, style: np.ndarray | None, params: AttributionParams
) -> list[Hit]:
    """The engine's raw answer (HNSW, or the fused query) at depth k, as timed against the exact search."""
    store = attributor.store
    if params.space == CONTENT:
        return store.search(vector, params.k)
    if params.space == STYLE:
        return store.search(style, params.k, space=STYLE)  # type: ignore[arg-type]
    vectors = {CONTENT: vector, STYLE: style}
    depth = params.k * params.oversampling
    return store.search_fused(vectors, params.k, prefetch=depth, weights=params.weights, rrf_k=params.rrf_k)  # type: ignore[arg-type]


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


def compare_spaces(
    attributor: Attributor, query_set_id: int, *, k_max: int = 100, k: int = 10, spaces: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """One evaluation run per space on the same queries: hit rate@K, artist precision@K and confidence AUROC."""
    rows = []
    for space in spaces or (CONTENT, STYLE, "fused"):
        summary = run_evaluation(attributor, query_set_id, k_max=k_max, k=k, space=space)
        overall = summary.metrics["overall"]
        at_k = overall["curves"][min(k, k_max) - 1]
        rows.append(
            {
                "space": space,
                "run_id": summary.run_id,
                "queries": overall["queries"],
                "hit_rate@1": overall["curves"][0]["hit_rate"],
                f"hit_rate@{k}": at_k["hit_rate"],
                f"artist_precision@{k}": at_k["artist_precision"],
                "confidence_auroc": overall["confidence"]["auroc"],
            }
        )
    return rows
