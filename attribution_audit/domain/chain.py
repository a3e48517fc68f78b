"""The hash chain's pure part: canonical JSON, the link hash, and what verifying or exporting a chain yields.

Each request's ``record_hash`` is ``sha256(prev_hash || canonical JSON of its content)``; the first record links to
:data:`GENESIS_HASH`. The same function verifies an export offline, without the database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(content: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8; floats in Python's shortest round-trip form."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_content(prev_hash: str, content: dict[str, Any]) -> str:
    """sha256(prev_hash || canonical JSON of the content): the chain link, also used to verify exports offline."""
    return hashlib.sha256(prev_hash.encode() + canonical_json(content)).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """Result of :func:`verify_chain`: ``ok``, how many rows were checked, the head hash, the first problem."""

    ok: bool
    checked: int
    head_hash: str
    broken_request_id: str | None = None
    broken_seq: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ChainRecord:
    """One link of the chain as exported: position, hashes, time, and exactly what the hash covers."""

    seq: int
    request_id: str
    prev_hash: str
    record_hash: str
    created_at: datetime
    content: dict[str, Any]
