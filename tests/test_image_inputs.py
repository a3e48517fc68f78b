"""Image paths as the audit log stores them: file names that are not UTF-8 are kept printable (escaped bytes)."""

from __future__ import annotations

import os
from pathlib import Path

from attribution_audit.sources.images import printable_path


def test_non_utf8_file_names_are_stored_printably() -> None:
    odd = os.fsdecode(b"odd_\xff.png")
    assert printable_path(Path("/x") / odd) == "/x/odd_\\xff.png"
    assert printable_path("/plain/é.png") == "/plain/é.png"
