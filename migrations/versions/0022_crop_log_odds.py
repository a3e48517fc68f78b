"""the query's corner crops and the reported artist's log-odds over them

Revision ID: 0022
Revises: 0021

A request in a learned space embeds the four corner crops of its image (each side 3/4 of the image's) with the image
itself and records their vectors in ``attribution_requests.crop_vectors`` (float32 rows: each crop's content vector,
then its style vector when the query has one), so that a replay measures them again, and in
``attribution_metrics.crop_log_odds`` the mean log-odds of the reported artist over the crops under the space's model
of the artists' centroids. NULL outside a learned space, without a top artist or centroid, and in older records.
Plain ADD COLUMN (SQLite keeps the append-only triggers); the hash chain covers each only when set, so older records
keep their hash. On PostgreSQL the reader views ``v_audit_requests`` (with the crops' sha256, as the query vectors')
and ``v_audit_metrics`` gain the columns.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from attribution_audit.store.metric_columns import (
    add_metric_column,
    audit_view,
    drop_metric_column,
    refuse_dropping_hashed,
)
from attribution_audit.store.roles import grant_to_readers

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attribution_requests", sa.Column("crop_vectors", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE VIEW v_audit_requests AS " + audit_view("attribution_requests"))
    add_metric_column("crop_log_odds")


def downgrade() -> None:
    refuse_dropping_hashed("attribution_requests", "crop_vectors")  # both refused before either is dropped
    drop_metric_column("crop_log_odds")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW v_audit_requests")  # a view cannot lose a column in place
        op.execute("CREATE VIEW v_audit_requests AS " + audit_view("attribution_requests", leave_out="crop_vectors"))
        op.execute(grant_to_readers(["v_audit_requests"]))
    op.drop_column("attribution_requests", "crop_vectors")
