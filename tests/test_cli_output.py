"""The CLI's output layer and help: ``--format table|csv|json`` on every command that lists or reports (``--json``
kept as its alias), headers also with no rows, CSV safe to open in a spreadsheet, times in ISO 8601 with the zone,
choices typed (shown, validated, completed), plain help without ``<bool>`` and with the env-var hints, and an
example in every command's help that runs, as written, on the demo data."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import EMBEDDER as MODEL
from conftest import Cli, Ingested, ingest_once
from typer.testing import CliRunner, Result

from attribution_audit.cli import app
from attribution_audit.cli.common import (
    ExactChoice,
    IngestSpaces,
    NoiseKind,
    OutputFormat,
    RequestKind,
    SharesChoice,
    SourceFormat,
    SpaceChoice,
)
from attribution_audit.domain.params import EXACT_METHODS, QUERY_SPACES
from attribution_audit.domain.shares import SHARE_MODES
from attribution_audit.embedding.base import Embedder
from attribution_audit.reporting.tables import OUTPUT_FORMATS, render_json, render_rows
from attribution_audit.sources.manifest import SOURCE_FORMATS
from attribution_audit.sources.synthetic import DemoCatalogue, make_demo_catalogue
from attribution_audit.store.chain import REQUEST_KINDS

EMBEDDER = ["--embedder", MODEL]
PROG = "attribution-audit"
# Every command that lists or reports: each takes --format table|csv|json.
FORMAT_COMMANDS = [
    ("attribute",),
    ("audit", "list"),
    ("audit", "show"),
    ("audit", "verify"),
    ("audit", "verify-recall"),
    ("audit", "replay"),
    ("artists", "list"),
    ("evaluate", "list"),
    ("evaluate", "compare-spaces"),
    ("evaluate", "compare-exact"),
    ("db", "current"),
    ("catalogue", "check"),
    ("report", "artists"),
    ("report", "summary"),
]
# The commands that had --json before --format: it stays, the same as --format json.
JSON_ALIAS_COMMANDS = [
    ("attribute",),
    ("audit", "list"),
    ("audit", "show"),
    ("audit", "verify"),
    ("audit", "replay"),
    ("report", "summary"),
    ("spaces", "list"),
]


def _walk(command: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    command = command if command is not None else typer.main.get_command(app)
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk())
LEAVES = [path for path, command in COMMANDS.items() if not hasattr(command, "commands")]


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name=PROG)
    assert result.exit_code == 0, result.output
    return result.stdout


def _flat(text: str) -> str:
    return " ".join(text.split())


def _example(path: tuple[str, ...]) -> str:
    examples = re.findall(r"^\s*Example: (.*)$", _help(path), flags=re.M)
    assert len(examples) == 1, f"`{' '.join((PROG, *path))} --help` has {len(examples)} Example: lines"
    return examples[0].strip()


# -- help ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", list(COMMANDS), ids=[" ".join(p) or PROG for p in COMMANDS])
def test_help_is_plain_and_names_every_value_type_properly(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert text.startswith("Usage: ")
    assert "<bool>" not in text and "<list[" not in text, text
    assert "\x1b" not in text and not re.search(r"[\u2500-\u257f]", text), "rich formatting leaked in"


def test_env_var_hints_are_shown() -> None:
    root = _flat(_help(()))
    for name in ("DATA_DIR", "DATABASE_URL", "QDRANT_URL"):
        assert f"[env var: ATTRIBUTION_AUDIT_{name}]" in root
    with_embedder = [p for p, c in COMMANDS.items() if any("--embedder" in o.opts for o in c.params)]
    assert len(with_embedder) >= 7
    for path in with_embedder:
        assert "[env var: ATTRIBUTION_AUDIT_EMBEDDER]" in _flat(_help(path)), path


@pytest.mark.parametrize("path", list(COMMANDS), ids=[" ".join(p) or PROG for p in COMMANDS])
def test_every_command_has_an_example_of_itself(path: tuple[str, ...]) -> None:
    words = shlex.split(_example(path))
    assert words[0] == PROG
    rest = words[1:]
    while rest[0] in ("--data-dir", "--database-url", "--qdrant-url"):  # options of the top-level command
        rest = rest[2:]
    assert tuple(rest[: len(path)]) == path, words


@pytest.mark.parametrize("path", FORMAT_COMMANDS, ids=[" ".join(p) for p in FORMAT_COMMANDS])
def test_every_command_that_lists_or_reports_takes_format(path: tuple[str, ...]) -> None:
    text = _flat(_help(path))
    assert "--format <table|csv|json>" in text and "[default: table]" in text
    assert ("--json Same as --format json" in text) == (path in JSON_ALIAS_COMMANDS)


def test_the_readme_names_every_command_that_takes_json() -> None:
    """The README's sentence on ``--json`` names exactly the commands that take it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    sentence = re.search(r"`--json`, the same as `--format json`, works with ([^.]+)\.", " ".join(readme.split()))
    assert sentence is not None
    named = {tuple(name.split()) for name in re.findall(r"`([a-z -]+)`", sentence.group(1))}
    taking = {path for path, command in _walk() if any("--json" in p.opts for p in getattr(command, "params", []))}
    assert named == taking == set(JSON_ALIAS_COMMANDS)


