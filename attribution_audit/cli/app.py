"""The typer application: global options, one-line errors, and the command groups of the other modules."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer

try:  # typer's own copy of click (0.29 on), whose exceptions its commands raise
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # a typer that uses click itself
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]
from typer.core import TyperGroup

from attribution_audit import __version__
from attribution_audit.cli import attribute, audit, catalogue, db, evaluate, ingest, keys, report, serve, spaces
from attribution_audit.cli.common import Typer
from attribution_audit.config import DEFAULT_DATA_DIR, load_settings
from attribution_audit.errors import AttributionAuditError, OptionError

# click's prefixes that add nothing to the message: "Invalid value: " of a refusal that names its options itself, and
# pydantic's "Value error, " inside "Invalid value for '--from': ..."
_REDUNDANT = re.compile(r"^Invalid value: |(?<=: )Value error, ")


class _UsageLine(UsageError):
    """A usage error shown as one line that names where to look: ``error: Invalid value for '--from': ...; see
    'attribution-audit report summary --help'`` (exit code 2, as any usage error)."""

    def __init__(self, error: UsageError, command_path: str) -> None:
        message = " ".join(line.strip() for line in error.format_message().splitlines() if line.strip())
        super().__init__(_REDUNDANT.sub("", message), error.ctx)
        self.command_path = error.ctx.command_path if error.ctx else command_path

    def show(self, file: IO[Any] | None = None) -> None:
        typer.echo(f"error: {self.message.rstrip('.')}; see '{self.command_path} --help'", file=file, err=True)


@contextmanager
def _one_line_usage_errors(command_path: str) -> Iterator[None]:
    """Raise a usage error of the block as a :class:`_UsageLine`; ``command_path`` names the command if the error
    does not."""
    try:
        yield
    except NoArgsIsHelpError:  # a command given no arguments prints its help
        raise
    except UsageError as exc:
        raise _UsageLine(exc, command_path) from None


class _Commands(TyperGroup):
    """The application's group: any AttributionAuditError raised by a command is printed as ``error: <message>``
    with exit code 1 (2 for an OptionError: an option the space or input named cannot take), and a usage error (bad
    option value, unknown option or command, missing argument) as one ``error: ...; see '<command> --help'`` line
    with exit code 2. The console script, ``python -m`` and the tests'
    CliRunner all go through here; click's plain error display calls :meth:`_UsageLine.show` (typer's rich one is
    off: :class:`attribution_audit.cli.common.Typer` sets ``rich_markup_mode`` to None)."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _one_line_usage_errors(info_name or "attribution-audit"):  # the global options
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        try:
            with _one_line_usage_errors(ctx.command_path):  # a command: its name, options, arguments, refusals
                return super().invoke(ctx)
        except OptionError as exc:  # an option the named space or input cannot take: a refused input
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except AttributionAuditError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = Typer(
    cls=_Commands,
    help="Attribute generated images to catalogued works, with an audit trail.\n\n"
    "\b\nExample: attribution-audit --data-dir .demo/data audit list --limit 5",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"attribution-audit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help=f"Data folder of the embedded store and SQLite log; unset = ./{DEFAULT_DATA_DIR} in the current "
            "folder  [env var: ATTRIBUTION_AUDIT_DATA_DIR]"
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of the audit DB; unset = the data dir's audit.sqlite  "
            "[env var: ATTRIBUTION_AUDIT_DATABASE_URL]"
        ),
    ] = None,
    qdrant_url: Annotated[
        str | None,
        typer.Option(help="Qdrant server URL; unset = embedded shard  [env var: ATTRIBUTION_AUDIT_QDRANT_URL]"),
    ] = None,
    new_audit_log: Annotated[
        bool,
        typer.Option(
            "--new-audit-log",
            help="Start a new audit log on purpose, beside a vector shard or witness file of another one "
            "(refused without it).",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Attribute generated images to catalogued works, with an audit trail."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not verbose:  # libraries' warnings (Pillow, torch, transformers) are for developers: errors say what matters
        warnings.simplefilter("ignore")
    ctx.obj = load_settings(
        data_dir=data_dir, database_url=database_url, qdrant_url=qdrant_url, new_audit_log=new_audit_log or None
    )


app.add_typer(db.app, name="db")
app.add_typer(audit.app, name="audit")
app.add_typer(catalogue.app, name="catalogue")
app.add_typer(report.app, name="report")
app.add_typer(catalogue.artists_app, name="artists")
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(spaces.app, name="spaces")
app.add_typer(keys.app, name="keys")
app.command()(ingest.ingest)
app.command()(attribute.attribute)
app.command()(attribute.calibrate)
app.command()(serve.serve)
