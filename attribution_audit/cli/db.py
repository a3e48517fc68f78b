"""``attribution-audit db``: the audit database's schema and roles."""

from __future__ import annotations

from typing import Annotated

import typer

from attribution_audit.cli.common import FormatOption, OutputFormat, Typer, emit

app = Typer(help="Audit database schema.\n\n\b\nExample: attribution-audit db current")


@app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the audit schema to the latest revision.

    \b
    Example: attribution-audit db upgrade
    """
    from attribution_audit.services import schema

    url, before, revision = schema.upgrade(ctx.obj)
    if before is None:
        typer.echo(f"audit schema created in database {url} at revision {revision}")
    elif before == revision:
        typer.echo(f"audit database {url} is at revision {revision} (the newest: nothing to do)")
    else:
        typer.echo(f"audit database {url} upgraded from revision {before} to {revision}")


@app.command("repair")
def db_repair(ctx: typer.Context) -> None:
    """Re-create the views, triggers and trigger functions that audit verify says differ from what the migrations
    create, as they create them, and drop triggers added to the audit tables (as the schema owner; the records
    themselves are not touched: run audit verify afterwards).

    \b
    Example: attribution-audit db repair
    """
    from attribution_audit.services import schema

    url, repaired = schema.repair(ctx.obj)
    for line in repaired:
        typer.echo(f"repaired: {line}")
    if not repaired:
        typer.echo(f"nothing to repair in {url}: every view and trigger is as the migrations create it")


@app.command("current")
def db_current(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """Print the schema revision of the audit database and the one this version needs.

    \b
    Example: attribution-audit db current --format json
    """
    from attribution_audit.services import schema

    current, head = schema.revisions(ctx.obj)
    data = {"current": current, "head": head}
    emit(fmt, data=data, rows=[data], text=lambda: typer.echo(f"current: {current or 'none'}  head: {head}"))


@app.command("grant-reader")
def db_grant_reader(
    ctx: typer.Context, role: Annotated[str, typer.Argument(help="PostgreSQL role to create or update.")]
) -> None:
    """Give a PostgreSQL role read access to the reporting views and nothing else.

    \b
    Example: attribution-audit --database-url postgresql://postgres@localhost/audit db grant-reader reporting
    """
    from attribution_audit.services import schema

    warnings = schema.grant_reader(ctx.obj, role)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    rest = "" if warnings else " (and nothing else)"
    typer.echo(f"role {role} can read the reporting views{rest}; grant it to login users")


@app.command("grant-writer")
def db_grant_writer(
    ctx: typer.Context, role: Annotated[str, typer.Argument(help="PostgreSQL role to create or update.")]
) -> None:
    """Give a PostgreSQL role what the CLI and service need to write: INSERT and SELECT on the audit tables (no
    UPDATE, DELETE, TRUNCATE or DDL: it cannot drop the append-only triggers), the catalogue's tables; run as the
    schema owner, then connect as a LOGIN user in the role.

    \b
    Example: attribution-audit --database-url postgresql://postgres@localhost/audit db grant-writer attribution_writer
    """
    from attribution_audit.services import schema

    warnings = schema.grant_writer(ctx.obj, role)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    limits = "no DDL" if warnings else "no UPDATE/DELETE/TRUNCATE of audit rows, no DDL"
    typer.echo(
        f"role {role} can append to the audit log and maintain the catalogue ({limits}); grant it to the login user "
        "the CLI and service connect as"
    )
