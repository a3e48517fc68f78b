"""the audit DB's identity (for signed checkpoints)

Revision ID: 0007
Revises: 0005

A checkpoint (``audit checkpoint``) signs the chain head of one audit DB. The DB names itself with a random identity
written once, here, into an append-only table: a replaced or recreated DB has another identity (or none), and
``audit verify --checkpoint`` says so.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "audit_identity",
        sa.Column("identity", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(table, [{"identity": str(uuid.uuid4()), "created_at": datetime.now(UTC)}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_identity_append_only BEFORE INSERT OR UPDATE OR DELETE ON audit_identity "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_identity_no_truncate BEFORE TRUNCATE ON audit_identity "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
        )
        return
    for action in ("INSERT", "UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_identity_no_{action.lower()} BEFORE {action} ON audit_identity "
            f"BEGIN SELECT RAISE(ABORT, 'the audit DB identity is written once: {action} is not allowed'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_identity_append_only ON audit_identity")
        op.execute("DROP TRIGGER IF EXISTS audit_identity_no_truncate ON audit_identity")
    else:
        for action in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_identity_no_{action}")
    op.drop_table("audit_identity")
