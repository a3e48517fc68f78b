"""``evaluate copies``: the copy-detection stage's recall@1 on labelled copies and its false-copy rate on labelled
non-copies."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attribution_audit.config import Settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.services.copy_check import COPY_DEPTH, COPY_SCORE
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import LabelledQuery, read_labelled
from attribution_audit.store.audit_store import AuditStore

BATCH = 32


@dataclass(frozen=True)
class CopyEvaluation:
    """recall@1 (the verdict names the labelled source work) on copies; false copy flags on non-copies."""

    copies: int
    recall_at_1: float | None
    non_copies: int
    false_copy_rate: float | None
    threshold: float
    recall_by_subset: dict[str, float] = field(default_factory=dict)


def evaluate_copies(
    settings: Settings, audit: AuditStore, labelled: Sequence[Path], *, space: str = "content"
) -> CopyEvaluation:
    """Run the copy stage on labelled queries (not logged): rows with ``work_ids`` are copies of their first work,
    rows without are non-copies (held-out works, generated images)."""
    queries = [q for path in labelled for q in read_labelled(path)]
    params = AttributionParams(k=COPY_DEPTH, verify="off", space=space)
    found: list[tuple[LabelledQuery, str | None]] = []
    with open_attributor(settings, audit, settings.embedder) as attributor:
        for start in range(0, len(queries), BATCH):
            batch = queries[start : start + BATCH]
            images = [load_image(q.path, target_size=None).image for q in batch]
            for query, image, vectors in zip(batch, images, attributor.embed(images, space), strict=True):
                outcome = attributor.check_copy(image, attributor.compute(vectors, params))
                found.append((query, outcome.copy_of))
    copies = [(q, v) for q, v in found if q.work_ids]
    others = [copy_of for q, copy_of in found if not q.work_ids]
    by_subset: dict[str, list[bool]] = defaultdict(list)
    for query, copy_of in copies:
        by_subset[query.subset or ""].append(copy_of == query.work_ids[0])
    hits = [hit for values in by_subset.values() for hit in values]
    return CopyEvaluation(
        copies=len(copies),
        recall_at_1=sum(hits) / len(hits) if hits else None,
        non_copies=len(others),
        false_copy_rate=sum(copy_of is not None for copy_of in others) / len(others) if others else None,
        threshold=COPY_SCORE,
        recall_by_subset={subset: sum(v) / len(v) for subset, v in sorted(by_subset.items())},
    )
