"""Regressions for defects found in review: forged rows outside the chain, -0.0 on SQLite, odd inputs that used to
give tracebacks, per-row limits the audit schema imposes, and a merge counted twice in reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from test_audit_chain import synthetic_request
from typer.testing import CliRunner

from attribution_audit.attribution import AttributionParams
from attribution_audit.audit import chain
from attribution_audit.audit.db import create_db_engine
from attribution_audit.catalogue.manifest import RowFailure, open_source
from attribution_audit.cli import app
from attribution_audit.errors import DatabaseError, VectorStoreError
from attribution_audit.images import printable_path
from attribution_audit.vectorstore.qdrant_edge import EdgeStore
from attribution_audit.vectorstore.qdrant_server import ServerStore

FORGE = (
    "INSERT INTO attribution_requests (id, seq, prev_hash, record_hash, created_at, requester, image_path,"
    " image_sha256, query_vector, embedder_name, embedder_fingerprint, store_kind, collection, catalogue_version,"
    " index_params, parameters, k) SELECT :id, :seq, prev_hash, :hash, created_at, requester, '/forged.png',"
    " image_sha256, query_vector, embedder_name, embedder_fingerprint, store_kind, collection, catalogue_version,"
    " index_params, parameters, k FROM attribution_requests WHERE seq = 1"
)


def test_a_row_inserted_outside_the_chain_fails_verification(fresh_db: Engine) -> None:
    for i in range(3):
        chain.append(fresh_db, synthetic_request(str(i)))
    with pytest.raises(DBAPIError), fresh_db.begin() as connection:  # the schema refuses positions below 1
        connection.execute(text(FORGE), {"id": "forged-0", "seq": 0, "hash": "e" * 64})
    with fresh_db.begin() as connection:  # INSERT is allowed (append-only), but this row is not in the chain
        connection.execute(text(FORGE), {"id": "forged-1", "seq": 10_000, "hash": "f" * 64})
    report = chain.verify_chain(fresh_db)
    assert not report.ok and "sequence gap" in (report.reason or "")


def test_negative_zero_round_trips_through_the_chain(fresh_db: Engine) -> None:
    request = synthetic_request("zero")
    request.neighbours[0].similarity = -0.0
    request.metrics.margin = -0.0  # type: ignore[union-attr]
    chain.append(fresh_db, request)
    assert chain.verify_chain(fresh_db).ok


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), 0.0, -1.0])
def test_non_finite_temperature_is_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        AttributionParams(shares="similarity", temperature=temperature)


def test_k_has_an_upper_bound() -> None:
    with pytest.raises(ValueError, match="k must be between"):
        AttributionParams(k=10**9)


def test_rows_the_schema_cannot_hold_fail_alone(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"path": "a.png", "artist": "A" * 301, "work_id": "long-artist"},
        {"path": "b.png", "artist": "B", "work_id": "W" * 301},
        {"path": "c.png", "artist": "Bad\u0000Name", "work_id": "nul"},
        {"path": "d.png", "artist": "D", "work_id": "nan", "score": float("nan")},
        {"path": "e.png", "artist": "E", "work_id": "ok", "title": "fine"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = list(open_source(manifest))
    failures = [i for i in items if isinstance(i, RowFailure)]
    assert [f.line for f in failures] == [1, 2, 3, 4]
    assert "longer than 300" in failures[0].reason and "NUL" in failures[2].reason and "NaN" in failures[3].reason
    assert [i.work_id for i in items if not isinstance(i, RowFailure)] == ["ok"]


def test_non_utf8_file_names_are_stored_printably(tmp_path: Path) -> None:
    odd = os.fsdecode(b"odd_\xff.png")
    assert printable_path(Path("/x") / odd) == "/x/odd_\\xff.png"
    assert printable_path("/plain/é.png") == "/plain/é.png"


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_a_query_of_the_wrong_size_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    store = EdgeStore(tmp_path, "dims") if kind == "edge" else ServerStore(":memory:", "dims")
    store.ensure_collection(16)
    with pytest.raises(VectorStoreError, match="16-d content vectors but the query is 1280-d"):
        store.search(np.ones(1280, dtype=np.float32), 3)
    store.close()


def test_an_unknown_database_url_is_one_line() -> None:
    with pytest.raises(DatabaseError, match="not a database URL"):
        create_db_engine("bogus://x")


def test_cli_refuses_style_with_precomputed_vectors_and_bad_spaces(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    for spaces, extra, message in (
        ("bogus", [], "use content or content,style"),
        ("content,style", ["--embeddings", str(tmp_path / "v.npy")], "fill content only"),
    ):
        result = runner.invoke(app, [*base, "ingest", str(tmp_path / "m.csv"), "--spaces", spaces, *extra])
        assert result.exit_code == 2 and message in result.output


def test_unwritable_outputs_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    assert runner.invoke(app, [*base, "db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, [*base, "audit", "export", "/proc/nope/x.jsonl"])
    assert result.exit_code == 1 and "cannot write the export" in result.stderr


def test_ingesting_dot_names_the_catalogue_after_the_folder(tmp_path: Path, demo_catalogue, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from attribution_audit.catalogue.ingest import default_catalogue_name

    monkeypatch.chdir(demo_catalogue.manifest.parent)
    assert default_catalogue_name(Path(".")) == demo_catalogue.manifest.parent.name
    assert default_catalogue_name(Path("catalogue.csv")) == "catalogue"


def test_a_merge_does_not_count_one_request_twice(fresh_db: Engine) -> None:
    from sqlalchemy.orm import Session

    from attribution_audit.audit.models import Artist, AttributionArtistShare
    from attribution_audit.catalogue.lifecycle import merge_artists
    from attribution_audit.reporting.queries import artist_shares

    with Session(fresh_db) as session, session.begin():
        session.add_all([Artist(name="Ada"), Artist(name="A. Da")])
    request = synthetic_request("merged")
    request.artist_shares = [
        AttributionArtistShare(artist="Ada", share=0.75),
        AttributionArtistShare(artist="A. Da", share=0.25),
    ]
    chain.append(fresh_db, request)
    merge_artists(fresh_db, "A. Da", "Ada")
    rows = artist_shares(fresh_db)
    assert rows == [{"artist": "Ada", "attributions": 1, "share_sum": 1.0, "mean_confidence": 0.8}]