def test_list_arguments_are_named_by_their_items() -> None:
    assert "images... <path>  Generated image(s) to attribute." in _help(("attribute",))
    assert "work_ids... <str>" in _help(("catalogue", "withdraw"))


# -- choices ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("choices", "values"),
    [
        (OutputFormat, OUTPUT_FORMATS),
        (SpaceChoice, QUERY_SPACES),
        (ExactChoice, EXACT_METHODS),
        (SharesChoice, SHARE_MODES),
        (SourceFormat, SOURCE_FORMATS),
        (IngestSpaces, ("content", "content,style")),
        (NoiseKind, ("homogeneous", "heterogeneous")),
        (RequestKind, REQUEST_KINDS),
    ],
)
def test_choice_enums_are_the_values_the_services_take(choices: type[StrEnum], values: tuple[str, ...]) -> None:
    assert sorted(member.value for member in choices) == sorted(values)


def _complete(*words: str) -> list[str]:
    line = " ".join((PROG, *words))
    environment = {"_ATTRIBUTION_AUDIT_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words))}
    result = CliRunner().invoke(app, [], prog_name=PROG, env=environment)
    assert result.exit_code == 0, result.output
    return result.stdout.split()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("attribute", "x.png", "--space", ""), ["content", "style", "fused"]),
        (("attribute", "x.png", "--exact", ""), ["brute", "kdtree"]),
        (("attribute", "x.png", "--shares", ""), ["equal", "similarity"]),
        (("report", "artists", "--format", ""), ["table", "csv", "json"]),
        (("audit", "list", "--format", "c"), ["csv"]),
        (("ingest", "m.csv", "--format", ""), ["auto", "csv", "jsonl", "folder", "wang"]),
        (("ingest", "m.csv", "--spaces", ""), ["content", "content,style"]),
        (("evaluate", "noise", "q.csv", "--kind", "he"), ["heterogeneous"]),
        (("evaluate", "run", "q.csv", "--space", "f"), ["fused"]),
    ],
)
def test_shell_completion_offers_the_choices(words: tuple[str, ...], expected: list[str]) -> None:
    assert _complete(*words) == expected


# -- rendering ----------------------------------------------------------------------------------------------------
def test_tables_and_csv_have_a_header_also_with_no_rows() -> None:
    columns = ("a", "b")
    assert render_rows([], "table", columns) == "a  b\n(no rows)"
    assert render_rows([], "csv", columns) == "a,b"
    assert render_rows([], "json", columns) == "[]"


