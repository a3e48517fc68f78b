"""``evaluate compare-exact``: the note's appendix 1 measured on the user's collection. Each labelled query's top K
from HNSW (the engine's raw answer), a KD-Tree and brute force (the ground truth): recall against brute force,
per-query latency and, for the exact methods, the time to build the index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.params import EXACT_METHODS, FUSED, AttributionParams
from attribution_audit.domain.points import CONTENT
from attribution_audit.domain.spaces import space_named
from attribution_audit.evaluation.metrics import finite
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.noise import embed_paths
from attribution_audit.services.wiring import open_attributor
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.exact import build_exact_index, overlap_at_k

METHODS = ("hnsw", "kdtree", "brute")


def _latency(times_ms: list[float]) -> dict[str, float | None]:
    if not times_ms:
        return {"p50": None, "p95": None, "mean": None}
    values = np.asarray(times_ms)
    return {"p50": float(np.median(values)), "p95": float(np.percentile(values, 95)), "mean": float(values.mean())}


def compare_exact(attributor: Attributor, query_set_id: int, *, k: int = 10, space: str = CONTENT) -> dict[str, Any]:
    """One row per method (HNSW, KD-Tree, brute force): recall@K against brute force, latency per query, build time
    of the exact indexes; recorded as an evaluation run of kind ``compare_exact``."""
    if space == FUSED:
        raise ValueError("compare-exact measures one vector space: give --space content or --space style")
    params = AttributionParams(k=k, verify="off", space=space)
    ids, vectors = attributor.store.fetch_all(space)
    if not ids:
        raise ValueError(f"collection '{attributor.store.collection}' has no {space} vectors; ingest a catalogue first")
    built: dict[str, Any] = {}
    build_ms: dict[str, float | None] = {"hnsw": None}
    for method in EXACT_METHODS:
        started = time.perf_counter()
        built[method] = build_exact_index(method, ids, vectors)
        build_ms[method] = (time.perf_counter() - started) * 1000
    paths = [Path(q.path) for q in attributor.audit.evaluations.queries(query_set_id)]
    queries, _ = embed_paths(attributor, paths, space)
    found: dict[str, list[list[str]]] = {method: [] for method in METHODS}
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    searching = space_named(space)
    for query in queries:
        started = time.perf_counter()
        hits = searching.engine_top(attributor.store, query, params)
        times["hnsw"].append((time.perf_counter() - started) * 1000)
        found["hnsw"].append([hit.point_id for hit in hits])
        row = query.of(space)[None, :]
        for method in EXACT_METHODS:
            started = time.perf_counter()
            rows, _ = built[method].search(row, k)
            times[method].append((time.perf_counter() - started) * 1000)
            found[method].append([built[method].ids[r] for r in rows[0].tolist()])
    truth = found["brute"]
    rows_out = [
        {
            "method": method,
            "recall_vs_brute": float(np.mean([overlap_at_k(f, t) for f, t in zip(found[method], truth, strict=True)]))
            if truth
            else None,
            "latency_ms": _latency(times[method]),
            "build_ms": build_ms[method],
        }
        for method in METHODS
    ]
    metrics: dict[str, Any] = finite(
        {
            "k": k,
            "space": space,
            "index_size": len(ids),
            "dimension": int(vectors.shape[1]),
            "queries": len(queries),
            "hnsw_params": attributor.store.index_info(),
            "methods": rows_out,
        }
    )
    run_id = attributor.audit.evaluations.start_run(
        kind="compare_exact",
        requester=attributor.requester,
        query_set_id=query_set_id,
        embedder_name=attributor.embedder_name,
        collection=attributor.store.collection,
        settings={"k": k, "space": space},
        metrics=metrics,
    )
    return {**metrics, "run_id": run_id}


def compare_exact_from_settings(
    settings: Settings, audit: AuditStore, queries: str, *, k: int = 10, space: str = CONTENT
) -> dict[str, Any]:
    """The ``evaluate compare-exact`` use case."""
    from attribution_audit.services.evaluate import import_query_set

    query_set = import_query_set(audit, queries)
    with open_attributor(settings, audit, settings.embedder) as attributor:
        return compare_exact(attributor, query_set, k=k, space=space)
