"""``attribution-audit ingest``: embed a catalogue into the vector store and record it in the audit DB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attribution_audit.cli.common import (
    EmbedderOption,
    IngestSpaces,
    Quantization,
    SourceFormat,
    checked,
    choice,
    settings_of,
)
from attribution_audit.cli.progress import ProgressDisplay
from attribution_audit.config import with_options

SHOWN_FAILURES = 20


def ingest(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(help="CSV/JSONL manifest (path,artist,work_id + extras), artist folders, or Wang JSON.")
    ],
    fmt: Annotated[
        SourceFormat,
        typer.Option(
            "--format",
            parser=choice(SourceFormat, "format"),
            help="Layout of the source (auto: from the file name or folder).",
        ),
    ] = SourceFormat.auto,
    embedder: EmbedderOption = None,
    catalogue: Annotated[str | None, typer.Option(help="Catalogue name (default: the source's file name).")] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="Precomputed vectors (.npy aligned with the manifest, .npz/.parquet with work_id) "),
    ] = None,
    failures: Annotated[Path | None, typer.Option(help="Where to write the failed rows (CSV).")] = None,
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even when some rows failed.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per embedding batch.")] = 32,
    workers: Annotated[int, typer.Option(min=1, help="Image decoding threads.")] = 2,
    spaces: Annotated[
        IngestSpaces,
        typer.Option(
            parser=choice(IngestSpaces, "spaces", verb="use"),
            help="content, or content,style to also fill the style space.",
        ),
    ] = IngestSpaces.content,
    allow_artist_changes: Annotated[
        bool, typer.Option(help="Accept rows that change the artist of a known work (the change is listed).")
    ] = False,
    quantization: Annotated[
        Quantization | None,
        typer.Option(
            parser=choice(Quantization, "quantization", verb="use"),
            help="New collection: int8 scalar quantisation, rescored on the original vectors [env "
            "ATTRIBUTION_AUDIT_QUANTIZATION; default none].",
        ),
    ] = None,
    shard_number: Annotated[
        int | None, typer.Option(min=1, help="New server collection: shards [env ATTRIBUTION_AUDIT_SHARD_NUMBER].")
    ] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option(
            min=1, help="New server collection: copies of each shard [env ATTRIBUTION_AUDIT_REPLICATION_FACTOR]."
        ),
    ] = None,
    write_consistency_factor: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="New server collection: replicas that confirm a write "
            "[env ATTRIBUTION_AUDIT_WRITE_CONSISTENCY_FACTOR].",
        ),
    ] = None,
) -> None:
    """Embed a catalogue's works into the vector store and record them in the audit DB (re-runs add nothing).

    \b
    Example: attribution-audit ingest .demo/catalogue/catalogue.csv --embedder efficientnet-lite0 --spaces content,style
    """
    from attribution_audit.services.ingest import ingest_catalogue

    with_style = spaces is IngestSpaces.content_style
    settings = with_options(
        settings_of(ctx, embedder),
        quantization=quantization.value if quantization else None,
        shard_number=shard_number,
        replication_factor=replication_factor,
        write_consistency_factor=write_consistency_factor,
    )
    with ProgressDisplay(f"ingest {source.name}", unit="row") as progress:  # (a failing row counts too)
        report = checked(
            ingest_catalogue,
            settings=settings,
            source_path=source,
            fmt=fmt.value,
            catalogue=catalogue,
            embeddings=embeddings,
            failures=failures,
            batch_size=batch_size,
            workers=workers,
            with_style=with_style,
            allow_artist_changes=allow_artist_changes,
            progress=progress,
        )
    for failure in report.failures[:SHOWN_FAILURES]:
        typer.echo(f"failed: {source}:{failure.line} work_id={failure.work_id!r}: {failure.reason}", err=True)
    if report.failed > SHOWN_FAILURES:
        typer.echo(f"... and {report.failed - SHOWN_FAILURES} more failed rows", err=True)
    typer.echo(
        f"catalogue {report.catalogue}: {report.added} added, {report.updated} updated"
        + (f" ({report.new_images} with a new image)" if report.updated else "")
        + ", "
        f"{report.unchanged} unchanged, {report.withdrawn} withdrawn (skipped), {report.failed} failed "
        f"(run {report.run_id}, {report.seconds:.1f} s)"
    )
    if report.layouts_added:
        typer.echo(
            f"layouts: {report.layouts_added} unchanged work(s) ingested before layouts were given theirs "
            "(copy detection's third source of candidates)"
        )
    if report.same_image:
        first, twin = report.same_image[0]
        typer.echo(
            f"warning: {len(report.same_image)} work(s) have the same image file as another work of the catalogue "
            f"(e.g. {first} = {twin}); both will be attributed: if they are the same work, withdraw one "
            "(`attribution-audit catalogue withdraw`)",
            err=True,
        )
    for work_id, old, new in report.artist_changes:
        typer.echo(f"artist changed: {work_id}: {old} -> {new}", err=True)
    if report.note:
        typer.echo(f"note: {report.note}", err=True)
    if report.labelled_queries:
        typer.echo(f"labelled query set {report.catalogue}: {report.labelled_queries} generated images")
    if report.failures_path:
        typer.echo(f"failed rows written to {report.failures_path}")
    if report.failures and not allow_failures:
        raise typer.Exit(1)
