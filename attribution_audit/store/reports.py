"""Reports over the SQL views (the same views analysts query directly; see docs/schema.md), and the PostgreSQL
role that can read the views and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine, Select, func, select, text
from sqlalchemy.exc import DBAPIError

from attribution_audit.errors import DatabaseError
from attribution_audit.store import chain
from attribution_audit.store.chain import AUDIT_VIEWS
from attribution_audit.store.database import (
    SCHEMA_VERSION_VIEW,
    compared_time,
    is_permission_error,
    permission_error,
    read_connection,
)

REPORTING_VIEWS = (
    "v_attributions",
    "v_attribution_neighbours",
    "v_artist_shares",
    "v_low_confidence",
    "v_ann_disagreements",
    "v_catalogue",
)
# What a read-only role reads: the reporting views, the audit views (PostgreSQL; every hashed column, the vectors
# only as digests: enough to list, show and verify records), the schema revision, and the DB's identity (one row,
# what checkpoints name: so that a reader can check them).
READER_VIEWS = (*REPORTING_VIEWS, *AUDIT_VIEWS, SCHEMA_VERSION_VIEW, "audit_identity")


@dataclass(frozen=True)
class LogCounts:
    """Counts over v_attributions, v_low_confidence (which lists the requests of images of one colour too),
    v_catalogue and the metrics (the images of one colour), and every request's confidence."""

    requests: int
    production_requests: int
    verified_requests: int
    ann_disagreements: int
    low_confidence_requests: int
    one_colour_requests: int
    production_not_looked_at: int  # production requests not looked at for one colour (made before revision 0024)
    mean_confidence: float | None
    first_request: str | None
    last_request: str | None
    confidences: list[float]
    active_works: int
    withdrawn_works: int


def _midnight(day: date) -> datetime:
    """The start of a UTC day."""
    return datetime.combine(day, time(), UTC)


