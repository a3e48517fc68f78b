"""The audit database's schema and roles: migrate, report revisions, grant read access to the reporting views or
the writer's rights."""

from __future__ import annotations

from attribution_audit.config import Settings
from attribution_audit.services.checkpoints import guard_witness, refuse_silent_new_database
from attribution_audit.services.wiring import open_audit


def upgrade(settings: Settings) -> tuple[str, str | None, str | None]:
    """Create or migrate the schema to the head revision; (database shown without password, revision before (None:
    a new schema), revision now). An empty server database beside an existing shard or witness file is refused
    unless said to be new."""
    audit = open_audit(settings, check_schema=False, create=True)
    before = audit.revisions()[0]
    fresh = before is None
    if fresh and settings.database_url:
        refuse_silent_new_database(settings, audit.url)
    revision = audit.upgrade()
    if fresh:
        guard_witness(settings, audit)  # with --new-audit-log: the witness records the new log at once
    return audit.url, before, revision


def repair(settings: Settings) -> tuple[str, list[str]]:
    """Re-create the views and triggers that differ from what the migrations create (what ``audit verify`` names);
    (database shown without password, one line per object repaired)."""
    audit = open_audit(settings)
    return audit.url, audit.repair_schema()


def revisions(settings: Settings) -> tuple[str | None, str | None]:
    """(current, head) revision of the settings' database."""
    return open_audit(settings, check_schema=False).revisions()


def grant_reader(settings: Settings, role: str) -> list[str]:
    """Give a PostgreSQL role SELECT on the reporting views and nothing else; warnings when it can read more."""
    return open_audit(settings).reports.grant_reader(role)


def grant_writer(settings: Settings, role: str) -> list[str]:
    """Give a PostgreSQL role what the CLI and service need to write, and no UPDATE/DELETE/TRUNCATE/DDL on audit
    rows; warnings when it keeps such rights through others."""
    return open_audit(settings).grant_writer(role)
