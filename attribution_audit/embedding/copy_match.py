"""Near-copy verification by local features and alignment: ORB keypoints of a query and of a candidate work, matched
(Hamming, Lowe's ratio test), one RANSAC homography fitted to them, and then the two images compared pixel by pixel
after that homography.

A crop, a colour change, blur, JPEG or a small overlay keep the work's picture in place up to one plausible
homography: aligned by it, most of the query correlates with the work tile by tile (normalised cross-correlation of
their band-passed grey levels in each tile: the band ignores a change of brightness or contrast, pixel noise such as
JPEG's, and the coarse layout that two different images of one style share, such as lines of text at the same
spacing; the median over the tiles ignores an overlay on a few of them). Another image of the same style can match
many keypoints too (the same glyphs, strokes or textures), and a homography may explain some of them, but aligned by
it the two images do not look alike, and it explains only a small share of the matches (the same glyphs elsewhere
match too): the decision rests on that correlation over the query's footprint in the work and on that share, not on
how many keypoints agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageOps

METHOD = "orb-ransac-ncc-v4"  # recorded with every copy score: scores of different rules are not comparable
MAX_SIDE = 512
ORB_FEATURES = 750  # ORB keeps the strongest; matching costs (query x work keypoints)
RATIO = 0.8
RANSAC_PIXELS = 5.0
MIN_MATCHES = 8
MIN_INLIERS = 12  # fewer agreeing keypoints are no evidence of one homography
MIN_INLIER_SHARE = 0.3  # the share of the ratio-test matches that homography must explain (see Match.plausible)
AREA_SCALE = (0.2, 5.0)  # plausible area ratio of the work to the query, both sides as fractions of the longer side
MIN_FOOTPRINT = 0.5  # the share of the query that the homography must map inside the work
ALIGN_SIDE = 256  # the aligned images are compared with their longer side brought to this size ...
BAND = (1.0, 6.0)  # ... band-passed: Gaussian of the first sigma minus Gaussian of the second (pixels at that size) ...
TILE = 32  # ... in tiles of TILE x TILE pixels
FLAT = 1.0  # a tile whose band varies less (standard deviation) is flat: no evidence either way when both are
MIN_TILES = 8  # fewer tiles with something to compare are no evidence of a copy
MIN_SIDE = 2  # OpenCV's ORB fails (cv2.error) on an image 1 pixel wide or high


@dataclass(frozen=True)
class LocalFeatures:
    """An image's ORB keypoint positions (n x 2, float32), binary descriptors (n x 32, uint8) and the size (width,
    height) of the image they were found in; ``grey`` is the image at ALIGN_SIDE, band-passed (float16), for the
    comparison after alignment."""

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]
    grey: np.ndarray


@dataclass(frozen=True)
class Match:
    """Ratio-test matches of a query in a work, those agreeing with one RANSAC homography (inliers), the homography's
    area scale (work over query, each measured against its longer side), the share of the query it maps inside the
    work (footprint) and the median correlation of the two images aligned by it over the tiles of that footprint."""

    matches: int
    inliers: int
    area_scale: float
    footprint: float
    correlation: float

    @property
    def plausible(self) -> bool:
        """Enough inliers, explaining a fair share of the matches, a scale that is neither degenerate nor extreme, and
        most of the query inside the work."""
        return self.geometric and self.footprint >= MIN_FOOTPRINT

    @property
    def geometric(self) -> bool:
        """Whether the keypoints alone make the homography plausible: enough inliers, MIN_INLIER_SHARE of the matches
        or more (the matches of a copy mostly agree with one homography; those of another image of the same style,
        the same glyphs or strokes elsewhere, mostly do not), and an area scale neither degenerate nor extreme."""
        low, high = AREA_SCALE
        share = self.inliers / self.matches if self.matches else 0.0
        return self.inliers >= MIN_INLIERS and share >= MIN_INLIER_SHARE and low <= self.area_scale <= high

    @property
    def score(self) -> float:
        """The aligned images' median tile correlation when the homography is plausible, else 0 (never below 0)."""
        return max(self.correlation, 0.0) if self.plausible else 0.0


NO_MATCH = Match(0, 0, 0.0, 0.0, 0.0)


def copy_view(image: Image.Image) -> Image.Image:
    """The image in grey, its longer side brought to at most MAX_SIDE: all of it that :func:`local_features` looks at
    (``local_features(copy_view(image))`` is ``local_features(image)``), so a caller may keep this small copy in
    place of a large image it still has to check."""
    grey = image.convert("L")
    scale = MAX_SIDE / max(grey.size)
    if scale < 1:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    return grey


def local_features(image: Image.Image) -> LocalFeatures:
    """ORB keypoints of the image in grey, its longer side brought to at most MAX_SIDE pixels and its grey levels
    stretched to the full range, and its grey levels at ALIGN_SIDE, band-passed. Raises cv2.error when OpenCV fails
    on the image.

    The stretch makes the keypoints independent of the image's contrast: ORB's corner test compares grey levels
    with a fixed threshold, and a low-contrast copy (a hairline face blurred: 16 grey levels in all) had no corner."""
    import cv2

    grey = copy_view(image)
    if min(grey.size) < MIN_SIDE:  # no keypoint to find (a strip, also once brought to MAX_SIDE): matches nothing
        return _no_features(grey)
    grey = ImageOps.autocontrast(grey)  # (a flat image stays as it is)
    orb = cv2.ORB.create(nfeatures=ORB_FEATURES)
    keypoints, descriptors = orb.detectAndCompute(np.asarray(grey), None)
    if len(keypoints) == 0:  # (descriptors is then None)
        return _no_features(grey)
    return LocalFeatures(np.array([k.pt for k in keypoints], dtype=np.float32), descriptors, grey.size, _band(grey))