def test_csv_neutralises_formulas_but_not_numbers() -> None:
    cells = ["=1+2", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "-0.5", "-12", "-1e5", "a=b", "a\rb\nc", ""]
    rows = [{"text": cell, "number": -1.5} for cell in cells]
    parsed = list(csv.reader(io.StringIO(render_rows(rows, "csv"))))
    assert parsed[0] == ["text", "number"]
    assert [row[0] for row in parsed[1:]] == [
        "'=1+2",
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "-0.5",
        "-12",
        "-1e5",
        "a=b",
        "a\rb\nc",
        "",
    ]
    assert {row[1] for row in parsed[1:]} == {"-1.5"}  # a number is never a formula


def test_times_are_iso_8601_in_utc_with_the_zone() -> None:
    naive = datetime(2024, 3, 1, 10, 0, 0, 250000)  # the audit DB stores UTC; SQLite returns no zone
    paris = datetime(2024, 3, 1, 11, 0, 0, 250000, tzinfo=timezone(timedelta(hours=1)))
    rows = [{"at": naive}, {"at": paris}]
    assert json.loads(render_rows(rows, "json")) == [{"at": "2024-03-01T10:00:00.250000+00:00"}] * 2
    assert render_rows(rows, "csv").splitlines()[1:] == ["2024-03-01T10:00:00.250000+00:00"] * 2
    assert render_rows(rows, "table").splitlines()[1:] == ["2024-03-01T10:00:00+00:00"] * 2
    assert json.loads(render_json({"at": datetime(2024, 1, 2, tzinfo=UTC)})) == {"at": "2024-01-02T00:00:00+00:00"}


def test_table_cells_for_people() -> None:
    rows = [
        {"name": "Ada", "alias": None, "n": 12, "share": 1.0, "ok": True},
        {"name": "Bo", "alias": "B", "n": 3, "share": 0.123456789, "ok": False},
    ]
    assert render_rows(rows, "table").splitlines() == [
        "name  alias   n     share  ok",
        "Ada   -      12       1.0  true",
        "Bo    B       3  0.123457  false",
    ]
    assert render_rows(rows, "csv").splitlines()[1:] == ["Ada,,12,1.0,true", "Bo,B,3,0.123456789,false"]


# -- the commands, on a log with requests -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("cli-output"), sqlite_template, demo_catalogue.manifest)


@pytest.fixture
def logged(cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue) -> list[dict[str, Any]]:
    """Two attributions in the CLI's log, as ``attribute --format json`` printed them."""
    cli.restore(ingested)
    images = [str(q.path) for q in demo_catalogue.queries[:2]]
    records: list[dict[str, Any]] = json.loads(
        cli("attribute", *images, "--k", "3", "--format", "json", *EMBEDDER).stdout
    )
    return records


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_json_is_the_same_through_json_and_format_json(cli: Cli, logged: list[dict[str, Any]]) -> None:
    first = logged[0]["request_id"]
    for args in (("audit", "list"), ("audit", "show", first), ("report", "summary"), ("spaces", "list")):
        assert cli(*args, "--json").stdout == cli(*args, "--format", "json").stdout, args
    verified = json.loads(cli("audit", "verify", "--json").stdout)
    assert verified["ok"] is True and verified["records"] == 2 and verified["models"]["checked"] == 0
    listed = json.loads(cli("audit", "list", "--json").stdout)
    assert [r["request_id"] for r in listed] == [r["request_id"] for r in logged][::-1]
    assert listed[1] == logged[0]  # the whole record, as attribute printed it
    # attribute and replay record new requests: the same JSON, but for the request they made.
    image = logged[0]["image"]
    alias, new = (
        json.loads(cli("attribute", image, "--k", "3", *flag, *EMBEDDER).stdout)
        for flag in (["--json"], ["--format", "json"])
    )
    assert alias[0].keys() == new[0].keys() and alias[0]["neighbours"] == new[0]["neighbours"]
    replays = [cli("audit", "replay", first, *flag).stdout for flag in (["--json"], ["--format", "json"])]
    for printed in replays:
        assert printed.count("\n") == 1, "replay JSON stays on one line, as scripts read it"
        data = json.loads(printed)
        assert data["original"]["request_id"] == first and data["differences"] == []
    refused = cli("audit", "list", "--json", "--format", "csv", code=2)
    assert "give one of --json and --format csv" in refused.output


