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


def test_an_extreme_strip_is_cut_to_its_centre_before_embedding(tmp_path: Path) -> None:
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (20000, 1), (200, 30, 30)).save(strip)
    loaded = load_image(strip, target_size=224)
    assert (loaded.width, loaded.height) == (2, 1)  # what the model sees, without a 5-megapixel resized copy
    assert load_image(strip).width == 20000  # thumbnails and hashes still see the whole file


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
