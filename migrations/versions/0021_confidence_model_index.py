"""an index of the confidence model fingerprints the records hold

Revision ID: 0021
Revises: 0020

Before a stored calibration model (``logistic-v<N>``) scores a request, the records it scored are asked, through
``ix_attribution_metrics_model`` (one index lookup per model load), whether they hold another fingerprint of it (its
``calibration_models`` row was changed by hand since): then the request is refused. Indexes leave the hash chain and
the append-only triggers alone.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_attribution_metrics_model", "attribution_metrics", ["confidence_model", "confidence_model_sha256"]
    )


def downgrade() -> None:
    op.drop_index("ix_attribution_metrics_model", table_name="attribution_metrics")
