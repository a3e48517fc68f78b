"""Noise robustness (the note's Figure 10): add extra works to a *scratch copy* of the index at several levels
and measure how much of the clean attribution survives. The production collection is only read."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import CONTENT, WorkPoint, point_id_for
from attribution_audit.domain.results import Neighbour
from attribution_audit.domain.spaces import QueryVectors, space_named
from attribution_audit.errors import ImageError, ManifestError, VectorStoreError
from attribution_audit.evaluation.metrics import finite
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.manifest import ManifestRow, open_source
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

NOISE_CATALOGUE = "noise"


def _embed_paths(
    attributor: Attributor, paths: list[Path], space: str, batch_size: int = 32
) -> tuple[list[QueryVectors], list[int]]:
    """The query vectors ``space`` needs of each readable image, and the indexes of those images."""
    vectors: list[QueryVectors] = []
    kept: list[int] = []
    for start in range(0, len(paths), batch_size):
        images = []
        for offset, path in enumerate(paths[start : start + batch_size]):
            try:
                images.append(load_image(path, target_size=224).image)
                kept.append(start + offset)
            except ImageError:
                continue
        if images:
            vectors.extend(attributor.embed(images, space))
    return vectors, kept


def noise_experiment(
    attributor: Attributor,
    query_set_id: int,
    noise_manifest: str | Path,
    *,
    levels: list[float],
    kind: str,
    k: int = 10,
    scratch_root: Path | None = None,
    space: str = CONTENT,
) -> dict[str, Any]:
    """Mean overlap@K between clean and noisy attributions per noise level, in ``space``; recorded as an
    evaluation run."""
    params = AttributionParams(k=k, verify="off", space=space)
    if not levels or any(not (level > 0 and math.isfinite(level)) for level in levels):
        raise ValueError("noise levels must be positive fractions of the index size, e.g. 0.1,0.25,0.5,0.75")
    rows = [r for r in open_source(noise_manifest) if isinstance(r, ManifestRow)]
    if not rows:
        raise ManifestError(f"{noise_manifest}: no usable noise works")
    queries = [(q.path, q.artist) for q in attributor.audit.evaluations.queries(query_set_id)]
    query_vectors, kept = _embed_paths(attributor, [Path(p) for p, _ in queries], space)
    true_artists = [attributor.canonical.get(queries[i][1], queries[i][1]) for i in kept]
    noise_vectors, noise_kept = _embed_paths(attributor, [r.path for r in rows], space)
    noise_points = [
        WorkPoint(
            point_id_for(NOISE_CATALOGUE, rows[i].work_id),
            vector.content,
            {"work_id": rows[i].work_id, "artist": rows[i].artist, "catalogue": NOISE_CATALOGUE, "noise_kind": kind},
            vector.style,
        )
        for i, vector in zip(noise_kept, noise_vectors, strict=True)
    ]
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix="noise-") as scratch:
        store = EdgeStore(Path(scratch), "scratch")
        try:
            production = list(attributor.store.iter_points())
            if not production:
                raise VectorStoreError(f"collection '{attributor.store.collection}' is empty; ingest a catalogue first")
            if not set(space_named(space).bases) <= set(attributor.store.spaces()):
                raise VectorStoreError(
                    f"collection '{attributor.store.collection}' has no style vectors; "
                    "ingest with --spaces content,style"
                )
            # The scratch copy holds every space of the production collection, whatever space is measured.
            style_dim = next((len(p.style) for p in production if p.style is not None), None)
            store.ensure_collection(len(production[0].vector), style_dim)
            store.upsert(production)
            store.build_index()
            scratch_attributor = attributor.with_store(store)
            clean = [_attribute(scratch_attributor, q, params) for q in query_vectors]
            results, added = [], 0
            for level in sorted(levels):
                wanted = round(level * len(production))
                if wanted > added:
                    store.upsert(noise_points[added:wanted])
                    store.build_index()
                    added = min(wanted, len(noise_points))
                noisy = [_attribute(scratch_attributor, q, params) for q in query_vectors]
                overlaps = [len(_keys(a) & _keys(b)) / max(len(a), 1) for a, b in zip(clean, noisy, strict=True)]
                results.append(
                    {
                        "level": level,
                        "noise_works": added,
                        "actual_level": added / len(production) if production else 0.0,
                        "mean_overlap": float(np.mean(overlaps)) if overlaps else None,
                        "hit_rate_clean": _hit_rate(clean, true_artists),
                        "hit_rate_noisy": _hit_rate(noisy, true_artists),
                        "noise_in_top_k": float(
                            np.mean([sum(n.catalogue == NOISE_CATALOGUE for n in ns) / k for ns in noisy])
                        )
                        if noisy
                        else None,
                    }
                )
        finally:
            store.close()
    metrics = finite(
        {
            "kind": kind,
            "k": k,
            "space": space,
            "index_size": len(production),
            "queries": len(query_vectors),
            "levels": results,
        }
    )
    run_id = attributor.audit.evaluations.start_run(
        kind="noise",
        requester=attributor.requester,
        query_set_id=query_set_id,
        embedder_name=attributor.embedder_name,
        collection=attributor.store.collection,
        settings={
            "noise_manifest": str(Path(noise_manifest).resolve()),
            "levels": levels,
            "kind": kind,
            "k": k,
            "space": space,
        },
        metrics=metrics,
    )
    metrics = {**metrics, "run_id": run_id}
    return metrics


def _attribute(attributor: Attributor, query: QueryVectors, params: AttributionParams) -> list[Neighbour]:
    return attributor.compute(query, params).neighbours


def _keys(neighbours: list[Neighbour]) -> set[str]:
    return {f"{n.catalogue}/{n.work_id}" for n in neighbours}


def _hit_rate(attributions: list[list[Neighbour]], artists: list[str]) -> float | None:
    """Share of queries with at least one neighbour by the true artist."""
    if not attributions:
        return None
    hits = [any(n.canonical_artist == a for n in ns) for ns, a in zip(attributions, artists, strict=True)]
    return float(np.mean(hits))


def noise_from_settings(
    settings: Settings,
    audit: AuditStore,
    queries: str,
    noise_manifest: Path,
    *,
    levels: list[float],
    kind: str,
    k: int = 10,
    space: str = CONTENT,
) -> dict[str, Any]:
    """The ``evaluate noise`` use case, with scratch copies of the index under the settings' data dir."""
    from attribution_audit.services.evaluate import import_query_set

    query_set = import_query_set(audit, queries)
    with open_attributor(settings, audit, settings.embedder) as attributor:
        return noise_experiment(
            attributor,
            query_set,
            noise_manifest,
            levels=levels,
            kind=kind,
            k=k,
            scratch_root=settings.data_dir,
            space=space,
        )