def test_every_format_of_the_listing_commands(cli: Cli, logged: list[dict[str, Any]]) -> None:
    ids = [r["request_id"] for r in logged][::-1]
    table = cli("audit", "list").stdout.splitlines()
    header = [
        *("request_id", "created_at", "top_artist", "confidence", "image", "intact", "evaluation_run", "replay_of"),
        "one_colour",
    ]
    assert table[0].split() == header
    assert [line.split()[0] for line in table[1:]] == ids and all(" yes" in line for line in table[1:])
    rows = _csv_rows(cli("audit", "list", "--format", "csv").stdout)
    assert [r["request_id"] for r in rows] == ids
    for row in rows:
        assert datetime.fromisoformat(row["created_at"]).utcoffset() == timedelta(0)
        assert 0 <= float(row["confidence"]) <= 1

    artists = json.loads(cli("artists", "list", "--format", "json").stdout)
    assert len(artists) == 6 and artists[0] == {"name": "Ada Vermeer", "canonical": None, "active_works": 8}
    assert cli("artists", "list").stdout.splitlines()[:2] == [
        "name            canonical  active_works",
        "Ada Vermeer     -                     8",
    ]
    assert _csv_rows(cli("artists", "list", "--format", "csv").stdout)[0] == {
        "name": "Ada Vermeer",
        "canonical": "",
        "active_works": "8",
    }

    shown = _csv_rows(cli("audit", "show", ids[0], "--format", "csv").stdout)
    assert [int(r["rank"]) for r in shown] == [1, 2, 3] and {r["request_id"] for r in shown} == {ids[0]}
    attributed = _csv_rows(cli("attribute", logged[0]["image"], "--k", "2", "--format", "csv", *EMBEDDER).stdout)
    assert [r["rank"] for r in attributed] == ["1", "2"] and attributed[0]["image"] == logged[0]["image"]

    summary = json.loads(cli("report", "summary", "--format", "json").stdout)
    for key in ("first_request", "last_request"):
        assert datetime.fromisoformat(summary[key]).utcoffset() == timedelta(0), summary[key]
    (flat,) = _csv_rows(cli("report", "summary", "--format", "csv").stdout)
    assert flat["requests"] == str(summary["requests"]) and flat["chain_ok"] == "true"
    assert flat["chain_head_hash"] == summary["chain"]["head_hash"]

    verified = json.loads(cli("audit", "verify", "--format", "json").stdout)
    assert verified["ok"] is True and verified["records"] == summary["chain"]["records"]
    (row,) = _csv_rows(cli("audit", "verify", "--format", "csv").stdout)
    assert row["head_hash"] == verified["head_hash"]
    # the nested checks spread over flat columns an analyst loads as is (no Python dict text in a cell)
    assert {key: row[key] for key in row if key.startswith(("checkpoints", "schema_", "models_", "spaces_"))} == {
        "checkpoints": "0",
        "checkpoints_ok": "true",
        "checkpoints_problems": "",
        "schema_ok": "true",
        "schema_problems": "",
        "schema_unchecked": "",
        "models_ok": "true",
        "models_problems": "",
        "models_unchecked": "",
        "models_checked": "0",
        "spaces_ok": "true",
        "spaces_problems": "",
        "spaces_unchecked": "",
        "spaces_checked": "0",
    }
    assert not any("{" in value for value in [*flat.values(), *row.values()])
    assert flat["models_ok"] == "true" and flat["models_problems"] == "" and flat["schema_ok"] == "true"
    cli("attribute", logged[0]["image"], "--k", "2", *EMBEDDER)
    assert "; 1 record appended since, checked now" in cli("report", "summary").stdout
    checked = json.loads(cli("catalogue", "check", "--format", "json", *EMBEDDER).stdout)
    assert (checked["points"], checked["expected"], checked["clean"], checked["orphans"]) == (48, 48, True, [])
    current = json.loads(cli("db", "current", "--format", "json").stdout)
    assert current["current"] == current["head"] and current["head"]


