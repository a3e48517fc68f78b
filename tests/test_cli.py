"""The CLI end to end on embedded Qdrant Edge: ingest -> attribute -> audit show; errors, help and version."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EMBEDDER as MODEL
from conftest import Cli, Ingested, ingest_once
from PIL import Image
from sqlalchemy import func, select

from attribution_audit import __version__
from attribution_audit.config import load_settings
from attribution_audit.embedding.base import Embedder
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store.models import AttributionNeighbour, AttributionRequest, Work

EMBEDDER = ["--embedder", MODEL]


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("cli-ingested"), sqlite_template, demo_catalogue.manifest)


def test_ingest_attribute_show_end_to_end(cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue) -> None:
    assert "48 added, 0 updated, 0 unchanged, 0 withdrawn (skipped), 0 failed" in ingested.printed
    cli.restore(ingested)
    cli("db", "upgrade")  # at head already: a no-op

    queries = demo_catalogue.queries[:3]
    result = cli("attribute", *(str(q.path) for q in queries), "--k", "5", "--json", *EMBEDDER)
    records = json.loads(result.stdout)
    assert [r["image"] for r in records] == [str(q.path) for q in queries]
    for record in records:
        assert [n["rank"] for n in record["neighbours"]] == [1, 2, 3, 4, 5]
        sims = [n["similarity"] for n in record["neighbours"]]
        assert sims == sorted(sims, reverse=True)
        for n in record["neighbours"]:
            assert n["distance"] == pytest.approx(1 - n["similarity"])
        assert record["nn_distance"] == pytest.approx(record["neighbours"][0]["distance"])
        assert 0 <= record["entropy"] <= 1 and 0 <= record["confidence"] <= 1
        assert record["index_params"]["store"] == "qdrant-edge"
        assert record["index_params"]["indexed_vectors"] == 2 * 48  # in the graph: content and layout vectors

    # Every printed result is in the audit log, with the same neighbours.
    shown = json.loads(cli("audit", "show", records[0]["request_id"], "--json").stdout)
    assert shown["neighbours"] == records[0]["neighbours"]
    assert shown["confidence"] == pytest.approx(records[0]["confidence"])
    listed = cli("audit", "list").stdout
    assert all(r["request_id"] in listed for r in records)
    table = cli("audit", "show", records[1]["request_id"]).stdout
    assert records[1]["neighbours"][0]["work_id"] in table and "efficientnet-lite0@sha256:" in table
    # "one request in full": who asked, when, which image bytes, and the record's link in the chain
    stored = json.loads(cli("audit", "show", records[1]["request_id"], "--json").stdout)
    asked = f"requested by {stored['requester']} at {stored['created_at']}"
    assert f"{asked}  image sha256 {records[1]['image_sha256']}" in table
    assert f"previous hash {records[0]['record_hash']}  record hash {records[1]['record_hash']}" in table


def test_show_and_replay_take_the_first_characters_of_an_id(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    cli.restore(ingested)
    (record,) = json.loads(cli("attribute", str(demo_catalogue.queries[0].path), "--json", *EMBEDDER).stdout)
    prefix = record["request_id"][:8]
    assert json.loads(cli("audit", "show", prefix, "--json").stdout)["record_hash"] == record["record_hash"]
    replay = json.loads(cli("audit", "replay", prefix.upper(), "--json").stdout)
    assert (replay["original"]["request_id"], replay["replay"]["replay_of"]) == (record["request_id"],) * 2
    # the listing marks the replay, and only it, with the request it re-ran
    listed = cli("audit", "list", "--format", "csv").stdout.splitlines()
    assert listed[0].endswith(",replay_of,one_colour")
    marks = {line.split(",")[0]: line.split(",")[-2] for line in listed[1:]}
    assert marks == {replay["replay"]["request_id"]: record["request_id"], record["request_id"]: ""}


def test_a_run_whose_output_is_closed_stops_and_says_how_many_images_it_recorded(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    """`attribute many.png | head -1`: the run stops at the next result it cannot print, and says on stderr how many
    images were attributed and recorded (every one of them in the log, and checkpointed where one is due: here after
    every record), the rest not attributed."""
    cli.restore(ingested)
    images = [str(q.path) for q in demo_catalogue.queries] * 10  # (far more than one result takes to print)
    words = ["--data-dir", str(cli.data_dir), "--database-url", cli.database_url, "attribute", *images, *EMBEDDER]
    process = subprocess.Popen(
        [sys.executable, "-m", "attribution_audit", *words],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "ATTRIBUTION_AUDIT_CHECKPOINT_EVERY": "1"},
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline().decode()
    process.stdout.close()  # as `head -1` exits
    said = process.stderr.read().decode()
    assert process.wait() == 1 and first.startswith("request ")
    notes = [line for line in said.splitlines() if line.startswith("note: ")]  # (each checkpoint signed says so too)
    closed = r"note: the output was closed after (\d+) of (\d+) images were attributed and recorded .*"
    found = re.fullmatch(closed, notes[-1])
    assert found is not None and len(notes) == 1, said
    done = int(found[1])
    assert int(found[2]) == len(images) and 1 <= done < len(images)
    with cli.engine().connect() as connection:
        logged = connection.scalars(select(AttributionRequest.image_path).order_by(AttributionRequest.seq)).all()
    assert logged == images[:done] and first.split()[1] in cli("audit", "list").stdout
    witnessed = (cli.data_dir / "witness.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in witnessed] == list(range(1, done + 1))


def test_an_image_of_one_colour_is_attributed_with_a_note_that_its_neighbours_share_only_its_colour(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """A generator's blocked (all-black) output or a blank placeholder is attributed and logged like any image, and a
    note beside its result says that its neighbours share only its colour; an image with any detail (one pixel, or
    two colours of one brightness) gets none. The record keeps the flag: `audit show` notes it, a replay keeps it,
    the summary counts it and the artist shares leave it out."""
    cli.restore(ingested)
    black, white, dotted = tmp_path / "black.png", tmp_path / "white-1px.png", tmp_path / "dotted.png"
    Image.new("RGB", (512, 512)).save(black)
    Image.new("RGB", (1, 1), "white").save(white)
    dot = Image.new("RGB", (64, 64), "white")
    dot.putpixel((10, 10), (0, 0, 0))
    dot.save(dotted)
    halves = Image.new("RGB", (64, 64), (255, 0, 0))  # red and green of one brightness (grey level 76)
    halves.paste((0, 130, 0), (32, 0, 64, 64))
    halves.save(coloured := tmp_path / "red-green.png")
    images = [black, demo_catalogue.queries[0].path, white, dotted, coloured]
    result = cli("attribute", *(str(path) for path in images), "--json", *EMBEDDER)
    records = json.loads(result.stdout)
    assert [record["image"] for record in records] == [str(path.resolve()) for path in images]
    notes = [line for line in result.stderr.splitlines() if "one colour" in line]
    assert notes == [
        f"note: {path.resolve()} is one colour throughout the part attributed: a blocked or blank output? The works "
        "nearest it share only that colour, and its confidence is no evidence of likeness"
        for path in (black, white)
    ]
    assert [record["one_colour"] for record in records] == [True, False, True, False, False]
    shown = json.loads(cli("audit", "show", records[0]["request_id"], "--format", "json").stdout)
    assert shown["one_colour"] is True and shown["notes"] == [notes[0].removeprefix("note: ")]
    assert "note:" not in cli("audit", "show", records[0]["request_id"]).stdout  # the ONE COLOUR line says it
    assert json.loads(cli("audit", "show", records[1]["request_id"], "--format", "json").stdout)["notes"] == []
    replayed = json.loads(cli("audit", "replay", records[2]["request_id"], "--format", "json").stdout)
    assert replayed["replay"]["one_colour"] is True and replayed["differences"] == []
    summary = json.loads(cli("report", "summary", "--format", "json").stdout)
    assert summary["one_colour_requests"] == 3  # the replay too
    assert "requests of images of one colour 3 (" in cli("report", "summary").stdout
    artists = cli("report", "artists", "--format", "json")
    attributed = sum(row["attributions"] for row in json.loads(artists.stdout))
    assert attributed == sum(len(record["artist_shares"]) for record in records if not record["one_colour"])
    assert "note: 2 production request(s) of images of one colour are left out" in artists.stderr
    assert "attributions: " not in artists.stderr  # the table alone says what its columns count
    assert "attributions: requests with one of the artist's works among their K neighbours" in " ".join(
        cli("report", "artists").stderr.split()
    )
    assert "ONE COLOUR: " in cli("audit", "show", records[0]["request_id"]).stdout.splitlines()[1]
    listed = cli("audit", "list", "--kind", "production", "--format", "csv").stdout.splitlines()
    assert listed[0].endswith(",one_colour") and [line.rsplit(",", 1)[1] for line in listed[1:]] == [
        str(record["one_colour"]).lower() for record in reversed(records)
    ]
    assert cli("audit", "verify").stdout.startswith("chain OK: 6 records")


LOGIN_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


def test_without_login_variables_the_requester_is_the_os_account(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container or cron job has no $USER (or an empty one): the record names the OS account, not "unknown";
    ATTRIBUTION_AUDIT_REQUESTER still comes first."""
    cli.restore(ingested)
    for name in (*LOGIN_VARIABLES, "ATTRIBUTION_AUDIT_REQUESTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER", "")
    image = str(demo_catalogue.queries[0].path)
    (record,) = json.loads(cli("attribute", image, "--json", *EMBEDDER).stdout)
    account = pwd.getpwuid(os.getuid()).pw_name
    assert record["requester"] == account
    assert f"requested by {account} at" in cli("audit", "show", record["request_id"]).stdout
    monkeypatch.setenv("ATTRIBUTION_AUDIT_REQUESTER", "nightly batch")
    (record,) = json.loads(cli("attribute", image, "--json", *EMBEDDER).stdout)
    assert record["requester"] == "nightly batch"


