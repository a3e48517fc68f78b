"""The one entry point to the audit database: every ORM query of the project lives behind it.

Services receive an :class:`AuditStore` and call its repositories; they never open a session and get plain
dataclasses back (MLflow's tracking store does the same: rows become entities before they leave the store).
"""

from __future__ import annotations

from sqlalchemy import Engine

from attribution_audit.store import database, roles, schema_objects
from attribution_audit.store.browse import BrowseRepository
from attribution_audit.store.catalogue import CatalogueRepository
from attribution_audit.store.checkpoints import CheckpointRepository
from attribution_audit.store.evaluations import EvaluationRepository
from attribution_audit.store.keys import KeyRepository
from attribution_audit.store.reports import ReportRepository
from attribution_audit.store.requests import RequestRepository
from attribution_audit.store.spaces import SpaceRepository


class AuditStore:
    """The audit database of one URL (SQLite file or PostgreSQL), grouped by concern."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.requests = RequestRepository(engine)
        self.catalogue = CatalogueRepository(engine)
        self.evaluations = EvaluationRepository(engine)
        self.reports = ReportRepository(engine)
        self.spaces = SpaceRepository(engine)
        self.checkpoints = CheckpointRepository(engine)
        self.browse = BrowseRepository(engine)
        self.keys = KeyRepository(engine)

    @classmethod
    def open(cls, url: str, *, check_schema: bool = True) -> AuditStore:
        """The store of ``url``; refuses a schema that is not at the head revision unless told not to check."""
        store = cls(database.create_db_engine(url))
        if check_schema:
            database.check_schema(store.engine)
        return store

    @property
    def url(self) -> str:
        """The URL with any password hidden, for messages."""
        return database.display_url(str(self.engine.url))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def upgrade(self) -> str | None:
        """Create or migrate the schema to the head revision; the revision now current."""
        return database.upgrade(self.engine)

    def revisions(self) -> tuple[str | None, str | None]:
        """(current, head) schema revisions."""
        return database.current_revision(self.engine), database.head_revision(self.engine)

    def schema_differences(self) -> list[str]:
        """One line per view, trigger or trigger function that is not what the migrations at the DB's revision
        create (see :mod:`store.schema_objects`); raises SchemaCheckError when that cannot be known."""
        revision, found = schema_objects.differences(self.engine)
        return [difference.line(revision) for difference in found]

    def repair_schema(self) -> list[str]:
        """Re-create the views, triggers and trigger functions that differ from what the migrations create, as they
        create them (the schema owner); one line per object repaired, as :meth:`schema_differences` named it."""
        revision, repaired = schema_objects.repair(self.engine)
        return [difference.line(revision) for difference in repaired]

    def grant_writer(self, role: str) -> list[str]:
        """Create or update the PostgreSQL role the CLI and service should write as (see :mod:`store.roles`);
        warnings when it can still rewrite audit rows otherwise."""
        return roles.grant_writer(self.engine, role)

    def close(self) -> None:
        self.engine.dispose()
