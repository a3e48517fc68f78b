"""A seal over an embedded shard's files, written when the shard is closed cleanly and checked before it is loaded.

The engine reads its files without checksums: some damaged files make it panic (one error line), others make it
abort the process (a failed allocation of a garbage size). A file that changed while the shard was closed is damage
(a disk error, a hand edit), so the shard is refused before the engine reads it. The seal is removed when the shard
is opened and written again when it is closed: after a crash there is none, and nothing is refused.
Small files (the engine's metadata, id mappings, versions, graph links) are hashed, large ones (payload pages)
compared by size and modification time. The stored vectors themselves (``vector_storage-*``) are left out: raw
floats never crash the engine, and ``catalogue check`` compares them with the digests ingest recorded (and rewrites
bad ones from their images), which a seal would pre-empt with a coarser "damaged shard".
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HASHED_UP_TO = 1024 * 1024  # bytes: files up to this size are hashed
VECTORS = "vector_storage"  # folders of the raw vectors, checked by their digests instead


def _fingerprint(file: Path) -> str:
    status = file.stat()
    if status.st_size <= HASHED_UP_TO:
        return f"{status.st_size}:sha256:{hashlib.sha256(file.read_bytes()).hexdigest()}"
    return f"{status.st_size}:mtime:{status.st_mtime_ns}"


def seal(folder: Path, skip: str) -> dict[str, str]:
    """Relative path -> fingerprint of every file under ``folder`` but ``skip`` (the file the seal is kept in)."""
    return {
        str(file.relative_to(folder)): _fingerprint(file)
        for file in sorted(folder.rglob("*"))
        if file.is_file()
        and file.name != skip
        and not file.name.endswith(".tmp")
        and not any(part.startswith(VECTORS) for part in file.relative_to(folder).parts)
    }


def broken(folder: Path, sealed: dict[str, str], skip: str) -> str | None:
    """Why the files under ``folder`` are not those sealed (the first file missing, added or changed), or None."""
    now = seal(folder, skip)
    for name in sorted(sealed.keys() | now.keys()):
        if name not in now:
            return f"{name} is missing"
        if name not in sealed:
            return f"{name} appeared while the shard was closed"
        if now[name] != sealed[name]:
            size, kind, _ = now[name].split(":", 2)
            if kind == "mtime" and sealed[name].startswith(f"{size}:mtime:"):  # same size, another time: a copy?
                return (
                    f"{name} changed while the shard was closed (same size, another modification time: if the data "
                    "dir was copied, copy it again keeping the times, with `cp -a` or `rsync -a`)"
                )
            return f"{name} changed while the shard was closed"
    return None