class ReportRepository:
    """Read-only queries over the reporting views, and grants on them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def artist_shares(self, date_from: date | None = None, date_to: date | None = None) -> list[dict[str, Any]]:
        """Per canonical artist over [date_from, date_to] (inclusive days): attributions, share sum, mean confidence."""
        conditions, bind = [], {}
        # SQLite's view yields ISO date strings, PostgreSQL's DATE values
        sqlite = self.engine.dialect.name == "sqlite"
        for name, value, operator in (("date_from", date_from, ">="), ("date_to", date_to, "<=")):
            if value is not None:
                conditions.append(f"day {operator} :{name}")
                bind[name] = value.isoformat() if sqlite else value
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = text(
            f"""
            SELECT artist, SUM(attributions) AS attributions, SUM(share_sum) AS share_sum,
                   SUM(mean_confidence * attributions) / SUM(attributions) AS mean_confidence
            FROM v_artist_shares {where}
            GROUP BY artist ORDER BY share_sum DESC, artist
            """
        )
        with read_connection(self.engine) as connection:
            return [
                {
                    "artist": row.artist,
                    "attributions": int(row.attributions),
                    "share_sum": round(float(row.share_sum), 6),
                    "mean_confidence": round(float(row.mean_confidence), 6),
                }
                for row in connection.execute(sql, bind)
            ]

    def one_colour_production(self, date_from: date | None = None, date_to: date | None = None) -> int:
        """The production requests over [date_from, date_to] (inclusive UTC days) of images of one colour: those
        v_artist_shares leaves out (read from what a reader may read: the audit views on PostgreSQL)."""
        query, requests = self._production_where_one_colour_is(1)
        if date_from is not None:
            query = query.where(requests.created_at >= compared_time(self.engine, _midnight(date_from)))
        if date_to is not None and date_to < date.max:  # (the last day there is bounds nothing)
            query = query.where(
                requests.created_at < compared_time(self.engine, _midnight(date_to + timedelta(days=1)))
            )
        with read_connection(self.engine) as connection:
            return int(connection.scalar(query) or 0)

    def _production_where_one_colour_is(self, value: int | None) -> tuple[Select[Any], Any]:
        """The count of production requests whose one_colour is ``value`` (None: not looked at), and the requests'
        columns (what a reader may read: the audit views on PostgreSQL)."""
        src = chain.log_source(self.engine)
        requests, metrics = src.requests.c, src.metrics.c
        flag = metrics.one_colour.is_(None) if value is None else metrics.one_colour == value
        query = (
            select(func.count())
            .select_from(src.requests.join(src.metrics, metrics.request_id == requests.id))
            .where(flag, requests.evaluation_run_id.is_(None), requests.replay_of.is_(None))
        )
        return query, requests

    def counts(self) -> LogCounts:
        """Counts, mean confidence and the first/last request time of the log."""
        with read_connection(self.engine) as connection:
            counts = connection.execute(
                text(
                    "SELECT COUNT(*) AS total, COALESCE(SUM(is_production), 0) AS production, "
                    "COUNT(overlap_at_k) AS verified, "
                    "SUM(CASE WHEN overlap_at_k < 1 THEN 1 ELSE 0 END) AS disagreements, "
                    "AVG(confidence) AS mean_confidence, MIN(created_at) AS first, MAX(created_at) AS last "
                    "FROM v_attributions"
                )
            ).one()
            # a number only: SQLite keeps text written by hand in a float column (the record then fails its hash)
            rows = connection.scalars(text("SELECT confidence FROM v_attributions"))
            confidences = [float(c) for c in rows if isinstance(c, int | float)]
            low = connection.scalar(text("SELECT COUNT(*) FROM v_low_confidence"))
            metrics = chain.log_source(self.engine).metrics  # (what a reader may read: the audit view on PostgreSQL)
            flat = connection.scalar(select(func.count()).select_from(metrics).where(metrics.c.one_colour == 1))
            unchecked = connection.scalar(self._production_where_one_colour_is(None)[0])
            works = connection.execute(
                text("SELECT COALESCE(SUM(active), 0), COALESCE(SUM(withdrawn), 0) FROM v_catalogue")
            ).one()
        return LogCounts(
            requests=int(counts.total),
            production_requests=int(counts.production),
            verified_requests=int(counts.verified),
            ann_disagreements=int(counts.disagreements or 0),
            low_confidence_requests=int(low or 0),
            one_colour_requests=int(flat or 0),
            production_not_looked_at=int(unchecked or 0),
            mean_confidence=None if counts.mean_confidence is None else round(float(counts.mean_confidence), 6),
            first_request=str(counts.first) if counts.first else None,
            last_request=str(counts.last) if counts.last else None,
            confidences=confidences,
            active_works=int(works[0]),
            withdrawn_works=int(works[1]),
        )

    def grant_reader(self, role: str) -> list[str]:
        """Create ``role`` (NOLOGIN; grant it to login users, or ALTER ROLE ... LOGIN PASSWORD) with SELECT on
        :data:`READER_VIEWS`: what the read commands (audit list/show/verify/export, report) need, nothing more.

        The views run with their owner's rights, so the role needs and gets no right on any table; it cannot read
        the query vectors (the audit views show their digests) nor write anything. Reserved names, superusers and
        the owner's roles are refused; the warnings say what the role can still read otherwise (another role's
        rights, ``pg_read_all_data``).
        """
        if self.engine.dialect.name != "postgresql":
            raise DatabaseError(
                "read-only roles need PostgreSQL; a SQLite audit file is protected by file permissions instead"
            )
        from attribution_audit.store import roles

        roles.check_role_name(role)
        try:
            with self.engine.begin() as connection:
                roles.refuse_privileged(connection, role)
                exists = connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role})
                if not exists:
                    connection.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
                schema = connection.scalar(text("SELECT current_schema()"))
                connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
                connection.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM "{role}"'))
                connection.execute(text(f'GRANT SELECT ON {", ".join(READER_VIEWS)} TO "{role}"'))
                broader = roles.reads_base_tables(connection, role)
        except DBAPIError as exc:
            if is_permission_error(exc):
                raise permission_error(
                    self.engine,
                    exc,
                    "`db grant-reader` needs the schema owner with the CREATEROLE attribute (or a superuser)",
                ) from exc
            raise
        if broader:
            return [
                f"role {role} can still read the base tables (the query vectors included) through rights it has "
                "besides these views (another role it is a member of, pg_read_all_data, a default privilege): it is "
                "not read-only; revoke those, or use a new role"
            ]
        return []
