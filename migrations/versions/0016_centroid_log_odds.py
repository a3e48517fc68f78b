"""centroid log-odds: the reported artist's log-odds among a learned space's artist centroids

Revision ID: 0016
Revises: 0015

Recorded per request in ``attribution_metrics.centroid_log_odds`` in a learned space: the log-odds of the top artist
under LDA's Gaussian model of the catalogue's artists there (their centroids and pooled within-artist covariance,
equal priors), clipped to +-30; NULL in the base spaces, without a top artist, and in older records. Plain ADD COLUMN
(SQLite keeps the append-only triggers); the hash chain covers it only when set, so older records keep their hash.
"""

from collections.abc import Sequence

from attribution_audit.store.metric_columns import add_metric_column, drop_metric_column

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_metric_column("centroid_log_odds")


def downgrade() -> None:
    drop_metric_column("centroid_log_odds")
