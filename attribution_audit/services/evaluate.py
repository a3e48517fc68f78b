"""``evaluate run`` and ``evaluate report``: attribute every labelled query (logged, tagged with the run), measure
HNSW against exact search, and compute the metrics from what the audit DB holds, so a report equals its run."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from attribution_audit.config import Settings
from attribution_audit.domain.params import CENTROID, DEFAULT_EXACT_METHOD, MAX_K, AttributionParams
from attribution_audit.domain.spaces import SPACES
from attribution_audit.errors import ConflictError, ImageError, ManifestError, NotFoundError
from attribution_audit.evaluation.metrics import QueryOutcome, evaluate
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image, sha256_file
from attribution_audit.sources.labelled import LabelledQuery, read_labelled
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.evaluations import QueryResult, RunInfo, StoredQuery


def import_query_set(audit: AuditStore, source: str | Path, name: str | None = None) -> int:
    """The id of a labelled query set: a stored set's name, or a CSV file imported (idempotently) under its name."""
    path = Path(source)
    if not path.is_file():
        stored = audit.evaluations.find_query_set(str(source))
        if stored is None:
            raise NotFoundError(
                f"{source}: neither a labelled query file nor a stored query set; give a CSV (path,artist"
                "[,work_ids][,subset]) or the name of a set imported by `ingest --format wang`"
            )
        return stored
    queries = read_labelled(path)
    refuse_unknown_works(audit, path, queries)
    return audit.evaluations.import_query_set(name or path.stem, str(path.resolve()), sha256_file(path), queries)


def refuse_unknown_works(audit: AuditStore, path: Path, queries: Sequence[LabelledQuery]) -> None:
    """ManifestError naming the first row of a labelled file whose ``work_ids`` names a work of no ingested
    catalogue (a typo would count as a miss)."""
    unknown = audit.catalogue.unknown_work_ids([w for query in queries for w in query.work_ids])
    if unknown:
        line, work = next((q.line, w) for q in queries for w in q.work_ids if w in unknown)
        raise ManifestError(
            f"{path}:{line}: true work {work!r} is in no ingested catalogue ({len(unknown)} unknown work id(s) in "
            "the file); fix its work_ids column, or ingest the catalogue that holds it first"
        )


@dataclass(frozen=True)
class EvaluationSummary:
    run_id: int
    queries: int
    failed: int
    metrics: dict[str, Any]
    unseen: dict[str, int]  # see unseen_artists


