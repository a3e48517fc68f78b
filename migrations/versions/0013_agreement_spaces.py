"""agreement of spaces: the share of the shard's other spaces whose top artist is the request's

Revision ID: 0013
Revises: 0012

Recorded per request in ``attribution_metrics.agreement_spaces`` (content; style and fused when the shard holds both
base spaces; every learned space fitted on its collection); NULL without a top artist or another space, and in older
records. Plain ADD COLUMN (SQLite keeps the append-only triggers); the hash chain covers it only when set, so older
records keep their hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from attribution_audit.store.roles import grant_to_readers

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _metrics_view(leave_out: str | None = None) -> str:
    """The reader's audit view of the metrics (0004): every hashed column of the table, in the table's order."""
    columns = [c["name"] for c in sa.inspect(op.get_bind()).get_columns("attribution_metrics")]
    return "SELECT " + ", ".join(c for c in columns if c != leave_out) + " FROM attribution_metrics"


def upgrade() -> None:
    op.add_column("attribution_metrics", sa.Column("agreement_spaces", sa.Float(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE VIEW v_audit_metrics AS " + _metrics_view())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW v_audit_metrics")
        op.execute("CREATE VIEW v_audit_metrics AS " + _metrics_view(leave_out="agreement_spaces"))
        op.execute(grant_to_readers(["v_audit_metrics"]))
    op.drop_column("attribution_metrics", "agreement_spaces")
