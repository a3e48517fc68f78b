"""Style embedder: sketched Gram matrices of early and middle feature maps of an already-loaded content embedder.

CLIP embeds content more than style, so a work repainted in another artist's style can outrank the artist's own works.
Channel correlations (Gram matrices) of early and middle feature maps discard *where* things are and keep *how* they
are painted (Gatys et al.). Each layer's Gram ``G = F Fᵀ / positions`` is sketched to ``Rᵀ G R`` with a seeded,
QR-orthonormalised Gaussian ``R`` (channels x r), its upper triangle (diagonal included) is signed-square-rooted and
L2-normalised; the layers are concatenated and L2-normalised again. Everything after the network runs in float64 on
the CPU, and the layers, rank and seed are part of the fingerprint, so the vectors are reproducible.
"""

import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import EmbedderError

EFFNET_STAGES = (1, 2, 3)  # the 24-, 40- and 80-channel stages of EfficientNet-Lite0 (56, 28 and 14 px at 224 input)
CLIP_FRACTIONS = (0.25, 0.5)  # encoder layers at a quarter and half of the vision tower's depth
EPS = 1e-12


def _is_instance(obj: object, module: str, cls_name: str) -> bool:
    """``isinstance`` against ``module.cls_name`` without importing the module (unimported: cannot be an instance)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(obj, getattr(loaded, cls_name))


def _projection(channels: int, rank: int, seed: int) -> torch.Tensor:
    """A ``channels x min(channels, rank)`` float64 matrix with orthonormal columns, fixed by ``seed``."""
    gaussian = np.random.default_rng(seed).standard_normal((channels, min(channels, rank)))
    q, r = np.linalg.qr(gaussian)
    # QR is unique only up to column signs; pin them (diag(R) > 0) so the sketch does not depend on the LAPACK build.
    return torch.from_numpy(q * np.where(np.diag(r) < 0, -1.0, 1.0))


def _normalise(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(EPS)


def _gram_sketch(features: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """``(n, channels, positions)`` features -> ``(n, r(r+1)/2)`` unit rows: signed sqrt of the sketched Gram's triu."""
    projected = projection.T @ features.to("cpu", torch.float64)  # Rᵀ F, so Rᵀ G R = (Rᵀ F)(Rᵀ F)ᵀ / positions
    sketch = projected @ projected.transpose(1, 2) / features.shape[2]
    rows, cols = torch.triu_indices(sketch.shape[1], sketch.shape[2])
    upper = sketch[:, rows, cols]
    return _normalise(upper.sign() * upper.abs().sqrt())


class StyleEmbedder:
    """Style vectors from an EfficientNet-Lite0 or CLIP embedder's intermediate features, sharing its weights."""

    name = "style"

    def __init__(self, base: Embedder, *, rank: int = 32, seed: int = 0) -> None:
        if rank < 1:
            raise EmbedderError(f"style embedder rank must be at least 1, got {rank}")
        if _is_instance(base, "attribution_audit.embedding.efficientnet", "EfficientNetLite0Embedder"):
            self._kind = "efficientnet"
            blocks = base.model._blocks
            channels = [int(block._block_args.output_filters) for block in blocks]
            stage_ends = [i for i in range(len(blocks)) if i + 1 == len(blocks) or channels[i + 1] != channels[i]]
            self.layers = [stage_ends[stage] for stage in EFFNET_STAGES]
            layer_channels = [channels[i] for i in self.layers]
            described = ",".join(f"blocks.{i}" for i in self.layers)
        elif _is_instance(base, "attribution_audit.embedding.clip", "ClipEmbedder"):
            self._kind = "clip"
            config = base.model.config.vision_config
            depth = int(config.num_hidden_layers)
            self.layers = sorted({min(depth, max(1, round(depth * f))) for f in CLIP_FRACTIONS})
            layer_channels = [int(config.hidden_size)] * len(self.layers)
            described = ",".join(f"hidden.{i}" for i in self.layers)
        else:
            raise EmbedderError(
                f"style embedder needs an efficientnet-lite0 or clip base embedder, not {getattr(base, 'name', base)!r}"
            )
        self.base = base
        self.rank = rank
        self.seed = seed
        self._projections = [_projection(c, rank, seed + i) for i, c in enumerate(layer_channels)]
        self.dim = sum(p.shape[1] * (p.shape[1] + 1) // 2 for p in self._projections)
        self.fingerprint = f"style[{base.fingerprint}]:layers={described};rank={rank};seed={seed}"

    @property
    def device(self) -> str:
        return self.base.device  # type: ignore[attr-defined]

    @property
    def batch_size(self) -> int:
        return self.base.batch_size  # type: ignore[attr-defined]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(len(images), dim)`` float32 array of unit-norm style vectors."""
        return self.embed_both(images)[1]

    def embed_both(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Return (content vectors as ``base.embed`` gives them, style vectors) from one forward pass per batch."""
        content = np.empty((len(images), self.base.dim), dtype=np.float32)
        style = np.empty((len(images), self.dim), dtype=np.float32)
        forward = self._effnet_batch if self._kind == "efficientnet" else self._clip_batch
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            with torch.inference_mode():
                pooled, maps = forward(batch)
                sketches = [_gram_sketch(f, p) for f, p in zip(maps, self._projections, strict=True)]
                vectors = _normalise(torch.cat(sketches, dim=1))
            content[start : start + len(batch)] = pooled.cpu().numpy()
            style[start : start + len(batch)] = vectors.numpy()
        return content, style

    def _effnet_batch(self, batch: list[Image.Image]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One ``extract_features`` pass; the chosen blocks' outputs are captured by hooks (this thread's only)."""
        from attribution_audit.embedding.efficientnet import preprocess

        model = self.base.model  # type: ignore[attr-defined]
        owner = threading.get_ident()
        captured: dict[int, torch.Tensor] = {}

        def hook_for(index: int) -> Callable[[torch.nn.Module, object, torch.Tensor], None]:
            def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
                if threading.get_ident() == owner:  # the base may be embedding on another thread meanwhile
                    captured[index] = output

            return hook

        handles = [model._blocks[i].register_forward_hook(hook_for(i)) for i in self.layers]
        try:
            x = torch.from_numpy(np.stack([preprocess(image) for image in batch])).to(self.device)
            features = model.extract_features(x).mean(dim=(2, 3))  # exactly EfficientNetLite0Embedder.embed
        finally:
            for handle in handles:
                handle.remove()
        pooled = torch.nn.functional.normalize(features.float(), dim=1)
        return pooled, [captured[i].flatten(2) for i in self.layers]

    def _clip_batch(self, batch: list[Image.Image]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One vision-tower pass: projected pooled output (= ``get_image_features``) plus hidden states."""
        base = self.base
        pixels = base.processor(images=batch, return_tensors="pt")["pixel_values"]  # type: ignore[attr-defined]
        model = base.model  # type: ignore[attr-defined]
        outputs = model.vision_model(
            pixel_values=pixels.to(self.device, base.dtype),  # type: ignore[attr-defined]
            output_hidden_states=True,
            return_dict=True,
        )
        pooled = torch.nn.functional.normalize(model.visual_projection(outputs.pooler_output).float(), dim=1)
        # hidden_states[0] is the embedding output, [i] the i-th encoder layer's; token 0 is CLS, the rest patches.
        return pooled, [outputs.hidden_states[i][:, 1:, :].transpose(1, 2) for i in self.layers]


def style_embedder_for(base: Embedder) -> StyleEmbedder:
    """The default style embedder (rank 32, seed 0) sharing ``base``'s already-loaded weights."""
    return StyleEmbedder(base)
