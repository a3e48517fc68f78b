"""agreement between spaces: the share of the other base space's K nearest works that are the top artist's

Revision ID: 0012
Revises: 0011

Recorded per request in ``attribution_metrics.agreement`` when the shard holds both the content and the style
space (NULL otherwise, and in older records). Plain ADD COLUMN (SQLite keeps the append-only triggers); the hash
chain covers it only when set, so older records keep their hash.
"""

from collections.abc import Sequence

from attribution_audit.store.metric_columns import add_metric_column, drop_metric_column

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_metric_column("agreement")


def downgrade() -> None:
    drop_metric_column("agreement")
