"""Near-copy verification by local features: ORB keypoints of a query and of a candidate work, matched (Hamming,
Lowe's ratio test) and checked by a RANSAC homography. A crop, a colour change, blur, JPEG or a small overlay keep
most of a work's matched keypoints in place up to one plausible homography. Another image of the same style can
match many keypoints too (the same glyphs, strokes or textures), but only a small share of its matches agree with
one homography, and that homography is often degenerate: the decision rests on that share and on the homography's
plausibility, not on a count of inliers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_SIDE = 512
ORB_FEATURES = 1500
RATIO = 0.8
RANSAC_PIXELS = 5.0
MIN_MATCHES = 8
MIN_INLIERS = 20  # fewer agreeing keypoints are no evidence of a copy
AREA_SCALE = (0.2, 5.0)  # plausible area ratio of the work to the query, both sides as fractions of the longer side
MIN_COVERAGE = 0.1  # the inliers' convex hull covers at least this share of the query
MIN_SIDE = 2  # OpenCV's ORB fails (cv2.error) on an image 1 pixel wide or high


@dataclass(frozen=True)
class LocalFeatures:
    """An image's ORB keypoint positions (n x 2, float32), binary descriptors (n x 32, uint8) and the size (width,
    height) of the image they were found in."""

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]


@dataclass(frozen=True)
class Match:
    """Ratio-test matches of a query in a work, those agreeing with one RANSAC homography (inliers), the homography's
    area scale (work over query, each measured against its longer side) and the inliers' convex-hull coverage of the
    query."""

    matches: int
    inliers: int
    area_scale: float
    coverage: float

    @property
    def score(self) -> float:
        """The share of the matches that one plausible homography explains; 0 when it is implausible (too few
        inliers, a degenerate or extreme scale, or inliers bunched in a corner). A near-copy scores 0.5 or more."""
        low, high = AREA_SCALE
        plausible = self.inliers >= MIN_INLIERS and low <= self.area_scale <= high and self.coverage >= MIN_COVERAGE
        return self.inliers / self.matches if plausible else 0.0


NO_MATCH = Match(0, 0, 0.0, 0.0)


def local_features(image: Image.Image) -> LocalFeatures:
    """ORB keypoints of the image in grey, its longer side brought to at most MAX_SIDE pixels."""
    import cv2

    grey = image.convert("L")
    if min(grey.size) < MIN_SIDE:  # no keypoint to find: matches nothing, like a blank image
        return _no_features(grey.size)
    scale = MAX_SIDE / max(grey.size)
    if scale < 1:
        grey = grey.resize((round(grey.width * scale), round(grey.height * scale)), Image.Resampling.BILINEAR)
    orb = cv2.ORB.create(nfeatures=ORB_FEATURES)
    keypoints, descriptors = orb.detectAndCompute(np.asarray(grey), None)
    if len(keypoints) == 0:  # (descriptors is then None)
        return _no_features(grey.size)
    return LocalFeatures(np.array([k.pt for k in keypoints], dtype=np.float32), descriptors, grey.size)


def _no_features(size: tuple[int, int]) -> LocalFeatures:
    return LocalFeatures(np.empty((0, 2), np.float32), np.empty((0, 32), np.uint8), size)


def match(query: LocalFeatures, work: LocalFeatures) -> Match:
    """The query's keypoints matched in the work and verified by one RANSAC homography (NO_MATCH when too few)."""
    import cv2

    if len(query.points) < MIN_MATCHES or len(work.points) < MIN_MATCHES:
        return NO_MATCH
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, work.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_MATCHES:
        return NO_MATCH
    source = query.points[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    target = work.points[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    homography, mask = cv2.findHomography(source, target, cv2.RANSAC, RANSAC_PIXELS)
    inlying = np.zeros(len(good), bool) if mask is None else mask.ravel().astype(bool)  # (None: no homography)
    if not inlying.any():
        return Match(len(good), 0, 0.0, 0.0)
    agreeing = source.reshape(-1, 2)[inlying]
    hull = float(cv2.contourArea(cv2.convexHull(agreeing))) if len(agreeing) >= 3 else 0.0
    # The linear part's determinant, in units of each image's longer side (resolution does not count).
    scale = float(np.linalg.det(homography[:2, :2])) * (max(query.size) / max(work.size)) ** 2
    return Match(len(good), len(agreeing), scale, hull / (query.size[0] * query.size[1]))
