"""Style embedder: determinism, shapes, shared forward pass, crop invariance, and style-vs-content separation."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_clip
from PIL import Image, ImageDraw

from attribution_audit.embedding import Embedder, get_embedder
from attribution_audit.embedding.style import StyleEmbedder, style_embedder_for
from attribution_audit.errors import EmbedderError

SIZE = 256
# Two "contents": the same three shapes placed differently.
LAYOUTS = {
    "a": [
        ("ellipse", (30, 40, 130, 140)),
        ("rectangle", (150, 120, 230, 220)),
        ("polygon", [(60, 230), (120, 160), (180, 240)]),
    ],
    "b": [
        ("rectangle", (20, 20, 236, 80)),
        ("ellipse", (140, 110, 250, 250)),
        ("polygon", [(10, 250), (40, 100), (110, 200)]),
    ],
}
# Two "styles": a palette (background low/high, shapes low/high), a texture and a noise level.
STYLES = {
    "warm-stripes": ([(250, 220, 160), (200, 80, 30), (120, 20, 40), (255, 190, 60)], "stripes", 8.0),
    "cool-dots": ([(20, 40, 90), (90, 170, 200), (200, 240, 230), (40, 110, 60)], "dots", 40.0),
}


def painting(layout: str, style: str, seed: int = 0) -> Image.Image:
    """``layout``'s shapes painted in ``style``: each region blends its two palette colours through the texture."""
    labels = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(labels)
    for label, (shape, xy) in enumerate(LAYOUTS[layout], start=1):
        getattr(draw, shape)(xy, fill=label)
    inside = (np.asarray(labels) > 0)[..., None]
    palette, texture, noise = STYLES[style]
    colours = np.array(palette, dtype=np.float64)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    stripes = (x + y) // 6 % 2
    dots = (x % 9 - 4.5) ** 2 + (y % 9 - 4.5) ** 2 < 7
    t = stripes if texture == "stripes" else dots.astype(np.int64)
    low = np.where(inside, colours[2], colours[0])
    high = np.where(inside, colours[3], colours[1])
    pixels = low + (high - low) * t[..., None] + np.random.default_rng(seed).normal(0, noise, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def corner_crop(image: Image.Image, right: bool, bottom: bool, fraction: float = 0.9) -> Image.Image:
    side = round(SIZE * fraction)
    left, top = (SIZE - side) * right, (SIZE - side) * bottom
    return image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)


def assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def effnet() -> Embedder:
    return get_embedder("efficientnet-lite0", device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def style(effnet: Embedder) -> StyleEmbedder:
    return style_embedder_for(effnet)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [painting("a", "warm-stripes", 0), painting("b", "cool-dots", 1), painting("a", "cool-dots", 2)]


def test_efficientnet_layers_dim_and_fingerprint(effnet: Embedder, style: StyleEmbedder) -> None:
    assert style.layers == [2, 4, 7]  # the last blocks of the 24-, 40- and 80-channel stages
    assert style.dim == 24 * 25 // 2 + 2 * (32 * 33 // 2) == 1356
    assert style.name == "style" and isinstance(style, Embedder)
    # Stored vectors and audit records carry this string: it must not change for the same layers, rank and seed.
    assert style.fingerprint == f"style[{effnet.fingerprint}]:layers=blocks.2,blocks.4,blocks.7;rank=32;seed=0"
    assert StyleEmbedder(effnet).fingerprint == style.fingerprint
    assert StyleEmbedder(effnet, rank=16).dim == 3 * (16 * 17 // 2)  # r = min(channels, rank) per layer


def test_vectors_match_the_released_values(style: StyleEmbedder, images: list) -> None:
    """Values the style embedder produced before it used ``embed_with_activations`` (the same bits, then and now)."""
    vectors = style.embed(images).astype(np.float64)
    # Columns 0-299 sketch blocks.2, 300-827 blocks.4, 828-1355 blocks.7.
    pinned = [
        [0.0569812, -0.062243, 0.0373203, 0.0069101, 0.0246395, 0.0367719],
        [0.0390485, 0.0155867, 0.0345648, -0.021904, 0.0154801, 0.0237261],
        [0.0383647, 0.0110691, 0.0333644, -0.0257497, 0.0103403, 0.0222276],
    ]
    np.testing.assert_allclose(vectors[:, [0, 1, 300, 600, 900, 1355]], pinned, atol=1e-5)
    probe = np.random.default_rng(0).standard_normal(style.dim)
    np.testing.assert_allclose(vectors @ probe, [-0.2822345, -0.3905247, -0.2509915], atol=1e-5)


def test_deterministic_across_calls_and_instances(effnet: Embedder, style: StyleEmbedder, images: list) -> None:
    first = style.embed(images)
    np.testing.assert_array_equal(first, style.embed(images))
    np.testing.assert_array_equal(first, StyleEmbedder(effnet, rank=32, seed=0).embed(images))
    reseeded = StyleEmbedder(effnet, seed=1)
    assert reseeded.fingerprint != style.fingerprint and reseeded.fingerprint.endswith(";seed=1")
    assert not np.allclose(first, reseeded.embed(images), atol=1e-3)


def test_shapes_norms_batches_and_shared_pass(effnet: Embedder, style: StyleEmbedder, images: list) -> None:
    content, vectors = style.embed_both(images)  # batch_size 2: two batches
    assert_unit_rows(vectors, 3, style.dim)
    assert_unit_rows(content, 3, effnet.dim)
    np.testing.assert_array_equal(content, effnet.embed(images))  # the same forward pass, so the same bits
    single = np.concatenate([style.embed([image]) for image in images])
    np.testing.assert_allclose(vectors, single, atol=1e-5)
    content, vectors = style.embed_both([])
    assert content.shape == (0, effnet.dim) and vectors.shape == (0, style.dim)


def test_crops_stay_closer_than_same_layout_in_another_style(style: StyleEmbedder) -> None:
    original = painting("a", "warm-stripes", 0)
    top_left, bottom_right, repainted = style.embed(
        [corner_crop(original, False, False), corner_crop(original, True, True), painting("a", "cool-dots", 1)]
    )
    crops = float(top_left @ bottom_right)
    assert crops > 0.95
    assert crops > max(float(top_left @ repainted), float(bottom_right @ repainted)) + 0.3


def test_style_space_groups_by_style_not_content(style: StyleEmbedder) -> None:
    # Measured: style space same-style 0.98/0.95 vs same-content 0.31/0.32; content space 0.94/0.86 vs 0.38/0.28
    # (EfficientNet's pooled features are texture-biased too on these flat synthetic paintings, only less so).
    images = [
        painting(layout, name, seed)
        for seed, (layout, name) in enumerate(
            [("a", "warm-stripes"), ("a", "cool-dots"), ("b", "warm-stripes"), ("b", "cool-dots")]
        )
    ]
    content, vectors = style.embed_both(images)
    margins = {}
    for space, v in (("content", content), ("style", vectors)):
        same_content = max(float(v[0] @ v[1]), float(v[2] @ v[3]))
        same_style = min(float(v[0] @ v[2]), float(v[1] @ v[3]))
        margins[space] = same_style - same_content
    assert margins["style"] > 0.5
    assert margins["style"] > margins["content"] + 0.05


@pytest.mark.parametrize(("depth", "layers"), [(2, [1]), (4, [1, 2]), (12, [3, 6])])
def test_clip_base(tmp_path: Path, images: list, depth: int, layers: list[int]) -> None:
    save_tiny_clip(tmp_path, layers=depth)
    clip = get_embedder(f"clip:{tmp_path}", device="cpu", batch_size=2)
    style = StyleEmbedder(clip)
    assert style.layers == layers and style.dim == len(layers) * (32 * 33 // 2)
    described = ",".join(f"hidden.{i}" for i in layers)
    assert style.fingerprint == f"style[{clip.fingerprint}]:layers={described};rank=32;seed=0"
    content, vectors = style.embed_both(images)
    assert_unit_rows(vectors, 3, style.dim)
    np.testing.assert_array_equal(content, clip.embed(images))
    np.testing.assert_array_equal(vectors, style.embed(images))
    np.testing.assert_array_equal(vectors, StyleEmbedder(clip).embed(images))
    assert style.embed([]).shape == (0, style.dim)


class DummyEmbedder:
    name = "dummy"
    fingerprint = "dummy@0"
    dim = 4

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.zeros((len(images), self.dim), dtype=np.float32)


def test_unsupported_base_and_bad_rank(effnet: Embedder) -> None:
    with pytest.raises(EmbedderError, match="efficientnet-lite0 or clip") as error:
        StyleEmbedder(DummyEmbedder())
    assert "\n" not in str(error.value) and "dummy" in str(error.value)
    with pytest.raises(EmbedderError, match="rank"):
        StyleEmbedder(effnet, rank=0)
