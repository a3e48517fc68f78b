"""What several commands share: the CLI's Typer and command classes (plain help), typed options and choices, the
settings and audit store of the invocation, and the one output helper (:func:`emit`) behind every ``--format``."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand

from attribution_audit.config import Settings, with_options
from attribution_audit.domain.params import LEARNED_NAME, QUERY_SPACES

if TYPE_CHECKING:
    from pathlib import Path

    from attribution_audit.domain.results import Attribution
    from attribution_audit.services.checkpoints import Signed
    from attribution_audit.store.audit_store import AuditStore

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
F = TypeVar("F", bound=Callable[..., Any])

# -- help ---------------------------------------------------------------------------------------------------------
# Plain (click) help everywhere: rich markup would eat ``[env var: ...]`` and show ``<bool>`` beside every flag; the
# plain formatter keeps ``\b`` paragraphs (the examples) as written and renders the same on every terminal.
_LIST_TYPE = re.compile(r"<list\[(\w+)\]>")


class Command(TyperCommand):
    """A command with plain help in which an argument that takes several values is named by the type of one
    (``images... <path>``, not ``<list[Path]>``)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                name, text = record
                arguments.append((_LIST_TYPE.sub(lambda m: f"<{m.group(1).lower()}>", name), text))
            elif param.param_type_name == "option":
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


class Typer(typer.Typer):
    """``typer.Typer`` with this CLI's defaults: plain help, help on no arguments, :class:`Command` commands."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**{"no_args_is_help": True, **settings, "rich_markup_mode": None})

    def command(self, *args: Any, **settings: Any) -> Callable[[F], F]:
        decorator: Callable[[F], F] = super().command(*args, **{"cls": Command, **settings})
        return decorator


# -- choices ------------------------------------------------------------------------------------------------------
# Typed as enums: the help lists them, a wrong value is a usage error (exit 2) and shell completion offers them.
# The services get the values, as strings.
class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class SpaceChoice(StrEnum):
    content = "content"
    style = "style"
    fused = "fused"


class ExactChoice(StrEnum):
    brute = "brute"
    kdtree = "kdtree"


class SharesChoice(StrEnum):
    equal = "equal"
    similarity = "similarity"


class TopChoice(StrEnum):
    share = "share"
    nearest = "nearest"
    centroid = "centroid"


class SourceFormat(StrEnum):
    auto = "auto"
    csv = "csv"
    jsonl = "jsonl"
    folder = "folder"
    wang = "wang"


class IngestSpaces(StrEnum):
    content = "content"
    content_style = "content,style"


class Quantization(StrEnum):
    none = "none"
    int8 = "int8"


class RequestKind(StrEnum):
    all = "all"
    production = "production"
    evaluation = "evaluation"
    replay = "replay"


class NoiseKind(StrEnum):
    homogeneous = "homogeneous"
    heterogeneous = "heterogeneous"


def _either(values: list[str]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def choice(kind: type[E], name: str, verb: str = "choose") -> Callable[[Any], E]:
    """The parser of an option typed ``kind``: its value (spaces ignored), or a usage error such as
    ``format 'xml': choose table, csv or json``."""

    def parse(value: Any) -> E:
        if isinstance(value, kind):
            return value
        try:
            return kind(str(value).replace(" ", ""))
        except ValueError:
            raise typer.BadParameter(f"{name} {value!r}: {verb} {_either([m.value for m in kind])}") from None

    return parse


# -- options ------------------------------------------------------------------------------------------------------
EmbedderOption = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        help="clip | clip:<hub id or path> | efficientnet-lite0  [env var: ATTRIBUTION_AUDIT_EMBEDDER]",
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        parser=choice(OutputFormat, "format"),
        help="table (for people), csv (a header, then rows) or json.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Same as --format json (deprecated; kept for scripts).")]
EfOption = Annotated[
    int | None,
    typer.Option(
        "--ef",
        min=1,
        help="HNSW search ef (the engine searches max(ef, k x oversampling) candidates); larger: higher recall, slower "
        "search, no re-ingest; default: the collection's (128)  [env var: ATTRIBUTION_AUDIT_HNSW_EF]",
    ),
]


def _space_name(value: Any) -> str:
    """A built-in space or a learned space's name (``spaces fit NAME``); a usage error otherwise."""
    text = str(value).replace(" ", "")
    if text in QUERY_SPACES or LEARNED_NAME.fullmatch(text):
        return text
    raise typer.BadParameter(f"space {value!r}: choose {', '.join(QUERY_SPACES)} or a learned space's name")


