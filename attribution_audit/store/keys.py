"""API keys of the HTTP service: create one (only its SHA-256 is stored) and find the key a request presents."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from attribution_audit.domain.results import as_utc
from attribution_audit.errors import ConflictError
from attribution_audit.store.database import read_scope, session_scope
from attribution_audit.store.models import ApiKey

KEY_PREFIX = "aa_"


@dataclass(frozen=True)
class KeyHolder:
    """Who a key belongs to: its name (recorded as the requester) and role (``writer`` or ``reader``)."""

    name: str
    role: str
    created_at: datetime


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRepository:
    """The api_keys table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, role: str) -> str:
        """A new random key for ``name``; the key itself is returned once and never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with session_scope(self.engine) as session:
            if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
                raise ConflictError(f"an API key named {name!r} exists already; choose another name")
            session.add(ApiKey(name=name, role=role, key_hash=key_digest(key)))
        return key

    def holder(self, key: str) -> KeyHolder | None:
        """The holder of ``key``, or None when no such key exists."""
        with read_scope(self.engine) as session:
            row = session.scalars(select(ApiKey).where(ApiKey.key_hash == key_digest(key))).one_or_none()
            return None if row is None else KeyHolder(row.name, row.role, as_utc(row.created_at))

    def holders(self) -> list[KeyHolder]:
        """Every key's holder, by name."""
        with read_scope(self.engine) as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.name)).all()
            return [KeyHolder(r.name, r.role, as_utc(r.created_at)) for r in rows]
