"""centroid log-odds: the reported artist's log-odds among a learned space's artist centroids

Revision ID: 0016
Revises: 0015

Recorded per request in ``attribution_metrics.centroid_log_odds`` in a learned space: the log-odds of the top artist
under LDA's Gaussian model of the catalogue's artists there (their centroids and pooled within-artist covariance,
equal priors), clipped to +-30; NULL in the base spaces, without a top artist, and in older records. Plain ADD COLUMN
(SQLite keeps the append-only triggers); the hash chain covers it only when set, so older records keep their hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from attribution_audit.store.roles import grant_to_readers

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _metrics_view(leave_out: str | None = None) -> str:
    """The reader's audit view of the metrics (0004): every hashed column of the table, in the table's order."""
    columns = [c["name"] for c in sa.inspect(op.get_bind()).get_columns("attribution_metrics")]
    return "SELECT " + ", ".join(c for c in columns if c != leave_out) + " FROM attribution_metrics"


def upgrade() -> None:
    op.add_column("attribution_metrics", sa.Column("centroid_log_odds", sa.Float(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE VIEW v_audit_metrics AS " + _metrics_view())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW v_audit_metrics")
        op.execute("CREATE VIEW v_audit_metrics AS " + _metrics_view(leave_out="centroid_log_odds"))
        op.execute(grant_to_readers(["v_audit_metrics"]))
    op.drop_column("attribution_metrics", "centroid_log_odds")
