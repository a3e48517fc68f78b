"""copy detection's status and rule: whether each request's copy check ran, and which rule scored it

Revision ID: 0011
Revises: 0010

``copy_status`` says whether the check ran (``copy``, ``no_copy``, ``not_run: <why>``, ``failed: <why>``), so a
check that could not compare a candidate is never read as "no copy"; ``copy_method`` names the rule that computed
``copy_score`` (scores of different rules are not comparable). Plain ADD COLUMN (SQLite keeps the append-only
triggers); the hash chain covers both only when set, so older records keep their hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from attribution_audit.store.metric_columns import refuse_dropping_hashed
from attribution_audit.store.roles import grant_to_readers

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS_VIEW = """
    SELECT request_id, entropy, nn_distance, margin, top_artist, top_artist_share, overlap_at_k, exact_method,
           confidence, confidence_model, copy_of, copy_score{more}
    FROM attribution_metrics
"""


def upgrade() -> None:
    op.add_column("attribution_metrics", sa.Column("copy_status", sa.Text(), nullable=True))
    op.add_column("attribution_metrics", sa.Column("copy_method", sa.String(length=40), nullable=True))
    if op.get_bind().dialect.name == "postgresql":  # the reader's audit view carries every hashed column (0004)
        op.execute(
            "CREATE OR REPLACE VIEW v_audit_metrics AS " + METRICS_VIEW.format(more=", copy_status, copy_method")
        )


def downgrade() -> None:
    refuse_dropping_hashed("attribution_metrics", "copy_method")
    refuse_dropping_hashed("attribution_metrics", "copy_status")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW v_audit_metrics")
        op.execute("CREATE VIEW v_audit_metrics AS " + METRICS_VIEW.format(more=""))
        op.execute(grant_to_readers(["v_audit_metrics"]))
    op.drop_column("attribution_metrics", "copy_method")
    op.drop_column("attribution_metrics", "copy_status")
