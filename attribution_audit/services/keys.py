"""API keys of the service: create one for a named client, and find who holds a presented key."""

from __future__ import annotations

from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.keys import KeyHolder

ROLES = ("writer", "reader")  # writers attribute and read; readers only read


def create_key(audit: AuditStore, name: str, role: str = "writer") -> str:
    """A new key for ``name`` (recorded as the requester of what it attributes); shown once, stored hashed."""
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise ValueError(f"key name {name!r}: 1 to 200 printable characters, e.g. the client's service name")
    if role not in ROLES:
        raise ValueError(f"role {role!r}: choose writer or reader")
    return audit.keys.create(name, role)


def key_holder(audit: AuditStore, key: str) -> KeyHolder | None:
    """Who holds ``key``; None for a key that was never created."""
    return audit.keys.holder(key)


def key_holders(audit: AuditStore) -> list[KeyHolder]:
    return audit.keys.holders()
