"""learned spaces and copy detection: versioned projections fitted on the catalogue's artist labels; copy_of and
copy_score of each request

Revision ID: 0010
Revises: 0009

``attribution-audit spaces fit NAME`` stores each fit as a new version (projection, fingerprint, validation
scores); a request records the space's name and version in its parameters. Copy detection records the work a
request's image is a near-copy of, and its score, in ``attribution_metrics`` (plain ADD COLUMN, so SQLite keeps the
append-only triggers; the hash chain covers the two columns only when set, so older records keep their hash).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from attribution_audit.store.metric_columns import refuse_dropping_hashed
from attribution_audit.store.roles import grant_to_readers

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS_VIEW = """
    SELECT request_id, entropy, nn_distance, margin, top_artist, top_artist_share, overlap_at_k, exact_method,
           confidence, confidence_model{more}
    FROM attribution_metrics
"""


def upgrade() -> None:
    op.create_table(
        "learned_spaces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("base", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=40), nullable=False),
        sa.Column("embedder_fingerprint", sa.String(length=300), nullable=False),
        sa.Column("collection", sa.String(length=200), nullable=False),
        sa.Column("input_dim", sa.Integer(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("mean", sa.LargeBinary(), nullable=False),
        sa.Column("matrix", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("n_works", sa.Integer(), nullable=False),
        sa.Column("n_artists", sa.Integer(), nullable=False),
        sa.Column("validation", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", name="uq_learned_spaces_name_version"),
    )
    op.add_column("attribution_metrics", sa.Column("copy_of", sa.String(length=300), nullable=True))
    op.add_column("attribution_metrics", sa.Column("copy_score", sa.Float(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":  # the reader's audit view carries every hashed column (0004)
        op.execute("CREATE OR REPLACE VIEW v_audit_metrics AS " + METRICS_VIEW.format(more=", copy_of, copy_score"))


def downgrade() -> None:
    refuse_dropping_hashed("attribution_metrics", "copy_score")
    refuse_dropping_hashed("attribution_metrics", "copy_of")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW v_audit_metrics")
        op.execute("CREATE VIEW v_audit_metrics AS " + METRICS_VIEW.format(more=""))
        op.execute(grant_to_readers(["v_audit_metrics"]))
    op.drop_column("attribution_metrics", "copy_score")
    op.drop_column("attribution_metrics", "copy_of")
    op.drop_table("learned_spaces")
