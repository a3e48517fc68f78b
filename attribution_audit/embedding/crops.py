"""A query image's corner crops, cut small enough to embed whatever the decoded image's size."""

from __future__ import annotations

from PIL import Image

from attribution_audit.domain.projection import query_crop_boxes

CROP_SHORT_SIDE = 448  # a crop is cut at most this many pixels on its shorter side (the embedders read 224 to 256)


def corner_crops(image: Image.Image) -> list[Image.Image]:
    """The image's corner crops (:func:`query_crop_boxes`), each resampled straight from the image to at most
    CROP_SHORT_SIDE pixels on its shorter side (never enlarged): four small images, not copies of most of a large
    decoded one."""
    crops = []
    for box in query_crop_boxes(*image.size):
        width, height = box[2] - box[0], box[3] - box[1]
        scale = min(1.0, CROP_SHORT_SIDE / min(width, height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        crops.append(image.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=3.0))
    return crops
