"""learned spaces: versioned projections fitted on the catalogue's artist labels

Revision ID: 0010
Revises: 0005

``attribution-audit spaces fit NAME`` stores each fit as a new version (projection, fingerprint, validation
scores); a request records the space's name and version in its parameters.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


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


def downgrade() -> None:
    op.drop_table("learned_spaces")