def run_evaluation(
    attributor: Attributor,
    query_set_id: int,
    *,
    k_max: int = 100,
    k: int = 10,
    batch_size: int = 32,
    space: str = "content",
    exact: str = DEFAULT_EXACT_METHOD,
    top: str = "share",
) -> EvaluationSummary:
    """Attribute each labelled query with K = :func:`recorded_depth` in ``space`` under the ``top`` rule (logged),
    time the engine's search against the ``exact`` one (brute or kdtree; its index is built before the timing),
    store, and compute the metrics from the DB."""
    audit = attributor.audit
    queries = audit.evaluations.queries(query_set_id)
    depth = recorded_depth(queries, k_max)
    # the space first: a learned space's newest version is recorded, an unknown space refused before the run starts
    # the newest stored now (also for an attributor that ran before), kept for the whole run: compute does not read
    # again, so a version or model stored meanwhile changes no query's features; each record names what it read
    attributor.refresh()
    searching, params = attributor.space_of(
        AttributionParams(k=depth, verify="off", space=space, exact_method=exact, top=top)
    )
    if top == CENTROID:
        attributor.require_centroids(searching)  # refused before the run starts
    model = attributor.calibration_for(replace(params, k=k))  # the metrics' confidence is measured at K = k
    artist_works = artist_work_counts(audit, queries)
    run_id = audit.evaluations.start_run(
        kind="attribution",
        requester=attributor.requester,
        query_set_id=query_set_id,
        embedder_name=attributor.embedder_name,
        collection=attributor.store.collection,
        settings={
            "k_max": k_max,
            "k": k,
            "recorded_k": depth,
            "artist_works": artist_works,
            "params": params.as_json(),
            "confidence_model": model.name if model else None,
        },
    )
    for base in searching.bases:
        attributor.exact_index(exact, base)  # built (or loaded) once, outside the per-query timing
    failed, first_error = 0, ""
    for start in tqdm(range(0, len(queries), batch_size), desc="evaluate", unit="batch", disable=None, leave=False):
        batch = queries[start : start + batch_size]
        loaded, results = [], []
        for query in batch:
            try:
                loaded.append((query, load_image(query.path, target_size=224)))
            except ImageError as exc:
                failed += 1
                first_error = first_error or str(exc)
                results.append(QueryResult(labelled_query_id=query.id, error=str(exc)))
        vectors = attributor.embed([image.image for _, image in loaded], space, crops=True) if loaded else []
        for (query, image), vector in zip(loaded, vectors, strict=True):
            started = time.perf_counter()
            hits = searching.engine_top(attributor.store, vector, params)
            hnsw_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            exact_ids = attributor.exact_top([vector], params)[0]
            exact_ms = (time.perf_counter() - started) * 1000
            outcome = attributor.compute(vector, params)
            record = attributor.record(
                str(image.path), image.sha256, vector, params, outcome, evaluation=(run_id, query.id)
            )
            results.append(
                QueryResult(
                    labelled_query_id=query.id,
                    request_id=record.request_id,
                    hnsw_ms=hnsw_ms,
                    exact_ms=exact_ms,
                    hnsw_ids=[h.point_id for h in hits],
                    exact_ids=exact_ids,
                )
            )
        audit.evaluations.add_results(run_id, results)
    if queries and failed == len(queries):
        reason = (
            f"none of the {failed} labelled images could be read (the first: {first_error}); "
            f"evaluation run {run_id} is marked failed: fix the image paths of the labelled queries"
        )
        audit.evaluations.fail_run(run_id, reason)
        raise ImageError(reason)
    metrics = compute_metrics(audit, run_id)
    audit.evaluations.finish_run(run_id, metrics)
    unseen = unseen_artists(audit, queries, artist_works)
    return EvaluationSummary(run_id, len(queries), failed, metrics, unseen)


def recorded_depth(queries: Sequence[StoredQuery], k_max: int) -> int:
    """How many neighbours each query records: K = 1..k_max for the curves and, for per-image K, as many as the
    query with the most true works has; a one-line ManifestError when that is more than one request may record."""
    most = max((len(q.work_ids) for q in queries), default=0)
    depth = max(k_max, most)
    if depth > MAX_K:
        raise ManifestError(
            f"labelled queries: one has {most} true works, so per-image K needs {most} neighbours per query, more than "
            f"the {MAX_K} a request may record; drop that query or evaluate with a fixed K only"
        )
    return depth


def artist_work_counts(audit: AuditStore, queries: Sequence[StoredQuery | LabelledQuery]) -> dict[str, int]:
    """Active catalogue works of each (canonical) true artist of the queries, as the run starts (artist recall)."""
    canonical = audit.catalogue.canonical_artists()
    counts: dict[str, int] = {}
    for row in audit.catalogue.artists():
        name = row.canonical or row.name
        counts[name] = counts.get(name, 0) + row.active_works
    wanted = {canonical.get(q.artist, q.artist) for q in queries}
    return {name: counts.get(name, 0) for name in sorted(wanted)}


def unseen_artists(
    audit: AuditStore, queries: Sequence[StoredQuery | LabelledQuery], artist_works: dict[str, int] | None = None
) -> dict[str, int]:
    """How many of ``queries`` name each true artist (canonical) that has no active work in the catalogue
    (``artist_works``: :func:`artist_work_counts` of the queries, read when not given): a misspelt name, or an
    artist left out on purpose; no attribution of such a query can be right."""
    canonical = audit.catalogue.canonical_artists()
    works = artist_work_counts(audit, queries) if artist_works is None else artist_works
    named = Counter(canonical.get(q.artist, q.artist) for q in queries)
    return {artist: named[artist] for artist, count in sorted(works.items()) if not count}


