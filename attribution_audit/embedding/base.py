"""The Embedder protocol every image embedder implements, and the ActivationEmbedder capability the style space uses."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch loads only with a model (see attribution_audit.embedding)
    import torch


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


@runtime_checkable
class TextEmbedder(Embedder, Protocol):
    """An embedder with a text tower in the same space (CLIP): captions become vectors comparable to each other."""

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array of unit-norm rows."""
        ...


@dataclass(frozen=True)
class ActivationLayer:
    """A layer whose activations ``ActivationEmbedder.embed_with_activations`` returns.

    ``index`` is what to pass in ``layers``; ``channels`` the size of the activations' second axis; ``label`` the
    stable name (``blocks.4``, ``hidden.6``) that the style embedder writes into its fingerprint.
    """

    index: int
    channels: int
    label: str


@runtime_checkable
class ActivationEmbedder(Embedder, Protocol):
    """An embedder that can also return intermediate activations, from the same forward pass as its vectors.

    ``style_layers`` are the early and middle layers the style space sketches (see embedding.style), in order.
    ``embed_with_activations(images, layers)`` returns ``(embed(images) exactly, one tensor per layer index)``; each
    tensor is ``(len(images), channels, positions)`` as the network computed it (its device and dtype). ``embed``
    itself runs the same forward, so the vectors are identical by construction. Safe to call from several threads
    on one embedder: each call gets only its own activations. ``batch_size`` images go through the network at once.
    """

    device: str
    batch_size: int

    def style_layers(self) -> tuple[ActivationLayer, ...]: ...

    def embed_with_activations(
        self, images: Sequence[Image.Image], layers: Sequence[int]
    ) -> tuple[np.ndarray, list["torch.Tensor"]]: ...
