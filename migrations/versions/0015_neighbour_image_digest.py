"""the digest of each neighbour's image, pinned by the record hash

Revision ID: 0015
Revises: 0014

``attribution_neighbours.image_sha256`` records the sha256 of the image each neighbour was attributed as (the one its
vectors were embedded from, as ingestion wrote it into their payload). The request page checks the neighbour's image
file against it, and says when the catalogue (``work_versions``, which the chain does not cover) now names another
image. NULL in older records. Plain ADD COLUMN (SQLite keeps the append-only triggers); the hash chain covers it only
when set, so older records keep their hash. On PostgreSQL, ``v_audit_neighbours`` (0004) gains the column: the chain
is read through it. A downgrade drops the digests: the records written since would then fail their hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from attribution_audit.store.metric_columns import audit_view, refuse_dropping_hashed
from attribution_audit.store.roles import grant_to_readers

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attribution_neighbours", sa.Column("image_sha256", sa.String(64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE VIEW v_audit_neighbours AS " + audit_view("attribution_neighbours"))


def downgrade() -> None:
    refuse_dropping_hashed("attribution_neighbours", "image_sha256")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW v_audit_neighbours")  # a view cannot lose a column in place
        view = audit_view("attribution_neighbours", leave_out="image_sha256")
        op.execute("CREATE VIEW v_audit_neighbours AS " + view)
        op.execute(grant_to_readers(["v_audit_neighbours"]))
    op.drop_column("attribution_neighbours", "image_sha256")
