"""Migration steps for a nullable column of ``attribution_metrics`` (a per-request indicator, or what one read: covered
by the hash chain only when set, so older records keep their hash), keeping PostgreSQL's reader view ``v_audit_metrics``
(0004) listing every hashed column of the table in the table's order (:func:`audit_view`, which the migrations of the
other audit tables' views use too). Plain ADD COLUMN: SQLite keeps the append-only triggers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from attribution_audit.errors import DatabaseError
from attribution_audit.store.roles import grant_to_readers


def audit_view(table: str, leave_out: str | None = None) -> str:
    """The SELECT of a reader's audit view of ``table`` (0004): every column of the table in its order but
    ``leave_out``, a binary one as the hex sha256 of its bytes in ``<name>_sha256``."""
    columns = sa.inspect(op.get_bind()).get_columns(table)
    binary = "encode(sha256({0}), 'hex') AS {0}_sha256"
    selected = [
        binary.format(c["name"]) if isinstance(c["type"], sa.LargeBinary) else c["name"]
        for c in columns
        if c["name"] != leave_out
    ]
    return "SELECT " + ", ".join(selected) + f" FROM {table}"


def add_metric_column(name: str, kind: type[sa.types.TypeEngine[Any]] = sa.Float) -> None:
    """Add the column ``name`` of type ``kind`` (upgrade)."""
    op.add_column("attribution_metrics", sa.Column(name, kind(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE VIEW v_audit_metrics AS " + audit_view("attribution_metrics"))


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
        op.execute("CREATE VIEW v_audit_metrics AS " + audit_view("attribution_metrics", leave_out=name))
        op.execute(grant_to_readers(["v_audit_metrics"]))
    op.drop_column("attribution_metrics", name)
