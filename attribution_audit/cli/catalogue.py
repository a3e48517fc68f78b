"""``attribution-audit catalogue`` and ``artists``: withdraw works, check the store, merge artist aliases."""

from __future__ import annotations

from typing import Annotated

import typer

from attribution_audit.cli.common import EmbedderOption, audit_of, settings_of

app = typer.Typer(no_args_is_help=True, help="Catalogue lifecycle: withdraw works, check the store.")
artists_app = typer.Typer(no_args_is_help=True, help="Artists and their aliases.")


@app.command("withdraw")
def catalogue_withdraw(
    ctx: typer.Context,
    work_ids: Annotated[list[str], typer.Argument(help="Work ids to exclude from new attributions.")],
    catalogue: Annotated[str, typer.Option(help="Catalogue of the works.")],
) -> None:
    """Exclude works from new attributions; past audit records that name them are kept."""
    from attribution_audit.services.catalogue import withdraw

    done = withdraw(ctx.obj, audit_of(ctx.obj), catalogue, work_ids)
    typer.echo(f"withdrew {done.works} work(s) from {catalogue}; removed from {done.collections} collection(s)")


@app.command("check")
def catalogue_check(
    ctx: typer.Context,
    embedder: EmbedderOption = None,
    repair: Annotated[
        bool, typer.Option(help="Delete orphan points and forget missing ones (re-ingest after).")
    ] = False,
) -> None:
    """Compare the vector store with the audit DB; exit 1 if they disagree (and were not repaired)."""
    from attribution_audit.services.catalogue import check_collection

    settings = settings_of(ctx, embedder)
    report = check_collection(settings, audit_of(settings), repair=repair)
    typer.echo(
        f"{report.collection}: {report.points} points, {report.expected} expected; {len(report.orphans)} orphan, "
        f"{len(report.missing)} missing, {len(report.stale)} stale"
    )
    if report.repaired:
        typer.echo("repaired: orphan and stale points deleted; run `attribution-audit ingest` again to re-add works")
    elif not report.clean:
        raise typer.Exit(1)


@artists_app.command("merge")
def artists_merge(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The other spelling.")],
    canonical: Annotated[str, typer.Argument(help="The artist it is merged into.")],
) -> None:
    """Record that ALIAS is CANONICAL: reports and entropy use CANONICAL; past audit rows stay as recorded."""
    from attribution_audit.services.catalogue import merge_artists

    merge_artists(audit_of(ctx.obj), alias, canonical)
    typer.echo(f"merged {alias!r} into {canonical!r}")


@artists_app.command("list")
def artists_list(ctx: typer.Context) -> None:
    """List artists with their canonical name and number of active works."""
    from attribution_audit.services.catalogue import list_artists

    for artist in list_artists(audit_of(ctx.obj)):
        typer.echo(f"{artist.name}\t{artist.canonical or '-'}\t{artist.active_works}")