def test_a_login_name_that_cannot_be_recorded_is_recorded_as_the_user_id(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-UTF-8 login name, one with control characters or one longer than the requester column: ``uid:<n>``; a
    blank ATTRIBUTION_AUDIT_REQUESTER counts as unset."""
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_REQUESTER", "   ")
    image = str(demo_catalogue.queries[0].path)
    for login in ("x\udcff", "a\x1b[31mb", "bell\x07", "line\nbreak", "n" * 201):
        monkeypatch.setenv("LOGNAME", login)
        (record,) = json.loads(cli("attribute", image, "--json", *EMBEDDER).stdout)
        assert record["requester"] == f"uid:{os.getuid()}"
    monkeypatch.setenv("LOGNAME", "  padded  ")
    (record,) = json.loads(cli("attribute", image, "--json", *EMBEDDER).stdout)
    assert record["requester"] == "padded"


@pytest.mark.parametrize("requester", ["x\udcff", "a\x1b[31mb", "bell\x07", "line\nbreak", "n" * 201])
def test_a_requester_that_cannot_be_recorded_is_refused_before_any_work(
    cli_on: Callable[[str], Cli], migrated_url: str, tmp_path: Path, requester: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ATTRIBUTION_AUDIT_REQUESTER the audit log cannot record (on PostgreSQL, over 200 characters was refused
    only when writing, after embedding): one line naming the variable, before the model loads or the log opens."""
    monkeypatch.setenv("ATTRIBUTION_AUDIT_REQUESTER", requester)
    cli = cli_on(migrated_url)
    image = tmp_path / "query.png"
    image.write_bytes(b"not read")
    result = cli("attribute", str(image), "--embedder", "no-such-model", code=1)
    assert result.output.count("\n") == 1 and result.output.startswith("error: ATTRIBUTION_AUDIT_REQUESTER=")
    assert "set it to 1 to 200 printable UTF-8 characters" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    with cli.engine().connect() as connection:
        assert connection.scalar(select(func.count()).select_from(AttributionRequest)) == 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="only root can run as a user id with no account")
