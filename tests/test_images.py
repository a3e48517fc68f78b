"""Tests for attribution_audit.sources.images: mode normalisation, orientation, frames, hashing and every failure."""

import hashlib
import io
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from attribution_audit.errors import ImageError
from attribution_audit.sources.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    LoadedImage,
    load_image,
    sha256_file,
    to_rgb,
)

SIZE = (7, 5)


def _png_bytes(size: tuple[int, int] = SIZE, colour: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR width/height (with a valid CRC) without touching the pixel data."""
    assert png[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --- mode normalisation --------------------------------------------------------------------------------


def _make(mode: str) -> Image.Image:
    if mode == "La":  # Image.new cannot fill premultiplied L
        return Image.frombytes("La", SIZE, bytes([200, 255]) * (SIZE[0] * SIZE[1]))
    if mode == "PA":
        return Image.new("RGBA", SIZE, (200, 0, 0, 255)).convert("PA")
    return Image.new(mode, SIZE)


ALL_MODES = [
    "RGB",
    "L",
    "1",
    "P",
    "RGBA",
    "LA",
    "PA",
    "La",
    "RGBa",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I;16",
    "I;16B",
    "I;16L",
    "I",
    "F",
]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_to_rgb_every_mode(mode: str) -> None:
    out = to_rgb(_make(mode))
    assert out.mode == "RGB"
    assert out.size == SIZE


@pytest.mark.parametrize("mode", ["RGBA", "LA", "La", "RGBa", "PA"])
def test_fully_transparent_pixels_become_white(mode: str) -> None:
    rgba = Image.new("RGBA", SIZE, (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    img = (rgba.convert("LA") if mode in ("LA", "La") else rgba).convert(mode)
    assert img.mode == mode
    out = to_rgb(img)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) != (255, 255, 255)


def test_half_transparent_pixel_is_blended_with_white() -> None:
    out = to_rgb(Image.new("RGBA", SIZE, (0, 0, 0, 128)))
    assert all(abs(c - 127) <= 1 for c in out.getpixel((0, 0)))


def test_rgb_is_passed_through() -> None:
    img = Image.new("RGB", SIZE, (1, 2, 3))
    assert to_rgb(img) is img


def test_palette_with_transparency_composites_on_white(tmp_path: Path) -> None:
    img = Image.new("P", SIZE, 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.putpixel((0, 0), 0)
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    loaded = load_image(path)
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.image.getpixel((1, 1)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16_bit_full_range_maps_to_0_255(mode: str) -> None:
    values = np.linspace(0, 65535, SIZE[0] * SIZE[1]).astype(np.uint16).reshape(SIZE[1], SIZE[0])
    img = Image.fromarray(values).convert(mode) if mode != "I;16" else Image.fromarray(values)
    assert img.mode == mode
    arr = np.asarray(to_rgb(img))
    assert arr.min() == 0
    assert arr.max() == 255
    assert (arr[..., 0] == arr[..., 1]).all()


def test_high_depth_uses_actual_range_and_constant_maps_to_zero() -> None:
    arr = np.asarray(to_rgb(Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))))
    assert arr[0, :, 0].tolist() == [0, 128, 255]
    flat = np.asarray(to_rgb(Image.fromarray(np.full((3, 3), 0.5, dtype=np.float32))))
    assert (flat == 0).all()
    with_nan = np.asarray(to_rgb(Image.fromarray(np.array([[np.nan, 1.0, 3.0]], dtype=np.float32))))
    assert with_nan[0, 1:, 0].tolist() == [0, 255]


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "PNG"),
        ("L", "PNG"),
        ("1", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("YCbCr", "TIFF"),
        ("L", "JPEG"),
        ("RGB", "WEBP"),
    ],
)
def test_load_image_modes_from_files(tmp_path: Path, mode: str, fmt: str) -> None:
    path = tmp_path / f"img.{fmt.lower()}"
    _make(mode).save(path, fmt)
    loaded = load_image(path)
    assert isinstance(loaded, LoadedImage)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == SIZE
    assert (loaded.width, loaded.height) == SIZE
    assert loaded.path == path


# --- orientation, frames, draft --------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    img.save(path, "JPEG", exif=exif, quality=95)
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == (20, 40)
    top, bottom = loaded.image.getpixel((10, 5)), loaded.image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # stored left column (red) is the visual top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_image_uses_first_frame(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGB", SIZE, c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / f"anim.{fmt.lower()}"
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 3
    loaded = load_image(path)
    assert loaded.image.getpixel((3, 3)) == (255, 0, 0)


def test_jpeg_draft_with_target_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    _noise((4000, 3000)).save(path, "JPEG", quality=70)
    full = load_image(path)
    assert full.image.size == (4000, 3000)
    small = load_image(path, target_size=512)
    assert small.image.mode == "RGB"
    assert min(small.image.size) >= 512
    assert small.image.size[0] < 4000  # the decoder downscaled
    assert small.width / small.height == pytest.approx(4000 / 3000, rel=0.01)


def test_target_size_is_ignored_for_non_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(path)
    assert load_image(path, target_size=16).image.size == (400, 300)


# --- hashing -------------------------------------------------------------------------------------------


def test_sha256_matches_hashlib_and_identical_files_agree(tmp_path: Path) -> None:
    data = _png_bytes()
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(data)
    b.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert load_image(a).sha256 == expected
    assert load_image(b).sha256 == expected
    assert sha256_file(a) == expected


def test_sha256_file_streams_large_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 1024 * 4 + 3)  # a little over 5 MiB, not a multiple of the chunk
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_different_content_gives_different_hash(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(_png_bytes(colour=(0, 0, 0)))
    b.write_bytes(_png_bytes(colour=(0, 0, 1)))
    assert load_image(a).sha256 != load_image(b).sha256


def test_image_is_loaded_and_usable_after_return(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png_bytes(colour=(9, 8, 7)))
    loaded = load_image(str(path))
    assert loaded.path == path
    assert loaded.image.getpixel((0, 0)) == (9, 8, 7)
    assert DEFAULT_MAX_PIXELS == 64_000_000
    assert DEFAULT_MAX_BYTES == 256 * 1024 * 1024


# --- failures ------------------------------------------------------------------------------------------


def _missing(tmp: Path) -> Path:
    return tmp / "missing.png"


def _directory(tmp: Path) -> Path:
    path = tmp / "folder.png"
    path.mkdir()
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.png"
    path.write_bytes(b"")
    return path


def _text(tmp: Path) -> Path:
    path = tmp / "notes.png"
    path.write_text("this is not an image\n")
    return path


def _truncated_jpeg(tmp: Path) -> Path:
    path = tmp / "half.jpg"
    _noise((64, 64)).save(path, "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_png(tmp: Path) -> Path:
    path = tmp / "half.png"
    _noise((64, 64)).save(path, "PNG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_png(tmp: Path) -> Path:
    path = tmp / "corrupt.png"
    _noise((64, 64)).save(path, "PNG")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    return path


def _huge_header(width: int, height: int) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / f"huge_{width}x{height}.png"
        path.write_bytes(_with_ihdr_size(_png_bytes(), width, height))
        return path

    return build


def _small_png(tmp: Path) -> Path:
    path = tmp / "small.png"
    Image.new("RGB", (20, 20)).save(path)
    return path


BAD_CASES = [
    pytest.param(_missing, {}, "not found", id="missing"),
    pytest.param(_directory, {}, "directory", id="directory"),
    pytest.param(_empty, {}, "empty", id="empty"),
    pytest.param(_text, {}, "not a recognised image", id="text-as-png"),
    pytest.param(_truncated_jpeg, {}, "truncated", id="truncated-jpeg"),
    pytest.param(_truncated_png, {}, "truncated", id="truncated-png"),
    pytest.param(_corrupt_png, {}, "corrupt", id="corrupt-png"),
    # Far beyond Pillow's own limit: its DecompressionBombError fires inside open() and is translated.
    pytest.param(_huge_header(100_000, 100_000), {}, "pixels", id="header-100000x100000"),
    # Under Pillow's limit but over ours: caught by our header check before decoding.
    pytest.param(_huge_header(9_000, 9_000), {}, "pixels", id="header-9000x9000"),
    pytest.param(_small_png, {"max_pixels": 100}, "more than 100 pixels", id="max-pixels"),
    pytest.param(_small_png, {"max_bytes": 10}, "10-byte limit", id="max-bytes"),
]


@pytest.mark.parametrize(("build", "kwargs", "fragment"), BAD_CASES)
def test_bad_inputs_raise_image_error(
    tmp_path: Path, build: Callable[[Path], Path], kwargs: dict[str, int], fragment: str
) -> None:
    path = build(tmp_path)
    with pytest.raises(ImageError) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert path.name in message
    assert "\n" not in message and "\r" not in message
    assert fragment in message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_pillow_bomb_warning_never_escapes_even_as_an_error(tmp_path: Path) -> None:
    path = _huge_header(10_000, 10_000)(tmp_path)  # between MAX_IMAGE_PIXELS and twice it: Pillow warns
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="10000x10000, more than 64,000,000 pixels"):
            load_image(path)


def test_max_pixels_boundary_is_inclusive(tmp_path: Path) -> None:
    path = _small_png(tmp_path)
    assert load_image(path, max_pixels=400).width == 20
    assert load_image(path, max_bytes=path.stat().st_size).width == 20
