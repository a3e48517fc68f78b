"""Signed chain heads ("checkpoints"): the statement format, signing and checking it, and comparing it with a chain.

A checkpoint says "audit DB ``db_identity`` had ``seq`` records, the last one hashing to ``head_hash``, at ``time``",
signed with an Ed25519 key kept outside the audit DB (what Certificate Transparency does with signed tree heads).
Since every record's hash covers the previous one, a chain that still holds a record ``seq`` with that hash holds
every checkpointed record unchanged and in order; a truncated, wiped, rewritten or replaced log does not.
What it cannot prove: whoever holds the private key can sign a statement about a rewritten chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attribution_audit.domain.chain import canonical_json

FORMAT = "attribution-audit-checkpoint/1"
_FIELDS = ("format", "db_identity", "seq", "head_hash", "time", "public_key")


def public_key_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def key_fingerprint(public_key: str) -> str:
    """A short name of a public key (hex): the first 16 hex digits of its sha256."""
    return hashlib.sha256(bytes.fromhex(public_key)).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement of a chain head."""

    db_identity: str
    seq: int
    head_hash: str
    time: str  # ISO 8601, UTC
    public_key: str  # hex of the raw Ed25519 public key
    signature: str  # hex of the Ed25519 signature over the canonical JSON of every other field

    def statement(self) -> dict[str, Any]:
        """What the signature covers."""
        return {
            "format": FORMAT,
            "db_identity": self.db_identity,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "time": self.time,
            "public_key": self.public_key,
        }

    def as_json(self) -> dict[str, Any]:
        return {**self.statement(), "signature": self.signature}

    def line(self) -> str:
        return json.dumps(self.as_json(), sort_keys=True)

    @property
    def key_fingerprint(self) -> str:
        return key_fingerprint(self.public_key)

    @property
    def signed_at(self) -> datetime | None:
        """When it was signed (UTC where ``time`` names no zone); None when ``time`` is not an ISO 8601 time."""
        try:
            at = datetime.fromisoformat(self.time)
        except ValueError:
            return None
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    def signature_ok(self) -> bool:
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))
            key.verify(bytes.fromhex(self.signature), canonical_json(self.statement()))
        except (ValueError, InvalidSignature):
            return False
        return True


def sign(key: Ed25519PrivateKey, db_identity: str, seq: int, head_hash: str, at: datetime) -> Checkpoint:
    """The checkpoint of head (seq, head_hash) of the DB ``db_identity`` at time ``at``, signed with ``key``."""
    unsigned = Checkpoint(db_identity, seq, head_hash, at.isoformat(), public_key_hex(key.public_key()), "")
    signature = key.sign(canonical_json(unsigned.statement())).hex()
    return Checkpoint(db_identity, seq, head_hash, unsigned.time, unsigned.public_key, signature)


def parse(raw: Any) -> Checkpoint:
    """A checkpoint from its JSON object; ValueError naming what is wrong (the signature is not checked here)."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if raw.get("format") != FORMAT:
        raise ValueError(f"its format is not {FORMAT}")
    missing = [name for name in (*_FIELDS, "signature") if name not in raw]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    seq = raw["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("seq is not a non-negative integer")
    strings = {name: raw[name] for name in ("db_identity", "head_hash", "time", "public_key", "signature")}
    if not all(isinstance(value, str) for value in strings.values()):
        raise ValueError("db_identity, head_hash, time, public_key and signature must be strings")
    return Checkpoint(seq=seq, **strings)


def compare_head(checkpoint: Checkpoint, identity: str | None, hash_at_seq: str | None, length: int) -> str | None:
    """Why a chain of ``length`` records of the DB ``identity``, whose record ``checkpoint.seq`` hashes to
    ``hash_at_seq`` (None: no such record), contradicts the checkpoint; None when it agrees. The chain itself must
    verify (each record linked to the one before) for the agreement to mean that no checkpointed record changed."""
    if identity != checkpoint.db_identity:
        return (
            f"the audit DB is {identity or 'without identity'}, the checkpoint was signed for {checkpoint.db_identity} "
            "(a replaced or recreated audit DB)"
        )
    if checkpoint.seq == 0:
        return None
    if length < checkpoint.seq or hash_at_seq is None:
        return (
            f"the log holds {length} records, the checkpoint of {checkpoint.time} counted {checkpoint.seq} "
            "(records were removed: truncation or wipe)"
        )
    if hash_at_seq != checkpoint.head_hash:
        return (
            f"record seq {checkpoint.seq} hashes to {hash_at_seq[:16]}..., the checkpoint of {checkpoint.time} signed "
            f"{checkpoint.head_hash[:16]}... (checkpointed records were changed, replaced or reordered)"
        )
    return None
