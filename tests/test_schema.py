"""The SQLAlchemy models and the Alembic migrations describe the same schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from attribution_audit.store.models import Base


def _differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_models_match_the_migrated_schema(fresh_db: Engine) -> None:
    differences = _differences(fresh_db)
    assert not differences, (
        "the models in store/models.py and the migrations differ; write a migration "
        f"(alembic revision --autogenerate) or fix the model:\n{differences}"
    )