def _complete_space(incomplete: str) -> list[str]:
    return [space for space in QUERY_SPACES if space.startswith(incomplete)]


SpaceOption = Annotated[
    str,
    typer.Option(
        parser=_space_name,
        autocompletion=_complete_space,
        help="Vector space: content, style, fused (RRF of both), or a learned space (see `spaces list`).",
    ),
]
FromOption = Annotated[datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First day (UTC).")]
ToOption = Annotated[datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Last day (UTC), inclusive.")]


def day_range(date_from: datetime | None, date_to: datetime | None) -> tuple[date | None, date | None]:
    """The --from/--to days; a period that ends before it starts is refused (it would select nothing, silently)."""
    first, last = (value.date() if value else None for value in (date_from, date_to))
    if first and last and first > last:
        raise typer.BadParameter(f"--from {first} is after --to {last}; give the first day first")
    return first, last


QueriesArgument = Annotated[
    str,
    typer.Argument(
        help="Labelled queries: CSV (path,artist[,work_ids][,subset]; a relative path is read from its folder) "
        "or a stored query set name."
    ),
]


def settings_of(ctx: typer.Context, embedder: str | None = None, ef: int | None = None) -> Settings:
    """The invocation's settings, with ``--embedder`` and ``--ef`` applied when given. The first command that uses the
    embedder a data dir recorded says so, once."""
    from attribution_audit.services.wiring import announce_recorded_embedder

    settings: Settings = ctx.obj
    settings = with_options(settings.with_embedder(embedder), hnsw_ef=ef)
    if announce_recorded_embedder(settings):
        typer.echo(
            f"note: using embedder {settings.embedder}, recorded by the first ingest into {settings.data_dir} "
            "(pass --embedder to use another)",
            err=True,
        )
    return settings


def audit_of(settings: Settings) -> AuditStore:
    """The audit store of the settings, its schema checked (a missing embedded log is an error, not created)."""
    from attribution_audit.services.wiring import open_audit

    return open_audit(settings)


RequestIdArgument = Annotated[
    str,
    typer.Argument(help="The request's id, as attribute and audit list print it, or its first 8 or more characters."),
]


def request_id_of(audit: AuditStore, given: str) -> str:
    """The whole id of the request ``given`` names: its id, or the first 8 or more characters of it (as git takes a
    commit's); a usage error where several requests' ids start with it."""
    from attribution_audit.errors import AmbiguousIdError
    from attribution_audit.services.audit_log import resolve_request_id

    try:
        return resolve_request_id(audit, given)
    except AmbiguousIdError as exc:
        raise typer.BadParameter(str(exc), param_hint="'REQUEST_ID'") from None


def say_signed(signed: Signed) -> None:
    """On stderr: the checkpoint just signed, where its key is (and that it was just created), its witness."""
    c = signed.checkpoint
    if signed.key_created:
        typer.echo(
            f"created the checkpoint signing key {signed.key_path} (keep a copy away from this machine; set "
            "ATTRIBUTION_AUDIT_CHECKPOINT_KEY to keep it elsewhere)",
            err=True,
        )
    where = f"{signed.out} and the witness {signed.witness}" if signed.out else f"the witness {signed.witness}"
    typer.echo(
        f"checkpoint: seq {c.seq}, head {c.head_hash}, audit DB {c.db_identity}, key {c.key_fingerprint} "
        f"({signed.key_path}); written to {where}",
        err=True,
    )


def say_unseen(source: str | Path, unseen: dict[str, int], queries: int) -> None:
    """On stderr: which labelled queries of ``source`` name an artist with no work in the catalogue (``unseen``: how
    many name each): they count as wrong, which a misspelt name would make silently."""
    if not unseen:
        return
    names = ", ".join(f"{artist!r} ({count})" for artist, count in list(unseen.items())[:5])
    more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
    typer.echo(
        f"note: {sum(unseen.values())} of {queries} labelled queries in {source} name an artist with no work in the "
        f"catalogue: {names}{more}; they count as wrong: check the spelling (`attribution-audit artists list`), "
        "unless the artists are left out on purpose",
        err=True,
    )


def checked(factory: Callable[..., T], **values: Any) -> T:
    """Call ``factory``; its ValueError (a bad option value) becomes a usage error naming the problem."""
    try:
        return factory(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def records(count: int) -> str:
    """``count`` records, as a sentence says it (1 record)."""
    return f"{count} record{'' if count == 1 else 's'}"


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def output_format(fmt: OutputFormat, as_json: bool) -> OutputFormat:
    """The format asked for: ``--json`` is ``--format json``."""
    if as_json and fmt is OutputFormat.csv:
        raise typer.BadParameter("--json is --format json; give one of --json and --format csv")
    return OutputFormat.json if as_json else fmt


def print_json(data: Any) -> None:
    from attribution_audit.reporting.tables import render_json

    typer.echo(render_json(data))


def flat_row(data: dict[str, Any]) -> dict[str, Any]:
    """A verdict as one CSV row an analyst loads as is: a nested check (``chain``, ``schema``, ``models``) spread over
    ``<check>_<field>`` columns, its ``problems`` joined by ``; ``; the checkpoints compared as ``checkpoints`` (how
    many), ``checkpoints_ok`` and ``checkpoints_problems``."""
    row: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            row.update({f"{key}_{k}": "; ".join(v) if isinstance(v, list) else v for k, v in value.items()})
        elif key == "checkpoints":
            row.update(
                checkpoints=len(value),
                checkpoints_ok=all(check["ok"] for check in value),
                checkpoints_problems="; ".join(check["problem"] for check in value if check["problem"]),
            )
        else:
            row[key] = value
    return row


def emit(
    fmt: OutputFormat,
    *,
    data: Any,
    rows: list[dict[str, Any]],
    columns: tuple[str, ...] | None = None,
    shown: list[dict[str, Any]] | None = None,
    text: Callable[[], None] | None = None,
) -> None:
    """Print a command's result in ``fmt``: ``data`` as JSON, ``rows`` as CSV, and as a table ``text()`` (a
    command's own lines for people) or else ``shown`` (the rows formatted for people; default ``rows``) aligned
    under a header. Tables and CSV have their header also with no rows (see :mod:`attribution_audit.reporting.tables`).
    """
    from attribution_audit.reporting.tables import render_rows

    if fmt is OutputFormat.json:
        print_json(data)
    elif fmt is OutputFormat.csv:
        typer.echo(render_rows(rows, "csv", columns))
    elif text is not None:
        text()
    else:
        typer.echo(render_rows(rows if shown is None else shown, "table", columns))


NEIGHBOUR_COLUMNS = (
    "request_id",
    "seq",
    "image",
    "rank",
    "catalogue",
    "work_id",
    "artist",
    "similarity",
    "distance",
    "share",
    "confidence",
)


def neighbour_rows(result: Attribution) -> list[dict[str, Any]]:
    """An attribution as CSV rows: one per ranked neighbour, with the request it belongs to."""
    request = {"request_id": result.request_id, "seq": result.seq, "image": result.image}
    return [
        {
            **request,
            "rank": n.rank,
            "catalogue": n.catalogue,
            "work_id": n.work_id,
            "artist": n.artist,
            "similarity": n.similarity,
            "distance": n.distance,
            "share": n.share,
            "confidence": result.confidence,
        }
        for n in result.neighbours
    ]


def unsigned_zero(value: float, digits: int = 4) -> float:
    """The value, with a rounding residue around zero (an exact copy's distance, -1e-8) shown as 0, not -0."""
    return 0.0 if abs(value) < 0.5 * 10**-digits else value


def print_attribution(result: Attribution) -> None:
    """One attribution as the terminal shows it: indicators, ranked neighbours, artist shares (texts that came from
    a manifest or a file name with their control characters escaped)."""
    from attribution_audit.reporting.tables import terminal_text as t

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{unsigned_zero(value):.4f}"

    typer.echo(f"request {result.request_id}  seq {result.seq}  image {t(result.image)}")
    if not result.intact:
        typer.echo(
            "  NOT INTACT: this record no longer matches its record hash (changed after it was written); run "
            "`attribution-audit audit verify`"
        )
    if result.one_colour:
        typer.echo(
            "  ONE COLOUR: the image is one colour throughout the part attributed (a blocked or blank output?): the "
            "works nearest it share only that colour, and its confidence is no evidence of likeness"
        )
    typer.echo(
        f"  entropy {result.entropy:.3f}  nn_distance {fmt(result.nn_distance)}  margin {fmt(result.margin)}  "
        f"overlap@K {fmt(result.overlap_at_k)}  confidence {result.confidence:.3f} ({result.confidence_model})"
    )
    rule = result.parameters.get("top", "share")  # records from before the rule was recorded used the share
    top = "-" if result.top_artist is None else t(result.top_artist)
    typer.echo(f"  top artist {top} (top rule {rule}), share {fmt(result.top_artist_share)} of the K neighbours")
    if result.agreement is not None:
        typer.echo(f"  agreement between spaces {result.agreement:.3f} (the other base space's K nearest works)")
    if result.agreement_spaces is not None:
        typer.echo(f"  agreement of spaces {result.agreement_spaces:.3f} (the other spaces with this top artist)")
    if result.centroid_log_odds is not None:
        typer.echo(f"  centroid log-odds {result.centroid_log_odds:.3f} (this top artist among the artists' centroids)")
    if result.centroid_log_odds_others is not None:
        typer.echo(
            f"  centroid log-odds in the other learned spaces {result.centroid_log_odds_others:.3f} (their mean)"
        )
    if result.crop_log_odds is not None:
        typer.echo(f"  crop log-odds {result.crop_log_odds:.3f} (this top artist over the image's corner crops, mean)")
    if result.confidence_model_sha256 is not None:
        typer.echo(f"  confidence model {result.confidence_model} sha256 {t(result.confidence_model_sha256)}")
    if result.other_space_versions:  # a record that read none (or from before revision 0018) says nothing
        typer.echo(
            f"  other learned spaces read (name:version) {t(result.other_space_versions)} (by the agreement of "
            "spaces and log-odds)"
        )
    # the artist as the shares name it (after merges), and as recorded where that is another name
    artists = [
        f"{t(n.canonical_artist)} (recorded as {t(n.artist)})"
        if n.canonical_artist and n.canonical_artist != n.artist
        else t(n.artist)
        for n in result.neighbours
    ]
    width = max([28, *map(len, artists)])
    typer.echo(f"  {'rank':>4}  {'similarity':>10}  {'distance':>8}  {'share':>8}  {'artist':<{width}}  work")
    for n, artist in zip(result.neighbours, artists, strict=True):
        typer.echo(
            f"  {n.rank:>4}  {unsigned_zero(n.similarity):>10.4f}  {unsigned_zero(n.distance):>8.4f}  {n.share:>8.6f}  "
            f"{artist:<{width}}  {t(n.work_id)}"
        )
    shares = ", ".join(f"{t(artist)} {share:.6f}" for artist, share in result.artist_shares.items())
    typer.echo(f"  artist shares: {shares or '-'}")
    if result.copy_status is not None or result.copy_score is not None:
        typer.echo(f"  copy check: {t(result.copy_verdict())}")
