"""API keys of the HTTP service; the digests of the neighbours' images for read-only roles

Revision ID: 0008
Revises: 0005

``attribution-audit keys create NAME`` stores the SHA-256 of a new key with its name and role (writer or reader);
the service records the key's name as the requester of every attribution it makes.

PostgreSQL: the view v_audit_neighbour_digests (request_id, rank, image_sha256 of the work version each neighbour
was attributed as) lets a read-only role check the images a request page shows, as the owner does; roles that could
already read v_attributions are granted it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


DIGESTS_VIEW = """
CREATE VIEW v_audit_neighbour_digests AS
SELECT n.request_id, n.rank, COALESCE(v.image_sha256, w.image_sha256) AS image_sha256
FROM attribution_neighbours n
JOIN works w ON w.id = n.work_pk
LEFT JOIN work_versions v ON v.work_pk = n.work_pk AND v.version = n.work_version
"""
# Every role, other than the owner, with SELECT on v_attributions: the readers made by `db grant-reader` so far.
GRANT_TO_READERS = """
DO $$
DECLARE
    reader name;
BEGIN
    FOR reader IN
        SELECT r.rolname
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = to_regclass('v_attributions') AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT SELECT ON v_audit_neighbour_digests TO %I', reader);
    END LOOP;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DIGESTS_VIEW)
        op.execute(GRANT_TO_READERS)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('writer', 'reader')", name="ck_api_keys_role"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW IF EXISTS v_audit_neighbour_digests")
    op.drop_table("api_keys")