def test_what_attribute_audit_verify_and_report_summary_print_without_learned_spaces_or_models(
    cli: Cli, logged: list[dict[str, Any]]
) -> None:
    """No learned space nor stored model: no line about other learned spaces read, OK lines that say nothing was
    there to compare (not that something matched), one chain OK and the low-confidence threshold."""
    shown = cli("audit", "show", logged[0]["request_id"]).stdout
    assert "(top rule share)" in shown and "other learned spaces read" not in shown
    verified = cli("audit", "verify").stdout.splitlines()
    assert verified[2:4] == [
        "models OK: no record was scored by a stored confidence model (nothing to compare)",
        "spaces OK: no record names a learned space version (nothing to compare)",
    ]
    summary = cli("report", "summary").stdout
    assert re.search(r", low confidence \(< 0\.5, or of one colour\) \d+$", summary.splitlines()[0])
    assert summary.count("chain OK") == 1 and summary.splitlines()[-1].startswith("chain OK: 2 records, head ")


def test_empty_listings_keep_their_header(cli: Cli) -> None:
    for args, header in (
        (
            ("audit", "list"),
            "request_id,created_at,top_artist,confidence,image,intact,evaluation_run,replay_of,one_colour",
        ),
        (("artists", "list"), "name,canonical,active_works"),
        (("evaluate", "list"), "id,kind,status,created_at,embedder"),
        (("audit", "verify-recall"), "embedder,checked,mean_overlap,below_one,changed"),
    ):
        assert cli(*args, "--format", "csv").stdout == header + "\n", args
        assert json.loads(cli(*args, "--format", "json").stdout) == [], args
        if args != ("audit", "verify-recall"):  # whose table is a sentence: "nothing to check"
            assert cli(*args).stdout.split() == [*header.split(","), "(no", "rows)"], args


def test_a_broken_chain_still_exits_1_with_its_message_in_json(cli: Cli, tmp_path: Path) -> None:
    export = tmp_path / "broken.jsonl"
    export.write_text('{"format": "nope"}\n')
    result = cli("audit", "verify", "--file", str(export), "--format", "json", code=1)
    assert "not an attribution-audit export" in result.stderr and result.stdout == ""
    assert "give a file written by `attribution-audit audit export`" in result.stderr


# -- the examples -------------------------------------------------------------------------------------------------
# The order the examples run in on one demo data dir: ingest first, what changes the catalogue last. Every command
# is here (checked below), so a new command needs an example that runs.
EXAMPLE_ORDER = [
    ("ingest",),
    ("attribute",),
    (),
    ("db",),
    ("db", "upgrade"),
    ("db", "repair"),
    ("db", "current"),
    ("audit",),
    ("audit", "list"),
    ("audit", "show"),
    ("audit", "verify"),
    ("audit", "checkpoint"),
    ("audit", "public-key"),
    ("audit", "verify-recall"),
    ("audit", "replay"),
    ("audit", "export"),
    ("catalogue",),
    ("catalogue", "check"),
    ("report",),
    ("report", "artists"),
    ("report", "summary"),
    ("report", "request"),
    ("artists",),
    ("artists", "list"),
    ("evaluate", "run"),
    ("evaluate", "compare-spaces"),
    ("evaluate", "compare-exact"),
    ("evaluate", "report"),
    ("evaluate", "noise"),
    ("evaluate", "content-bias"),
    ("evaluate", "list"),
    ("evaluate", "copies"),
    ("evaluate",),
    ("calibrate",),
    ("spaces", "fit"),
    ("spaces", "list"),
    ("spaces",),
    ("artists", "merge"),
    ("artists", "unmerge"),
    ("catalogue", "withdraw"),
    ("keys",),
    ("keys", "create"),
    ("keys", "list"),
    ("keys", "revoke"),
    ("serve",),
    ("db", "grant-reader"),
    ("db", "grant-writer"),
]


