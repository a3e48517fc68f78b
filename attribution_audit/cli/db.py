"""``attribution-audit db``: the audit database's schema and roles."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Audit database schema.")


@app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the audit schema to the latest revision."""
    from attribution_audit.services import schema

    url, revision = schema.upgrade(ctx.obj)
    typer.echo(f"audit database {url} is at revision {revision}")


@app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the schema revision of the audit database and the one this version needs."""
    from attribution_audit.services import schema

    current, head = schema.revisions(ctx.obj)
    typer.echo(f"current: {current or 'none'}  head: {head}")


@app.command("grant-reader")
def db_grant_reader(
    ctx: typer.Context, role: Annotated[str, typer.Argument(help="PostgreSQL role to create or update.")]
) -> None:
    """Give a PostgreSQL role read access to the reporting views and nothing else."""
    from attribution_audit.services import schema

    schema.grant_reader(ctx.obj, role)
    typer.echo(f"role {role} can read the reporting views (and nothing else); grant it to login users")
