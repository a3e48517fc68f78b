"""The layout vector of an image: where copy detection finds an edited copy's source when the embeddings do not.

An edited copy keeps its source's coarse pattern of light and dark: blurring, a colour tint or a contrast change,
JPEG compression and re-encoding move each pixel but hardly the mean brightness of each cell of a coarse grid, once
the grid's brightness and contrast are normalised away. The embeddings, trained to see what an image shows, are
moved further by the same edits (a blurred page of text shows no letters). So copy detection also draws, as
candidates, the works nearest the query in this vector (``layout``, stored in the collection beside ``content`` and
``style``); the check itself (embedding.copy_match) decides as before. A crop or a mirror image moves the layout
entirely: those copies are found by the embeddings.

The vector: the image in grey levels (ITU-R 601 luma), averaged over a LAYOUT_SIDE x LAYOUT_SIDE grid of equal cells
(the aspect ratio is not kept: a copy keeps its source's), less its mean, scaled to unit length; the cosine of two
layouts is then the correlation of their grids. A flat image (every cell alike) has no layout.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

LAYOUT_SIDE = 16  # cells per side: 256 values, 1 KiB a work as float32
LAYOUT_DIM = LAYOUT_SIDE * LAYOUT_SIDE
FLAT = 1e-3  # below this spread of cell means (grey levels, 0-255) an image is flat: it has no layout


def layout_vector(image: Image.Image) -> np.ndarray | None:
    """The unit-length, zero-mean LAYOUT_DIM vector of cell means of the image in grey levels; None for a flat
    image."""
    cells = image.convert("L").convert("F").resize((LAYOUT_SIDE, LAYOUT_SIDE), Image.Resampling.BOX)
    grid = np.asarray(cells, dtype=np.float64).ravel()
    grid -= grid.mean()
    spread = float(np.linalg.norm(grid))
    if spread < FLAT * LAYOUT_SIDE:  # FLAT grey levels of root-mean-square spread
        return None
    return (grid / spread).astype(np.float32)


def one_colour(image: Image.Image, layout: np.ndarray | None) -> bool:
    """Whether every pixel of ``image`` is the same colour, given its :func:`layout_vector` (None for every such
    image: only then are its pixels read)."""
    if layout is not None:
        return False
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(low == high for low, high in bands)
