"""Migration steps for a nullable column of ``attribution_metrics`` (a per-request indicator, or what one read: covered
by the hash chain only when set, so older records keep their hash), keeping PostgreSQL's reader view ``v_audit_metrics``
(0004) listing every hashed column of the table in the table's order. Plain ADD COLUMN: SQLite keeps the append-only
triggers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from attribution_audit.errors import DatabaseError
from attribution_audit.store.roles import grant_to_readers


def _metrics_view(leave_out: str | None = None) -> str:
    columns = [c["name"] for c in sa.inspect(op.get_bind()).get_columns("attribution_metrics")]
    return "SELECT " + ", ".join(c for c in columns if c != leave_out) + " FROM attribution_metrics"


def add_metric_column(name: str, kind: type[sa.types.TypeEngine[Any]] = sa.Float) -> None:
    """Add the column ``name`` of type ``kind`` (upgrade)."""
    op.add_column("attribution_metrics", sa.Column(name, kind(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE VIEW v_audit_metrics AS " + _metrics_view())


def refuse_dropping_hashed(table: str, name: str) -> None:
    """Refuse a downgrade that would drop ``table.name`` while a row holds a value in it: the records' hashes cover
    it, so dropping it would break the chain for good (not checked when generating SQL offline)."""
    if op.get_context().as_sql:
        return
    column: sa.ColumnClause[Any] = sa.column(name)
    held = op.get_bind().scalar(
        sa.select(sa.func.count()).select_from(sa.table(table, column)).where(column.is_not(None))
    )
    if held:
        raise DatabaseError(
            f"cannot downgrade: {table}.{name} holds values in {held} row(s), and those records' hashes cover them "
            "(dropping it would leave `audit verify` BROKEN for good); keep this revision"
        )


def drop_metric_column(name: str) -> None:
    """Drop the column ``name`` (downgrade): the view without it first, then the column. Refused while a row holds a
    value in it (:func:`refuse_dropping_hashed`)."""
    refuse_dropping_hashed("attribution_metrics", name)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW v_audit_metrics")
        op.execute("CREATE VIEW v_audit_metrics AS " + _metrics_view(leave_out=name))
        op.execute(grant_to_readers(["v_audit_metrics"]))
    op.drop_column("attribution_metrics", name)
