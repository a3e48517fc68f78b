"""Noise robustness (the note's Figure 10), as the note runs it: attribute against a *reference index* (a seeded
random subset of the catalogue), then add noise at several levels and measure how much of the clean attribution
survives. Homogeneous noise is the held-out rest of the catalogue (or a same-domain manifest), heterogeneous noise a
manifest of another domain. Everything happens in a scratch copy; the production collection is only read. Each
query's ranked works at each level are stored, so :func:`noise_metrics` recomputes the run from the audit DB."""

from __future__ import annotations

import fcntl
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.params import FUSED, AttributionParams
from attribution_audit.domain.points import CONTENT, STYLE, WorkPoint, point_id_for
from attribution_audit.domain.spaces import SPACES, QueryVectors, space_named
from attribution_audit.errors import ImageError, ManifestError, VectorStoreError
from attribution_audit.evaluation.metrics import finite
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.manifest import ManifestRow, open_source
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

NOISE_CATALOGUE = "noise"
CLEAN = 0.0
SCRATCH_PREFIX, SCRATCH = "noise-", "scratch"  # <data dir>/noise-XXXX/scratch: a run's copy of the index


def embed_paths(
    attributor: Attributor, paths: list[Path], space: str, batch_size: int = 32
) -> tuple[list[QueryVectors], list[int]]:
    """The vectors ``space`` needs of each readable image, and the indexes of those images."""
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


def _key(point: WorkPoint) -> str:
    return f"{point.payload.get('catalogue', '')}/{point.payload.get('work_id', point.point_id)}"


def remove_abandoned_scratch(root: Path) -> None:
    """Remove the scratch copies that killed noise runs left in ``root`` (their shard lock is free); a copy whose
    lock another run holds is kept."""
    for folder in root.glob(f"{SCRATCH_PREFIX}*"):
        lock = folder / f"{SCRATCH}.lock"
        if not lock.is_file():
            continue
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(folder, ignore_errors=True)


def _check_levels(levels: Sequence[float], reference_fraction: float) -> None:
    if not levels or any(not (level > 0 and math.isfinite(level)) for level in levels):
        raise ValueError("noise levels must be positive fractions of the reference index, e.g. 0.1,0.25,0.5,0.75")
    if not 0 < reference_fraction <= 1:
        raise ValueError(f"--reference-fraction {reference_fraction}: give a fraction in (0, 1], e.g. 0.5")


def _refuse_unreachable(levels: Sequence[float], reference_size: int, available: int, source: str) -> None:
    """A level that needs more noise works than there are is refused, never capped."""
    for level in sorted(levels):
        wanted = round(level * reference_size)
        if wanted == 0:
            raise ValueError(
                f"noise level {level:.0%} of the {reference_size}-work reference index adds no noise work: raise "
                "--levels or --reference-fraction"
            )
        if wanted > available:
            raise ValueError(
                f"noise level {level:.0%} of the {reference_size}-work reference index needs {wanted} noise works; "
                f"{source} has {available}: lower --levels or --reference-fraction, or give a larger --noise manifest"
            )


def _manifest_points(attributor: Attributor, manifest: str | Path, kind: str, with_style: bool) -> list[WorkPoint]:
    rows = [r for r in open_source(manifest) if isinstance(r, ManifestRow)]
    if not rows:
        raise ManifestError(f"{manifest}: no usable noise works")
    vectors, kept = embed_paths(attributor, [r.path for r in rows], FUSED if with_style else CONTENT)
    return [
        WorkPoint(
            point_id_for(NOISE_CATALOGUE, rows[i].work_id),
            vector.content,
            {"work_id": rows[i].work_id, "artist": rows[i].artist, "catalogue": NOISE_CATALOGUE, "noise_kind": kind},
            vector.style,
        )
        for i, vector in zip(kept, vectors, strict=True)
    ]


