"""Copy detection, the second stage of an attribution: "near-copy of work X" when most of the query's local features
matched in X agree with one plausible homography (ORB + RANSAC), over the attribution's first works."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from attribution_audit.domain.points import point_id_for
from attribution_audit.domain.results import Neighbour
from attribution_audit.embedding.copy_match import NO_MATCH, LocalFeatures, Match, local_features, match
from attribution_audit.errors import AttributionAuditError
from attribution_audit.sources.images import load_image
from attribution_audit.store.audit_store import AuditStore

COPY_DEPTH = 10  # candidates checked: the first works of the attribution
COPY_SCORE = 0.5  # the match score (share of matches one plausible homography explains) of a near-copy
BATCH = 32


@dataclass(frozen=True)
class CopyVerdict:
    """The best-matching candidate (``work_id``, ``catalogue``) and its match; a copy when its score reaches
    COPY_SCORE."""

    work_id: str | None
    catalogue: str | None
    match: Match

    @property
    def is_copy(self) -> bool:
        return self.match.score >= COPY_SCORE

    @property
    def copy_of(self) -> str | None:
        return self.work_id if self.is_copy else None

    @property
    def copy_score(self) -> float:
        """The best candidate's match score: 0.5 and above is a near-copy."""
        return self.match.score


class CopyDetector:
    """Checks a query against the images of its candidate works (their local features cached per process)."""

    def __init__(self, audit: AuditStore, collection: str) -> None:
        self.audit, self.collection = audit, collection
        self._features: dict[tuple[str, str], LocalFeatures] = {}

    def check(self, image: Image.Image, neighbours: Sequence[Neighbour]) -> CopyVerdict:
        """The verdict over the first COPY_DEPTH neighbours (the best score, then the most inliers); a work whose
        image is gone or changed counts as no match."""
        candidates = list(neighbours[:COPY_DEPTH])
        ids = {point_id_for(n.catalogue, n.work_id): n for n in candidates}
        paths = self.audit.catalogue.image_paths(self.collection, list(ids))
        query = local_features(image)
        best: Neighbour | None = None
        best_match = NO_MATCH
        for point, neighbour in ids.items():
            features = self._features_of(paths.get(point))
            found = match(query, features) if features is not None else NO_MATCH
            if (found.score, found.inliers) > (best_match.score, best_match.inliers):
                best, best_match = neighbour, found
        if best is None:
            return CopyVerdict(None, None, NO_MATCH)
        return CopyVerdict(best.work_id, best.catalogue, best_match)

    def _features_of(self, image: tuple[str, str] | None) -> LocalFeatures | None:
        """The local features of a work's file (path, recorded sha256); None when the file is gone, unreadable or
        no longer the image that was ingested (a swapped file is no evidence of a copy of the work)."""
        if image is None:
            return None
        if image not in self._features:
            try:
                loaded = load_image(image[0])
            except AttributionAuditError:
                return None
            if loaded.sha256 != image[1]:
                return None
            self._features[image] = local_features(loaded.image)
        return self._features[image]
