"""API keys of the HTTP service: create one (only its SHA-256 is stored), revoke one, and find the holder of the key a
request presents (a revoked key has none)."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update

from attribution_audit.domain.results import as_utc
from attribution_audit.errors import ConflictError, NotFoundError
from attribution_audit.store.database import read_scope, session_scope
from attribution_audit.store.models import ApiKey, utcnow

KEY_PREFIX = "aa_"


@dataclass(frozen=True)
class KeyHolder:
    """Who a key belongs to: its name (recorded as the requester), role (``writer`` or ``reader``), and when it was
    revoked (None while valid)."""

    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, row: ApiKey) -> KeyHolder:
        return cls(
            row.name, row.role, as_utc(row.created_at), None if row.revoked_at is None else as_utc(row.revoked_at)
        )


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _folded(name: str) -> str:
    """A name as a reader of the log tells it apart: compatibility-normalised (NFKC), case-folded, with letters
    that look alike across scripts (Cyrillic and Greek ones that look Latin) mapped to the Latin ones."""
    return unicodedata.normalize("NFKC", name).casefold().translate(_LOOK_ALIKE)


_LOOK_ALIKE = str.maketrans(  # Cyrillic and Greek letters that look Latin
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u0261\u03bf\u03b1\u03bd", "aeopcyxijsdgoav"
)


class KeyRepository:
    """The api_keys table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, role: str) -> str:
        """A new random key for ``name``; the key itself is returned once and never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with session_scope(self.engine) as session:
            taken = {_folded(row.name): row for row in session.execute(select(ApiKey.name, ApiKey.revoked_at))}
            same = taken.get(_folded(name))
            alike = "" if same is None or same.name == name else f" ({same.name!r}: the same name to a reader)"
            if same is not None and same.revoked_at is not None:
                raise ConflictError(
                    f"the API key named {name!r} was revoked{alike}; its name stays the requester of its past "
                    "attributions and is not reused: choose another name"
                )
            if same is not None:
                raise ConflictError(f"an API key named {name!r} exists already{alike}; choose another name")
            session.add(ApiKey(name=name, role=role, key_hash=key_digest(key)))
        return key

    def revoke(self, name: str) -> datetime:
        """Revoke the key named ``name`` (its row stays); returns when."""
        now = utcnow()
        with session_scope(self.engine) as session:
            done = session.execute(
                update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                return now
            revoked = session.scalar(select(ApiKey.revoked_at).where(ApiKey.name == name))
        if revoked is None:
            raise NotFoundError(f"no API key named {name!r}; see the names with `attribution-audit keys list`")
        raise ConflictError(
            f"the API key named {name!r} was revoked already at {as_utc(revoked).isoformat()}; nothing to do"
        )

    def holder(self, key: str) -> KeyHolder | None:
        """The holder of ``key``, or None when no such key exists or it was revoked."""
        with read_scope(self.engine) as session:
            row = session.scalars(
                select(ApiKey).where(ApiKey.key_hash == key_digest(key), ApiKey.revoked_at.is_(None))
            ).one_or_none()
            return None if row is None else KeyHolder.of(row)

    def valid(self, name: str) -> bool:
        """Whether the key named ``name`` exists and is not revoked."""
        with read_scope(self.engine) as session:
            found = session.scalar(select(ApiKey.id).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
            return found is not None

    def holders(self) -> list[KeyHolder]:
        """Every key's holder, revoked ones included, by name."""
        with read_scope(self.engine) as session:
            return [KeyHolder.of(r) for r in session.scalars(select(ApiKey).order_by(ApiKey.name)).all()]
