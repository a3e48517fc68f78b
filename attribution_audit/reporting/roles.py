"""A PostgreSQL role that can read the reporting views and nothing else."""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

from attribution_audit.errors import DatabaseError

REPORTING_VIEWS = (
    "v_attributions",
    "v_attribution_neighbours",
    "v_artist_shares",
    "v_low_confidence",
    "v_ann_disagreements",
    "v_catalogue",
)
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_reader(engine: Engine, role: str) -> None:
    """Create ``role`` (NOLOGIN; grant it to login users, or ALTER ROLE ... LOGIN PASSWORD) with SELECT on the views.

    The views run with their owner's rights, so the role needs and gets no right on any table.
    """
    if engine.dialect.name != "postgresql":
        raise DatabaseError(
            "read-only roles need PostgreSQL; a SQLite audit file is protected by file permissions instead"
        )
    if not _ROLE_NAME.match(role):
        raise DatabaseError(f"role name {role!r}: use lower-case letters, digits and underscores")
    with engine.begin() as connection:
        exists = connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role})
        if not exists:
            connection.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        schema = connection.scalar(text("SELECT current_schema()"))
        connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        connection.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM "{role}"'))
        for view in REPORTING_VIEWS:
            connection.execute(text(f'GRANT SELECT ON {view} TO "{role}"'))
