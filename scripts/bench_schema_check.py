"""What comparing the views and triggers with the migrations adds to ``audit verify``: the check's wall time on a
freshly migrated SQLite file and PostgreSQL database, cold (the migrations replayed into a scratch copy: an in-memory
SQLite database, PostgreSQL's temporary schema) and warm (the expected definitions cached by the process, as in the
service); the median of ``--runs`` runs each. Writes its section of docs/benchmarks.md.

    python scripts/bench_schema_check.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchlib import provenance, publish
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from attribution_audit.store import schema_objects
from attribution_audit.store.database import create_db_engine, upgrade

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _median_ms(runs: int, before: Callable[[], None], engine: Engine) -> float:
    times = []
    for _ in range(runs):
        before()
        started = time.perf_counter()
        revision, found = schema_objects.differences(engine)
        times.append(time.perf_counter() - started)
        assert revision and not found, found
    return 1000 * statistics.median(times)


def _measure(url: str, runs: int) -> tuple[float, float, int]:
    """(cold ms, warm ms, objects compared) on the migrated database of ``url``."""
    engine = create_db_engine(url)
    upgrade(engine)
    try:
        cold = _median_ms(runs, schema_objects._expected.clear, engine)
        warm = _median_ms(runs, lambda: None, engine)
        objects = len(next(iter(schema_objects._expected.values())))
    finally:
        engine.dispose()
    return cold, warm, objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a scratch database is created and dropped)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        results.append(("SQLite", *_measure(f"sqlite:///{folder}/audit.sqlite", args.runs)))
    if args.postgres:
        admin = create_db_engine(args.postgres).execution_options(isolation_level="AUTOCOMMIT")
        name = f"aa_bench_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
            version = connection.scalar(text("SHOW server_version"))
        try:
            url = make_url(admin.url).set(database=name).render_as_string(hide_password=False)
            results.append((f"PostgreSQL {version}", *_measure(url, args.runs)))
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    lines = [
        "## What the schema check adds to audit verify (scripts/bench_schema_check.py)",
        "",
        *provenance(("sqlalchemy", "alembic")),
        "",
        f"Median of {args.runs} runs of the comparison of every view, trigger and trigger function with what the "
        "migrations create; cold: the migrations replayed into a scratch copy (the first `audit verify` of a "
        "process), warm: the expected definitions cached (later verifications of the service).",
        "",
        "| database | objects | cold (ms) | warm (ms) |",
        "|---|---:|---:|---:|",
        *(f"| {db} | {objects} | {cold:.0f} | {warm:.1f} |" for db, cold, warm, objects in results),
    ]
    publish(DOC, "schema-check", lines)


if __name__ == "__main__":
    main()
