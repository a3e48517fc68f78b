"""The batch loop the activation embedders share: ``embed`` and ``embed_with_activations`` both run through it."""

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from attribution_audit.errors import EmbedderError

# One batch through the network: (unit-norm float pooled rows, one (n, channels, positions) tensor per layer index).
BatchForward = Callable[[list[Image.Image], Sequence[int]], tuple[torch.Tensor, list[torch.Tensor]]]


def embed_in_batches(
    images: Sequence[Image.Image],
    layers: Sequence[int],
    *,
    channels: Sequence[int],
    dim: int,
    batch_size: int,
    forward: BatchForward,
) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Run ``forward`` on ``batch_size`` images at a time; ``channels[i]`` is layer ``i``'s channel count.

    Returns the ``(len(images), dim)`` float32 pooled rows and each requested layer's activations, batches
    concatenated (``(0, channels, 0)`` for no images). Unknown layer indexes raise EmbedderError.
    """
    unknown = [i for i in layers if not 0 <= i < len(channels)]
    if unknown:
        raise EmbedderError(f"no layer {unknown[0]}: layer indexes run from 0 to {len(channels) - 1}")
    pooled = np.empty((len(images), dim), dtype=np.float32)
    parts: list[list[torch.Tensor]] = [[] for _ in layers]
    for start in range(0, len(images), batch_size):
        batch = list(images[start : start + batch_size])
        with torch.inference_mode():
            vectors, activations = forward(batch, layers)
        pooled[start : start + len(batch)] = vectors.cpu().numpy()
        for part, activation in zip(parts, activations, strict=True):
            part.append(activation)
    return pooled, [_concatenate(part, channels[i]) for part, i in zip(parts, layers, strict=True)]


def _concatenate(parts: list[torch.Tensor], channels: int) -> torch.Tensor:
    if not parts:
        return torch.empty((0, channels, 0))
    return parts[0] if len(parts) == 1 else torch.cat(parts)
