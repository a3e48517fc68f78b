"""drop the index of the neighbours' works

Revision ID: 0023
Revises: 0022

``ix_attribution_neighbours_work_pk`` served no query of the product (records read their neighbours by request, and
works are never deleted, so the foreign key is never checked from the works' side), yet every request inserted its K
neighbours' catalogue keys into it at K scattered places: at K = 100 that dirtied about a hundred index pages per
commit, half the audit write's cost on SQLite. A question by work ("which records cite this work?") still runs, as a
scan of the neighbours; a reporting replica can index it. Indexes leave the hash chain and the append-only triggers
alone.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_attribution_neighbours_work_pk", table_name="attribution_neighbours")


def downgrade() -> None:
    op.create_index("ix_attribution_neighbours_work_pk", "attribution_neighbours", ["work_pk"])
