"""What several commands share: typed options, the settings and audit store of the invocation, output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from attribution_audit.config import Settings, load_settings

if TYPE_CHECKING:
    from attribution_audit.domain.results import Attribution
    from attribution_audit.store.audit_store import AuditStore

T = TypeVar("T")

EmbedderOption = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        help="clip | clip:<hub id or path> | efficientnet-lite0 [env ATTRIBUTION_AUDIT_EMBEDDER]",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
FromOption = Annotated[datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First day (UTC).")]
ToOption = Annotated[datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Last day (UTC), inclusive.")]
QueriesArgument = Annotated[
    str, typer.Argument(help="Labelled queries: CSV (path,artist[,work_ids][,subset]) or a stored query set name.")
]


def settings_of(ctx: typer.Context, embedder: str | None = None) -> Settings:
    """The invocation's settings, with ``--embedder`` applied when given."""
    settings: Settings = ctx.obj
    return load_settings(**{**settings.__dict__, "embedder": embedder})


def audit_of(settings: Settings) -> AuditStore:
    """The audit store of the settings, its schema checked."""
    from attribution_audit.services.wiring import open_audit

    return open_audit(settings)


def checked(factory: Callable[..., T], **values: Any) -> T:
    """Call ``factory``; its ValueError (a bad option value) becomes a usage error naming the problem."""
    try:
        return factory(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def print_attribution(result: Attribution) -> None:
    """One attribution as the terminal shows it: indicators, ranked neighbours, artist shares."""

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    typer.echo(f"request {result.request_id}  seq {result.seq}  image {result.image}")
    typer.echo(
        f"  entropy {result.entropy:.3f}  nn_distance {fmt(result.nn_distance)}  margin {fmt(result.margin)}  "
        f"overlap@K {fmt(result.overlap_at_k)}  confidence {result.confidence:.3f} ({result.confidence_model})"
    )
    typer.echo(f"  {'rank':>4}  {'similarity':>10}  {'distance':>8}  {'share':>8}  {'artist':<28}  work")
    for n in result.neighbours:
        typer.echo(
            f"  {n.rank:>4}  {n.similarity:>10.4f}  {n.distance:>8.4f}  {n.share:>8.6f}  {n.artist:<28}  {n.work_id}"
        )
    artists = ", ".join(f"{artist} {share:.6f}" for artist, share in result.artist_shares.items())
    typer.echo(f"  artist shares: {artists or '-'}")
