"""the audit DB's identity (for signed checkpoints) and a digest of each stored vector

Revision ID: 0007
Revises: 0006

A checkpoint (``audit checkpoint``) signs the chain head of one audit DB. The DB names itself with a random identity
written once, here, into an append-only table: a replaced or recreated DB has another identity (or none), and
``audit verify --checkpoint`` says so. ``work_embeddings.vector_digest`` records the sha256 of the vectors written
for a work, so that ``catalogue check`` finds vectors changed behind the DB's back (NULL for works embedded before).
On PostgreSQL, ``v_audit_neighbour_images`` gains each neighbour image's recorded ``image_sha256`` (the request page
compares the file with it), and the read-only roles made so far may read ``audit_identity`` (to check checkpoints).
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from attribution_audit.store.roles import grant_to_readers

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEIGHBOUR_IMAGES = """
    CREATE OR REPLACE VIEW v_audit_neighbour_images AS
    SELECT n.request_id, n.rank, COALESCE(v.image_path, w.image_path) AS image_path{sha}
    FROM attribution_neighbours n
    JOIN works w ON w.id = n.work_pk
    LEFT JOIN work_versions v ON v.work_pk = n.work_pk AND v.version = n.work_version
"""
SHA = ", COALESCE(v.image_sha256, w.image_sha256) AS image_sha256"


def upgrade() -> None:
    with op.batch_alter_table("work_embeddings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vector_digest", sa.String(64), nullable=True))
    table = op.create_table(
        "audit_identity",
        sa.Column("identity", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(table, [{"identity": str(uuid.uuid4()), "created_at": datetime.now(UTC)}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NEIGHBOUR_IMAGES.format(sha=SHA))
        op.execute(grant_to_readers(["audit_identity", "v_audit_neighbour_images"]))
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
        op.execute("DROP VIEW v_audit_neighbour_images")  # a view cannot lose a column in place
        op.execute(NEIGHBOUR_IMAGES.format(sha=""))
        op.execute(grant_to_readers(["v_audit_neighbour_images"]))
        op.execute("DROP TRIGGER IF EXISTS audit_identity_append_only ON audit_identity")
        op.execute("DROP TRIGGER IF EXISTS audit_identity_no_truncate ON audit_identity")
    else:
        for action in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_identity_no_{action}")
    op.drop_table("audit_identity")
    with op.batch_alter_table("work_embeddings", schema=None) as batch_op:
        batch_op.drop_column("vector_digest")
