"""Files a command writes where the user says: never over the evidence that the audit log's integrity rests on."""

from __future__ import annotations

import os
from pathlib import Path

from attribution_audit.config import RECORD_FILE, Settings
from attribution_audit.errors import AttributionAuditError
from attribution_audit.sources.files import irregular_file_problem
from attribution_audit.store.database import sqlite_file
from attribution_audit.store.runs import lease_folder

_JOURNALS = ("", "-wal", "-shm", "-journal")  # a SQLite database and the files that hold its latest writes


def _evidence(settings: Settings) -> list[tuple[str, Path]]:
    """What no output may replace: the SQLite audit log and its journals, the witness file, the checkpoint key."""
    database = sqlite_file(settings.resolved_database_url)
    found = [] if database is None else [("the audit log", Path(f"{database}{suffix}")) for suffix in _JOURNALS]
    return [
        *found,
        ("the witness file", settings.resolved_witness_file),
        ("the checkpoint key", settings.resolved_checkpoint_key),
        ("the data dir's record", settings.data_dir / RECORD_FILE),
    ]


def _state_folders(settings: Settings) -> list[Path]:
    """Folders that hold state: the shard's, the exact cache's, the service's uploads and the SQLite audit log's run
    leases."""
    database = sqlite_file(settings.resolved_database_url)
    leases = [] if database is None else [lease_folder(database)]
    return [p.resolve() for p in (settings.qdrant_path, settings.exact_cache_path, settings.uploads_path, *leases)]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)  # samefile: a hard link too
    except OSError:  # one of them does not exist
        return False


def refuse_evidence_as_output(settings: Settings, out: Path, option: str) -> None:
    """Refuse ``out``, the path given as ``option``, when it names the audit log, the witness file, the checkpoint
    key or the data dir's record, or lies in a folder of state (the shard's, the exact cache's, the run leases'):
    writing it would destroy them (an export over the audit log, a checkpoint over its own key)."""
    irregular = irregular_file_problem(out)  # checked before anything is done: `audit checkpoint --out` signs first
    if irregular:  # a folder, or a pipe that would hang the command
        raise AttributionAuditError(f"{out}: {irregular.split(';')[0]}; choose a file path for {option}")
    for what, path in _evidence(settings):
        if _same_file(out, path):
            raise AttributionAuditError(
                f"{out}: this is {what} ({path}); give {option} another path (writing there would destroy it)"
            )
    for folder in _state_folders(settings):
        if out.resolve().is_relative_to(folder):
            what = "the vector shard's folder" if folder == settings.qdrant_path.resolve() else "a folder of state"
            raise AttributionAuditError(f"{out}: inside {what} {folder}; give {option} a path outside it")