def _band(grey: Image.Image) -> np.ndarray:
    """The grey levels at ALIGN_SIDE, band-passed (difference of Gaussians), as float16 (half the cache)."""
    import cv2

    scale = ALIGN_SIDE / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    small = np.asarray(grey.resize(size, Image.Resampling.BOX), dtype=np.float32)
    fine, coarse = (cv2.GaussianBlur(small, (0, 0), sigma) for sigma in BAND)
    return (fine - coarse).astype(np.float16)


def _no_features(grey: Image.Image) -> LocalFeatures:
    return LocalFeatures(
        np.empty((0, 2), np.float32), np.empty((0, 32), np.uint8), grey.size, np.empty((0, 0), np.float16)
    )


def match(query: LocalFeatures, work: LocalFeatures) -> Match:
    """The query's keypoints matched in the work, one RANSAC homography fitted to them, and the images compared
    after it (NO_MATCH when too few keypoints match; footprint and correlation 0 when the keypoints alone rule the
    homography out). Raises cv2.error when OpenCV fails."""
    import cv2

    if len(query.points) < MIN_MATCHES or len(work.points) < MIN_MATCHES:
        return NO_MATCH
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, work.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_MATCHES:
        return NO_MATCH
    source = query.points[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    target = work.points[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    homography, mask = cv2.findHomography(source, target, cv2.USAC_MAGSAC, RANSAC_PIXELS)
    if homography is None or mask is None or not mask.any():
        return Match(len(good), 0, 0.0, 0.0, 0.0)
    inliers = int(mask.sum())
    # The linear part's determinant, in units of each image's longer side (resolution does not count).
    scale = float(np.linalg.det(homography[:2, :2])) * (max(query.size) / max(work.size)) ** 2
    found = Match(len(good), inliers, scale, 0.0, 0.0)
    if not found.geometric:  # scores 0 whatever the images look like aligned: not worth the comparison
        return found
    footprint, correlation = _aligned(query, work, homography)
    return replace(found, footprint=footprint, correlation=correlation)


def _aligned(query: LocalFeatures, work: LocalFeatures, homography: np.ndarray) -> tuple[float, float]:
    """The share of the query that the homography maps inside the work, and the median normalised cross-correlation
    of the query's band-passed grey levels with the work's warped onto it, over the query's tiles inside the work (a
    tile flat on one side only counts as 0, flat on both sides not at all) and its tiles away from the work that are
    not flat, which count as 0: a copy shows the work, so what the query shows must be found in it (a flat canvas
    around a pasted work costs nothing; a page sharing one line with the work, aligned on that line, has the rest of
    its text outside)."""
    import cv2

    query_grey, work_grey = query.grey.astype(np.float32), work.grey.astype(np.float32)
    (qh, qw), (wh, ww) = query_grey.shape, work_grey.shape
    # Keypoint coordinates -> ALIGN_SIDE coordinates, on each side.
    to_query = np.diag([qw / query.size[0], qh / query.size[1], 1.0])
    to_work = np.diag([ww / work.size[0], wh / work.size[1], 1.0])
    small = to_work @ homography @ np.linalg.inv(to_query)  # query pixel -> work pixel, at ALIGN_SIDE
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(work_grey, small, (qw, qh), flags=flags, borderValue=0.0)
    inside = cv2.warpPerspective(np.ones_like(work_grey), small, (qw, qh), flags=flags, borderValue=0.0) > 0.999
    rows, cols = qh // TILE, qw // TILE

    def tiles(image: np.ndarray) -> np.ndarray:
        return image[: rows * TILE, : cols * TILE].reshape(rows, TILE, cols, TILE).swapaxes(1, 2).reshape(-1, TILE**2)

    whole = tiles(inside).all(axis=1)
    # Tiles farther from the work than the band reaches: the step at the edge of a work pasted on a canvas is not there.
    reach = 2 * round(3 * BAND[1]) + 1
    away = tiles(cv2.dilate(inside.astype(np.uint8), np.ones((reach, reach), np.uint8)) == 0).all(axis=1)
    a, b = tiles(query_grey), tiles(warped)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    sa, sb = np.sqrt((a * a).mean(axis=1)), np.sqrt((b * b).mean(axis=1))
    both = whole & (sa >= FLAT) & (sb >= FLAT)
    counted = np.where(whole, (sa >= FLAT) | (sb >= FLAT), away & (sa >= FLAT))
    correlations = np.where(both, (a * b).mean(axis=1) / np.maximum(sa * sb, 1e-9), 0.0)[counted]
    footprint = float(inside.mean())
    return footprint, float(np.median(correlations)) if len(correlations) >= MIN_TILES else 0.0
