"""``attribution-audit catalogue`` and ``artists``: withdraw works, check the store, merge artist aliases."""

from __future__ import annotations

from typing import Annotated

import typer

from attribution_audit.cli.common import EmbedderOption, FormatOption, OutputFormat, Typer, audit_of, emit, settings_of

app = Typer(
    help="Catalogue lifecycle: withdraw works, check the store.\n\n\b\nExample: attribution-audit catalogue check",
)
artists_app = Typer(help="Artists and their aliases.\n\n\b\nExample: attribution-audit artists list")


@app.command("withdraw")
def catalogue_withdraw(
    ctx: typer.Context,
    work_ids: Annotated[list[str], typer.Argument(help="Work ids to exclude from new attributions.")],
    catalogue: Annotated[str, typer.Option(help="Catalogue of the works.")],
) -> None:
    """Exclude works from new attributions; past audit records that name them are kept.

    \b
    Example: attribution-audit catalogue withdraw A5-W007 --catalogue catalogue
    """
    from attribution_audit.services.catalogue import withdraw

    done = withdraw(ctx.obj, audit_of(ctx.obj), catalogue, work_ids)
    before = f" ({done.already} withdrawn before)" if done.already else ""
    typer.echo(f"withdrew {done.works} work(s) from {catalogue}{before}; removed from {done.collections} collection(s)")