def load_outcomes(audit: AuditStore, run_id: int) -> list[QueryOutcome]:
    """Per-query outcomes of a run, rebuilt from the audit DB (labels, logged neighbours, exact measurements, the
    true artists' work counts recorded when the run started)."""
    canonical = audit.catalogue.canonical_artists()
    works = audit.evaluations.run(run_id).settings.get("artist_works", {})
    return [
        QueryOutcome(
            query_id=logged.query.id,
            path=logged.query.path,
            true_artist=canonical.get(logged.query.artist, logged.query.artist),
            true_works=logged.query.work_ids,
            subset=logged.query.subset,
            artists=logged.artists,
            work_ids=logged.work_ids,
            similarities=logged.similarities,
            hnsw_ids=logged.result.hnsw_ids,
            exact_ids=logged.result.exact_ids,
            hnsw_ms=logged.result.hnsw_ms,
            exact_ms=logged.result.exact_ms,
            artist_works=works.get(canonical.get(logged.query.artist, logged.query.artist)),
            top_artist=logged.top_artist,
            recorded_k=logged.recorded_k,
            logged=logged.logged,
        )
        for logged in audit.evaluations.logged_results(run_id)
    ]


def compute_metrics(audit: AuditStore, run_id: int) -> dict[str, Any]:
    """The metrics of a run, purely from the audit DB."""
    settings = audit.evaluations.run(run_id).settings
    model_name = settings.get("confidence_model")
    metrics = evaluate(
        load_outcomes(audit, run_id),
        settings["k_max"],
        settings["k"],
        audit.evaluations.calibration(model_name) if model_name else None,
        settings["params"]["shares"],
        settings["params"].get("top", "share"),  # runs recorded before the rule existed used the share
    )
    metrics["ann_vs_exact"]["exact_method"] = settings["params"].get("exact_method", DEFAULT_EXACT_METHOD)
    return {"run_id": run_id, "recorded_k": settings.get("recorded_k", settings["k_max"]), **metrics}


def recompute_run(audit: AuditStore, run_id: int) -> tuple[str, dict[str, Any]]:
    """(kind, metrics) of a past ``evaluate run`` or ``evaluate noise`` run, recomputed from the audit DB alone."""
    from attribution_audit.services.noise import noise_metrics

    run = audit.evaluations.run(run_id, kind=None)
    kind = run.kind
    if run.status != "completed":
        raise ConflictError(
            f"evaluation run {run_id} has not finished (status {run.status}): it was interrupted or is still "
            "running, so its results are partial; run the experiment again"
        )
    if kind == "noise":
        return kind, noise_metrics(audit, run_id)
    if kind != "attribution":
        raise NotFoundError(
            f"evaluation run {run_id} is a {kind} run, which keeps its results as it wrote them (evaluate list "
            "--format json shows them); evaluate report recomputes attribution and noise runs"
        )
    return kind, compute_metrics(audit, run_id)


def compare_spaces(
    attributor: Attributor, query_set_id: int, *, k_max: int = 100, k: int = 10, spaces: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """One evaluation run per space on the same queries: hit rate@K, artist precision@K and confidence AUROC."""
    rows = []
    for space in spaces or tuple(SPACES):
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


def evaluate_queries(
    settings: Settings,
    audit: AuditStore,
    queries: str,
    *,
    name: str | None = None,
    k_max: int = 100,
    k: int = 10,
    space: str = "content",
    exact: str = DEFAULT_EXACT_METHOD,
    top: str = "share",
) -> EvaluationSummary:
    """The ``evaluate run`` use case: import the labelled queries (or find the stored set) and run them."""
    if k > k_max:
        raise ValueError(f"--k {k} is larger than --k-max {k_max}")
    query_set = import_query_set(audit, queries, name)
    with open_attributor(settings, audit, settings.embedder) as attributor:
        return run_evaluation(attributor, query_set, k_max=k_max, k=k, space=space, exact=exact, top=top)


def compare_spaces_of(
    settings: Settings, audit: AuditStore, queries: str, *, k_max: int = 100, k: int = 10
) -> list[dict[str, Any]]:
    """The ``evaluate compare-spaces`` use case: one run per space on the same queries."""
    query_set = import_query_set(audit, queries)
    with open_attributor(settings, audit, settings.embedder) as attributor:
        return compare_spaces(attributor, query_set, k_max=k_max, k=k)


def evaluation_runs(audit: AuditStore) -> list[RunInfo]:
    """Every evaluation run, oldest first."""
    return audit.evaluations.runs()
