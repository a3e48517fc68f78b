"""the fingerprint of the confidence model that scored a request

Revision ID: 0019
Revises: 0018

Recorded per request in ``attribution_metrics.confidence_model_sha256``: the SHA-256 of the canonical JSON of the
stored calibration model (``logistic-v<N>``: its feature names and coefficients) that scored its confidence, so that
a ``calibration_models`` row changed later by hand (by someone who switched its append-only trigger off) no longer
matches the records it scored: ``audit replay`` says so. NULL for a default formula and in older records. Plain ADD
COLUMN (SQLite keeps the append-only triggers); the hash chain covers it only when set, so older records keep their
hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from attribution_audit.store.metric_columns import add_metric_column, drop_metric_column

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_metric_column("confidence_model_sha256", sa.Text)


def downgrade() -> None:
    drop_metric_column("confidence_model_sha256")