@app.command("check")
def catalogue_check(
    ctx: typer.Context,
    embedder: EmbedderOption = None,
    repair: Annotated[
        bool,
        typer.Option(
            help="Rewrite corrupt vectors from their recorded image; delete orphan, stale and unrewritable points "
            "and forget missing ones (re-ingest after)."
        ),
    ] = False,
    deep: Annotated[
        bool, typer.Option("--deep", help="Compare every stored vector with its digest (default: a sample).")
    ] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Compare the vector store with the audit DB, and stored vectors with the digests recorded when they were
    written; exit 1 if they disagree (and were not repaired).

    \b
    Example: attribution-audit catalogue check --format json
    """
    from attribution_audit.services.catalogue import check_collection

    settings = settings_of(ctx, embedder)
    report = check_collection(settings, audit_of(settings), repair=repair, deep=deep)
    vectors = report.vectors
    counts = {
        "collection": report.collection,
        "points": report.points,
        "expected": report.expected,
        "orphan": len(report.orphans),
        "missing": len(report.missing),
        "stale": len(report.stale),
        "vectors_checked": vectors.checked,
        "corrupt": len(vectors.corrupt),
        "repaired": report.repaired,
        "clean": report.clean,
    }
    data = {
        **{key: counts[key] for key in ("collection", "points", "expected")},
        "orphans": report.orphans,
        "missing": report.missing,
        "stale": report.stale,
        "vectors_checked": vectors.checked,
        "vectors_unrecorded": vectors.unrecorded,
        "corrupt": vectors.corrupt,
        "reembedded": vectors.reembedded,
        "dropped": vectors.dropped,
        "repaired": report.repaired,
        "set_aside": report.set_aside,
        "clean": report.clean,
        "coverage": report.coverage,
        "partial_spaces": report.partial_spaces,
        "layouts": report.layouts,
        "unended_writes": report.unended_writes,
    }

    def text() -> None:
        typer.echo(
            f"{report.collection}: {report.points} points, {report.expected} expected; {len(report.orphans)} orphan, "
            f"{len(report.missing)} missing, {len(report.stale)} stale"
        )
        unrecorded = f" ({vectors.unrecorded} without a recorded digest)" if vectors.unrecorded else ""
        typer.echo(
            f"vectors: {vectors.checked} compared with their digests"
            f"{' (all)' if deep or vectors.checked >= report.points else ' (a sample; --deep: all)'}"
            f", {len(vectors.corrupt)} corrupt{unrecorded}"
        )
        if vectors.corrupt and not report.repaired:
            typer.echo("corrupt vectors give wrong neighbours: run `attribution-audit catalogue check --deep --repair`")
        if report.orphans and not report.repaired:
            typer.echo(
                "orphan points (no active work: withdrawn, or written by an ingest that failed before its commit): "
                "an ingest of their catalogue adopts those its manifest still lists; `--repair` deletes them"
            )
        if (report.stale or report.missing) and not report.repaired:
            typer.echo(
                "stale points (their payload names another image, work or artist than the catalogue records; "
                "`--format json` lists them) and missing ones: ingest their catalogue again (it rewrites them), or "
                "`--repair` to delete the stale ones first"
            )
        works = report.coverage.get("content", 0)
        typer.echo("spaces: " + ", ".join(f"{space} {count}/{works} works" for space, count in report.coverage.items()))
        for space in report.partial_spaces:
            typer.echo(f"the {space} space is partial: ingest every catalogue again with --spaces content,{space}")
        if report.layouts is not None:
            typer.echo(
                f"layouts: {report.layouts}/{report.points} points (copy detection's candidates by layout; a flat "
                "image has none, a work ingested before layouts gets its own from the next `ingest` of its images)"
            )
        elif report.points and report.set_aside is None:
            typer.echo(
                f"layouts: 0/{report.points} points: the collection has no layout space, so copy detection draws its "
                "candidates from the base spaces only; `ingest` the catalogue's images to add it (an embedded shard "
                "gains it in place, as after an ingest of precomputed vectors; a Qdrant server collection created "
                "without it cannot gain one)"
            )
        for run, wrote in report.unended_writes.items():
            typer.echo(
                f"write run {run[:12]} has not ended (last wrote {wrote or 'at an unknown time'}): while it is open, "
                "every request reads every point to version the collection; a run a killed writer left is ended by "
                "the first run to end 15 minutes after it last wrote (`ingest` again, or `catalogue check --repair`)"
            )
        if report.set_aside:
            typer.echo(f"repaired: the damaged shard was moved to {report.set_aside}")
        if report.repaired and vectors.reembedded:
            typer.echo(f"repaired: {len(vectors.reembedded)} corrupt point(s) rewritten from their recorded image")
        if report.repaired and (report.orphans or report.missing or report.stale or vectors.dropped):
            typer.echo(
                "repaired: orphan, stale and unrewritable points deleted; run `attribution-audit ingest` again to "
                "re-add works"
            )

    emit(fmt, data=data, rows=[counts], text=text)
    if not report.repaired and not report.clean:
        raise typer.Exit(1)


@artists_app.command("merge")
def artists_merge(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The other spelling.")],
    canonical: Annotated[str, typer.Argument(help="The artist it is merged into.")],
) -> None:
    """Record that ALIAS is CANONICAL: reports and entropy use CANONICAL; past audit rows stay as recorded. Both
    must be known artists (a manifest named them); `artists unmerge ALIAS` undoes it.

    \b
    Example: attribution-audit artists merge "Farid Turner" "Elif Klimt"
    """
    from attribution_audit.services.catalogue import merge_artists

    alias, canonical = merge_artists(audit_of(ctx.obj), alias, canonical)
    typer.echo(f"merged {alias!r} into {canonical!r}")


@artists_app.command("unmerge")
def artists_unmerge(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The artist merged into another by mistake.")],
) -> None:
    """Undo NAME's merge: reports and entropy name it apart again (names merged into NAME before its own merge stay
    with the artist they were sent on to); past audit rows stay as recorded.

    \b
    Example: attribution-audit artists unmerge "Farid Turner"
    """
    from attribution_audit.services.catalogue import unmerge_artist

    name, canonical = unmerge_artist(audit_of(ctx.obj), name)
    typer.echo(f"unmerged {name!r}: it was merged into {canonical!r}")


@artists_app.command("list")
def artists_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List artists with their canonical name (when merged into another) and number of active works.

    \b
    Example: attribution-audit artists list --format csv
    """
    from attribution_audit.services.catalogue import list_artists

    rows = [
        {"name": a.name, "canonical": a.canonical, "active_works": a.active_works}
        for a in list_artists(audit_of(ctx.obj))
    ]
    emit(fmt, data=rows, rows=rows, columns=("name", "canonical", "active_works"))
