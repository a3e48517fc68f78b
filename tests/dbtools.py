"""Helpers shared by test modules that need to act like a database superuser."""

from __future__ import annotations

from sqlalchemy import Engine, text


def superuser_edit(engine: Engine, statement: str) -> None:
    """What a superuser can still do: switch the append-only triggers off for one statement."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(statement))
        else:
            triggers = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
            for name, _ in triggers:
                connection.execute(text(f"DROP TRIGGER {name}"))
            connection.execute(text(statement))
            for _, sql in triggers:
                connection.execute(text(sql))
