"""Image paths: file names that are not UTF-8 are stored printably; files that are not regular are refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from attribution_audit.errors import ImageError
from attribution_audit.sources.images import load_image, printable_path


def test_non_utf8_file_names_are_stored_printably() -> None:
    odd = os.fsdecode(b"odd_\xff.png")
    assert printable_path(Path("/x") / odd) == "/x/odd_\\xff.png"
    assert printable_path("/plain/é.png") == "/plain/é.png"


def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: forever
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(fifo)


def test_an_extreme_strip_is_refused_from_its_header_and_a_long_one_cut_to_its_centre(tmp_path: Path) -> None:
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (20000, 1), (200, 30, 30)).save(strip)
    with pytest.raises(ImageError, match=r"strip.png: image is 20000x1, more elongated than 20:1") as refused:
        load_image(strip, target_size=224)
    assert "\n" not in str(refused.value)
    assert load_image(strip).width == 20000  # thumbnails and hashes still see the whole file
    scroll = tmp_path / "scroll.png"
    Image.new("RGB", (1900, 100), (30, 200, 30)).save(scroll)  # 19:1, under the limit
    loaded = load_image(scroll, target_size=224)
    assert (loaded.width, loaded.height) == (200, 100)  # what the model sees, without a 5-megapixel resized copy


def test_no_library_warning_escapes_while_refusing_a_huge_image(tmp_path: Path) -> None:
    import warnings

    from PIL import Image

    huge = tmp_path / "huge.png"
    Image.new("1", (10000, 10000)).save(huge)  # 100 Mpx in 12 kB: over Pillow's own warning threshold
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match=r"huge.png: image is 10000x10000, more than 64,000,000 pixels"):
            load_image(huge, target_size=224)
    assert [str(w.message) for w in caught] == []


def test_cutting_a_wide_image_changes_nothing_the_model_sees(tmp_path: Path, embedder: Any) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 255, (120, 900, 3), dtype=np.uint8))
    wide.save(tmp_path / "wide.png")
    cut = load_image(tmp_path / "wide.png", target_size=224).image
    assert cut.size == (240, 120)
    whole, centre = embedder.embed([wide, cut])
    assert float(whole @ centre) > 0.999
