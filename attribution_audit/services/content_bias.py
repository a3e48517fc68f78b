"""``evaluate content-bias``: the note's Figure 8 experiment. Each labelled query with true works is attributed
K = its number of true works (logged, tagged with the run); then its content similarity to the attributed works is
compared with its content similarity to its true inspiration works.

Content comes from captions when the embedder has a text tower (CLIP) and captions exist for the generated images
(a ``caption`` column of the labelled CSV) and for the works involved (a ``caption`` column of the catalogue
manifest, kept in the work's payload); otherwise from the content image space. The report states which and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attribution_audit.config import Settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import CONTENT, WorkPoint
from attribution_audit.embedding.base import TextEmbedder
from attribution_audit.errors import ImageError, ManifestError
from attribution_audit.evaluation.content_bias import ContentPairs, content_bias
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import read_labelled
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.evaluations import StoredQuery

CAPTIONS = "captions"
IMAGES = "content image space"
CIRCULAR = (
    "the attributed works were chosen by their similarity in this same content image space, so they are at least as "
    "similar by construction: this comparison cannot show a content bias; give captions with a CLIP embedder, or "
    "attribute with --space style"
)


@dataclass(frozen=True)
class Attributed:
    query: StoredQuery
    image_vector: np.ndarray  # the generated image in the content image space
    work_ids: list[str]


def _content_source(
    attributor: Attributor, captions: dict[str, str], attributed: list[Attributed], works: dict[str, WorkPoint]
) -> tuple[str, str]:
    """(captions or content image space, why)."""
    if not isinstance(attributor.embedder, TextEmbedder):
        return IMAGES, f"the embedder {attributor.embedder_name} has no text tower to embed captions"
    if not captions:
        return IMAGES, "the labelled queries have no caption column"
    missing_queries = sum(1 for a in attributed if not captions.get(a.query.path))
    needed = {w for a in attributed for w in (*a.work_ids, *a.query.work_ids) if w in works}
    missing_works = sum(1 for w in needed if not works[w].payload.get("caption"))
    if missing_queries or missing_works:
        return IMAGES, (
            f"{missing_queries} generated images and {missing_works} works lack a caption "
            "(a caption column in the labelled CSV and in the catalogue manifest)"
        )
    return CAPTIONS, f"captions embedded with the text tower of {attributor.embedder_name}"


def measure_content_bias(
    attributor: Attributor, query_set_id: int, captions: dict[str, str], *, space: str = CONTENT
) -> dict[str, Any]:
    """Attribute, measure both similarity distributions per query, test them overall and per subset; recorded as
    an evaluation run of kind ``content_bias``."""
    audit = attributor.audit
    labelled = [q for q in audit.evaluations.queries(query_set_id) if q.work_ids]
    if not labelled:
        raise ManifestError("content-bias needs labelled queries with true works (a work_ids column)")
    searching = attributor.space_of(AttributionParams(space=space))[0]  # an unknown space: refused before the run
    run_id = audit.evaluations.start_run(
        kind="content_bias",
        requester=attributor.requester,
        query_set_id=query_set_id,
        embedder_name=attributor.embedder_name,
        collection=attributor.store.collection,
        settings={"space": space, "k": "number of true works"},
    )
    works = {str(p.payload.get("work_id")): p for p in attributor.store.iter_points()}
    attributed: list[Attributed] = []
    for query in labelled:
        try:
            image = load_image(query.path, target_size=224)
        except ImageError:
            continue
        vector = attributor.embed([image.image], space, crops=True)[0]  # recorded as a request: measured as one
        params = AttributionParams(k=len(query.work_ids), verify="off", space=space)
        outcome = attributor.compute(vector, params)
        attributor.record(str(image.path), image.sha256, vector, params, outcome, evaluation=(run_id, query.id))
        content = vector.content if space == CONTENT else attributor.embed([image.image], CONTENT)[0].content
        attributed.append(Attributed(query, np.asarray(content), [n.work_id for n in outcome.neighbours]))
    source, why = _content_source(attributor, captions, attributed, works)
    text_tower = attributor.embedder
    if source == CAPTIONS and isinstance(text_tower, TextEmbedder):
        texts = [captions[a.query.path] for a in attributed]
        names = sorted({w for a in attributed for w in (*a.work_ids, *a.query.work_ids) if w in works})
        texts += [str(works[w].payload["caption"]) for w in names]
        vectors = text_tower.embed_text(texts)
        queries = list(vectors[: len(attributed)])
        content_of = dict(zip(names, vectors[len(attributed) :], strict=True))
    else:
        queries = [a.image_vector for a in attributed]
        content_of = {w: np.asarray(p.vector) for w, p in works.items()}

    def similarities(query: np.ndarray, work_ids: tuple[str, ...] | list[str]) -> list[float]:
        return [float(np.dot(query, content_of[w])) for w in work_ids if w in content_of]

    pairs = [
        ContentPairs(a.query.subset, similarities(q, a.work_ids), similarities(q, a.query.work_ids))
        for a, q in zip(attributed, queries, strict=True)
    ]
    metrics = {
        "run_id": run_id,
        "space": space,
        "content_source": source,
        "content_source_reason": why,
        "caveat": CIRCULAR if source == IMAGES and CONTENT in searching.bases else None,
        "queries_with_true_works": len(labelled),
        **content_bias(pairs),
    }
    audit.evaluations.finish_run(run_id, metrics)
    return metrics


def content_bias_from_settings(
    settings: Settings, audit: AuditStore, queries: str, *, space: str = CONTENT
) -> dict[str, Any]:
    """The ``evaluate content-bias`` use case: import the labelled queries, read their captions, measure."""
    from attribution_audit.services.evaluate import import_query_set

    query_set = import_query_set(audit, queries)
    path = Path(queries)
    captions = {str(q.path): q.caption for q in read_labelled(path) if q.caption} if path.is_file() else {}
    with open_attributor(settings, audit, settings.embedder) as attributor:
        return measure_content_bias(attributor, query_set, captions, space=space)
