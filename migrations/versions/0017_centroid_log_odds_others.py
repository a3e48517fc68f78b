"""centroid log-odds in the other learned spaces: the reported artist's mean log-odds among their artist centroids

Revision ID: 0017
Revises: 0016

Recorded per request in ``attribution_metrics.centroid_log_odds_others``: the mean, over the shard's learned spaces
other than the request's own (the newest version of each, as the agreement of spaces), of the reported top artist's
log-odds under that space's model of the artists' centroids (``centroid_log_odds`` there), over the spaces that hold
a centroid of that artist; NULL without a top artist, without such a space, and in older records. Plain ADD COLUMN
(SQLite keeps the append-only triggers); the hash chain covers it only when set, so older records keep their hash.
"""

from collections.abc import Sequence

from attribution_audit.store.metric_columns import add_metric_column, drop_metric_column

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_metric_column("centroid_log_odds_others")


def downgrade() -> None:
    drop_metric_column("centroid_log_odds_others")
