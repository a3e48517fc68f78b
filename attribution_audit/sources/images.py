"""Safe image loading: size and decompression-bomb guards, EXIF orientation, RGB normalisation, hashing."""

import hashlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from attribution_audit.errors import AttributionAuditError, ImageError
from attribution_audit.sources.files import irregular_file_problem

DEFAULT_MAX_PIXELS = 64_000_000  # refuse decompression bombs above this many pixels
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_EMBED_ASPECT = 2.0  # images for an embedder are cut to their central region of at most 2:1
MAX_ASPECT = 20.0  # images for an embedder more elongated than this are refused (a 20000 x 1 strip is no artwork)

NO_IMAGE_FILE = "no image file recorded"  # why a catalogued work has no image to compare or crop (recorded_image)

_CHUNK = 1024 * 1024
_WHITE = (255, 255, 255, 255)
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa", "P"})
# Everything Pillow may raise while parsing or decoding a damaged file.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image ready for embedding, with the hash of the file it came from."""

    path: Path
    sha256: str  # hex sha256 of the file's bytes
    image: Image.Image  # mode "RGB", EXIF orientation applied, fully loaded
    width: int
    height: int


def printable_path(path: str | Path) -> str:
    """The path as text that any database and terminal accept: bytes that are not UTF-8 become \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _error(path: Path, problem: str) -> ImageError:
    """Build an ImageError whose message is a single line starting with the path."""
    message = f"{printable_path(path)}: {problem}"
    return ImageError(message.replace("\r", " ").replace("\n", " "))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks; ImageError for a path that is not a regular file."""
    problem = irregular_file_problem(path)
    if problem:
        raise _error(path, problem)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _scale_to_l(img: Image.Image) -> Image.Image:
    """Map a 16/32-bit or float image's actual value range linearly onto 0..255 (constant -> 0)."""
    arr = np.asarray(img, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out = np.zeros(arr.shape, dtype=np.uint8)
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        if hi > lo:
            scaled = (np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo) - lo) * (255.0 / (hi - lo))
            out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def to_rgb(img: Image.Image) -> Image.Image:
    """Return ``img`` in mode RGB; transparency is composited onto white, high bit depths are rescaled."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in _HIGH_DEPTH_MODES:
        return _scale_to_l(img).convert("RGB")
    if img.mode == "La":  # premultiplied: Pillow only converts it to LA
        img = img.convert("LA")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        background = Image.new("RGBA", img.size, _WHITE)
        background.alpha_composite(img.convert("RGBA"))
        return background.convert("RGB")
    return img.convert("RGB")


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    """Read the whole file, refusing missing, non-regular, empty and oversized files."""
    problem = irregular_file_problem(path)
    if problem:
        raise _error(path, problem)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _error(
                path,
                f"file is {size:,} bytes, over the {max_bytes:,}-byte limit; shrink it or raise max_bytes",
            )
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise _error(path, "file not found; check the path") from None
    except OSError as exc:
        raise _error(path, f"cannot read file ({exc.strerror or exc}); check its permissions") from exc
    if not data:
        raise _error(path, "file is empty (0 bytes); re-export or re-download it")
    if len(data) > max_bytes:
        raise _error(path, f"file grew past the {max_bytes:,}-byte limit while reading; shrink it or raise max_bytes")
    return data


def _bomb_error(path: Path, limit: int, size: tuple[int, int] | None = None) -> ImageError:
    dims = f"image is {size[0]}x{size[1]}, " if size else "image has "
    return _error(
        path,
        f"{dims}more than {limit:,} pixels (decompression-bomb guard); scale it down to at most {limit:,} pixels "
        "and use that copy",
    )


def central_region(image: Image.Image, max_aspect: float = MAX_EMBED_ASPECT) -> Image.Image:
    """The central part of an image no more elongated than ``max_aspect`` : 1 (the image itself when it is not).

    Every embedder looks only at the central square of an image (resize the short side, centre-crop), so cutting an
    extremely wide or tall image down first changes nothing the model sees, but keeps its resized copy small: a
    20000 x 1 strip would otherwise become a multi-gigabyte array once its short side is scaled up.
    """
    width, height = image.size
    if max(width, height) <= max_aspect * min(width, height):
        return image
    if width > height:
        keep = max(1, round(max_aspect * height))
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    keep = max(1, round(max_aspect * width))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def _aspect_error(path: Path, width: int, height: int, max_aspect: float) -> ImageError:
    return _error(
        path,
        f"image is {width}x{height}, more elongated than {max_aspect:g}:1; crop it to the part to attribute",
    )


def load_image(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    target_size: int | None = None,
    max_aspect: float = MAX_ASPECT,
) -> LoadedImage:
    """Decode an image file into an RGB :class:`LoadedImage`, or raise :class:`ImageError`.

    The pixel count is checked from the header, before decoding; Pillow's own warnings never reach the terminal.
    Animated images yield their first frame. ``target_size`` marks an image for an embedder: one more elongated
    than ``max_aspect`` : 1 is refused (from the header too), a JPEG may be decoded downscaled by a power of two
    (both sides kept at least ``2 * target_size`` where possible), and an image more elongated than 2:1 is cut to
    its central region (:func:`central_region`): its resized copy stays small (at most 2:1) whatever the file's size.
    """
    path = Path(path)
    return decode_image(
        _read_bytes(path, max_bytes), path, max_pixels=max_pixels, target_size=target_size, max_aspect=max_aspect
    )


def recorded_image(image: tuple[str, str] | None, target_size: int | None = None) -> LoadedImage | str:
    """A catalogued work's image, from its file and the sha256 recorded when it was ingested (path, sha256), or why
    there is none: no file recorded, the file gone or unreadable, or no longer the image that was ingested."""
    if image is None:
        return NO_IMAGE_FILE
    try:
        loaded = load_image(image[0], target_size=target_size)
    except AttributionAuditError as exc:
        return f"image unreadable ({one_line(exc)})"
    if loaded.sha256 != image[1]:
        return "image file changed since ingest"
    return loaded


def one_line(exc: Exception) -> str:
    """An exception's message on one short line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 120 else text[:117] + "..."


