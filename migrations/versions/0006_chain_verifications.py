"""remember chain verifications

Revision ID: 0006
Revises: 0005

``report summary`` re-verified the whole hash chain on every call (about a minute at a million records). Each full
verification (``audit verify``, ``audit export``) is now remembered; the summary checks only the records appended
since the last one and says how old it is.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_verifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("broken_seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_chain_verifications_verified_at", "chain_verifications", ["verified_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_chain_verifications_verified_at", table_name="chain_verifications")
    op.drop_table("chain_verifications")
