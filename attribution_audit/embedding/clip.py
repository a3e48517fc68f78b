"""CLIP image embedder: projected image features from a local Hugging Face CLIP checkpoint."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import transformers
from huggingface_hub import snapshot_download
from PIL import Image

from attribution_audit.embedding import sha256_prefix
from attribution_audit.errors import EmbedderError

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


def resolve_local_dir(model: str) -> Path:
    """Return the local directory holding ``model`` (a directory or a cached hub id); never downloads."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise EmbedderError(f"CLIP model directory '{path}' does not exist: pass --embedder clip:<existing dir>")
    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:
        raise EmbedderError(
            f"CLIP weights {model!r} are not on this machine and nothing is downloaded at run time: "
            f"on a connected machine run `hf download {model}` and copy ~/.cache/huggingface, "
            "or pass --embedder clip:/path/to/model"
        ) from exc


def weights_hash(local_dir: Path) -> str:
    """First 16 hex digits of sha256 over the weight files transformers loads (safetensors, else .bin)."""
    files = sorted(local_dir.glob("*.safetensors")) or sorted(local_dir.glob("*.bin"))
    if not files:
        raise EmbedderError(f"CLIP model directory '{local_dir}' has no *.safetensors or *.bin weight files")
    return sha256_prefix(files)


class ClipEmbedder:
    """Embeds images with a CLIP vision tower + projection; fp16 on CUDA, fp32 on CPU, float32 output."""

    name = "clip"

    def __init__(self, model: str = DEFAULT_CLIP_MODEL, device: str | None = None, batch_size: int = 32) -> None:
        local_dir = resolve_local_dir(model)
        self.fingerprint = f"clip:{model}@sha256:{weights_hash(local_dir)}"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.batch_size = batch_size
        # transformers 5 maps CLIPImageProcessor to a torchvision backend when that is installed; pin the PIL
        # backend (same preprocessing) so vectors do not depend on whether torchvision happens to be present.
        processor_cls = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
        try:
            self.model = transformers.CLIPModel.from_pretrained(local_dir, local_files_only=True)
            self.processor = processor_cls.from_pretrained(local_dir, local_files_only=True)
        except Exception as exc:
            raise EmbedderError(f"cannot load CLIP model from '{local_dir}': {exc}".splitlines()[0]) from exc
        self.model.eval().to(self.device, self.dtype)
        self.dim = int(self.model.config.projection_dim)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(len(images), dim)`` float32 array of unit-norm rows."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                features = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
                # transformers 4.x returns the projected tensor; 5.x a BaseModelOutputWithPooling whose
                # pooler_output holds the projected features.
                if not isinstance(features, torch.Tensor):
                    features = features.pooler_output
                vectors = torch.nn.functional.normalize(features.float(), dim=1)
            out[start : start + len(batch)] = vectors.cpu().numpy()
        return out