def test_a_user_id_with_no_account_is_recorded_as_its_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """No login variable and no account entry (a container run as an arbitrary user id): ``uid:<n>``."""
    for name in LOGIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    uid = next(n for n in range(54321, 65000) if not _has_account(n))
    read, write = os.pipe()
    if (child := os.fork()) == 0:  # the child becomes that user id and says who asks
        try:
            os.setuid(uid)
            os.write(write, load_settings().resolved_requester.encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as answer:
        assert answer.read() == f"uid:{uid}"


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_a_k_above_the_catalogue_says_how_many_works_there_are(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    """--k 60 on 48 works: every work is ranked and one note on stderr says so (not an error; once per command);
    the record keeps the k asked beside the 48 neighbours it holds, and verifies. --k 48 gives no note."""
    cli.restore(ingested)
    images = [str(q.path) for q in demo_catalogue.queries[:2]]
    result = cli("attribute", *images, "--k", "60", "--json", *EMBEDDER)
    assert result.stderr == (
        "note: --k 60, but collection 'works_efficientnet_lite0' holds only 48 works, so K = 48 were returned "
        "(the record keeps the k asked, 60)\n"
    )
    records = json.loads(result.stdout)
    assert [(r["k"], r["parameters"]["k"], len(r["neighbours"])) for r in records] == [(60, 60, 48)] * 2
    shown = json.loads(cli("audit", "show", records[0]["request_id"], "--json").stdout)
    assert (shown["k"], len(shown["neighbours"])) == (60, 48)
    assert "chain OK: 2 records" in cli("audit", "verify").stdout
    assert cli("attribute", images[0], "--k", "48", *EMBEDDER).stderr == ""


def test_reingest_adds_nothing(cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue) -> None:
    cli.restore(ingested)
    again = cli("ingest", str(demo_catalogue.manifest), *EMBEDDER)
    assert "0 added, 0 updated, 48 unchanged, 0 withdrawn (skipped), 0 failed" in again.stdout
    engine = cli.engine()
    try:
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(Work)) == 48
    finally:
        engine.dispose()


def test_changed_image_is_reembedded(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    copy = tmp_path / "catalogue"  # the same catalogue (by name, work ids and images) in a folder of this test
    shutil.copytree(demo_catalogue.manifest.parent, copy)
    shutil.copy(copy / "works" / "a1_w0.png", copy / "works" / "a0_w0.png")
    # Another file named catalogue.csv does not silently join the catalogue of that name...
    refused = cli("ingest", str(copy / "catalogue.csv"), *EMBEDDER, code=1)
    assert "catalogue 'catalogue' (named after the file) was ingested from" in refused.output
    assert "pass --catalogue catalogue to add these works to it" in refused.output
    # ...it does when asked to.
    again = cli("ingest", str(copy / "catalogue.csv"), "--catalogue", "catalogue", *EMBEDDER)
    assert "0 added, 1 updated (1 with a new image), 47 unchanged, 0 withdrawn (skipped), 0 failed" in again.stdout


def test_bad_image_is_reported_and_not_logged(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    broken = tmp_path / "broken.png"
    broken.write_bytes(demo_catalogue.queries[0].path.read_bytes()[:200])
    result = cli("attribute", str(broken), str(demo_catalogue.queries[1].path), "--json", *EMBEDDER, code=1)
    assert "broken.png" in result.stderr and "error:" in result.stderr
    printed = json.loads(result.stdout)
    assert [r["image"] for r in printed] == [str(demo_catalogue.queries[1].path)]
    engine = cli.engine()
    try:
        with engine.connect() as connection:
            images = connection.scalars(select(AttributionRequest.image_path)).all()
            assert images == [str(demo_catalogue.queries[1].path)]
            assert connection.scalar(select(func.count()).select_from(AttributionNeighbour)) == 10
    finally:
        engine.dispose()


def test_bad_manifest_rows_fail_the_run_but_keep_good_rows(
    cli: Cli, tmp_path: Path, demo_catalogue: DemoCatalogue
) -> None:
    works = demo_catalogue.manifest.parent / "works"
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    manifest = tmp_path / "m.csv"
    shutil.copy(works / "a0_w0.png", tmp_path / "ok.png")
    manifest.write_text("path,artist,work_id\nok.png,Ada,W1\ncorrupt.png,Ada,W2\nok.png,Ada,W1\n../x.png,Ada,W3\n")
    result = cli("ingest", str(manifest), *EMBEDDER, code=1)
    assert "1 added, 0 updated, 0 unchanged, 0 withdrawn (skipped), 3 failed" in result.stdout
    assert "m.csv:3" in result.stderr and "corrupt.png" in result.stderr
    assert "duplicate work_id" in result.stderr and "leaves the catalogue folder" in result.stderr


def test_commands_refuse_an_unmigrated_database(
    cli_on: Callable[[str], Cli], database_url: str, demo_catalogue: DemoCatalogue
) -> None:
    result = cli_on(database_url)("attribute", str(demo_catalogue.queries[0].path), *EMBEDDER, code=1)
    assert "run `attribution-audit db upgrade`" in result.stderr
    assert result.stdout == ""


def test_attribute_before_any_ingest_says_what_to_do(cli: Cli, demo_catalogue: DemoCatalogue) -> None:
    result = cli("attribute", str(demo_catalogue.queries[0].path), *EMBEDDER, code=1)
    assert "attribution-audit ingest" in result.stderr


def test_database_down_prints_no_attribution(cli_on: Callable[[str], Cli], demo_catalogue: DemoCatalogue) -> None:
    down = cli_on("postgresql://postgres@127.0.0.1:1/none")
    result = down("attribute", str(demo_catalogue.queries[0].path), code=1)
    assert result.stdout == ""
    assert "cannot reach the audit database" in result.stderr


def test_a_run_stopped_by_the_database_shows_and_counts_what_it_recorded_before(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    """The database refuses the second write of a run of three images: the run stops there with the database's one-
    line error (exit 1), the first attribution, which is in the log, is still written out, and a note says how many
    of the images were recorded."""
    import sqlite3

    cli.restore(ingested)
    database = sqlite3.connect(cli.database_url.removeprefix("sqlite:///"))
    database.execute(  # a write refused from the second record on (a full disk, a server gone, ...)
        "CREATE TRIGGER refuse_second BEFORE INSERT ON attribution_requests "
        "WHEN (SELECT count(*) FROM attribution_requests) >= 1 BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
    )
    database.commit()
    images = [str(q.path) for q in demo_catalogue.queries[:3]]
    result = cli("attribute", *images, "--json", *EMBEDDER, code=1)
    recorded = json.loads(result.stdout)
    assert len(recorded) == 1
    *_, note, error = result.stderr.splitlines()
    assert note == "note: 1 of 3 images were attributed and recorded before this error"
    assert error.startswith("error: ") and "refused for the test" in error
    database.execute("DROP TRIGGER refuse_second")
    database.commit()
    database.close()
    listed = json.loads(cli("audit", "list", "--format", "json").stdout)
    assert [r["request_id"] for r in listed] == [recorded[0]["request_id"]]


COMMANDS_WITH_HELP = [
    [],
    ["ingest"],
    ["attribute"],
    ["db"],
    ["db", "upgrade"],
    ["db", "current"],
    ["audit"],
    ["audit", "list"],
    ["audit", "show"],
]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(cli: Cli, flag: str) -> None:
    for command in COMMANDS_WITH_HELP:
        result = cli(*command, flag, code=None)
        assert result.exit_code == 0, command
        assert "Usage" in result.stdout


@pytest.mark.parametrize("command", [[], ["ingest"], ["db", "upgrade"]], ids=["app", "ingest", "db upgrade"])
def test_h_prints_the_same_help_as_help(cli: Cli, command: list[str]) -> None:
    short, long = cli(*command, "-h"), cli(*command, "--help")
    assert short.stdout == long.stdout
    assert "Usage: " in short.stdout and "--help" in short.stdout
    assert re.search(r"(?<![-\w])-h\b", short.stdout), "-h is listed beside --help"


def test_version_prints_the_package_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.stdout == f"attribution-audit {__version__}\n"
    assert __version__ and __version__[0].isdigit()
    # Eager: it prints the version even before a subcommand, and runs nothing else.
    assert cli("--version", "attribute", "nowhere.png").stdout == result.stdout
