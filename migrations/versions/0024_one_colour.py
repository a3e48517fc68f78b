"""whether the attributed image is one colour throughout, in the record; reports set such requests apart

Revision ID: 0024
Revises: 0023

``attribution_metrics.one_colour``: 1 where the image attributed is one colour throughout (where it is attributed: all
of it, the middle of an image longer than 2:1), a generator's blocked all-black output or a blank placeholder, whose
nearest works share only that colour; 0 where it is not; NULL where it was not looked at (evaluation runs, records
made before). A replay records its original's. The hash chain covers it when set, so older records keep their hash.
``v_artist_shares`` leaves such requests out (their shares are no evidence of any artist's influence) and
``v_low_confidence`` lists them whatever their confidence. Plain ADD COLUMN (SQLite keeps the append-only triggers);
the views keep their columns (PostgreSQL replaces them in place, keeping the readers' grants).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from attribution_audit.store.metric_columns import add_metric_column, drop_metric_column, refuse_dropping_hashed
from attribution_audit.store.reporting_views import artist_shares_view, low_confidence_view

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _views(one_colour: bool) -> None:
    """Define ``v_artist_shares`` and ``v_low_confidence`` with or without the images of one colour set apart."""
    postgres = op.get_bind().dialect.name == "postgresql"
    views = {
        "v_artist_shares": artist_shares_view(postgres, without_one_colour=one_colour),
        "v_low_confidence": low_confidence_view(with_one_colour=one_colour),
    }
    for name, select in views.items():
        if postgres:
            op.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
        else:
            op.execute(f"DROP VIEW {name}")
            op.execute(f"CREATE VIEW {name} AS {select}")


def upgrade() -> None:
    add_metric_column("one_colour", sa.Integer)
    _views(one_colour=True)


def downgrade() -> None:
    refuse_dropping_hashed("attribution_metrics", "one_colour")  # before the views change
    _views(one_colour=False)
    drop_metric_column("one_colour")
