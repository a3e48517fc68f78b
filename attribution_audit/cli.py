"""The typer CLI: parses options, calls the library, prints. Library errors become one line and exit code 1."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from attribution_audit.config import Settings, load_settings
from attribution_audit.errors import AttributionAuditError


class _Commands(TyperGroup):
    """Turns any AttributionAuditError raised by a command into ``error: <message>`` and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AttributionAuditError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    help="Attribute generated images to catalogued works, with an audit trail.",
)
db_app = typer.Typer(no_args_is_help=True, help="Audit database schema.")
audit_app = typer.Typer(no_args_is_help=True, help="Read the audit log.")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")

EmbedderOption = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        help="clip | clip:<hub id or path> | efficientnet-lite0 [env ATTRIBUTION_AUDIT_EMBEDDER]",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data folder of the embedded store and SQLite log [ATTRIBUTION_AUDIT_DATA_DIR]"),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL of the audit DB [ATTRIBUTION_AUDIT_DATABASE_URL]")
    ] = None,
    qdrant_url: Annotated[
        str | None,
        typer.Option(help="Qdrant server URL; unset = embedded shard [ATTRIBUTION_AUDIT_QDRANT_URL]"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Attribute generated images to catalogued works, with an audit trail."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    ctx.obj = load_settings(data_dir=data_dir, database_url=database_url, qdrant_url=qdrant_url)


def _settings(ctx: typer.Context, embedder: str | None = None) -> Settings:
    settings: Settings = ctx.obj
    return load_settings(**{**settings.__dict__, "embedder": embedder})


def _checked_engine(settings: Settings) -> Any:
    from attribution_audit.audit.db import check_schema, create_db_engine

    engine = create_db_engine(settings.resolved_database_url)
    check_schema(engine)
    return engine


@contextmanager
def _store(settings: Settings) -> Iterator[Any]:
    from attribution_audit.vectorstore import open_store

    store = open_store(settings, settings.embedder)
    try:
        yield store
    finally:
        store.close()


# -- db ------------------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the audit schema to the latest revision."""
    from attribution_audit.audit.db import create_db_engine, display_url, upgrade

    settings: Settings = ctx.obj
    engine = create_db_engine(settings.resolved_database_url)
    revision = upgrade(engine)
    typer.echo(f"audit database {display_url(settings.resolved_database_url)} is at revision {revision}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the schema revision of the audit database and the one this version needs."""
    from attribution_audit.audit.db import create_db_engine, current_revision, head_revision

    engine = create_db_engine(ctx.obj.resolved_database_url)
    typer.echo(f"current: {current_revision(engine) or 'none'}  head: {head_revision(engine)}")


# -- ingest ----------------------------------------------------------------------------------------------------
@app.command()
def ingest(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Argument(help="CSV with columns path,artist,work_id (+ title, extra columns).")],
    embedder: EmbedderOption = None,
    catalogue: Annotated[str | None, typer.Option(help="Catalogue name (default: manifest file name).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per embedding batch.")] = 32,
) -> None:
    """Embed a catalogue's works into the vector store and record them in the audit DB."""
    from attribution_audit.catalogue.ingest import ingest_manifest
    from attribution_audit.embedding import get_embedder

    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    model = get_embedder(settings.embedder, batch_size=batch_size)
    with _store(settings) as store:
        report = ingest_manifest(
            manifest,
            engine=engine,
            store=store,
            embedder=model,
            catalogue=catalogue,
            requester=settings.resolved_requester,
            batch_size=batch_size,
        )
    for failure in report.failures:
        typer.echo(f"failed: {manifest}:{failure.line} work_id={failure.work_id!r}: {failure.reason}", err=True)
    typer.echo(
        f"catalogue {report.catalogue}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.failed} failed (run {report.run_id})"
    )
    if report.failures:
        raise typer.Exit(1)


# -- attribute -------------------------------------------------------------------------------------------------
@app.command()
def attribute(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Generated image(s) to attribute.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Number of nearest works to attribute.")] = 10,
    embedder: EmbedderOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find the K nearest works of each image; each result is printed only once it is in the audit log."""
    from attribution_audit.attribution import Attributor
    from attribution_audit.embedding import get_embedder
    from attribution_audit.errors import ImageError

    settings = _settings(ctx, embedder)
    engine = _checked_engine(settings)
    model = get_embedder(settings.embedder)
    results, failed = [], 0
    with _store(settings) as store:
        attributor = Attributor(engine, store, model, settings.embedder, settings.resolved_requester)
        for image in images:
            try:
                result = attributor.attribute(image, k=k)
            except ImageError as exc:
                typer.echo(f"error: {exc}", err=True)
                failed += 1
                continue
            results.append(result)
            if not as_json:
                _print_attribution(result)
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in results], indent=2))
    if failed:
        raise typer.Exit(1)


def _print_attribution(result: Any) -> None:
    nn = "n/a" if result.nn_distance is None else f"{result.nn_distance:.4f}"
    typer.echo(f"request {result.request_id}  image {result.image}")
    typer.echo(f"  entropy {result.entropy:.3f}  nn_distance {nn}  confidence {result.confidence:.3f}")
    typer.echo(f"  {'rank':>4}  {'similarity':>10}  {'distance':>8}  {'artist':<28}  work")
    for n in result.neighbours:
        typer.echo(f"  {n.rank:>4}  {n.similarity:>10.4f}  {n.distance:>8.4f}  {n.artist:<28}  {n.work_id}")


# -- audit -----------------------------------------------------------------------------------------------------
@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many of the newest requests.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List recent attribution requests, newest first."""
    from attribution_audit.audit.repository import list_attributions

    results = list_attributions(_checked_engine(ctx.obj), limit=limit)
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in results], indent=2))
        return
    typer.echo(f"{'request_id':<36}  {'created_at':<25}  {'top artist':<24}  {'conf':>5}  image")
    for r in results:
        top = r.neighbours[0].artist if r.neighbours else "-"
        created = r.created_at.isoformat(timespec="seconds")
        typer.echo(f"{r.request_id:<36}  {created:<25}  {top:<24}  {r.confidence:>5.3f}  {r.image}")


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="Request id, as printed by attribute or audit list.")],
    as_json: JsonOption = False,
) -> None:
    """Show one recorded attribution with its neighbours, metrics and parameters."""
    from attribution_audit.audit.repository import get_attribution

    result = get_attribution(_checked_engine(ctx.obj), request_id)
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    _print_attribution(result)
    typer.echo(f"  embedder {result.embedder_fingerprint}")
    typer.echo(f"  index {json.dumps(result.index_params, sort_keys=True)}")
