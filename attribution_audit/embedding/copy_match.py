"""Near-copy verification by local features: ORB keypoints of a query and of a candidate work, matched (Hamming,
Lowe's ratio test) and checked by a RANSAC homography. A crop, a colour change, blur, JPEG or a small overlay keep
most of a work's keypoints in place up to one homography; another image (even of the same style) does not."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_SIDE = 512
ORB_FEATURES = 1500
RATIO = 0.8
RANSAC_PIXELS = 5.0
MIN_MATCHES = 8
MIN_SIDE = 2  # OpenCV's ORB fails (cv2.error) on an image 1 pixel wide or high


@dataclass(frozen=True)
class LocalFeatures:
    """An image's ORB keypoint positions (n x 2, float32) and binary descriptors (n x 32, uint8)."""

    points: np.ndarray
    descriptors: np.ndarray


def local_features(image: Image.Image) -> LocalFeatures:
    """ORB keypoints of the image in grey, its longer side brought to at most MAX_SIDE pixels."""
    import cv2

    grey = image.convert("L")
    if min(grey.size) < MIN_SIDE:  # no keypoint to find: matches nothing, like a blank image
        return _no_features()
    scale = MAX_SIDE / max(grey.size)
    if scale < 1:
        grey = grey.resize((round(grey.width * scale), round(grey.height * scale)), Image.Resampling.BILINEAR)
    orb = cv2.ORB.create(nfeatures=ORB_FEATURES)
    keypoints, descriptors = orb.detectAndCompute(np.asarray(grey), None)
    if len(keypoints) == 0:  # (descriptors is then None)
        return _no_features()
    return LocalFeatures(np.array([k.pt for k in keypoints], dtype=np.float32), descriptors)


def _no_features() -> LocalFeatures:
    return LocalFeatures(np.empty((0, 2), np.float32), np.empty((0, 32), np.uint8))


def inliers(query: LocalFeatures, work: LocalFeatures) -> int:
    """Matches of the query's keypoints in the work that agree with one RANSAC homography (0 when too few)."""
    import cv2

    if len(query.points) < MIN_MATCHES or len(work.points) < MIN_MATCHES:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, work.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_MATCHES:
        return 0
    source = query.points[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    target = work.points[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    _, mask = cv2.findHomography(source, target, cv2.RANSAC, RANSAC_PIXELS)
    return 0 if mask is None else int(mask.sum())
