"""CLIP image embedder: projected image features from a local Hugging Face CLIP checkpoint."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import transformers
from huggingface_hub import snapshot_download
from PIL import Image

from attribution_audit.embedding import sha256_prefix
from attribution_audit.embedding.base import ActivationLayer
from attribution_audit.embedding.forward import embed_in_batches
from attribution_audit.errors import EmbedderError

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
STYLE_FRACTIONS = (0.25, 0.5)  # style layers: encoder layers at a quarter and half of the vision tower's depth


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
            "or pass --embedder clip:/path/to/model, or use the packaged offline model: --embedder efficientnet-lite0"
        ) from exc


def weights_hash(local_dir: Path) -> str:
    """First 16 hex digits of sha256 over the weight files transformers loads (safetensors, else .bin)."""
    files = sorted(local_dir.glob("*.safetensors")) or sorted(local_dir.glob("*.bin"))
    if not files:
        raise EmbedderError(f"CLIP model directory '{local_dir}' has no *.safetensors or *.bin weight files")
    return sha256_prefix(files)


class ClipEmbedder:
    """Embeds images with a CLIP vision tower + projection; fp16 on CUDA, fp32 on CPU, float32 output.

    An ActivationEmbedder: layer ``i`` is the vision tower's ``i``-th hidden state.
    """

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
        self.model.train(False).to(self.device, self.dtype)  # inference mode (what .eval() does)
        self._local_dir = local_dir
        self._tokenizer: transformers.PreTrainedTokenizerBase | None = None
        self.dim = self.model.visual_projection.out_features  # the config's projection_dim
        vision = self.model.vision_model.config
        self._channels = [vision.hidden_size] * (vision.num_hidden_layers + 1)  # hidden states 0 (embeddings)..depth

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(len(images), dim)`` float32 array of unit-norm rows."""
        return self.embed_with_activations(images, [])[0]

    def style_layers(self) -> tuple[ActivationLayer, ...]:
        """The encoder layers at a quarter and half of the vision tower's depth (``hidden.3,hidden.6`` of 12)."""
        depth = len(self._channels) - 1
        layers = sorted({min(depth, max(1, round(depth * fraction))) for fraction in STYLE_FRACTIONS})
        return tuple(ActivationLayer(i, self._channels[i], f"hidden.{i}") for i in layers)

    def embed_with_activations(
        self, images: Sequence[Image.Image], layers: Sequence[int]
    ) -> tuple[np.ndarray, list[torch.Tensor]]:
        """``(embed(images), the given hidden states' patch tokens as (n, hidden size, patches))``, one pass a batch.

        Layer 0 is the embedding output, layer ``i`` the ``i``-th encoder layer's; the CLS token is left out.
        """
        return embed_in_batches(
            images, layers, channels=self._channels, dim=self.dim, batch_size=self.batch_size, forward=self._forward
        )

    def _forward(self, batch: list[Image.Image], layers: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
        outputs = self.model.vision_model(
            pixel_values=pixels.to(self.device, self.dtype), output_hidden_states=bool(layers), return_dict=True
        )
        # What get_image_features computes (transformers 4 and 5): the vision tower's pooled output, projected.
        features = self.model.visual_projection(outputs.pooler_output)
        pooled = torch.nn.functional.normalize(features.float(), dim=1)
        return pooled, [outputs.hidden_states[i][:, 1:, :].transpose(1, 2) for i in layers]

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Captions through CLIP's text tower + projection: an ``(len(texts), dim)`` float32 array of unit rows, in
        the same space as the image vectors. EmbedderError when the checkpoint has no tokenizer files."""
        if self._tokenizer is None:
            refused = EmbedderError(
                f"CLIP model directory '{self._local_dir}' has no tokenizer (vocab.json, merges.txt), so captions "
                "cannot be embedded; use a full CLIP checkpoint or leave captions out"
            )
            # transformers 5 builds an empty tokenizer when the files are absent: every caption would look alike.
            if not any((self._local_dir / name).is_file() for name in ("tokenizer.json", "vocab.json")):
                raise refused
            try:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(self._local_dir, local_files_only=True)
            except Exception as exc:
                raise refused from exc
        rows = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(
                list(texts[start : start + self.batch_size]), padding=True, truncation=True, return_tensors="pt"
            )
            with torch.inference_mode():
                outputs = self.model.text_model(**{k: v.to(self.device) for k, v in tokens.items()}, return_dict=True)
                features = self.model.text_projection(outputs.pooler_output)
            rows.append(torch.nn.functional.normalize(features.float(), dim=1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)