def noise_experiment(
    attributor: Attributor,
    query_set_id: int,
    *,
    levels: list[float],
    kind: str,
    noise_manifest: str | Path | None = None,
    reference_fraction: float = 0.5,
    seed: int = 0,
    k: int = 10,
    scratch_root: Path | None = None,
    space: str = CONTENT,
) -> dict[str, Any]:
    """Mean overlap@K between the attribution on the reference index and on reference + noise, per level, in
    ``space``; recorded as an evaluation run with every query's ranked works per level."""
    _check_levels(levels, reference_fraction)
    if kind == "heterogeneous" and noise_manifest is None:
        raise ValueError("heterogeneous noise comes from another domain: give --noise MANIFEST (e.g. faces)")
    if space not in SPACES:
        raise VectorStoreError(
            f"evaluate noise --space {space}: a learned space was fitted on the whole catalogue, not on the subset "
            "this experiment attributes against; run it in content, style or fused"
        )
    params = AttributionParams(k=k, verify="off", space=space)
    production = sorted(attributor.store.iter_points(), key=lambda p: p.point_id)
    if not production:
        raise VectorStoreError(f"collection '{attributor.store.collection}' is empty; ingest a catalogue first")
    stored_spaces = set(attributor.store.spaces())
    if not set(space_named(space).bases) <= stored_spaces:
        raise VectorStoreError(
            f"collection '{attributor.store.collection}' has no style vectors; ingest with --spaces content,style"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(production))
    reference_size = max(1, round(reference_fraction * len(production)))
    reference = [production[i] for i in order[:reference_size]]
    if noise_manifest is None:
        pool, source = [production[i] for i in order[reference_size:]], "the held-out rest of the catalogue"
        _refuse_unreachable(levels, reference_size, len(pool), source)
    else:
        source = str(noise_manifest)
        pool = _manifest_points(attributor, noise_manifest, kind, STYLE in stored_spaces)
        _refuse_unreachable(levels, reference_size, len(pool), f"{source} (readable images)")
    pool = [pool[i] for i in rng.permutation(len(pool))]  # each level adds the next works of this seeded sample
    noise_keys = [_key(p) for p in pool[: round(max(levels) * reference_size)]]

    query_set = attributor.audit.evaluations.queries(query_set_id)
    query_vectors, kept = embed_paths(attributor, [Path(q.path) for q in query_set], space)
    query_ids = [query_set[i].id for i in kept]
    by_level: dict[float, list[list[str]]] = {}
    if scratch_root is not None:
        remove_abandoned_scratch(scratch_root)
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix=SCRATCH_PREFIX) as scratch:
        store = EdgeStore(Path(scratch), SCRATCH)
        try:
            style_dim = next((len(p.style) for p in production if p.style is not None), None)
            store.ensure_collection(len(production[0].vector), style_dim)
            store.upsert(reference)
            store.build_index()
            scratch_attributor = attributor.with_store(store)

            def attribute_all() -> list[list[str]]:
                return [
                    [f"{n.catalogue}/{n.work_id}" for n in scratch_attributor.compute(q, params).neighbours]
                    for q in query_vectors
                ]

            by_level[CLEAN] = attribute_all()
            added = 0
            for level in sorted(set(levels)):
                wanted = round(level * reference_size)
                store.upsert(pool[added:wanted])
                store.build_index()
                added = wanted
                by_level[level] = attribute_all()
        finally:
            store.close()
    audit = attributor.audit
    settings = {
        "noise_manifest": str(Path(noise_manifest).resolve()) if noise_manifest is not None else None,
        "levels": levels,
        "kind": kind,
        "k": k,
        "space": space,
        "seed": seed,
        "reference_fraction": reference_fraction,
        "reference_size": reference_size,
        "catalogue_size": len(production),
        "noise_source": source,
        "noise_keys": noise_keys,
    }
    run_id = audit.evaluations.start_run(
        kind="noise",
        requester=attributor.requester,
        query_set_id=query_set_id,
        embedder_name=attributor.embedder_name,
        collection=attributor.store.collection,
        settings=settings,
    )
    audit.evaluations.add_noise_neighbours(
        run_id,
        [(q, level, keys) for level, lists in by_level.items() for q, keys in zip(query_ids, lists, strict=True)],
    )
    metrics = noise_metrics(audit, run_id)
    audit.evaluations.finish_run(run_id, metrics)
    return metrics


def noise_metrics(audit: AuditStore, run_id: int) -> dict[str, Any]:
    """A noise run's results, purely from the audit DB: per level, the mean share of each query's clean top K
    still in its noisy top K, and the share of the noisy top K that is noise."""
    settings = audit.evaluations.run(run_id, kind="noise").settings
    stored = audit.evaluations.noise_neighbours(run_id)
    clean = stored.get(CLEAN, {})
    reference_size = settings["reference_size"]
    rows = []
    for level in sorted(set(settings["levels"])):
        noisy = stored.get(level, {})
        wanted = round(level * reference_size)
        noise = set(settings["noise_keys"][:wanted])
        overlaps = [len(set(clean[q]) & set(keys)) / max(len(clean[q]), 1) for q, keys in noisy.items()]
        in_top = [sum(key in noise for key in keys) / max(len(keys), 1) for keys in noisy.values()]
        rows.append(
            {
                "level": level,
                "noise_works": wanted,
                "mean_overlap": float(np.mean(overlaps)) if overlaps else None,
                "noise_in_top_k": float(np.mean(in_top)) if in_top else None,
            }
        )
    result: dict[str, Any] = finite(
        {
            "run_id": run_id,
            "kind": settings["kind"],
            "k": settings["k"],
            "space": settings["space"],
            "seed": settings["seed"],
            "reference_fraction": settings["reference_fraction"],
            "index_size": reference_size,
            "catalogue_size": settings["catalogue_size"],
            "noise_source": settings["noise_source"],
            "queries": len(clean),
            "levels": rows,
        }
    )
    return result


def noise_from_settings(
    settings: Settings,
    audit: AuditStore,
    queries: str,
    noise_manifest: Path | None,
    *,
    levels: list[float],
    kind: str,
    reference_fraction: float = 0.5,
    seed: int = 0,
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
            levels=levels,
            kind=kind,
            noise_manifest=noise_manifest,
            reference_fraction=reference_fraction,
            seed=seed,
            k=k,
            scratch_root=settings.data_dir,
            space=space,
        )