def read_image_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of an image file (refusing missing, non-regular, empty and oversized files), for decoding later."""
    return _read_bytes(Path(path), max_bytes)


def image_pixels(
    data: bytes,
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
    max_aspect: float = MAX_ASPECT,
) -> int:
    """The pixel count of image bytes from their header alone (nothing decoded), checked as :func:`decode_image`
    checks it; an upper bound on the pixels the decoded image keeps. :class:`ImageError` naming ``path``."""
    with _decoding(data, path, max_pixels) as img:
        _check_header(img, path, max_pixels, target_size, max_aspect)
        return int(img.width * img.height)


def decode_image(
    data: bytes,
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
    max_aspect: float = MAX_ASPECT,
) -> LoadedImage:
    """Decode image bytes (a file's, or an upload's named ``path``) as :func:`load_image` does, or raise
    :class:`ImageError` naming ``path``."""
    with _decoding(data, path, max_pixels) as img:
        _check_header(img, path, max_pixels, target_size, max_aspect)
        if target_size and img.format == "JPEG":
            img.draft("RGB", (target_size * 2, target_size * 2))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # (not a copy of every decoded image: twice its memory)
        rgb = to_rgb(img)
        if target_size:
            rgb = central_region(rgb)
    return LoadedImage(
        path=path, sha256=hashlib.sha256(data).hexdigest(), image=rgb, width=rgb.width, height=rgb.height
    )


def _check_header(img: Image.Image, path: Path, max_pixels: int, target_size: int | None, max_aspect: float) -> None:
    """Refuse, from the header alone, an image over ``max_pixels`` or (for an embedder) too elongated."""
    width, height = img.size  # header only: nothing decoded yet
    if width * height > max_pixels:
        raise _bomb_error(path, max_pixels, (width, height))
    if target_size and max(width, height) > max_aspect * min(width, height):
        raise _aspect_error(path, width, height, max_aspect)


@contextmanager
def _decoding(data: bytes, path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """The opened image of ``data`` (header read, nothing decoded); every failure to parse or decode it inside the
    block is a one-line :class:`ImageError` naming ``path``. It is not closed after the block: closing frees its
    pixels, and the decoded image may be this one (it reads from memory: no file is left open)."""
    if not data:
        raise _error(path, "file is empty (0 bytes); re-export or re-download it")
    try:
        # Pillow warns (above 89 Mpx, on odd metadata) on the terminal: the checks say what matters, in one line.
        with warnings.catch_warnings(action="ignore"):
            yield Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # Pillow's own guard fires inside open() above 2 * MAX_IMAGE_PIXELS, before our check can run.
        raise _bomb_error(path, min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))) from None
    except UnidentifiedImageError:
        raise _error(
            path,
            "not a recognised image format; check that it really is an image (PNG, JPEG, WebP, GIF, ...)",
        ) from None
    except _DECODE_ERRORS as exc:
        if "truncated" in str(exc).lower():
            raise _error(path, "truncated image data (the file is incomplete); re-export or re-download it") from exc
        raise _error(path, f"corrupt image data ({exc}); re-export or re-download it") from exc
