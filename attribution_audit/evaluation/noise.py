"""Noise robustness (the note's Figure 10): add extra works to a *scratch copy* of the index at several levels
and measure how much of the clean attribution survives. The production collection is only read."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from attribution_audit.attribution import AttributionParams, Attributor, Neighbour
from attribution_audit.audit.db import session_scope
from attribution_audit.audit.models import EvaluationRun, LabelledQueryRecord, utcnow
from attribution_audit.catalogue.manifest import ManifestRow, open_source
from attribution_audit.errors import ImageError, ManifestError, VectorStoreError
from attribution_audit.evaluation.metrics import finite
from attribution_audit.images import load_image
from attribution_audit.vectorstore import WorkPoint, point_id_for
from attribution_audit.vectorstore.base import CONTENT, STYLE
from attribution_audit.vectorstore.qdrant_edge import EdgeStore

NOISE_CATALOGUE = "noise"


def _embed_paths(
    attributor: Attributor, paths: list[Path], space: str, batch_size: int = 32
) -> tuple[list[np.ndarray], list[np.ndarray | None], list[int]]:
    """Content and (for the style and fused spaces) style vectors of the readable images, and their indexes."""
    contents: list[np.ndarray] = []
    styles: list[np.ndarray | None] = []
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
            content, style = attributor.embed(images, space)
            contents.extend(content)
            styles.extend(style if style is not None else [None] * len(images))
    return contents, styles, kept


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
    with session_scope(attributor.engine) as session:
        queries = [
            (q.path, q.artist)
            for q in session.query(LabelledQueryRecord)
            .filter_by(query_set_id=query_set_id)
            .order_by(LabelledQueryRecord.id)
        ]
    query_vectors, query_styles, kept = _embed_paths(attributor, [Path(p) for p, _ in queries], space)
    true_artists = [attributor.canonical.get(queries[i][1], queries[i][1]) for i in kept]
    noise_vectors, noise_styles, noise_kept = _embed_paths(attributor, [r.path for r in rows], space)
    noise_points = [
        WorkPoint(
            point_id_for(NOISE_CATALOGUE, rows[i].work_id),
            vector,
            {"work_id": rows[i].work_id, "artist": rows[i].artist, "catalogue": NOISE_CATALOGUE, "noise_kind": kind},
            style,
        )
        for i, vector, style in zip(noise_kept, noise_vectors, noise_styles, strict=True)
    ]
    queries_and_styles = list(zip(query_vectors, query_styles, strict=True))
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix="noise-") as scratch:
        store = EdgeStore(Path(scratch), "scratch")
        try:
            production = list(attributor.store.iter_points())
            if not production:
                raise VectorStoreError(f"collection '{attributor.store.collection}' is empty; ingest a catalogue first")
            if space != CONTENT and STYLE not in attributor.store.spaces():
                raise VectorStoreError(
                    f"collection '{attributor.store.collection}' has no style vectors; "
                    "ingest with --spaces content,style"
                )
            style_dim = attributor.style_embedder.dim if space != CONTENT and attributor.style_embedder else None
            store.ensure_collection(len(production[0].vector), style_dim)
            store.upsert(production)
            store.build_index()
            scratch_attributor = attributor.with_store(store)
            clean = [_attribute(scratch_attributor, q, s, params) for q, s in queries_and_styles]
            results, added = [], 0
            for level in sorted(levels):
                wanted = round(level * len(production))
                if wanted > added:
                    store.upsert(noise_points[added:wanted])
                    store.build_index()
                    added = min(wanted, len(noise_points))
                noisy = [_attribute(scratch_attributor, q, s, params) for q, s in queries_and_styles]
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
    with session_scope(attributor.engine) as session:
        run = EvaluationRun(
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
            status="completed",
            finished_at=utcnow(),
        )
        session.add(run)
        session.flush()
        metrics = {**metrics, "run_id": run.id}
        run.metrics = metrics
    return metrics


def _attribute(
    attributor: Attributor, query: np.ndarray, style: np.ndarray | None, params: AttributionParams
) -> list[Neighbour]:
    return attributor.compute(query, params, style).neighbours


def _keys(neighbours: list[Neighbour]) -> set[str]:
    return {f"{n.catalogue}/{n.work_id}" for n in neighbours}


def _hit_rate(attributions: list[list[Neighbour]], artists: list[str]) -> float | None:
    """Share of queries with at least one neighbour by the true artist."""
    if not attributions:
        return None
    hits = [any(n.canonical_artist == a for n in ns) for ns, a in zip(attributions, artists, strict=True)]
    return float(np.mean(hits))


def write_noise_outputs(metrics: dict[str, Any], out: str | Path) -> list[Path]:
    """noise.json, noise.csv and noise.png (mean overlap vs level)."""
    import csv
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "noise.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    with (out / "noise.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "level", "actual_level", "noise_works", "mean_overlap", "noise_in_top_k"])
        for row in metrics["levels"]:
            writer.writerow(
                [
                    metrics["kind"],
                    row["level"],
                    row["actual_level"],
                    row["noise_works"],
                    row["mean_overlap"],
                    row["noise_in_top_k"],
                ]
            )
    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    levels = [100 * row["actual_level"] for row in metrics["levels"]]
    axis.plot(levels, [row["mean_overlap"] for row in metrics["levels"]], marker="o", label=metrics["kind"])
    axis.set_xlabel("noise added (% of the index)")
    axis.set_ylabel(f"mean overlap with the clean top {metrics['k']}")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "noise.png")
    plt.close(figure)
    return [out / "noise.json", out / "noise.csv", out / "noise.png"]
