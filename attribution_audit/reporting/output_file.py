"""A file a command writes for the user (an export, a checkpoint): never over an existing one unless told to, and
never half-written: it is written to a scratch file beside it and takes its name, whole, by a link or a rename."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import secrets
import stat
import time as clock
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from attribution_audit.errors import AttributionAuditError

_ABANDONED_AFTER_S = 60  # a scratch file younger than this is left, locked or not


def refuse_as_output(out: Path, overwrite: bool, what: str) -> None:
    """Refuse an ``out`` that would not be written as a new regular file (or replace one, if ``overwrite``), ``what``
    naming the file in the message ("the export", "the checkpoint"): an existing one says to pass --force; a path that
    cannot even be looked at (a name too long, a folder not searchable) says why."""
    try:
        _refuse_as_output(out, overwrite, what)
    except OSError as exc:
        raise AttributionAuditError(f"{out}: cannot write {what} ({exc.strerror}); choose a writable path") from None


def _refuse_as_output(out: Path, overwrite: bool, what: str) -> None:
    if out.is_symlink() or (out.exists() and not out.is_file()):  # the rename would replace it, not write to it
        raise AttributionAuditError(
            f"{out}: is not a regular file (a directory, link, pipe or device); choose a file path for {what}"
        )
    if out.exists() and not overwrite:
        raise AttributionAuditError(f"{out}: already exists; pass --force to overwrite it, or choose another name")
    if out.parent.exists() and not out.parent.is_dir():  # (mkdir would say "File exists")
        raise AttributionAuditError(f"{out}: {out.parent} is not a folder; choose a file path for {what}")


@contextlib.contextmanager
def writing(out: Path, overwrite: bool, buffering: int = -1) -> Iterator[BinaryIO]:
    """A scratch file of this run's own beside ``out``, to write; once the block ends without an error it is synced
    and takes ``out``'s name (replacing a file there only if ``overwrite``), else it is removed. FileExistsError
    where ``out`` was written meanwhile (without ``overwrite``), OSError where it cannot be written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # a scratch file of this run's own (created, never opened through a link planted there): two writers to one
    # path each write their own, and whichever renames last leaves a whole file
    _remove_abandoned(out)
    temporary = out.with_name(f"{_scratch_prefix(out)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("xb", buffering=buffering) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # held while it is written: a later writer leaves it be
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # on disk before it takes its name: a power loss leaves no empty file
        _publish(temporary, out, overwrite)
        _sync_folder(out.parent)
    finally:
        with contextlib.suppress(OSError):  # (renamed, or never made: the error raised says why)
            temporary.unlink()


def _scratch_prefix(out: Path) -> str:
    """The start of the names of ``out``'s scratch files: its name, cut short (a name of 255 bytes must still leave
    room for the rest, at up to 4 bytes a character)."""
    return out.name[:40]


def _remove_abandoned(out: Path) -> None:
    """Remove the scratch files of writers to ``out`` that no process writes (killed, or their machine lost power):
    a writer holds a lock on its file (whatever its process namespace); one made in the last minute is left too (its
    writer may not hold the lock yet)."""
    scratch = re.compile(re.escape(_scratch_prefix(out)) + r"\.\d+\.[0-9a-f]{8}\.tmp")
    for path in out.parent.glob(f"{glob.escape(_scratch_prefix(out))}.*.tmp"):
        if not scratch.fullmatch(path.name):
            continue
        with contextlib.suppress(OSError):  # (gone meanwhile, not a file, being written: BlockingIOError)
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)  # (a pipe there must not block)
            try:
                found = os.fstat(descriptor)
                if stat.S_ISREG(found.st_mode) and clock.time() - found.st_mtime >= _ABANDONED_AFTER_S:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()
            finally:
                os.close(descriptor)


def _publish(temporary: Path, out: Path, overwrite: bool) -> None:
    """Give the finished file its name, replacing a file there only if ``overwrite``: otherwise a link, which only
    a free name takes (a file written meanwhile is kept: FileExistsError), or where the file system has no links, a
    rename after a last look."""
    if overwrite:
        temporary.replace(out)
        return
    try:
        os.link(temporary, out)
    except FileExistsError:
        raise
    except OSError:  # no links here
        if out.exists():
            raise FileExistsError(out) from None
        temporary.replace(out)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform lets a folder be opened and synced)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
