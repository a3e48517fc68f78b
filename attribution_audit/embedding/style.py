"""Style embedder: sketched Gram matrices of early and middle feature maps of an already-loaded content embedder.

CLIP embeds content more than style, so a work repainted in another artist's style can outrank the artist's own works.
Channel correlations (Gram matrices) of early and middle feature maps discard *where* things are and keep *how* they
are painted (Gatys et al.). Each layer's Gram ``G = F Fᵀ / positions`` is sketched to ``Rᵀ G R`` with a seeded,
QR-orthonormalised Gaussian ``R`` (channels x r), its upper triangle (diagonal included) is signed-square-rooted and
L2-normalised; the layers are concatenated and L2-normalised again. Everything after the network runs in float64 on
the CPU, and the layers, rank and seed are part of the fingerprint, so the vectors are reproducible.
"""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from attribution_audit.embedding.base import ActivationEmbedder, Embedder
from attribution_audit.errors import EmbedderError

EPS = 1e-12


def _projection(channels: int, rank: int, seed: int) -> torch.Tensor:
    """A ``channels x min(channels, rank)`` float64 matrix with orthonormal columns, fixed by ``seed``."""
    gaussian = np.random.default_rng(seed).standard_normal((channels, min(channels, rank)))
    q, r = np.linalg.qr(gaussian)
    # QR is unique only up to column signs; pin them (diag(R) > 0) so the sketch does not depend on the LAPACK build.
    return torch.from_numpy(q * np.where(np.diag(r) < 0, -1.0, 1.0))


def _normalise(vectors: torch.Tensor) -> torch.Tensor:
    unit: torch.Tensor = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(EPS)
    return unit


def _gram_sketch(features: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """``(n, channels, positions)`` features -> ``(n, r(r+1)/2)`` unit rows: signed sqrt of the sketched Gram's triu."""
    projected = projection.T @ features.to("cpu", torch.float64)  # Rᵀ F, so Rᵀ G R = (Rᵀ F)(Rᵀ F)ᵀ / positions
    sketch = projected @ projected.transpose(1, 2) / features.shape[2]
    rows, cols = torch.triu_indices(sketch.shape[1], sketch.shape[2])
    upper = sketch[:, rows, cols]
    return _normalise(upper.sign() * upper.abs().sqrt())


class StyleEmbedder:
    """Style vectors from an ActivationEmbedder's (EfficientNet-Lite0, CLIP) ``style_layers``, sharing its weights."""

    name = "style"

    def __init__(self, base: Embedder, *, rank: int = 32, seed: int = 0) -> None:
        if rank < 1:
            raise EmbedderError(f"style embedder rank must be at least 1, got {rank}")
        if not isinstance(base, ActivationEmbedder):
            raise EmbedderError(
                f"style embedder needs an efficientnet-lite0 or clip base embedder, not {getattr(base, 'name', base)!r}"
            )
        layers = base.style_layers()
        self.base = base
        self.layers = [layer.index for layer in layers]
        self.rank = rank
        self.seed = seed
        self._projections = [_projection(layer.channels, rank, seed + i) for i, layer in enumerate(layers)]
        self.dim = sum(p.shape[1] * (p.shape[1] + 1) // 2 for p in self._projections)
        described = ",".join(layer.label for layer in layers)
        self.fingerprint = f"style[{base.fingerprint}]:layers={described};rank={rank};seed={seed}"

    @property
    def device(self) -> str:
        return self.base.device

    @property
    def batch_size(self) -> int:
        return self.base.batch_size

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(len(images), dim)`` float32 array of unit-norm style vectors."""
        return self.embed_both(images)[1]

    def embed_both(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Return (content vectors as ``base.embed`` gives them, style vectors) from one forward pass per batch."""
        content = np.empty((len(images), self.base.dim), dtype=np.float32)
        style = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):  # a batch's activations at a time, not all of them
            batch = images[start : start + self.batch_size]
            pooled, activations = self.base.embed_with_activations(batch, self.layers)
            with torch.inference_mode():
                sketches = [_gram_sketch(a, p) for a, p in zip(activations, self._projections, strict=True)]
                vectors = _normalise(torch.cat(sketches, dim=1))
            content[start : start + len(batch)] = pooled
            style[start : start + len(batch)] = vectors.numpy()
        return content, style


def style_embedder_for(base: Embedder) -> StyleEmbedder:
    """The default style embedder (rank 32, seed 0) sharing ``base``'s already-loaded weights."""
    return StyleEmbedder(base)
