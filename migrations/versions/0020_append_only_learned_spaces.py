"""learned_spaces becomes append-only: triggers reject UPDATE and DELETE (and TRUNCATE on PostgreSQL)

Revision ID: 0020
Revises: 0019

Records name the learned space versions they used (``attribution_requests.space_version``,
``attribution_metrics.other_space_versions``): a version rewritten in place (its fingerprint recomputed) or deleted
(and a new "version 1" fitted under its name) would change what those records replay in while the chain still
verified. The writer role loses UPDATE and DELETE on it (``store.roles.AUDIT_TABLES``; ``db grant-writer``).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "learned_spaces"
_WRITERS = """
DO $$
DECLARE
    writer name;
BEGIN
    FOR writer IN
        SELECT r.rolname
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = to_regclass('learned_spaces') AND a.privilege_type IN ('UPDATE', 'DELETE')
            AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON learned_spaces FROM %I', writer);
    END LOOP;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
        )
        op.execute(_WRITERS)  # writers granted before: SELECT and INSERT only, as db grant-writer grants now
        return
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_{action.lower()} BEFORE {action} ON {TABLE} "
            f"BEGIN SELECT RAISE(ABORT, 'audit table {TABLE} is append-only: {action} is not allowed'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}")
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}")
        return
    for action in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_{action}")
