"""Input files are regular files: a FIFO would block a read forever (while the caller holds the store's lock), a
device would stream without end, a directory cannot be read. Checked with ``stat`` before anything opens the path."""

from __future__ import annotations

import stat
from pathlib import Path


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
