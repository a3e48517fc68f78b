"""API keys of the service: create one for a named client, revoke one, and find who holds a presented key."""

from __future__ import annotations

from datetime import datetime

from attribution_audit.config import MAX_REQUESTER, requester_name
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.keys import KeyHolder

ROLES = ("writer", "reader")  # writers attribute and read; readers only read


def create_key(audit: AuditStore, name: str, role: str = "writer") -> str:
    """A new key for ``name`` (recorded as the requester of what it attributes); shown once, stored hashed."""
    checked = requester_name(name)
    if checked is None:
        raise ValueError(
            f"key name {name.strip()!r}: 1 to {MAX_REQUESTER} printable characters, e.g. the client's service name"
        )
    if role not in ROLES:
        raise ValueError(f"role {role!r}: choose writer or reader")
    return audit.keys.create(checked, role)


def revoke_key(audit: AuditStore, name: str) -> datetime:
    """Revoke the key named ``name`` (the service refuses it from its next request); returns when."""
    return audit.keys.revoke(name.strip())


def key_holder(audit: AuditStore, key: str) -> KeyHolder | None:
    """Who holds ``key``; None for a key that was never created or was revoked."""
    return audit.keys.holder(key)


def key_valid(audit: AuditStore, name: str) -> bool:
    """Whether the key named ``name`` is still valid (not revoked): what a console session checks on each page."""
    return audit.keys.valid(name)


def key_holders(audit: AuditStore) -> list[KeyHolder]:
    return audit.keys.holders()
