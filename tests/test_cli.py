"""The CLI end to end on embedded Qdrant Edge: ingest -> attribute -> audit show, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from attribution_audit.audit.db import create_db_engine
from attribution_audit.audit.models import AttributionNeighbour, AttributionRequest, Work
from attribution_audit.cli import app
from attribution_audit.demo import DemoCatalogue

EMBEDDER = ["--embedder", "efficientnet-lite0"]


@pytest.fixture
def cli(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    """Run the CLI against a fresh data dir and the parametrized (SQLite / PostgreSQL) audit database."""
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]

    def run(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == code, result.output + str(result.exception)
        return result

    run.database_url = database_url  # type: ignore[attr-defined]
    return run


def test_ingest_attribute_show_end_to_end(cli, demo_catalogue: DemoCatalogue) -> None:  # type: ignore[no-untyped-def]
    cli("db", "upgrade")
    ingested = cli("ingest", str(demo_catalogue.manifest), *EMBEDDER)
    assert "48 added, 0 updated, 0 unchanged, 0 withdrawn (skipped), 0 failed" in ingested.stdout

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
        assert record["index_params"]["indexed_vectors"] == 48

    # Every printed result is in the audit log, with the same neighbours.
    shown = json.loads(cli("audit", "show", records[0]["request_id"], "--json").stdout)
    assert shown["neighbours"] == records[0]["neighbours"]
    assert shown["confidence"] == pytest.approx(records[0]["confidence"])
    listed = cli("audit", "list").stdout
    assert all(r["request_id"] in listed for r in records)
    table = cli("audit", "show", records[1]["request_id"]).stdout
    assert records[1]["neighbours"][0]["work_id"] in table and "efficientnet-lite0@sha256:" in table


@pytest.mark.slow
def test_reingest_adds_nothing(cli, demo_catalogue: DemoCatalogue) -> None:  # type: ignore[no-untyped-def]
    cli("db", "upgrade")
    cli("ingest", str(demo_catalogue.manifest), *EMBEDDER)
    again = cli("ingest", str(demo_catalogue.manifest), *EMBEDDER)
    assert "0 added, 0 updated, 48 unchanged, 0 withdrawn (skipped), 0 failed" in again.stdout
    engine = create_db_engine(cli.database_url)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Work)) == 48
    engine.dispose()


@pytest.mark.slow
def test_changed_image_is_reembedded(cli, demo_catalogue: DemoCatalogue, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "catalogue"
    shutil.copytree(demo_catalogue.manifest.parent, copy)
    cli("db", "upgrade")
    cli("ingest", str(copy / "catalogue.csv"), *EMBEDDER)
    shutil.copy(copy / "works" / "a1_w0.png", copy / "works" / "a0_w0.png")
    again = cli("ingest", str(copy / "catalogue.csv"), *EMBEDDER)
    assert "0 added, 1 updated, 47 unchanged, 0 withdrawn (skipped), 0 failed" in again.stdout


def test_bad_image_is_reported_and_not_logged(cli, demo_catalogue: DemoCatalogue, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("db", "upgrade")
    cli("ingest", str(demo_catalogue.manifest), *EMBEDDER)
    broken = tmp_path / "broken.png"
    broken.write_bytes(demo_catalogue.queries[0].path.read_bytes()[:200])
    result = cli("attribute", str(broken), str(demo_catalogue.queries[1].path), "--json", *EMBEDDER, code=1)
    assert "broken.png" in result.stderr and "error:" in result.stderr
    printed = json.loads(result.stdout)
    assert [r["image"] for r in printed] == [str(demo_catalogue.queries[1].path)]
    engine = create_db_engine(cli.database_url)
    with engine.connect() as connection:
        images = connection.scalars(select(AttributionRequest.image_path)).all()
        assert images == [str(demo_catalogue.queries[1].path)]
        assert connection.scalar(select(func.count()).select_from(AttributionNeighbour)) == 10
    engine.dispose()


@pytest.mark.slow
def test_bad_manifest_rows_fail_the_run_but_keep_good_rows(cli, tmp_path: Path, demo_catalogue: DemoCatalogue) -> None:  # type: ignore[no-untyped-def]
    works = demo_catalogue.manifest.parent / "works"
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    manifest = tmp_path / "m.csv"
    shutil.copy(works / "a0_w0.png", tmp_path / "ok.png")
    manifest.write_text("path,artist,work_id\nok.png,Ada,W1\ncorrupt.png,Ada,W2\nok.png,Ada,W1\n../x.png,Ada,W3\n")
    cli("db", "upgrade")
    result = cli("ingest", str(manifest), *EMBEDDER, code=1)
    assert "1 added, 0 updated, 0 unchanged, 0 withdrawn (skipped), 3 failed" in result.stdout
    assert "m.csv:3" in result.stderr and "corrupt.png" in result.stderr
    assert "duplicate work_id" in result.stderr and "leaves the catalogue folder" in result.stderr


def test_commands_refuse_an_unmigrated_database(cli, demo_catalogue: DemoCatalogue) -> None:  # type: ignore[no-untyped-def]
    result = cli("attribute", str(demo_catalogue.queries[0].path), *EMBEDDER, code=1)
    assert "run `attribution-audit db upgrade`" in result.stderr
    assert result.stdout == ""


def test_attribute_before_any_ingest_says_what_to_do(cli, demo_catalogue: DemoCatalogue) -> None:  # type: ignore[no-untyped-def]
    cli("db", "upgrade")
    result = cli("attribute", str(demo_catalogue.queries[0].path), *EMBEDDER, code=1)
    assert "attribution-audit ingest" in result.stderr


def test_database_down_prints_no_attribution(tmp_path: Path, demo_catalogue: DemoCatalogue) -> None:
    runner = CliRunner()
    down = "postgresql://postgres@127.0.0.1:1/none"
    result = runner.invoke(
        app, ["--data-dir", str(tmp_path), "--database-url", down, "attribute", str(demo_catalogue.queries[0].path)]
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "cannot reach the audit database" in result.stderr


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for command in (
        [],
        ["ingest"],
        ["attribute"],
        ["db"],
        ["db", "upgrade"],
        ["db", "current"],
        ["audit"],
        ["audit", "list"],
        ["audit", "show"],
    ):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.stdout
