"""Embedders: shapes, norms, determinism, batching, fingerprints, and offline failure modes."""

import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from conftest import save_tiny_clip
from PIL import Image

from attribution_audit.embedding import EMBEDDER_NAMES, Embedder, get_embedder
from attribution_audit.embedding.base import ActivationEmbedder, ActivationLayer
from attribution_audit.errors import EmbedderError


def scene(seed: int, size: tuple[int, int] = (300, 260)) -> Image.Image:
    """A smooth random colour field, upsampled from coarse noise so it looks vaguely photographic."""
    coarse = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def checkerboard(size: int = 256, square: int = 32) -> Image.Image:
    cells = (np.indices((size, size)) // square).sum(axis=0) % 2
    return Image.fromarray((cells * 255).astype(np.uint8)).convert("RGB")


def assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def assert_activations(embedder: Embedder, layers: Sequence[int], shapes: list[tuple[int, int]]) -> None:
    """``embed_with_activations``: exactly ``embed``'s vectors, ``(n, *shape)`` per layer; batches, empty, bad layer."""
    assert isinstance(embedder, ActivationEmbedder) and embedder.batch_size == 2
    images = [scene(0), scene(1, (512, 128)), checkerboard()]  # two batches
    pooled, activations = embedder.embed_with_activations(images, layers)
    np.testing.assert_array_equal(pooled, embedder.embed(images))
    assert [tuple(a.shape) for a in activations] == [(3, *shape) for shape in shapes]
    singles = [embedder.embed_with_activations([image], layers)[1] for image in images]
    for i, activation in enumerate(activations):
        np.testing.assert_allclose(activation, torch.cat([single[i] for single in singles]), atol=1e-5)
    pooled, activations = embedder.embed_with_activations([], layers)
    assert pooled.shape == (0, embedder.dim)
    assert [tuple(a.shape) for a in activations] == [(0, channels, 0) for channels, _ in shapes]
    with pytest.raises(EmbedderError, match="no layer 99"):
        embedder.embed_with_activations(images, [*layers, 99])


@pytest.fixture(scope="module")
def effnet() -> Embedder:
    return get_embedder("efficientnet-lite0", device="cpu", batch_size=2)


def test_efficientnet_shape_norm_and_determinism(effnet: Embedder) -> None:
    images = [scene(0), scene(1, (512, 128)), checkerboard()]
    first = effnet.embed(images)
    assert_unit_rows(first, 3, 1280)
    assert effnet.dim == 1280 and effnet.name == "efficientnet-lite0"
    assert isinstance(effnet, Embedder)
    np.testing.assert_array_equal(first, effnet.embed(images))


def test_efficientnet_batches_match_single_images(effnet: Embedder) -> None:
    images = [scene(seed, (200 + 20 * seed, 240)) for seed in range(5)]
    batched = effnet.embed(images)
    single = np.concatenate([effnet.embed([image]) for image in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_efficientnet_empty_input(effnet: Embedder) -> None:
    assert effnet.embed([]).shape == (0, 1280)


def test_efficientnet_similarity_ranks_resized_copy_above_unrelated(effnet: Embedder) -> None:
    original = scene(7)
    red, board, copy, base = effnet.embed(
        [Image.new("RGB", (256, 256), (255, 0, 0)), checkerboard(), original.resize((290, 251)), original]
    )
    assert float(copy @ base) > float(red @ board)
    assert float(copy @ base) > 0.9


def test_efficientnet_activations(effnet: Embedder) -> None:
    from attribution_audit.embedding.efficientnet import EfficientNetLite0Embedder

    assert isinstance(effnet, EfficientNetLite0Embedder)
    assert effnet.style_layers() == (
        ActivationLayer(2, 24, "blocks.2"),
        ActivationLayer(4, 40, "blocks.4"),
        ActivationLayer(7, 80, "blocks.7"),
    )
    assert_activations(effnet, [2, 4, 7, 4], [(24, 56 * 56), (40, 28 * 28), (80, 14 * 14), (40, 28 * 28)])
    assert not any(block._forward_hooks for block in effnet.model._blocks)


def test_efficientnet_activations_are_per_thread(effnet: Embedder) -> None:
    """Threads sharing the model (and so each other's hooks on its blocks) each get their own activations."""
    assert isinstance(effnet, ActivationEmbedder)
    first, second = [scene(10), scene(11)], [checkerboard(), scene(12), scene(13)]
    calls: dict[str, Callable[[], tuple[np.ndarray, list[torch.Tensor]]]] = {
        "first": lambda: effnet.embed_with_activations(first, [2, 7]),
        "second": lambda: effnet.embed_with_activations(second, [7, 4]),
        "plain": lambda: (effnet.embed(first), []),
    }
    expected = {key: call() for key, call in calls.items()}
    start = threading.Barrier(len(calls))
    results: dict[str, list[tuple[np.ndarray, list[torch.Tensor]]]] = {key: [] for key in calls}

    def run(key: str) -> None:
        start.wait()
        results[key].extend(calls[key]() for _ in range(4))

    threads = [threading.Thread(target=run, args=(key,)) for key in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key, (pooled, activations) in expected.items():
        assert len(results[key]) == 4
        for got_pooled, got_activations in results[key]:
            np.testing.assert_allclose(got_pooled, pooled, atol=1e-6)
            assert len(got_activations) == len(activations)
            for got, want in zip(got_activations, activations, strict=True):
                np.testing.assert_allclose(got, want, atol=1e-6)


def test_efficientnet_fingerprint_and_quiet_load(effnet: Embedder, capsys: pytest.CaptureFixture[str]) -> None:
    assert effnet.fingerprint.startswith("efficientnet-lite0@sha256:")
    assert len(effnet.fingerprint.rsplit(":", 1)[1]) == 16
    assert get_embedder("efficientnet-lite0", device="cpu").fingerprint == effnet.fingerprint
    assert capsys.readouterr().out == ""


@pytest.fixture
def tiny_clip(tmp_path: Path) -> Path:
    save_tiny_clip(tmp_path, seed=0)
    return tmp_path


def test_clip_from_local_directory(tiny_clip: Path) -> None:
    embedder = get_embedder(f"clip:{tiny_clip}", device="cpu", batch_size=2)
    assert embedder.name == "clip" and embedder.dim == 16
    vectors = embedder.embed([scene(0), scene(1, (64, 200)), checkerboard()])
    assert_unit_rows(vectors, 3, 16)
    assert embedder.embed([]).shape == (0, 16)
    assert isinstance(embedder, ActivationEmbedder)
    assert embedder.style_layers() == (ActivationLayer(1, 32, "hidden.1"),)
    assert_activations(embedder, [0, 1, 2], [(32, 16)] * 3)  # 32 px / patch 8: 4 x 4 patches, CLS left out


def test_clip_fingerprint_tracks_weights(tiny_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    fingerprint = get_embedder(f"clip:{tiny_clip}", device="cpu").fingerprint
    assert fingerprint.startswith(f"clip:{tiny_clip}@sha256:")
    assert len(fingerprint.rsplit(":", 1)[1]) == 16
    assert get_embedder(f"clip:{tiny_clip}", device="cpu").fingerprint == fingerprint
    save_tiny_clip(tiny_clip, seed=1)
    assert get_embedder(f"clip:{tiny_clip}", device="cpu").fingerprint != fingerprint


def test_clip_uncached_hub_id_fails_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(EmbedderError) as error:
        get_embedder("clip:nonexistent-org/nonexistent-model")
    message = str(error.value)
    assert "\n" not in message
    assert "nonexistent-org/nonexistent-model" in message
    assert "hf download" in message and "--embedder clip:" in message
    assert "--embedder efficientnet-lite0" in message  # the model that needs no download


def test_clip_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="does not exist"):
        get_embedder(f"clip:{tmp_path / 'absent'}")


def test_clip_directory_without_weights(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match=r"no \*\.safetensors"):
        get_embedder(f"clip:{tmp_path}")


@pytest.mark.parametrize("spec", ["resnet50", "clip:", "CLIP", ""])
def test_unknown_embedder(spec: str) -> None:
    with pytest.raises(EmbedderError, match="unknown embedder"):
        get_embedder(spec)


def test_import_does_not_load_torch() -> None:
    assert EMBEDDER_NAMES == ("clip", "efficientnet-lite0")
    heavy = "{'torch', 'transformers'}"
    code = f"import sys, attribution_audit.embedding; sys.exit(bool({heavy} & set(sys.modules)))"
    subprocess.run([sys.executable, "-c", code], check=True)
