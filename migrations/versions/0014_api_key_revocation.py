"""revocation of API keys

Revision ID: 0014
Revises: 0013

``attribution-audit keys revoke NAME`` sets ``api_keys.revoked_at``; the service refuses a revoked key like an unknown
one. The row stays (its name is the requester of past attributions and is never given to a new key). Plain ADD
COLUMN, NULL for the keys created before: they stay valid.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "revoked_at")
