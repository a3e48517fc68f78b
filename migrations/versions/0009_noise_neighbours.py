"""per-query neighbour lists of a noise run

Revision ID: 0009
Revises: 0008

`evaluate noise` stores, for each labelled query and noise level (0 = the clean reference index), the ranked works it
was attributed, so the experiment can be recomputed from the audit database.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "noise_neighbours",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("labelled_query_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("work_keys", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["evaluation_runs.id"]),
        sa.ForeignKeyConstraint(["labelled_query_id"], ["labelled_queries.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "labelled_query_id", "level", name="uq_noise_neighbours"),
    )
    with op.batch_alter_table("noise_neighbours", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_noise_neighbours_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("noise_neighbours", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_noise_neighbours_run_id"))
    op.drop_table("noise_neighbours")
