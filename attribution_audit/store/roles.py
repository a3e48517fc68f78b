"""PostgreSQL roles of least privilege: the checks every grant makes on the role it is given, and the writer role
that the CLI and the service should use in production (the reader role is made by :mod:`store.reports`).

The writer may append to the audit tables and read them, and keep the catalogue (works, artists, embeddings,
evaluations) up to date; it owns nothing, so it can neither run DDL (drop the append-only triggers, alter a table)
nor UPDATE, DELETE or TRUNCATE an audit row. The schema owner keeps ``db upgrade``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from attribution_audit.errors import DatabaseError
from attribution_audit.store.chain import AUDIT_VIEWS
from attribution_audit.store.database import SCHEMA_VERSION_VIEW, is_permission_error, permission_error
from attribution_audit.store.models import Base
from attribution_audit.store.reports import REPORTING_VIEWS

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Names a grant must never go to: PUBLIC (everyone), the predefined pg_* roles, SQL's own role keywords.
RESERVED = frozenset({"public", "none", "current_user", "current_role", "session_user", "user", "all"})
# Append-only (migrations 0002, 0007 and 0020): INSERT and SELECT for the writer, never UPDATE, DELETE or TRUNCATE.
AUDIT_TABLES = (
    "attribution_requests",
    "attribution_neighbours",
    "attribution_artist_shares",
    "attribution_metrics",
    "recall_checks",
    "calibration_models",
    "work_versions",
    "learned_spaces",
)
READ_ONLY_TABLES = ("audit_identity", "alembic_version")
BASE_TABLE = "attribution_requests"  # a role that can SELECT it reads more than the views
_GRANT_TO_READERS = """
DO $$
DECLARE
    reader name;
BEGIN
    FOR reader IN
        SELECT r.rolname
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = to_regclass('v_attributions') AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT SELECT ON {objects} TO %I', reader);
    END LOOP;
END $$
"""


def grant_to_readers(objects: Sequence[str]) -> str:
    """PostgreSQL that grants SELECT on ``objects`` to every reader made by ``db grant-reader`` so far (the roles,
    other than the owner, that may read v_attributions): for migrations that add or recreate what readers read."""
    return _GRANT_TO_READERS.format(objects=", ".join(objects))


def check_role_name(role: str) -> None:
    """Refuse a name that is not a plain role name, or one reserved by PostgreSQL (``pg_*``, PUBLIC...)."""
    if not ROLE_NAME.match(role):
        raise DatabaseError(f"role name {role!r}: use lower-case letters, digits and underscores")
    if role in RESERVED or role.startswith("pg_"):
        raise DatabaseError(
            f"role name {role!r} is reserved by PostgreSQL (PUBLIC, pg_*, role keywords); choose a role of your own"
        )


def refuse_privileged(connection: Connection, role: str) -> None:
    """Refuse an existing role that no grant can restrict: a superuser, one that bypasses row security, or the
    current user (the schema owner)."""
    row = connection.execute(
        text(
            "SELECT rolsuper, rolbypassrls, rolname = current_user AS is_me, "
            "pg_has_role(oid, current_user, 'MEMBER') AS has_owner_rights FROM pg_roles WHERE rolname = :role"
        ),
        {"role": role},
    ).first()
    if row is None:
        return
    if row.rolsuper or row.rolbypassrls:
        raise DatabaseError(
            f"role {role!r} is a superuser (or bypasses row security): no grant can restrict it; choose a new role"
        )
    if row.is_me or row.has_owner_rights:
        raise DatabaseError(
            f"role {role!r} is the schema owner (or a member of it): it keeps every right; choose a new role"
        )


def reads_base_tables(connection: Connection, role: str) -> bool:
    """Whether ``role`` can SELECT the base audit table (through another role, pg_read_all_data, a default grant)."""
    return bool(
        connection.scalar(
            text("SELECT has_table_privilege(:role, :table, 'SELECT')"), {"role": role, "table": BASE_TABLE}
        )
    )


def rewrite_rights(connection: Connection, role: str) -> list[str]:
    """The rights among UPDATE, DELETE and TRUNCATE that ``role`` still has on some audit table (through another
    role, pg_write_all_data), in that order."""
    return [
        right
        for right in ("UPDATE", "DELETE", "TRUNCATE")
        if any(
            connection.scalar(
                text("SELECT has_table_privilege(:role, :table, :right)"),
                {"role": role, "table": table, "right": right},
            )
            for table in AUDIT_TABLES
        )
    ]


def grant_writer(engine: Engine, role: str) -> list[str]:
    """Create ``role`` (NOLOGIN) with INSERT and SELECT on the audit tables, DML but TRUNCATE on the catalogue and
    evaluation tables, SELECT on the views; no ownership, hence no DDL. Warnings when the role can still rewrite
    audit rows through other rights."""
    if engine.dialect.name != "postgresql":
        raise DatabaseError("roles need PostgreSQL; a SQLite audit file is protected by file permissions instead")
    check_role_name(role)
    mutable = [name for name in Base.metadata.tables if name not in (*AUDIT_TABLES, *READ_ONLY_TABLES)]
    try:
        with engine.begin() as connection:
            refuse_privileged(connection, role)
            if not connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}):
                connection.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
            schema = connection.scalar(text("SELECT current_schema()"))
            connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
            connection.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM "{role}"'))
            connection.execute(text(f'GRANT SELECT, INSERT ON {", ".join(AUDIT_TABLES)} TO "{role}"'))
            connection.execute(text(f'GRANT SELECT ON {", ".join(READ_ONLY_TABLES)} TO "{role}"'))
            connection.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON {", ".join(mutable)} TO "{role}"'))
            views = [*REPORTING_VIEWS, *AUDIT_VIEWS, SCHEMA_VERSION_VIEW]
            connection.execute(text(f'GRANT SELECT ON {", ".join(views)} TO "{role}"'))
            connection.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"'))
            kept = rewrite_rights(connection, role)
    except DBAPIError as exc:
        if is_permission_error(exc):
            raise permission_error(
                engine, exc, "`db grant-writer` needs the schema owner with the CREATEROLE attribute (or a superuser)"
            ) from exc
        raise
    if not kept:
        return []
    return [
        f"role {role} can still {', '.join(kept)} audit rows through rights it has besides this grant (another role "
        "it is a member of, pg_write_all_data): only the append-only triggers stop it; revoke those, or use a new role"
    ]
