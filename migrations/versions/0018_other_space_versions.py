"""the learned space versions a request's cross-space indicators read

Revision ID: 0018
Revises: 0017

Recorded per request in ``attribution_metrics.other_space_versions``: the learned spaces other than the request's own
that ``agreement_spaces`` and ``centroid_log_odds_others`` were computed in, with the version of each read, as
``name:version`` joined by commas, sorted by name (``fontboth:3,fontstyle:2``; empty when none; base spaces have no
versions). ``audit replay`` computes those indicators in these versions; NULL in older records (replayed in the
newest versions, as before). Plain ADD COLUMN (SQLite keeps the append-only triggers); the hash chain covers it only
when set, so older records keep their hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from attribution_audit.store.metric_columns import add_metric_column, drop_metric_column

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_metric_column("other_space_versions", sa.Text)


def downgrade() -> None:
    drop_metric_column("other_space_versions")
