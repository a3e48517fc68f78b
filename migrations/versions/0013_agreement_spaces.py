"""agreement of spaces: the share of the shard's other spaces whose top artist is the request's

Revision ID: 0013
Revises: 0012

Recorded per request in ``attribution_metrics.agreement_spaces`` (content; style and fused when the shard holds both
base spaces; every learned space fitted on its collection); NULL without a top artist or another space, and in older
records. Plain ADD COLUMN (SQLite keeps the append-only triggers); the hash chain covers it only when set, so older
records keep their hash.
"""

from collections.abc import Sequence

from attribution_audit.store.metric_columns import add_metric_column, drop_metric_column

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_metric_column("agreement_spaces")


def downgrade() -> None:
    drop_metric_column("agreement_spaces")
