"""The Embedder protocol every image embedder implements."""

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class Embedder(Protocol):
    """Maps RGB images to L2-normalised float32 vectors.

    ``name`` is the short name users pass (``clip``, ``efficientnet-lite0``); ``fingerprint`` identifies the exact
    model (model id + sha256 of the weights) and is written into every audit record; ``dim`` is the vector size.
    """

    name: str
    fingerprint: str
    dim: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(len(images), dim)`` float32 array of unit-norm rows."""
        ...
