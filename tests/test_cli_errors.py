"""CLI input errors that used to give tracebacks: option values refused with a usage error (exit 2), and outputs
that cannot be written reported in one line (exit 1)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cli
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from attribution_audit.cli import app
from attribution_audit.errors import OptionError
from attribution_audit.services.audit_log import list_attributions
from attribution_audit.store.browse import RequestFilter


def test_cli_refuses_style_with_precomputed_vectors_and_bad_spaces(cli: Cli) -> None:
    manifest, vectors = cli.data_dir / "m.csv", cli.data_dir / "v.npy"
    for spaces, extra, message in (
        ("bogus", [], "use content or content,style"),
        ("content,style", ["--embeddings", str(vectors)], "fill content only"),
    ):
        result = cli("ingest", str(manifest), "--spaces", spaces, *extra, code=2)
        assert message in result.output


def test_unwritable_outputs_are_one_line(cli: Cli) -> None:
    result = cli("audit", "export", "/proc/nope/x.jsonl", code=1)
    assert "cannot write the export" in result.stderr


def test_export_onto_a_pipe_or_device_is_refused_and_leaves_it_as_it_was(cli: Cli, tmp_path: Path) -> None:
    """The export is written beside OUT and renamed onto it: onto /dev/stdout or a FIFO that rename would replace
    the device or pipe itself with a regular file (as root, /dev/full was gone)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = cli("audit", "export", str(fifo), code=1)
    assert "is not a regular file" in result.stderr and "choose a file path" in result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_export_onto_an_existing_file_is_refused_unless_forced(cli: Cli, tmp_path: Path) -> None:
    """An earlier export (or any file) under OUT is kept, with a line naming it and --force; --force replaces it
    with a whole export, and no scratch file is left beside it either way."""
    out = tmp_path / "export.jsonl"
    out.write_text("an earlier export\n")
    result = cli("audit", "export", str(out), code=1)
    assert result.stderr == f"error: {out}: already exists; pass --force to overwrite it, or choose another name\n"
    assert out.read_text() == "an earlier export\n"
    assert "exported 0 records" in cli("audit", "export", str(out), "--force").stdout
    assert "export OK" in cli("audit", "verify", "--file", str(out)).stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("export")) == ["export.jsonl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("attribute", "x.png", "--space", "Bogus!"), "space 'Bogus!': choose content, style, fused or a learned"),
        (("attribute", "x.png", "--exact", "faiss"), "exact 'faiss': choose brute or kdtree"),
        (("attribute", "x.png", "--shares", "softmax"), "shares 'softmax': choose equal or similarity"),
        (("attribute", "x.png", "--format", "xml"), "format 'xml': choose table, csv or json"),
        (("audit", "list", "--format", "yaml"), "format 'yaml': choose table, csv or json"),
        (("audit", "list", "--kind", "users"), "kind 'users': choose all, production, evaluation or replay"),
        (("ingest", "m.csv", "--format", "xml"), "format 'xml': choose auto, csv, jsonl, folder or wang"),
        (("evaluate", "run", "q.csv", "--space", "2d"), "space '2d': choose content, style, fused or a learned"),
        (("evaluate", "noise", "q.csv", "--noise", "n.csv", "--kind", "pink"), "kind 'pink': choose homogeneous or"),
    ],
)
def test_a_value_outside_the_choices_is_a_usage_error_naming_them(
    cli: Cli, args: tuple[str, ...], message: str
) -> None:
    result = cli(*args, code=2)
    assert f"Invalid value for '{args[-2]}': {message}" in result.output


def test_spaces_may_be_written_with_a_blank(cli: Cli) -> None:
    result = cli("ingest", str(cli.data_dir / "missing.csv"), "--spaces", "content, style", code=1)
    assert "manifest not found" in result.stderr  # past the option parsing: the value was accepted


@pytest.mark.parametrize("command", [("report", "artists"), ("audit", "export", "period.jsonl")])
def test_a_period_that_ends_before_it_starts_is_refused(cli: Cli, command: tuple[str, ...]) -> None:
    """It would select nothing: an empty report or export that reads as a quiet period."""
    result = cli(*command, "--from", "2024-02-01", "--to", "2024-01-31", code=2)
    assert "--from 2024-02-01 is after --to 2024-01-31; give the first day first" in result.output
    assert not Path("period.jsonl").exists() and not (cli.data_dir / "period.jsonl").exists()


