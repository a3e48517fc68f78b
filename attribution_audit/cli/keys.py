"""``attribution-audit keys``: API keys of the HTTP service."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from attribution_audit.cli.common import FormatOption, OutputFormat, Typer, audit_of, checked, choice, emit


class Role(StrEnum):
    writer = "writer"
    reader = "reader"


app = Typer(help="API keys of the HTTP service.\n\n\b\nExample: attribution-audit keys create image-generator")


@app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who uses the key; recorded as the requester of its attributions.")],
    role: Annotated[
        Role,
        typer.Option(parser=choice(Role, "role"), help="writer (attribute and read) or reader (read only)."),
    ] = Role.writer,
) -> None:
    """Create an API key; the key is printed once, alone on the last line (only its hash is stored).

    \b
    Example: attribution-audit keys create compliance --role reader
    """
    from attribution_audit.services.keys import create_key

    audit = audit_of(ctx.obj)
    key = checked(create_key, audit=audit, name=name, role=role.value)
    typer.echo(f"created {role.value} key {name.strip()!r}; store it now, it is not shown again:")
    typer.echo(key)


@app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The name the key was created with (see `keys list`).")],
) -> None:
    """Revoke an API key: the service refuses it from its next request, like an unknown key. The name stays the
    requester of the key's past attributions and cannot be given to a new key.

    \b
    Example: attribution-audit keys revoke image-generator
    """
    from attribution_audit.services.keys import revoke_key

    when = revoke_key(audit_of(ctx.obj), name)
    typer.echo(f"revoked key {name.strip()!r} at {when.isoformat()}; the service refuses it from its next request")


@app.command("list")
def keys_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List the API keys' names, roles, and when each was created and revoked (never the keys).

    \b
    Example: attribution-audit keys list
    """
    from attribution_audit.services.keys import key_holders

    rows = [
        {
            "name": h.name,
            "role": h.role,
            "created_at": h.created_at.isoformat(),
            "revoked_at": None if h.revoked_at is None else h.revoked_at.isoformat(),
        }
        for h in key_holders(audit_of(ctx.obj))
    ]
    emit(fmt, data=rows, rows=rows, columns=("name", "role", "created_at", "revoked_at"))
