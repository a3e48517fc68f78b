"""What a checkpoint reads from the audit DB: the DB's identity (migration 0007), its chain head, and the hash of the
record at a checkpointed position. Records are read through the chain's own reader (the audit views on PostgreSQL),
so a read-only role can check checkpoints too."""

from __future__ import annotations

from sqlalchemy import Engine, select

from attribution_audit.domain.chain import GENESIS_HASH
from attribution_audit.store import chain
from attribution_audit.store.database import read_connection
from attribution_audit.store.models import AuditIdentity


class CheckpointRepository:
    """The audit DB's identity and the chain positions that checkpoints sign."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def identity(self) -> str | None:
        """The DB's identity; None when its row is gone (a wiped table)."""
        with read_connection(self.engine) as connection:
            return connection.scalar(select(AuditIdentity.identity).order_by(AuditIdentity.created_at).limit(1))

    def head(self) -> tuple[int, str]:
        """(seq, record hash) of the newest record; (0, the genesis hash) for an empty log."""
        newest = chain.load_requests(self.engine, limit=1, newest_first=True)
        return (newest[0].seq, newest[0].record_hash) if newest else (0, GENESIS_HASH)

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of record ``seq``; None when there is no such record."""
        found = chain.load_requests(self.engine, after_seq=seq - 1, limit=1)
        return found[0].record_hash if found and found[0].seq == seq else None

    def length(self) -> int:
        return chain.count_requests(self.engine)