def test_a_listing_limit_beyond_what_a_database_binds_is_refused_as_input(
    cli_on: Callable[[str], Cli], migrated_url: str
) -> None:
    """PostgreSQL said "bigint out of range" of a limit of 10^20, which read as a row changed by hand ("restore the
    database from a backup"). The CLI, the Python API and the browse filter refuse it as the input it is."""
    cli = cli_on(migrated_url)
    refused = cli("audit", "list", "--limit", str(10**20), code=2)
    assert "--limit" in refused.output and "backup" not in refused.output
    with pytest.raises(OptionError, match=r"limit 100000000000000000000: give a whole number from 1 to 2147483647"):
        list_attributions(cli.audit(), limit=10**20)
    with pytest.raises(ValueError, match="a whole number from 1 to 2147483647"):
        RequestFilter(limit=2**31)


PROG = "attribution-audit"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("report", "artists", "--from", "2026-13-01"),
            "Invalid value for '--from': '2026-13-01' does not match the formats '%Y-%m-%d'; see "
            f"'{PROG} report artists --help'",
        ),
        (
            ("audit", "list", "--limit", "x"),
            "Invalid value for '--limit': Input should be a valid integer, unable to parse string as an integer; "
            f"see '{PROG} audit list --help'",
        ),
        (("report", "summary", "--bogus"), f"No such option: --bogus; see '{PROG} report summary --help'"),
        (("attribute",), f"Missing argument 'images'; see '{PROG} attribute --help'"),
        (("bogus",), f"No such command 'bogus'; see '{PROG} --help'"),
        (("report", "bogus"), f"No such command 'bogus'; see '{PROG} report --help'"),
        (("report", "request", "5"), f"give --html OUT.html and/or --pdf OUT.pdf; see '{PROG} report request --help'"),
        (("--database-url",), f"Option '--database-url' requires an argument; see '{PROG} --help'"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_command_help(tmp_path: Path, args: tuple[str, ...], line: str) -> None:
    """A bad value, an unknown option or command, a missing argument, an option a command needs: one line on
    stderr that says what is wrong and which ``--help`` to read, nothing on stdout, exit code 2 (scripts test it)."""
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), *args], prog_name=PROG)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {line}\n")


def test_a_command_group_given_nothing_still_prints_its_help() -> None:
    result = CliRunner().invoke(app, ["report"], prog_name=PROG)
    assert result.stderr.startswith(f"Usage: {PROG} report ") and "Commands:" in result.stderr
    assert "error" not in result.output


@pytest.mark.parametrize("command", ["console script", "python -m"])
def test_the_installed_command_prints_a_usage_error_in_one_line(tmp_path: Path, command: str) -> None:
    if command == "python -m":
        program = [sys.executable, "-m", "attribution_audit"]
    else:
        script = shutil.which(PROG, path=str(Path(sys.executable).parent))
        if script is None:
            pytest.skip(f"the {PROG} console script is not installed beside {sys.executable}")
        program = [script]
    done = subprocess.run(
        [*program, "--data-dir", str(tmp_path), "report", "summary", "--from", "2026-01-01"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    said = f"error: No such option: --from (Possible options: --format); see '{PROG} report summary --help'\n"
    assert (done.returncode, done.stdout, done.stderr) == (2, "", said)


def test_an_output_path_naming_the_evidence_is_refused_and_nothing_is_overwritten(
    cli: Cli, checkpoint_key: Path
) -> None:
    """A mistyped output path destroyed what it named: ``audit export`` over the audit log, ``audit checkpoint --out``
    over its own signing key, ``report request --html`` over the witness file."""
    cli("audit", "checkpoint")  # the key and the witness file exist from here on
    database = Path(str(make_url(cli.database_url).database))
    witness = cli.data_dir / "witness.jsonl"
    kept = {path: path.read_bytes() for path in (database, witness, checkpoint_key)}
    pipe = cli.data_dir / "pipe"
    os.mkfifo(pipe)
    for args, what in (
        (("audit", "export", str(database)), "the audit log"),
        (("audit", "checkpoint", "--out", str(checkpoint_key)), "the checkpoint key"),
        (("report", "request", "any-id", "--html", str(witness)), "the witness file"),
        (("audit", "export", str(cli.data_dir / "qdrant" / "x.jsonl")), "inside the vector shard's folder"),
        (("audit", "export", str(cli.data_dir / "attribution-audit.json"), "--force"), "the data dir's record"),
        (("audit", "export", str(cli.data_dir / "exact" / "x.jsonl")), "inside a folder of state"),
        (("audit", "checkpoint", "--out", str(pipe)), "is not a regular file"),  # it hung, after signing
        (("report", "request", "any-id", "--html", str(pipe)), "is not a regular file"),
        (("audit", "checkpoint", "--out", str(cli.data_dir)), "is a directory"),
    ):
        refused = cli(*args, code=1)
        assert refused.stderr.startswith("error: ") and what in refused.stderr, refused.stderr
    assert {path: path.read_bytes() for path in kept} == kept
