"""Copy detection, the second stage of an attribution: "near-copy of work X" when the query, aligned on X by a
homography fitted to their matched ORB keypoints, correlates with X (embedding.copy_match), over candidate works
drawn from every base space the collection has (a blurred or JPEG-compressed copy can be far from its source in one
space and near it in another).

A query whose file is byte for byte the file a candidate was ingested from is its copy at once (method
IDENTICAL, score 1), whatever its keypoints: a flat or striped image has too few for the comparison. Where several
candidates were ingested from that file, the verdict names the one first added to the catalogue (the lowest work key)
and its status the others: ``copy: the same file is also catalogued as "W7", "W9" (catalogue "archive"); "W2" is in
catalogue "main"``.

Each verdict says whether the check ran: ``copy``, ``no_copy`` (every candidate compared), ``not_run: <why>`` (the
query has too few distinctive points for local features, or some candidate's image could not be compared: no file
recorded, file missing, unreadable or changed since ingest, or the check is off) or ``failed: <why>`` (OpenCV failed
on the query or a candidate), so that a check that could not run is never taken for "no copy". A candidate with too
few keypoints counts as compared when the query has enough: an edited copy keeps its source's keypoints, so a query
rich in them is no near-copy of a work without (and one such work must not stop every verdict)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from attribution_audit.domain.points import point_id_for
from attribution_audit.embedding.copy_match import METHOD as LOCAL_FEATURES
from attribution_audit.embedding.copy_match import MIN_MATCHES, LocalFeatures, Match, local_features, match
from attribution_audit.sources.images import NO_IMAGE_FILE, one_line, recorded_image
from attribution_audit.store.audit_store import AuditStore

COPY_SCORE = 0.55  # the match score (median aligned tile correlation under a plausible homography) of a near-copy
COPY = "copy"
NO_COPY = "no_copy"
NOT_RUN = "not_run"
FAILED = "failed"
NAMED = 3  # works named in a status's reason
CACHED_WORKS = 2048  # works whose local features a process keeps (~150 KB each), the least recently used dropped
IDENTICAL = "identical-file-sha256"  # the method of a copy found by the file's sha256 alone


@dataclass(frozen=True)
class CopyVerdict:
    """The best-matching candidate (``work_id``, ``catalogue``) and its match, the status of the check and the
    number of candidates compared."""

    work_id: str | None
    catalogue: str | None
    match: Match | None
    status: str
    compared: int = 0
    method: str = LOCAL_FEATURES

    @property
    def copy_of(self) -> str | None:
        return self.work_id if self.status.partition(":")[0] == COPY else None

    @property
    def copy_score(self) -> float | None:
        """The best compared candidate's score (COPY_SCORE and above is a near-copy; 1 for an identical file); None
        when none was compared."""
        if self.method == IDENTICAL:
            return 1.0
        return None if self.match is None else self.match.score


def not_run(reason: str) -> CopyVerdict:
    """The verdict of a check that did not run at all."""
    return CopyVerdict(None, None, None, f"{NOT_RUN}: {reason}")


class CopyDetector:
    """Checks a query against the images of its candidate works (the local features of the CACHED_WORKS most
    recently compared works cached per process, so that a long-running service's memory stays bounded)."""

    def __init__(self, audit: AuditStore, collection: str) -> None:
        self.audit, self.collection = audit, collection
        self._features: OrderedDict[tuple[str, str], LocalFeatures] = OrderedDict()

    def check(self, image: Image.Image, candidates: Sequence[tuple[str, str]], sha256: str | None) -> CopyVerdict:
        """The verdict over the candidate works, (catalogue, work id) pairs, for the query image and the sha256 of
        its file (None: not known): first, of the candidates ingested from the same bytes, the one first added to
        the catalogue, naming the others; else the best score, then the most inliers; a copy when the best score
        reaches COPY_SCORE, whatever the other candidates gave."""
        import cv2

        if not candidates:
            return not_run("no candidate work")
        ids = {point_id_for(catalogue, work): (catalogue, work) for catalogue, work in dict.fromkeys(candidates)}
        paths = self.audit.catalogue.image_paths(self.collection, list(ids))
        identical = [ids[point] for point, (_, digest) in paths.items() if digest == sha256]
        if identical:
            (catalogue, work), others = identical[0], identical[1:]
            return CopyVerdict(work, catalogue, None, _also(others, catalogue, work), 1, IDENTICAL)
        try:
            query = local_features(image)
        except cv2.error as exc:
            return CopyVerdict(None, None, None, f"{FAILED}: OpenCV failed on the query image ({one_line(exc)})")
        if len(query.points) < MIN_MATCHES:
            return not_run(f"the query image has too few distinctive points to compare ({_points(query)})")
        best: tuple[str | None, str | None] = (None, None)
        best_match: Match | None = None
        unreadable: list[str] = []
        failures: list[str] = []
        for point, (catalogue, work) in ids.items():
            features = self._features_of(paths.get(point))
            if isinstance(features, str):
                unreadable.append(f"{work}: {features}")
                continue
            try:
                found = match(query, features)
            except cv2.error as exc:
                failures.append(f"{work}: {one_line(exc)}")
                continue
            if best_match is None or (found.score, found.inliers) > (best_match.score, best_match.inliers):
                best, best_match = (catalogue, work), found
        compared = len(ids) - len(unreadable) - len(failures)
        if best_match is not None and best_match.score >= COPY_SCORE:
            status = COPY
        elif failures:
            status = f"{FAILED}: OpenCV failed on {_listed(failures, len(ids))}"
        elif unreadable:
            status = f"{NOT_RUN}: {_listed(unreadable, len(ids))} could not be compared"
        else:
            status = NO_COPY
        return CopyVerdict(best[1], best[0], best_match, status, compared)

    def _features_of(self, image: tuple[str, str] | None) -> LocalFeatures | str:
        """The local features of a work's file (path, recorded sha256), or why there are none
        (:func:`recorded_image`: a swapped file is no evidence of a copy of the work). Raises cv2.error when OpenCV
        fails on the image."""
        if image is None:
            return NO_IMAGE_FILE
        if image in self._features:
            self._features.move_to_end(image)
            return self._features[image]
        loaded = recorded_image(image)
        if isinstance(loaded, str):
            return loaded
        features = self._features[image] = local_features(loaded.image)
        if len(self._features) > CACHED_WORKS:
            self._features.popitem(last=False)
        return features


def _listed(problems: list[str], candidates: int) -> str:
    """'2 of 20 candidates (W1: ..., W2: ...)', naming at most NAMED."""
    more = f", {len(problems) - NAMED} more" if len(problems) > NAMED else ""
    return f"{len(problems)} of {candidates} candidates ({'; '.join(problems[:NAMED])}{more})"


def _also(others: list[tuple[str, str]], catalogue: str, work: str) -> str:
    """The status of an identical file: ``copy``, naming at most NAMED other (catalogue, work id) candidates ingested
    from that file too, each quoted (:func:`_quoted`), with their catalogue where it is not ``catalogue``, the named
    ``work``'s, which is then named too."""
    if not others:
        return COPY
    names = [_quoted(id_) if of == catalogue else f"{_quoted(id_)} (catalogue {_quoted(of)})" for of, id_ in others]
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    own = f"; {_quoted(work)} is in catalogue {_quoted(catalogue)}" if any(of != catalogue for of, _ in others) else ""
    return f"{COPY}: the same file is also catalogued as {', '.join(names[:NAMED])}{more}{own}"


def _quoted(name: str) -> str:
    """A work id or catalogue name in double quotes, as JSON writes it: one with ``, `` or a quote stays one name."""
    return json.dumps(name, ensure_ascii=False)


def _points(features: LocalFeatures) -> str:
    return f"{len(features.points)} keypoint(s), {MIN_MATCHES} needed"