def _run(runner: CliRunner, words: list[str]) -> Result:
    assert words[0] == PROG, words
    return runner.invoke(app, [_substituted(runner, word) for word in words[1:]], prog_name=PROG)


def _substituted(runner: CliRunner, word: str) -> str:
    """A word of an example with its ``$(attribution-audit ... | filters)`` replaced as the shell would: the
    command runs in-process, the filters in bash."""
    found = re.fullmatch(r"\$\((.*)\)", word)
    if not found:
        return word
    command, _, filters = found.group(1).partition("|")
    inner = _run(runner, shlex.split(command))
    assert inner.exit_code == 0, inner.output
    piped = subprocess.run(["bash", "-c", filters], input=inner.stdout, capture_output=True, text=True, check=True)
    return piped.stdout.rstrip("\n")


def test_the_example_order_names_every_command_once() -> None:
    assert sorted(EXAMPLE_ORDER) == sorted(COMMANDS)


@pytest.mark.slow
def test_every_example_runs_as_written_on_the_demo_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Embedder
) -> None:
    # The demo's layout (scripts/demo.py), in a fresh folder, with the environment `make demo` tells users to set.
    monkeypatch.chdir(tmp_path)
    demo = make_demo_catalogue(tmp_path / ".demo" / "catalogue", queries_per_artist=1)
    assert demo.labelled == tmp_path / ".demo" / "catalogue" / "queries.csv"  # for the evaluation examples
    for name in ("DATABASE_URL", "QDRANT_URL", "EMBEDDER"):
        monkeypatch.delenv(f"ATTRIBUTION_AUDIT_{name}", raising=False)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_DATA_DIR", ".demo/data")
    runner = CliRunner()
    for path in EXAMPLE_ORDER:
        example = _example(path)
        words = shlex.split(example)
        if path in (("db", "grant-reader"), ("db", "grant-writer")):  # PostgreSQL only: on SQLite it says so
            words[words.index("--database-url") + 1] = f"sqlite:///{tmp_path / '.demo' / 'data' / 'audit.sqlite'}"
            refused = _run(runner, words)
            assert refused.exit_code == 1 and "PostgreSQL" in refused.output, refused.output
            continue
        if path == ("serve",):  # runs until stopped: tests/test_serve.py starts it in a subprocess
            continue
        if path == ("calibrate",):  # 6 demo images, 1 of them wrong: too few to cross-validate, and it says so
            refused = _run(runner, words)
            assert refused.exit_code == 1 and "cross-validation needs at least 3 of each" in refused.output
            assert "nothing was stored" in refused.output, refused.output
            continue
        result = _run(runner, words)
        assert result.exit_code == 0, f"`{example}` failed ({result.exit_code}): {result.output}"
        if "--format json" in example:
            json.loads(result.stdout)
        if "--format csv" in example:
            assert next(csv.reader(io.StringIO(result.stdout))), example
    assert (tmp_path / ".demo" / "request.html").is_file()
    assert (tmp_path / ".demo" / "evaluation" / "metrics.json").is_file()


def test_an_exact_copy_prints_distance_zero_not_minus_zero() -> None:
    from attribution_audit.cli.common import unsigned_zero

    assert f"{unsigned_zero(-1e-8):.4f}" == "0.0000" and f"{unsigned_zero(-0.0):.4f}" == "0.0000"
    assert unsigned_zero(-0.25) == -0.25 and unsigned_zero(0.00005) == 0.00005
