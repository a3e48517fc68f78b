"""Input files are regular files: a FIFO would block a read forever (while the caller holds the store's lock), a
device would stream without end, a directory cannot be read. Checked with ``stat`` before anything opens the path."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path

from attribution_audit.errors import ManifestError


def irregular_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read ("is a directory ...", "is not a regular file ..."), None when it
    is one or does not exist (the caller's open then says "not found")."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file; pass the path of a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a pipe, socket or device); pass the path of a file"
    return None


def refuse_repeated_columns(path: Path, header: Sequence[str]) -> None:
    """ManifestError naming the first column that ``path``'s CSV ``header`` names twice (names compared stripped;
    empty ones not compared: a manifest reader reads their cells by position, a labelled file's reader ignores them):
    a reader keeps one of the two values silently, and which one was meant is the file's author's to say."""
    seen: set[str] = set()
    for name in (h.strip() for h in header):
        if name in seen and name:  # (unnamed columns: a spreadsheet's trailing commas)
            raise ManifestError(f"{path}: column {name!r} appears twice in the header; keep one")
        seen.add(name)
