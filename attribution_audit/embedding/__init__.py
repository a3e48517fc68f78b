"""Image embedders. ``get_embedder`` builds one by name; torch and transformers load only then."""

import hashlib
from collections.abc import Iterable
from pathlib import Path

from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import EmbedderError

__all__ = ["EMBEDDER_NAMES", "Embedder", "get_embedder", "sha256_prefix"]

EMBEDDER_NAMES = ("clip", "efficientnet-lite0")
EFFICIENTNET_LITE0_DIM = 1280


def known_dim(spec: str) -> int | None:
    """The vector size of an embedder that is known without loading its model (None: only the model tells)."""
    return EFFICIENTNET_LITE0_DIM if spec == "efficientnet-lite0" else None


def sha256_prefix(files: Iterable[Path]) -> str:
    """First 16 hex digits of the sha256 over the files' contents, in the order given."""
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def get_embedder(spec: str, *, device: str | None = None, batch_size: int = 32) -> Embedder:
    """Build the embedder named by ``spec``: ``efficientnet-lite0``, ``clip`` or ``clip:<hub id or path>``."""
    if spec == "efficientnet-lite0":
        from attribution_audit.embedding.efficientnet import EfficientNetLite0Embedder

        return EfficientNetLite0Embedder(device=device, batch_size=batch_size)
    name, _, model = spec.partition(":")
    if name == "clip" and (model or spec == "clip"):
        from attribution_audit.embedding.clip import DEFAULT_CLIP_MODEL, ClipEmbedder

        return ClipEmbedder(model or DEFAULT_CLIP_MODEL, device=device, batch_size=batch_size)
    raise EmbedderError(f"unknown embedder {spec!r}: choose clip, clip:<path or hub id>, or efficientnet-lite0")
