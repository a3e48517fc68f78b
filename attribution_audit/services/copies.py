"""``evaluate copies``: the copy-detection stage's recall@1 on labelled copies, per edit, and its false-copy rate on
labelled non-copies with its 95 % upper bound, the margin of their scores to the threshold, and how many checks could
not run."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from attribution_audit.config import COPY_LAYOUT_DEPTH, Settings
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import LAYOUT
from attribution_audit.embedding.copy_match import METHOD
from attribution_audit.embedding.layout import layout_vector
from attribution_audit.evaluation.metrics import rate_upper_bound
from attribution_audit.services.copy_check import COPY, COPY_SCORE, NO_COPY
from attribution_audit.services.evaluate import refuse_unknown_works
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import read_labelled
from attribution_audit.store.audit_store import AuditStore

BATCH = 32


class _Verdict(NamedTuple):
    """One labelled query's copy check: its labels (``work_ids`` empty for a non-copy) and the check's answer."""

    work_ids: tuple[str, ...]
    subset: str | None
    status: str
    copy_of: str | None
    score: float

    @property
    def named(self) -> bool:
        """A copy whose verdict names its source work."""
        return bool(self.work_ids) and self.copy_of == self.work_ids[0]


@dataclass(frozen=True)
class CopyEvaluation:
    """recall@1 (the verdict names the labelled source work) on copies, overall and per subset (edit); false copy
    flags on non-copies with the rate's one-sided 95 % upper bound; the checks that could not run (``not_run`` or
    ``failed``, counted among the misses and the non-flags), by status word, and the first such status in full (its
    reason); the mean seconds of one check; the margin to the threshold: the highest and the 99th percentile
    (nearest rank) of the non-copies' scores, and the lowest score of a copy named by its source (None when there is
    none)."""

    copies: int
    recall_at_1: float | None
    non_copies: int
    false_copies: int
    false_copy_rate: float | None
    false_copy_rate_upper_95: float | None
    not_run: dict[str, int]
    threshold: float
    method: str
    depth: int
    check_seconds: float | None
    layout_depth: int = 0  # candidates by layout (embedding.layout); 0 where the collection holds no layouts
    laid_out: int = 0  # the collection's points with a layout
    points: int = 0  # the collection's points
    copies_by_subset: dict[str, int] = field(default_factory=dict)
    first_not_run: str | None = None
    recall_by_subset: dict[str, float] = field(default_factory=dict)
    non_copy_score_max: float | None = None
    non_copy_score_p99: float | None = None
    copy_score_min: float | None = None


def evaluate_copies(
    settings: Settings,
    audit: AuditStore,
    labelled: Sequence[Path],
    *,
    space: str = "content",
    depth: int | None = None,
) -> CopyEvaluation:
    """Run the copy stage on labelled queries (not logged) as an attribution in ``space`` runs it, with ``depth``
    candidates from each base space (default: the settings'): rows with ``work_ids`` are copies of their first work,
    rows without are non-copies (held-out works, generated images)."""
    settings = settings if depth is None else replace(settings, copy_depth=depth)
    queries = []
    for path in labelled:
        rows = read_labelled(path)
        refuse_unknown_works(audit, path, rows)
        queries += rows
    params = AttributionParams(verify="off", space=space)
    verdicts: list[_Verdict] = []
    seconds = 0.0
    with open_attributor(settings, audit, settings.embedder) as attributor:
        laid_out, points = attributor.store.count_with(LAYOUT), attributor.store.count()
        layout_depth = COPY_LAYOUT_DEPTH if settings.copy_depth and laid_out else 0
        for start in range(0, len(queries), BATCH):
            batch = queries[start : start + BATCH]
            images = [load_image(q.path, target_size=224) for q in batch]  # as `attribute` loads an image
            for query, image, vectors in zip(
                batch, images, attributor.embed([i.image for i in images], space), strict=True
            ):
                outcome = attributor.compute(vectors, params, copies=True)  # its searches hold the candidates
                started = time.perf_counter()  # (the layout is the copy check's: timed with it)
                outcome = attributor.check_copy(image, outcome, vectors, layout_vector(image.image))
                seconds += time.perf_counter() - started
                status, score = outcome.copy_status or "", outcome.copy_score or 0.0
                verdicts.append(_Verdict(query.work_ids, query.subset, status, outcome.copy_of, score))
    copies, others = [v for v in verdicts if v.work_ids], [v for v in verdicts if not v.work_ids]
    by_subset: dict[str, list[bool]] = defaultdict(list)
    for verdict in copies:
        by_subset[verdict.subset or ""].append(verdict.named)
    hits = [hit for values in by_subset.values() for hit in values]
    flags = [verdict.copy_of is not None for verdict in others]
    scores = sorted(verdict.score for verdict in others)
    named = [verdict.score for verdict in copies if verdict.named]
    unrun = [verdict.status for verdict in verdicts if verdict.status.split(":")[0] not in (COPY, NO_COPY)]
    return CopyEvaluation(
        copies=len(hits),
        recall_at_1=sum(hits) / len(hits) if hits else None,
        non_copies=len(flags),
        false_copies=sum(flags),
        false_copy_rate=sum(flags) / len(flags) if flags else None,
        false_copy_rate_upper_95=rate_upper_bound(sum(flags), len(flags)),
        not_run=dict(Counter(status.split(":")[0] for status in unrun)),
        threshold=COPY_SCORE,
        method=METHOD,
        depth=settings.copy_depth,
        check_seconds=seconds / len(verdicts) if verdicts else None,
        layout_depth=layout_depth,
        laid_out=laid_out,
        points=points,
        recall_by_subset={subset: sum(v) / len(v) for subset, v in sorted(by_subset.items())},
        non_copy_score_max=scores[-1] if scores else None,
        non_copy_score_p99=scores[math.ceil(0.99 * len(scores)) - 1] if scores else None,
        copy_score_min=min(named) if named else None,
        copies_by_subset={subset: len(v) for subset, v in sorted(by_subset.items())},
        first_not_run=unrun[0] if unrun else None,
    )
