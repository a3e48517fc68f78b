"""Reporting: the SQL views on a known log, the read-only role, report/export commands, verifiable exports and
the per-request HTML/PDF page (what compliance officers and analysts rely on)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time as time_module
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from dbtools import request_row, superuser_edit, two_neighbours
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from attribution_audit.domain.chain import hash_content
from attribution_audit.domain.confidence import LOW_CONFIDENCE
from attribution_audit.domain.results import as_utc
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import AttributionAuditError, DatabaseError
from attribution_audit.reporting import export
from attribution_audit.reporting.export import FORMAT
from attribution_audit.reporting.html import CHROMIUM_FLAGS
from attribution_audit.services.catalogue import merge_artists
from attribution_audit.services.report import artist_shares
from attribution_audit.sources.synthetic import make_demo_catalogue
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.browse import RequestFilter
from attribution_audit.store.database import create_db_engine
from attribution_audit.store.models import (
    Artist,
    AttributionArtistShare,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
    Catalogue,
    EvaluationRun,
    QuerySet,
    RecallCheck,
    Work,
    WorkVersion,
)
from attribution_audit.store.reporting_views import VIEW_LOW_CONFIDENCE
from attribution_audit.store.reports import REPORTING_VIEWS

# -- a known log ------------------------------------------------------------------------------------------------
DAY1, DAY2, DAY3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 5)
CSV_HEADER = "artist,attributions,share_sum,mean_confidence"
UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/none"


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), UTC)


@dataclass(frozen=True)
class Spec:
    """One request of the known log; neighbours are (work_id, artist, similarity, share)."""

    label: str
    created_at: datetime
    confidence: float
    neighbours: tuple[tuple[str, str, float, float], ...]
    overlap: float | None
    evaluation: bool = False
    replay_of: str | None = None

    def shares(self) -> dict[str, float]:
        shares: dict[str, float] = {}
        for _, artist, _, share in self.neighbours:
            shares[artist] = shares.get(artist, 0.0) + share
        return shares

    def top(self) -> tuple[str, float]:
        return max(self.shares().items(), key=lambda item: item[1])

    def margin(self) -> float | None:
        values = sorted(self.shares().values(), reverse=True)
        return values[0] - values[1] if len(values) > 1 else None


# Dyadic shares, so that sums are exact. r3's overlap comes from its recall checks; r6 is never verified.
SPECS = (
    Spec(
        "r1",
        at(DAY1, 10),
        0.9,
        (("w1", "Ada", 0.95, 0.375), ("w2", "Ada", 0.90, 0.375), ("w4", "Bob", 0.85, 0.25)),
        1.0,
    ),
    Spec(
        "r2",
        at(DAY1, 15),
        0.3,
        (("w4", "Bob", 0.80, 0.3125), ("w5", "Bob", 0.78, 0.3125), ("w3", "Adah", 0.75, 0.375)),
        0.8,
    ),
    Spec("r3", at(DAY2, 9), 0.7, (("w3", "Adah", 0.90, 1.0),), None),
    Spec("r4", at(DAY2, 11), 0.2, (("w1", "Ada", 0.60, 1.0),), 0.5, evaluation=True),
    Spec("r5", at(DAY2, 12), 0.9, (("w4", "Bob", 0.90, 1.0),), 1.0, replay_of="r1"),
    Spec("r6", at(DAY3, 23, 30), 0.5, (("x1", "Cy", 0.70, 1.0),), None),
)
SPEC = {s.label: s for s in SPECS}
# overlap@K the views report: the request's own (r2 keeps 0.8 despite a later check of 1.0), else the latest
# recall check (r3: 0.5, checked after its 1.0).
OVERLAP = {"r1": 1.0, "r2": 0.8, "r3": 0.5, "r4": 0.5, "r5": 1.0, "r6": None}
# work_id -> (catalogue, artist, version, withdrawn)
WORKS = {
    "w1": ("museum", "Ada", 1, False),
    "w2": ("museum", "Ada", 3, True),
    "w3": ("museum", "Adah", 2, False),
    "w4": ("museum", "Bob", 1, False),
    "w5": ("museum", "Bob", 1, False),
    "x1": ("archive", "Cy", 1, False),
}
ARTISTS = ("Ada", "Adah", "Bob", "Cy", "Ada Lovelace")  # "Ada Lovelace" has no works: a merge target


@dataclass
class KnownLog:
    engine: Engine
    requests: dict[str, AttributionRequest]
    run_id: int
    work_pks: dict[str, int]

    def id(self, label: str) -> str:
        return self.requests[label].id

    def label(self, request_id: str) -> str:
        return next(label for label, r in self.requests.items() if r.id == request_id)


def _work_updated(work_id: str) -> datetime:
    return at(DAY1, 1 + sorted(WORKS).index(work_id))


def build_known_log(engine: Engine) -> KnownLog:
    """Catalogues, artists, works (one withdrawn), an evaluation run, six chained requests and three recall checks."""
    with Session(engine) as session:
        catalogues = {name: Catalogue(name=name) for name in ("museum", "archive")}
        artists = {name: Artist(name=name) for name in ARTISTS}
        session.add_all([*catalogues.values(), *artists.values()])
        works = {}
        for work_id, (catalogue, artist, version, withdrawn) in WORKS.items():
            works[work_id] = Work(
                catalogue=catalogues[catalogue],
                work_id=work_id,
                artist=artists[artist],
                image_path=f"/works/{work_id}.png",
                image_sha256="cd" * 32,
                version=version,
                withdrawn_at=at(DAY1, 20) if withdrawn else None,
                updated_at=_work_updated(work_id),
            )
        session.add_all(works.values())
        session.flush()
        for work_id, work in works.items():
            for version in range(1, work.version + 1):
                session.add(
                    WorkVersion(
                        work_pk=work.id,
                        version=version,
                        image_path=f"/works/{work_id}-v{version}.png",
                        image_sha256=f"{version:02d}" * 32,
                    )
                )
        query_set = QuerySet(name="labelled", source_path="/queries.csv")
        session.add(query_set)
        session.flush()
        run = EvaluationRun(
            requester="analyst",
            query_set_id=query_set.id,
            embedder_name="test",
            collection="works_test",
            settings={"k": 3},
        )
        session.add(run)
        session.commit()
        run_id, work_pks = run.id, {work_id: work.id for work_id, work in works.items()}

    requests: dict[str, AttributionRequest] = {}
    for spec in SPECS:
        top, top_share = spec.top()
        request = request_row(
            spec.label,
            image_path=f"/generated/{spec.label}.png",
            parameters={"k": len(spec.neighbours)},
            k=len(spec.neighbours),
            evaluation_run_id=run_id if spec.evaluation else None,
            replay_of=requests[spec.replay_of].id if spec.replay_of else None,
        )
        request.neighbours = [
            AttributionNeighbour(
                rank=rank,
                work_pk=work_pks[work_id],
                catalogue=WORKS[work_id][0],
                work_id=work_id,
                work_version=WORKS[work_id][2],
                artist=artist,
                canonical_artist=artist,
                similarity=similarity,
                distance=1 - similarity,
                share=share,
            )
            for rank, (work_id, artist, similarity, share) in enumerate(spec.neighbours, start=1)
        ]
        request.artist_shares = [AttributionArtistShare(artist=a, share=s) for a, s in spec.shares().items()]
        request.metrics = AttributionMetrics(
            entropy=0.25 * (len(spec.shares()) - 1),
            nn_distance=1 - spec.neighbours[0][2],
            margin=spec.margin(),
            top_artist=top,
            top_artist_share=top_share,
            overlap_at_k=spec.overlap,
            exact_method=None if spec.overlap is None else "brute",
            confidence=spec.confidence,
            confidence_model="default-v1",
        )
        requests[spec.label] = chain.append(engine, request, at=spec.created_at)

    with Session(engine) as session:
        # r3's newer check is inserted first: "latest" must mean checked_at, not insertion order. r2's own
        # overlap (0.8, measured when it ran) takes precedence over a later check.
        for label, checked_at, overlap in (
            ("r3", at(DAY3, 12), 0.5),
            ("r3", at(DAY3, 9), 1.0),
            ("r2", at(DAY3, 9), 1.0),
        ):
            session.add(
                RecallCheck(
                    request_id=requests[label].id,
                    checked_at=checked_at,
                    exact_method="brute",
                    catalogue_version="v1",
                    overlap_at_k=overlap,
                )
            )
            session.commit()
    return KnownLog(engine, requests, run_id, work_pks)


def single_request(artist: str, work_id: str, **fields: Any) -> AttributionRequest:
    """A production request with one neighbour (share 1, confidence 0.5); ``fields`` override request columns."""
    request = AttributionRequest(
        **{
            "id": str(uuid.uuid4()),
            "requester": "tester",
            "image_path": "/generated/single.png",
            "image_sha256": "ab" * 32,
            "query_vector": b"",
            "embedder_name": "test",
            "embedder_fingerprint": "test@sha256:0",
            "store_kind": "qdrant-edge",
            "collection": "works_test",
            "catalogue_version": "v1",
            "index_params": {},
            "parameters": {},
            "k": 1,
            **fields,
        }
    )
    request.neighbours = [
        AttributionNeighbour(
            rank=1,
            catalogue="archive",
            work_id=work_id,
            artist=artist,
            canonical_artist=artist,
            similarity=0.7,
            distance=0.3,
            share=1.0,
        )
    ]
    request.artist_shares = [AttributionArtistShare(artist=artist, share=1.0)]
    request.metrics = AttributionMetrics(
        entropy=0.0, top_artist=artist, top_artist_share=1.0, confidence=0.5, confidence_model="default-v1"
    )
    return request


def _rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(sql))]


def _moment(value: Any) -> datetime:
    """A timestamp read from a view: a datetime on PostgreSQL, an ISO string on SQLite."""
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def sqlite_known(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnownLog]:
    path = tmp_path_factory.mktemp("known") / "audit.sqlite"
    shutil.copyfile(sqlite_template, path)
    engine = create_db_engine(f"sqlite:///{path}")
    yield build_known_log(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_known(postgres_admin: Engine, postgres_template: str) -> Iterator[KnownLog]:
    name = f"aa_test_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
    engine = create_db_engine(postgres_admin.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield build_known_log(engine)
    finally:
        engine.dispose()
        with postgres_admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def known(request: pytest.FixtureRequest) -> KnownLog:
    """The known log, built once per module on SQLite and on PostgreSQL: for tests that only read it."""
    return request.getfixturevalue(f"{request.param}_known")


@pytest.fixture
def known_cli(known: KnownLog, cli_on: Callable[[str], Cli]) -> Cli:
    """The CLI on the known log."""
    return cli_on(_url(known.engine))


@pytest.fixture
def offline_cli(cli_on: Callable[[str], Cli]) -> Cli:
    """The CLI with a database URL nothing answers: for commands that need no database (``verify --file``)."""
    return cli_on(UNREACHABLE_DB)


# -- 1. the views ----------------------------------------------------------------------------------------------
def test_v_attributions_reports_every_request_with_its_flags(known: KnownLog) -> None:
    rows = _rows(known.engine, "SELECT * FROM v_attributions ORDER BY seq")
    assert [row["request_id"] for row in rows] == [known.id(s.label) for s in SPECS]
    for row, spec in zip(rows, SPECS, strict=True):
        request = known.requests[spec.label]
        top, top_share = spec.top()
        assert row["seq"] == request.seq
        assert row["record_hash"] == request.record_hash
        assert _moment(row["created_at"]) == spec.created_at
        assert (row["requester"], row["image_path"], row["image_sha256"]) == (spec.label, request.image_path, "ab" * 32)
        assert (row["top_artist"], row["top_artist_share"]) == (top, top_share)
        assert row["confidence"] == spec.confidence and row["confidence_model"] == "default-v1"
        assert row["entropy"] == 0.25 * (len(spec.shares()) - 1)
        assert row["nn_distance"] == pytest.approx(1 - spec.neighbours[0][2])
        assert row["margin"] == (None if spec.margin() is None else pytest.approx(spec.margin()))
        assert row["overlap_at_k"] == OVERLAP[spec.label], spec.label
        assert row["k"] == len(spec.neighbours)
        assert (row["embedder_name"], row["embedder_fingerprint"], row["store_kind"]) == (
            "test",
            "test@sha256:0",
            "qdrant-edge",
        )
        assert (row["collection"], row["catalogue_version"]) == ("works_test", "v1")
        assert row["evaluation_run_id"] == (known.run_id if spec.evaluation else None)
        assert row["replay_of"] == (known.id(spec.replay_of) if spec.replay_of else None)
        assert row["is_production"] == int(not spec.evaluation and spec.replay_of is None), spec.label


def test_the_schema_doc_names_the_metrics_v_attributions_lacks_and_where_to_read_them(sqlite_db: Engine) -> None:
    """docs/schema.md did not say that v_attributions lacks the copy, agreement and centroid columns."""
    with sqlite_db.connect() as connection:
        view = set(connection.execute(text("SELECT * FROM v_attributions LIMIT 0")).keys())
    metrics = {c.name for c in AttributionMetrics.__table__.columns}
    lacking = sorted(metrics - view)
    assert "agreement" in lacking and "centroid_log_odds_others" in lacking
    doc = (Path(__file__).resolve().parent.parent / "docs" / "schema.md").read_text(encoding="utf-8")
    note = next(part for part in doc.split("\n\n") if part.startswith("`v_attributions` (and so"))
    assert "`v_audit_metrics`" in note and [c for c in lacking if f"`{c}`" not in note] == []


def test_v_attribution_neighbours_lists_every_ranked_work(known: KnownLog) -> None:
    rows = _rows(known.engine, "SELECT * FROM v_attribution_neighbours")
    got = {
        (known.label(r["request_id"]), r["rank"]): (
            r["catalogue"],
            r["work_id"],
            r["work_version"],
            r["recorded_artist"],
            r["artist"],
            r["similarity"],
            r["distance"],
            r["share"],
        )
        for r in rows
    }
    expected = {
        (spec.label, rank): (WORKS[work][0], work, WORKS[work][2], artist, artist, similarity, 1 - similarity, share)
        for spec in SPECS
        for rank, (work, artist, similarity, share) in enumerate(spec.neighbours, start=1)
    }
    assert len(rows) == 10
    assert got == expected


def _artist_share_rows(engine: Engine) -> dict[tuple[str, str], tuple[str, int, float, float]]:
    return {
        (r["artist"], str(r["day"])): (r["month"], int(r["attributions"]), r["share_sum"], r["mean_confidence"])
        for r in _rows(engine, "SELECT * FROM v_artist_shares")
    }


def test_v_artist_shares_sums_production_requests_per_artist_and_day(known: KnownLog) -> None:
    # r4 (evaluation run) and r5 (replay) are not production attributions: Ada's r4 and Bob's r5 are not counted.
    assert _artist_share_rows(known.engine) == {
        ("Ada", "2024-03-01"): ("2024-03", 1, 0.75, pytest.approx(0.9)),
        ("Adah", "2024-03-01"): ("2024-03", 1, 0.375, pytest.approx(0.3)),
        ("Bob", "2024-03-01"): ("2024-03", 2, 0.875, pytest.approx(0.6)),
        ("Adah", "2024-03-02"): ("2024-03", 1, 1.0, pytest.approx(0.7)),
        ("Cy", "2024-03-05"): ("2024-03", 1, 1.0, pytest.approx(0.5)),
    }


def test_low_confidence_and_disagreement_views(known: KnownLog) -> None:
    low = {r["request_id"] for r in _rows(known.engine, "SELECT request_id FROM v_low_confidence")}
    # confidence < 0.5: r2 (0.3) and r4 (0.2); r6 sits on the threshold (0.5) and is not low.
    assert low == {known.id("r2"), known.id("r4")}
    disagreements = {r["request_id"] for r in _rows(known.engine, "SELECT request_id FROM v_ann_disagreements")}
    # overlap < 1: r2 (0.8), r3 (0.5 from its latest recall check), r4 (0.5); r6 was never verified.
    assert disagreements == {known.id("r2"), known.id("r3"), known.id("r4")}


def test_images_of_one_colour_are_left_out_of_the_artist_shares_and_listed_as_low_confidence(
    audit: AuditStore,
) -> None:
    """A blocked or blank output's nearest works share only its colour: its request is not counted in
    v_artist_shares, v_low_confidence lists it whatever its confidence, the summary counts it, and its record verifies
    (the flag hashed). A request not looked at (null: an evaluation's, an older record) counts as before."""
    made = {}
    for label, flag in (("flat", 1), ("plain", 0), ("not-looked-at", None)):
        request = single_request("Ada", "x1", image_path=f"/generated/{label}.png")
        request.metrics.one_colour, request.metrics.confidence = flag, 0.9
        made[label] = chain.append(audit.engine, request).id
    assert _rows(audit.engine, "SELECT artist, attributions FROM v_artist_shares") == [
        {"artist": "Ada", "attributions": 2}
    ]
    assert {r["request_id"] for r in _rows(audit.engine, "SELECT request_id FROM v_low_confidence")} == {made["flat"]}
    listed = audit.browse.page(RequestFilter(low_confidence=True))  # what the console's low-confidence link lists
    assert [request.columns["id"] for request in listed] == [made["flat"]]
    assert LOW_CONFIDENCE == VIEW_LOW_CONFIDENCE  # the reports' threshold is the view's (another needs a revision)
    counts = audit.reports.counts()
    assert (counts.one_colour_requests, counts.low_confidence_requests) == (1, 1)
    assert counts.production_not_looked_at == 1  # (in the artist shares whatever its image: the summary says so)
    today = datetime.now(UTC).date()  # what report artists says it left out, by UTC day
    assert [audit.reports.one_colour_production(today, today), audit.reports.one_colour_production(today)] == [1, 1]
    assert audit.reports.one_colour_production(date_to=date(2000, 1, 1)) == 0
    assert audit.reports.one_colour_production(date_to=date.max) == 1  # the last day there is
    assert [audit.requests.get(made[label]).one_colour for label in made] == [True, False, None]
    assert audit.requests.verify_chain().ok
    # the flag cleared by hand: that record no longer verifies
    superuser_edit(audit.engine, f"UPDATE attribution_metrics SET one_colour = 0 WHERE request_id = '{made['flat']}'")
    broken = audit.requests.verify_chain()
    assert (broken.ok, broken.broken_seq, broken.reason) == (
        False,
        1,
        "content does not match its record_hash (the record was modified)",
    )


def _catalogue_rows(engine: Engine) -> dict[tuple[str, str], tuple[int, int, int, int, datetime]]:
    return {
        (r["catalogue"], r["artist"]): (
            int(r["works"]),
            int(r["active"]),
            int(r["withdrawn"]),
            int(r["versions"]),
            _moment(r["last_updated"]),
        )
        for r in _rows(engine, "SELECT * FROM v_catalogue")
    }


def test_v_catalogue_counts_works_per_catalogue_and_artist(known: KnownLog) -> None:
    updated = _work_updated
    assert _catalogue_rows(known.engine) == {
        ("museum", "Ada"): (2, 1, 1, 4, max(updated("w1"), updated("w2"))),
        ("museum", "Adah"): (1, 1, 0, 2, updated("w3")),
        ("museum", "Bob"): (2, 2, 0, 2, max(updated("w4"), updated("w5"))),
        ("archive", "Cy"): (1, 1, 0, 1, updated("x1")),
    }


def test_views_report_merged_artists_under_the_canonical_name(audit: AuditStore) -> None:
    fresh_db = audit.engine
    log = build_known_log(fresh_db)
    merge_artists(audit, "Adah", "Ada")

    tops = {log.label(r["request_id"]): r["top_artist"] for r in _rows(fresh_db, "SELECT * FROM v_attributions")}
    assert tops == {"r1": "Ada", "r2": "Bob", "r3": "Ada", "r4": "Ada", "r5": "Bob", "r6": "Cy"}
    assert {r["top_artist"] for r in _rows(fresh_db, "SELECT * FROM v_ann_disagreements")} == {"Bob", "Ada"}
    neighbours = {
        (log.label(r["request_id"]), r["rank"]): (r["recorded_artist"], r["artist"])
        for r in _rows(fresh_db, "SELECT * FROM v_attribution_neighbours")
    }
    assert neighbours[("r2", 3)] == ("Adah", "Ada") and neighbours[("r3", 1)] == ("Adah", "Ada")
    assert neighbours[("r1", 1)] == ("Ada", "Ada") and neighbours[("r2", 1)] == ("Bob", "Bob")

    # The audit rows keep the spelling recorded at the time, so the chain still verifies.
    with Session(fresh_db) as session:
        recorded = session.execute(
            select(AttributionNeighbour.artist, AttributionNeighbour.canonical_artist).where(
                AttributionNeighbour.request_id == log.id("r3")
            )
        ).one()
        assert tuple(recorded) == ("Adah", "Adah")
        assert (
            session.scalar(select(AttributionMetrics.top_artist).where(AttributionMetrics.request_id == log.id("r3")))
            == "Adah"
        )
        assert set(session.scalars(select(AttributionArtistShare.artist))) == {"Ada", "Adah", "Bob", "Cy"}
    assert chain.verify_chain(fresh_db).ok

    assert _artist_share_rows(fresh_db) == {
        ("Ada", "2024-03-01"): ("2024-03", 2, 1.125, pytest.approx(0.6)),
        ("Bob", "2024-03-01"): ("2024-03", 2, 0.875, pytest.approx(0.6)),
        ("Ada", "2024-03-02"): ("2024-03", 1, 1.0, pytest.approx(0.7)),
        ("Cy", "2024-03-05"): ("2024-03", 1, 1.0, pytest.approx(0.5)),
    }
    updated = _work_updated
    assert _catalogue_rows(fresh_db) == {
        ("museum", "Ada"): (3, 2, 1, 6, max(updated("w1"), updated("w2"), updated("w3"))),
        ("museum", "Bob"): (2, 2, 0, 2, max(updated("w4"), updated("w5"))),
        ("archive", "Cy"): (1, 1, 0, 1, updated("x1")),
    }
    assert artist_shares(audit) == [
        {"artist": "Ada", "attributions": 3, "share_sum": 2.125, "mean_confidence": pytest.approx(0.633333)},
        {"artist": "Cy", "attributions": 1, "share_sum": 1.0, "mean_confidence": 0.5},
        {"artist": "Bob", "attributions": 2, "share_sum": 0.875, "mean_confidence": 0.6},
    ]

    # Merges chain: Ada (and so Adah) into "Ada Lovelace".
    merge_artists(audit, "Ada", "Ada Lovelace")
    assert {r["artist"] for r in _rows(fresh_db, "SELECT artist FROM v_artist_shares")} == {"Ada Lovelace", "Bob", "Cy"}
    assert neighbours_after(fresh_db, log, ("r2", 3)) == ("Adah", "Ada Lovelace")
    assert _catalogue_rows(fresh_db)[("museum", "Ada Lovelace")][:4] == (3, 2, 1, 6)


def test_a_merge_does_not_count_one_request_twice(audit: AuditStore) -> None:
    with Session(audit.engine) as session, session.begin():
        session.add_all([Artist(name="Ada"), Artist(name="A. Da")])
    request = request_row("merged")
    request.neighbours = two_neighbours()
    request.artist_shares = [
        AttributionArtistShare(artist="Ada", share=0.75),
        AttributionArtistShare(artist="A. Da", share=0.25),
    ]
    request.metrics = AttributionMetrics(
        entropy=0.0,
        nn_distance=0.2,
        margin=0.1,
        top_artist="A",
        top_artist_share=1.0,
        confidence=0.8,
        confidence_model="default-v1",
    )
    chain.append(audit.engine, request)
    merge_artists(audit, "A. Da", "Ada")
    rows = artist_shares(audit)
    assert rows == [{"artist": "Ada", "attributions": 1, "share_sum": 1.0, "mean_confidence": 0.8}]


def neighbours_after(engine: Engine, log: KnownLog, key: tuple[str, int]) -> tuple[str, str]:
    for r in _rows(engine, "SELECT * FROM v_attribution_neighbours"):
        if (log.label(r["request_id"]), r["rank"]) == key:
            return r["recorded_artist"], r["artist"]
    raise AssertionError(f"no neighbour {key}")


# -- 2. the read-only role (PostgreSQL) -------------------------------------------------------------------------
@pytest.fixture
def reader(postgres_known: KnownLog, postgres_admin: Engine) -> Iterator[tuple[Engine, str]]:
    """The PostgreSQL known log and a unique role name (role names are cluster-wide; dropped afterwards)."""
    engine, role = postgres_known.engine, f"reader_{uuid.uuid4().hex[:8]}"
    yield engine, role
    with engine.begin() as connection:  # the role's grants live in this database: drop them here
        exists = connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role})
        if exists:
            connection.execute(text(f'DROP OWNED BY "{role}"'))
    if exists:
        with postgres_admin.connect() as connection:
            connection.execute(text(f'DROP ROLE "{role}"'))


def _as_role(engine: Engine, role: str, sql: str) -> list[Any]:
    """Run ``sql`` as ``role`` (SET LOCAL ROLE inside the superuser's transaction, rolled back afterwards)."""
    with engine.connect() as connection:
        connection.execute(text(f'SET LOCAL ROLE "{role}"'))
        try:
            result = connection.execute(text(sql))
            return result.all() if result.returns_rows else []
        finally:
            connection.rollback()


@pytest.mark.postgres
def test_grant_reader_role_reads_the_views_and_nothing_else(
    reader: tuple[Engine, str], cli_on: Callable[[str], Cli]
) -> None:
    engine, role = reader
    cli = cli_on(_url(engine))
    for _ in range(2):  # granting twice is fine
        result = cli("db", "grant-reader", role)
        assert f"role {role} can read the reporting views" in result.stdout

    with engine.connect() as connection:
        login, superuser = connection.execute(
            text("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = :role"), {"role": role}
        ).one()
    assert (login, superuser) == (False, False)

    counts = {
        "v_attributions": 6,
        "v_attribution_neighbours": 10,
        "v_artist_shares": 5,
        "v_low_confidence": 2,
        "v_ann_disagreements": 3,
        "v_catalogue": 4,
    }
    assert set(counts) == set(REPORTING_VIEWS)
    for view, n in counts.items():
        assert _as_role(engine, role, f"SELECT COUNT(*) FROM {view}") == [(n,)], view
    # The views' owner reads the tables for the role: its results match the superuser's.
    assert _as_role(engine, role, "SELECT request_id, overlap_at_k FROM v_attributions ORDER BY seq") == [
        (r["request_id"], r["overlap_at_k"])
        for r in _rows(engine, "SELECT request_id, overlap_at_k FROM v_attributions ORDER BY seq")
    ]

    denied = [
        *(
            f"SELECT * FROM {table}"
            for table in (
                "attribution_requests",
                "attribution_neighbours",
                "attribution_metrics",
                "recall_checks",
                "artists",
                "works",
                "alembic_version",
            )
        ),
        "INSERT INTO artists (name, created_at) VALUES ('Mallory', now())",
        "UPDATE works SET version = 9",
        "DELETE FROM works",
        "TRUNCATE attribution_requests",
        "UPDATE attribution_metrics SET confidence = 1",
        "DELETE FROM attribution_neighbours",
        # v_attribution_neighbours is a simple (automatically updatable) view: only the missing grant stops writes.
        "INSERT INTO v_attribution_neighbours (request_id, rank, catalogue, work_id, recorded_artist, similarity, "
        "distance, share) VALUES ('x', 1, 'c', 'w', 'Mallory', 1, 0, 1)",
        "UPDATE v_attribution_neighbours SET share = 0",
        "DELETE FROM v_attribution_neighbours",
        "DELETE FROM v_attributions",
        "UPDATE v_catalogue SET works = 0",
        "DELETE FROM v_low_confidence",
        "CREATE TABLE mallory (i int)",
    ]
    for sql in denied:
        with pytest.raises(DBAPIError) as caught:
            _as_role(engine, role, sql)
        message = str(caught.value.orig)
        assert "permission denied" in message or "cannot" in message, (sql, message)
        if "v_attributions" not in sql and "v_catalogue" not in sql and "v_low_confidence" not in sql:
            assert "permission denied" in message, (sql, message)
    assert chain.verify_chain(engine).ok


@pytest.mark.postgres
def test_grant_reader_rejects_an_invalid_role_name(postgres_known: KnownLog, cli_on: Callable[[str], Cli]) -> None:
    engine = postgres_known.engine
    cli = cli_on(_url(engine))
    for role in ("Reader", "reader-x", 'x"; DROP TABLE works; --', "1reader", "r" * 64, ""):
        result = cli("db", "grant-reader", role, code=1)
        assert result.stderr.startswith("error: role name") and result.stderr.count("\n") == 1, result.stderr
        with pytest.raises(DatabaseError, match="role name"):
            AuditStore(engine).reports.grant_reader(role)
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}) is None
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT COUNT(*) FROM works")) == len(WORKS)


def test_grant_reader_on_sqlite_is_a_one_line_error(cli: Cli, sqlite_audit: AuditStore) -> None:
    result = cli("db", "grant-reader", "reader", code=1)
    assert result.stderr.startswith("error: read-only roles need PostgreSQL") and result.stderr.count("\n") == 1
    assert result.stdout == ""
    with pytest.raises(DatabaseError, match="PostgreSQL"):
        sqlite_audit.reports.grant_reader("reader")


# -- 3. report commands -------------------------------------------------------------------------------------------
# Production requests only (r4: evaluation, r5: replay), per artist as recorded (no merge yet).
ALL_DAYS = [
    ("Adah", 2, 1.375, 0.5),
    ("Cy", 1, 1.0, 0.5),
    ("Bob", 2, 0.875, 0.6),
    ("Ada", 1, 0.75, 0.9),
]


def _csv(rows: list[tuple[str, int, float, float]]) -> str:
    return "\n".join([CSV_HEADER, *(f"{a},{n},{s},{c}" for a, n, s, c in rows)])


def test_report_artists_csv_json_and_table(known_cli: Cli) -> None:
    cli = known_cli
    csv_out = cli("report", "artists", "--format", "csv").stdout
    assert csv_out == _csv(ALL_DAYS) + "\n"

    listed = json.loads(cli("report", "artists", "--format", "json").stdout)
    assert listed == [{"artist": a, "attributions": n, "share_sum": s, "mean_confidence": c} for a, n, s, c in ALL_DAYS]

    table = cli("report", "artists", "--format", "table").stdout.splitlines()
    assert table[0].split() == CSV_HEADER.split(",")
    assert [line.split() for line in table[1:]] == [[a, str(n), str(s), str(c)] for a, n, s, c in ALL_DAYS]
    assert cli("report", "artists").stdout.splitlines() == table  # table is the default

    bad = cli("report", "artists", "--format", "xml", code=2)
    assert "choose table, csv or json" in bad.output


def test_audit_list_selects_users_attributions_apart_from_evaluation_and_replays(
    known: KnownLog, known_cli: Cli
) -> None:
    """A compliance officer lists the attributions users asked for (production, as the reports count them) apart
    from the requests an evaluation run or a replay made, or those alone; by default, every request as before."""

    def listed(*options: str) -> list[str]:
        printed = known_cli("audit", "list", "--format", "json", *options).stdout
        return [known.label(record["request_id"]) for record in json.loads(printed)]

    assert listed() == listed("--kind", "all") == ["r6", "r5", "r4", "r3", "r2", "r1"]
    assert listed("--kind", "production") == ["r6", "r3", "r2", "r1"]
    assert listed("--kind", "production", "--limit", "2") == ["r6", "r3"]  # the newest 2 of that kind
    assert listed("--kind", "evaluation") == ["r4"]
    assert listed("--kind", "replay") == ["r5"]


def test_report_artists_filters_by_inclusive_utc_days(known_cli: Cli) -> None:
    cli = known_cli

    def report(*period: str) -> str:
        return cli("report", "artists", "--format", "csv", *period).stdout

    assert (
        report("--from", "2024-03-01", "--to", "2024-03-01")
        == _csv([("Bob", 2, 0.875, 0.6), ("Ada", 1, 0.75, 0.9), ("Adah", 1, 0.375, 0.3)]) + "\n"
    )
    # r6 (2024-03-05) is outside; the r4/r5 of 2024-03-02 are not production requests.
    assert report("--from", "2024-03-02", "--to", "2024-03-04") == _csv([("Adah", 1, 1.0, 0.7)]) + "\n"
    assert report("--from", "2024-03-02") == _csv([("Adah", 1, 1.0, 0.7), ("Cy", 1, 1.0, 0.5)]) + "\n"
    assert (
        report("--to", "2024-03-02")
        == _csv([("Adah", 2, 1.375, 0.5), ("Bob", 2, 0.875, 0.6), ("Ada", 1, 0.75, 0.9)]) + "\n"
    )
    empty = ("--from", "2024-03-03", "--to", "2024-03-04")
    assert json.loads(cli("report", "artists", "--format", "json", *empty).stdout) == []
    assert cli("report", "artists", *empty).stdout.split() == [
        "artist",
        "attributions",
        "share_sum",
        "mean_confidence",
        "(no",
        "rows)",
    ]
    bad = cli("report", "artists", "--from", "01/03/2024", code=2)
    assert "--from" in bad.output


def test_report_artists_csv_of_an_empty_period_keeps_its_header(cli: Cli, sqlite_db: Engine) -> None:
    build_known_log(sqlite_db)
    out = cli("report", "artists", "--format", "csv", "--from", "2024-03-03", "--to", "2024-03-04").stdout
    assert out == CSV_HEADER + "\n"


def test_report_summary_counts_and_chain_head(known: KnownLog, known_cli: Cli) -> None:
    data = json.loads(known_cli("report", "summary", "--json").stdout)
    head = chain.verify_chain(known.engine)
    assert data["requests"] == 6
    assert data["production_requests"] == 4  # not r4 (evaluation) nor r5 (replay)
    assert data["verified_requests"] == 5  # r3 through its recall check; r6 never
    assert data["ann_disagreements"] == 3  # r2, r3, r4
    assert data["low_confidence_requests"] == 2  # r2, r4
    assert data["mean_confidence"] == pytest.approx(3.5 / 6, abs=1e-6)
    assert data["first_request"] == "2024-03-01T10:00:00+00:00"  # ISO 8601 in UTC, with the zone
    assert data["last_request"] == "2024-03-05T23:30:00+00:00"
    assert [b["requests"] for b in data["confidence_distribution"]] == [0, 2, 1, 1, 2]
    assert (data["active_works"], data["withdrawn_works"]) == (5, 1)
    assert data["chain"] == {
        "ok": True,
        "records": 6,
        "head_hash": head.head_hash,
        "broken_seq": None,
        "reason": None,
        "verified_in_full_at": None,  # no `audit verify` yet: the whole chain was checked
        "verified_in_full_age_s": None,
        "verified_in_full_records": None,
        "verified_in_full_head_hash": None,
        "checked_now": 6,
    }
    assert head.head_hash == known.requests["r6"].record_hash

    lines = known_cli("report", "summary").stdout.splitlines()
    assert lines[0] == (
        "requests 6 (4 production), exact-checked 5, HNSW/exact disagreements 3, "
        "low confidence (< 0.5, or of one colour) 2"
    )
    assert lines[-1] == f"chain OK: 6 records, head {head.head_hash}"


def test_report_summary_shows_a_broken_chain(cli: Cli, sqlite_db: Engine) -> None:
    log = build_known_log(sqlite_db)
    superuser_edit(sqlite_db, f"UPDATE attribution_metrics SET confidence = 0.99 WHERE request_id = '{log.id('r2')}'")
    data = json.loads(cli("report", "summary", "--json").stdout)
    assert (data["chain"]["ok"], data["chain"]["broken_seq"], data["chain"]["records"]) == (False, 2, 1)
    # not "1 records, head <seq 1's hash>", which read as the whole log's count and head
    assert cli("report", "summary").stdout.splitlines()[-1] == (
        "chain BROKEN at seq 2 (content does not match its record_hash (the record was modified)): 1 records verify "
        "before it; `attribution-audit audit verify` names the record"
    )


def test_report_summary_says_what_it_did_not_read_again_since_the_last_full_verification(
    cli: Cli, sqlite_db: Engine
) -> None:
    """A record changed after `audit verify` is not seen by the summary (it reads only what was appended since): the
    summary must not pass that off as a checked chain."""
    log = build_known_log(sqlite_db)
    cli("audit", "verify")
    superuser_edit(sqlite_db, f"UPDATE attribution_metrics SET confidence = 0.99 WHERE request_id = '{log.id('r2')}'")
    data = json.loads(cli("report", "summary", "--json").stdout)["chain"]
    head = log.requests["r6"].record_hash  # what that verification reached: when, up to which record and hash
    assert (data["verified_in_full_records"], data["verified_in_full_head_hash"], data["checked_now"]) == (6, head, 0)
    lines = cli("report", "summary").stdout.splitlines()
    assert lines[-1].startswith("chain OK: 6 records")
    assert lines[-3].startswith(f"chain verified in full at {data['verified_in_full_at']} (")
    assert lines[-3].endswith(f" s ago) up to seq 6, head {head}; 0 records appended since, checked now")
    assert lines[-2] == (
        "  records 1-6 were not read again: a change since is found only by the next `audit verify` (that "
        "verification is a row of this audit DB: whoever can write the DB can write it)"
    )
    cli("audit", "verify", code=1)  # the next full verification finds it, and the summary then says so
    assert "BROKEN at seq 2" in cli("report", "summary").stdout


def test_report_summary_rechecks_the_head_record_of_the_remembered_verification(cli: Cli, sqlite_db: Engine) -> None:
    """The summary starts from the remembered verification's head only if the log's record there is still intact
    with that hash: a changed head record, or a remembered verification written by hand with a head this log does
    not have, is a broken chain at that seq, not 'chain OK' (the next `audit verify` settles it)."""
    log = build_known_log(sqlite_db)
    cli("audit", "verify")
    forged = {"ok": True, "records": 3, "head_hash": log.requests["r5"].record_hash}  # r5 is seq 5
    with sqlite_db.begin() as connection:
        connection.execute(chain._VERIFICATIONS.insert(), forged)
    said = cli("report", "summary").stdout.splitlines()[-1]
    assert said.startswith("chain BROKEN at seq 3 (its hash is not the head hash the last full verification reached")
    assert said.endswith("2 records verify before it; `attribution-audit audit verify` names the record")
    assert cli("audit", "verify").stdout.startswith("chain OK: 6 records")  # the log itself is whole
    assert cli("report", "summary").stdout.splitlines()[-1].startswith("chain OK: 6 records")

    superuser_edit(sqlite_db, f"UPDATE attribution_metrics SET confidence = 0.99 WHERE request_id = '{log.id('r6')}'")
    said = cli("report", "summary").stdout.splitlines()[-1]
    assert said.startswith("chain BROKEN at seq 6 (content does not match its record_hash (the record was modified))")


@pytest.mark.postgres
def test_report_days_are_utc_whatever_the_server_time_zone(
    postgres_known: KnownLog, cli_on: Callable[[str], Cli], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A session whose TimeZone is not UTC (here libpq's PGTZ; also postgresql.conf or ALTER ROLE ... SET timezone):
    # r6 was made on 2024-03-05 at 23:30 UTC, which is 2024-03-06 00:30 in Paris.
    monkeypatch.setenv("PGTZ", "Europe/Paris")
    cli, day = cli_on(_url(postgres_known.engine)), ("--from", "2024-03-05", "--to", "2024-03-05")
    assert "exported 1 record to" in cli("audit", "export", str(tmp_path / "day.jsonl"), *day).stdout
    listed = json.loads(cli("report", "artists", "--format", "json", *day).stdout)
    assert listed == [{"artist": "Cy", "attributions": 1, "share_sum": 1.0, "mean_confidence": 0.5}]


def test_reports_work_when_the_database_url_contains_a_percent(tmp_path: Path, cli_on: Callable[[str], Cli]) -> None:
    cli = cli_on(f"sqlite:///{tmp_path / '100%' / 'audit.sqlite'}")
    cli("db", "upgrade")
    assert json.loads(cli("report", "summary", "--json").stdout)["requests"] == 0


# -- 4. export and offline verification -------------------------------------------------------------------------
def _read_export(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return lines[0], lines[1:]


def _write_export(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines), encoding="utf-8")


def test_export_verifies_on_its_own(known: KnownLog, known_cli: Cli, offline_cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out" / "audit.jsonl"
    assert known_cli("audit", "export", str(out)).stdout == f"exported 6 records to {out}\n"
    head = chain.verify_chain(known.engine).head_hash
    header, records = _read_export(out)
    assert header["format"] == FORMAT and header["records"] == 6 and (header["from"], header["to"]) == (None, None)
    assert header["chain_head"] == {"seq": 6, "hash": head}
    assert [(r["seq"], r["request_id"], r["record_hash"]) for r in records] == [
        (known.requests[s.label].seq, known.id(s.label), known.requests[s.label].record_hash) for s in SPECS
    ]
    r2 = records[1]["content"]
    assert [n["artist"] for n in r2["neighbours"]] == ["Bob", "Bob", "Adah"]
    assert r2["metrics"]["confidence"] == 0.3 and r2["request"]["replay_of"] is None

    # No database needed: an unreachable URL does not matter to --file.
    verified = offline_cli("audit", "verify", "--file", str(out))
    assert verified.stdout == f"export OK: 6 records (seq 1..6), last hash {head}\n"


def test_export_of_a_period_verifies_on_its_own(
    known: KnownLog, known_cli: Cli, offline_cli: Cli, tmp_path: Path
) -> None:
    out = tmp_path / "day2.jsonl"
    assert (
        "exported 3 records"
        in known_cli("audit", "export", str(out), "--from", "2024-03-02", "--to", "2024-03-02").stdout
    )
    header, records = _read_export(out)
    assert (header["from"], header["to"], header["records"]) == ("2024-03-02", "2024-03-02", 3)
    assert [r["request_id"] for r in records] == [known.id(label) for label in ("r3", "r4", "r5")]
    verified = offline_cli("audit", "verify", "--file", str(out)).stdout
    assert verified == f"export OK: 3 records (seq 3..5), last hash {known.requests['r5'].record_hash}\n"

    tail = tmp_path / "tail.jsonl"
    assert "exported 1 record to" in known_cli("audit", "export", str(tail), "--from", "2024-03-03").stdout
    assert "(seq 6..6)" in offline_cli("audit", "verify", "--file", str(tail)).stdout
    head_part = tmp_path / "head.jsonl"
    assert "exported 2 records" in known_cli("audit", "export", str(head_part), "--to", "2024-03-01").stdout
    assert "(seq 1..2)" in offline_cli("audit", "verify", "--file", str(head_part)).stdout
    none = tmp_path / "none.jsonl"
    assert (
        "exported 0 records"
        in known_cli("audit", "export", str(none), "--from", "2024-03-03", "--to", "2024-03-04").stdout
    )
    assert offline_cli("audit", "verify", "--file", str(none)).stdout == "export OK: 0 records\n"  # no "seq None"


@pytest.fixture(scope="module")
def sqlite_export(sqlite_known: KnownLog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite known log exported once; tests tamper with copies."""
    folder = tmp_path_factory.mktemp("export")
    out = folder / "audit.jsonl"
    Cli(folder / "data", _url(sqlite_known.engine), CliRunner())("audit", "export", str(out))
    return out


@pytest.fixture
def export_copy(sqlite_export: Path, tmp_path: Path) -> Path:
    out = tmp_path / "audit.jsonl"
    shutil.copyfile(sqlite_export, out)
    return out


Lines = tuple[dict[str, Any], list[dict[str, Any]]]


def _edit_content(seq: int, edit: Callable[[dict[str, Any]], None], rehash: bool = False) -> Callable[[Lines], Any]:
    def tamper(lines: Lines) -> list[dict[str, Any]]:
        header, records = lines
        record = records[seq - 1]
        edit(record["content"])
        if rehash:  # a forger who also recomputes the edited record's hash
            record["record_hash"] = hash_content(record["prev_hash"], record["content"])
        return [header, *records]

    return tamper


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(content: dict[str, Any]) -> None:
        target = content
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _drop_seq(seq: int, fix_count: bool) -> Callable[[Lines], Any]:
    def tamper(lines: Lines) -> list[dict[str, Any]]:
        header, records = lines
        kept = [r for r in records if r["seq"] != seq]
        if fix_count:
            header["records"] = len(kept)
        return [header, *kept]

    return tamper


def _swap(lines: Lines) -> list[dict[str, Any]]:
    header, records = lines
    records[2], records[3] = records[3], records[2]
    return [header, *records]


def _count(lines: Lines) -> list[dict[str, Any]]:
    header, records = lines
    header["records"] = 7
    return [header, *records]


def _header_field(name: str, value: Any) -> Callable[[Lines], Any]:
    def tamper(lines: Lines) -> list[dict[str, Any]]:
        header, records = lines
        return [{**header, name: value}, *records]

    return tamper


def _edit_record(index: int, key: str, value: Any) -> Callable[[Lines], Any]:
    def tamper(lines: Lines) -> list[dict[str, Any]]:
        header, records = lines
        records[index] = {**records[index], key: value}
        return [header, *records]

    return tamper


def _and(*tampers: Callable[[Lines], Any]) -> Callable[[Lines], Any]:
    def tamper(lines: Lines) -> list[dict[str, Any]]:
        for each in tampers:
            header, *records = each(lines)
            lines = (header, records)
        return [lines[0], *lines[1]]

    return tamper


def _renumber(lines: Lines) -> list[dict[str, Any]]:
    header, records = lines
    records[1]["seq"] = 9
    return [header, *records]


TAMPERS: dict[str, tuple[Callable[[Lines], Any], str]] = {
    "neighbour similarity": (_edit_content(2, _set(("neighbours", 0, "similarity"), 0.99)), "seq 2 (request"),
    "neighbour artist": (_edit_content(3, _set(("neighbours", 0, "artist"), "Mallory")), "seq 3 (request"),
    "artist share": (_edit_content(1, _set(("artist_shares", 0, "share"), 0.5)), "seq 1 (request"),
    "confidence": (_edit_content(4, _set(("metrics", "confidence"), 0.99)), "seq 4 (request"),
    "created_at": (_edit_content(5, _set(("request", "created_at"), "2024-04-01T00:00:00.000000")), "seq 5 (request"),
    "rehashed middle record": (
        _edit_content(2, _set(("neighbours", 0, "artist"), "Mallory"), rehash=True),
        "seq 3 (request",  # its successor no longer links to it
    ),
    "rehashed last record": (
        _edit_content(6, _set(("neighbours", 0, "artist"), "Mallory"), rehash=True),
        "chain head",
    ),
    "middle line deleted": (_drop_seq(3, fix_count=False), "header announces 6 records, file holds 5"),
    "middle line deleted, count fixed": (_drop_seq(3, fix_count=True), "gap after seq 2"),
    "lines reordered": (_swap, "seq 4 (request"),
    "header count": (_count, "header announces 7 records, file holds 6"),
    # an export of no period holds every record up to the chain head its header names
    "first line deleted, count fixed": (_drop_seq(1, fix_count=True), "has no start but holds seq 2 first, not 1"),
    "last line deleted, count fixed": (_drop_seq(6, fix_count=True), "reaches the export time but ends at seq 5, not"),
    "last line deleted, count fixed, a start named": (
        _and(_drop_seq(6, fix_count=True), _header_field("from", "2024-01-01")),
        "reaches the export time but ends at seq 5, not at its header's chain head, seq 6",
    ),
    "seq as true": (_edit_record(0, "seq", True), "line 2 is not a record"),
    "a record field added": (_edit_record(2, "note", "approved"), "line 4 is not a record"),
    "audit DB named by a number": (_header_field("db_identity", 5), "names an audit DB 5, not its identity"),
    # the header holds only what an export writes
    "header field added": (_header_field("approved_by", "auditor"), "holds a field no export writes (approved_by)"),
    "header count as a real": (_header_field("records", 6.0), "announces 6.0 records, not a whole number"),
    "chain head as text": (_header_field("chain_head", "6"), "names a chain head '6', not its seq and hash"),
    "period bound not a date": (_header_field("from", 5), "names a period 5 to None, not ISO dates"),
    "seq renumbered": (_renumber, "seq differs"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_verify_file_detects_a_tampered_export(
    sqlite_known: KnownLog, export_copy: Path, offline_cli: Cli, name: str
) -> None:
    log, out = sqlite_known, export_copy
    tamper, expected = TAMPERS[name]
    _write_export(out, tamper(_read_export(out)))
    result = offline_cli("audit", "verify", "--file", str(out), code=1)
    assert result.stderr.startswith("export BROKEN: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr, result.stderr
    named = re.match(r"seq (\d+) \(request", expected)
    if named:
        assert log.requests[SPECS[int(named.group(1)) - 1].label].id in result.stderr
    assert result.stdout == ""


def test_verify_file_detects_a_header_field_named_twice(export_copy: Path, offline_cli: Cli) -> None:
    """JSON keeps the last of two values of a key: a second "records" (or any field) added to the header is edited."""
    header, rest = export_copy.read_text(encoding="utf-8").split("\n", 1)
    export_copy.write_text(header.rstrip()[:-1] + ', "records": 6}\n' + rest, encoding="utf-8")
    result = offline_cli("audit", "verify", "--file", str(export_copy), code=1)
    assert result.stderr == "export BROKEN: the header names records twice (edited after the export)\n"


def test_verify_file_detects_a_record_field_named_twice(export_copy: Path, offline_cli: Cli) -> None:
    """A value added before a record's own, under the same key: JSON (and the hash) keep the last, other readers the
    first; the line is refused either way."""
    header, first, rest = export_copy.read_text(encoding="utf-8").split("\n", 2)
    first = first.replace('"similarity":', '"similarity":0.99,"similarity":', 1)
    export_copy.write_text("\n".join([header, first, rest]), encoding="utf-8")
    result = offline_cli("audit", "verify", "--file", str(export_copy), code=1)
    assert result.stderr == "export BROKEN: line 2 names similarity twice in one object (edited after the export)\n"


@pytest.mark.parametrize(
    "content",
    [
        "not json\n",
        "",
        '{"format": "something-else/1"}\n',
    ],
)
def test_verify_file_rejects_what_is_not_an_export(tmp_path: Path, offline_cli: Cli, content: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(content, encoding="utf-8")
    result = offline_cli("audit", "verify", "--file", str(path), code=1)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_verify_file_names_a_missing_export(tmp_path: Path, offline_cli: Cli) -> None:
    """A mistyped path is a path to check, not an export to make again."""
    result = offline_cli("audit", "verify", "--file", str(tmp_path / "missing.jsonl"), code=1)
    assert result.stderr == f"error: {tmp_path / 'missing.jsonl'}: export file not found; check the path\n"


def _without_prev_hash(lines: Lines) -> list[dict[str, Any]]:
    header, records = lines
    del records[1]["prev_hash"], records[1]["content"]["request"]["prev_hash"]
    return [header, *records]


@pytest.mark.parametrize("malformed", ["header is a list", "record is a list", "record without prev_hash"])
def test_verify_file_reports_malformed_lines_in_one_line(export_copy: Path, offline_cli: Cli, malformed: str) -> None:
    out = export_copy
    header, records = _read_export(out)
    if malformed == "header is a list":
        out.write_text("[]\n" + "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif malformed == "record is a list":
        out.write_text(json.dumps(header) + "\n[]\n" + "".join(json.dumps(r) + "\n" for r in records[1:]))
    else:
        _write_export(out, _without_prev_hash((header, records)))
    result = offline_cli("audit", "verify", "--file", str(out), code=1)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.count("\n") == 1 and result.stdout == ""


UNPARSABLE = {  # a record line edited to hold what Python's json cannot read: what it says of line 3 (record seq 2)
    "a 5000-digit seq": (lambda line: line.replace('"seq":2}', '"seq":' + "9" * 5000 + "}"), "for integer string"),
    "values nested 100k deep": (
        lambda line: line.replace('{"content":{', '{"content":{"a":' + "[" * 100_000 + "]" * 100_000 + ",", 1),
        "nested too deeply",
    ),
}


@pytest.mark.parametrize("name", list(UNPARSABLE))
def test_verify_file_reports_a_line_json_cannot_read(
    known_cli: Cli, offline_cli: Cli, tmp_path: Path, name: str
) -> None:
    """An export (of SQLite and of PostgreSQL) whose record line holds an integer longer than Python converts, or
    values nested deeper than its recursion allows: BROKEN at that line, exit 1, no traceback."""
    out = tmp_path / "audit.jsonl"
    known_cli("audit", "export", str(out))
    edit, expected = UNPARSABLE[name]
    lines = out.read_text(encoding="utf-8").split("\n")
    edited = edit(lines[2])
    assert edited != lines[2]
    lines[2] = edited
    out.write_text("\n".join(lines), encoding="utf-8")
    result = offline_cli("audit", "verify", "--file", str(out), code=1)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith("export BROKEN: line 3 is not JSON (") and expected in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_export_refuses_a_broken_chain(cli: Cli, sqlite_db: Engine, tmp_path: Path) -> None:
    log = build_known_log(sqlite_db)
    superuser_edit(
        sqlite_db, f"UPDATE attribution_neighbours SET artist = 'Mallory' WHERE request_id = '{log.id('r3')}'"
    )
    out = tmp_path / "audit.jsonl"
    result = cli("audit", "export", str(out), code=1)
    assert "broken at seq 3" in result.stderr and not out.exists()


@pytest.mark.parametrize("under", ["", "sub"], ids=["in it", "below it"])
def test_export_under_a_file_is_one_line(cli: Cli, sqlite_db: Engine, tmp_path: Path, under: str) -> None:
    """A file where the export's folder (or one above it) should be: one line naming the path, no traceback."""
    build_known_log(sqlite_db)
    (blocker := tmp_path / "a-file").write_text("kept\n", encoding="utf-8")
    out = blocker / under / "audit.jsonl"
    said = cli("audit", "export", str(out), code=1).stderr
    assert said.startswith(f"error: {out}: ") and said.count("\n") == 1 and "choose a" in said
    assert blocker.read_text(encoding="utf-8") == "kept\n"


def test_export_to_a_name_of_any_length_is_written_or_refused_in_one_line(
    cli: Cli, sqlite_db: Engine, tmp_path: Path
) -> None:
    """A name as long as the file system allows (255 bytes) is written (its scratch file's name is shorter); a longer
    one is one line naming it."""
    build_known_log(sqlite_db)
    longest, over = tmp_path / ("a" * 249 + ".jsonl"), tmp_path / ("a" * 250 + ".jsonl")
    wide = tmp_path / ("日" * 80 + ".jsonl")  # 246 bytes in 86 characters
    for out in (longest, wide):
        assert cli("audit", "export", str(out)).stdout == f"exported 6 records to {out}\n"
    said = cli("audit", "export", str(over), code=1).stderr
    assert said == f"error: {over}: cannot write the export (File name too long); choose a writable path\n"


@pytest.mark.parametrize("force", [True, False], ids=["forced", "not forced"])
def test_two_exports_to_one_path_at_once_each_leave_a_whole_export(
    sqlite_db: Engine, tmp_path: Path, force: bool
) -> None:
    """A second export to the same path, started while the first writes, neither removes the first's file nor hands
    it its own unfinished one: the path holds a whole export, no scratch file is left, and the first replaces the
    second's only if forced (else it says the path was written meanwhile)."""
    build_known_log(sqlite_db)
    audit, out = AuditStore(sqlite_db), tmp_path / "exports" / "audit.jsonl"
    second: list[int] = []

    def meanwhile(records: Iterator[Any]) -> Iterator[Any]:
        for number, record in enumerate(records):
            if number == 2:  # half-way through the first: the second runs from start to end
                second.append(export.export_records(audit.requests.chain_records(1), audit.requests.count, out)[0])
            yield record

    def first() -> int:
        chain = meanwhile(audit.requests.chain_records(1))
        return export.export_records(chain, audit.requests.count, out, overwrite=force)[0]

    if force:
        assert first() == 6
    else:
        with pytest.raises(AttributionAuditError, match=r"was written meanwhile \(another export\?\); pass --force"):
            first()
    assert second == [6] and export.verify_export(out).ok and [p.name for p in out.parent.iterdir()] == [out.name]


def test_export_removes_the_scratch_files_of_exports_killed_before_it(sqlite_db: Engine, tmp_path: Path) -> None:
    """A scratch file that no export writes (its process killed) is removed by the next export to that path; one
    locked by its writer, or made in the last minute, is left, as is a file of another name."""
    build_known_log(sqlite_db)
    audit, out = AuditStore(sqlite_db), tmp_path / "exports" / "audit.jsonl"
    out.parent.mkdir()
    abandoned, written, young = (out.with_name(f"{out.name}.{pid}.0123abcd.tmp") for pid in (7, 8, 9))
    other = out.with_name(f"{out.name}.backup.tmp")  # not a name an export gives
    for path in (abandoned, written, young, other):
        path.write_text("a part of an export\n", encoding="utf-8")
        if path is not young:
            os.utime(path, (time_module.time() - 3600,) * 2)
    with written.open("rb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # as the export writing it holds it
        export.export_records(audit.requests.chain_records(1), audit.requests.count, out)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in (out, written, young, other))


# -- 5. the per-request page ------------------------------------------------------------------------------------
def test_request_page_shows_the_record_and_flags_a_modified_one(
    fresh_db: Engine, cli_on: Callable[[str], Cli], tmp_path: Path
) -> None:
    log = build_known_log(fresh_db)
    cli = cli_on(_url(fresh_db))
    request = log.requests["r2"]
    page = tmp_path / "r2.html"
    assert cli("report", "request", request.id, "--html", str(page)).stdout == f"wrote {page}\n"
    html = page.read_text(encoding="utf-8")
    for expected in (request.id, request.record_hash, request.prev_hash, "w4", "w5", "w3", "0.625000", "0.375000"):
        assert expected in html
    assert "intact: the stored hash matches the record" in html and "MODIFIED" not in html
    top = request.metrics.top_artist
    assert f"<strong>Top artist: {top}</strong> (top rule share), share {request.metrics.top_artist_share:.4f}" in html
    assert html.count('<div class="missing">image not available</div>') == 4  # r2's image and 3 works: no files

    superuser_edit(
        fresh_db, f"UPDATE attribution_neighbours SET similarity = 0.1 WHERE request_id = '{request.id}' AND rank = 1"
    )
    cli("report", "request", request.id, "--html", str(page))
    html = page.read_text(encoding="utf-8")
    assert "MODIFIED: the record does not match its stored hash" in html and "intact:" not in html
    # The other records are untouched.
    cli("report", "request", log.id("r1"), "--html", str(page))
    assert "intact:" in page.read_text(encoding="utf-8")


def test_request_page_escapes_recorded_names(cli: Cli, sqlite_db: Engine, tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>"
    request = single_request(
        hostile, "<i>w</i>", requester="<b>mallory</b>", image_path="/gen/<img src=x onerror=alert(1)>.png"
    )
    chain.append(sqlite_db, request)
    page = tmp_path / "p.html"
    cli("report", "request", request.id, "--html", str(page))
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html and "<b>mallory" not in html and "<i>w</i>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_request_page_lists_every_recorded_indicator_and_names_what_scored_a_low_confidence(
    cli: Cli, sqlite_db: Engine, tmp_path: Path
) -> None:
    """The page left out the agreements and the other learned spaces' centroid log-odds, and blamed a low confidence
    from a calibrated model on far or disagreeing works."""
    calibrated = single_request("Ada", "w1")
    calibrated.metrics.confidence = 0.48
    calibrated.metrics.confidence_model = "logistic-v3"
    for name, value in (
        ("agreement", 0.625),
        ("agreement_spaces", 0.75),
        ("centroid_log_odds", 1.5),
        ("centroid_log_odds_others", -0.25),
        ("crop_log_odds", 0.75),
        ("other_space_versions", "fontboth:3,fontstyle:2"),
        ("confidence_model_sha256", "ab" * 32),
    ):
        setattr(calibrated.metrics, name, value)
    formula = single_request("Ada", "w1")  # confidence 0.5, default-v1, none of the later indicators
    formula.metrics.confidence = 0.2
    for request in (calibrated, formula):
        chain.append(sqlite_db, request)
    page = tmp_path / "p.html"
    cli("report", "request", calibrated.id, "--html", str(page))
    html = page.read_text(encoding="utf-8")
    indicators = html[html.index("<h2>Indicators</h2>") : html.index("<h2>Parameters")]
    for label, value in (
        ("agreement between base spaces", "0.625"),
        ("agreement of spaces", "0.750"),
        ("centroid log-odds (this learned space)", "1.500"),
        ("centroid log-odds (mean over the other learned spaces)", "-0.250"),
        ("crop log-odds (mean over the four corner crops, this learned space)", "0.750"),
        ("other learned spaces these read (name:version)", "fontboth:3,fontstyle:2"),
        ("fingerprint of the confidence model (sha256)", "ab" * 32),
    ):
        assert re.search(rf"<th>{re.escape(label)}[^<]*</th><td>{re.escape(value)}</td>", indicators), label
    assert "<strong>Low confidence (0.480 &lt; 0.5)</strong>: the calibrated model logistic-v3 gives it" in html
    assert "far or disagree" not in html
    cli("report", "request", formula.id, "--html", str(page))
    html = page.read_text(encoding="utf-8")
    assert html.count("<td>none recorded</td>") == 6  # the same rows, said absent
    assert "<th>fingerprint of the confidence model (sha256)</th><td>none (a formula)</td>" in html
    assert "<strong>Low confidence (0.200 &lt; 0.5)</strong>: the default formula gives it: the nearest works" in html


def test_report_request_errors(cli: Cli, sqlite_db: Engine, tmp_path: Path) -> None:
    log = build_known_log(sqlite_db)
    missing = cli("report", "request", "nopenope", "--html", str(tmp_path / "x.html"), code=1)
    assert "no attribution request 'nopenope'" in missing.stderr and missing.stderr.count("\n") == 1
    short = cli("report", "request", "nope", "--html", str(tmp_path / "x.html"), code=2)  # a refused input
    assert "'nope' is too short to name a request" in short.stderr and short.stderr.count("\n") == 1
    usage = cli("report", "request", log.id("r1"), code=2)
    assert "--html" in usage.output


# The real pipeline: demo catalogue, efficientnet-lite0, embedded Qdrant Edge, SQLite.
EMBEDDER = ["--embedder", "efficientnet-lite0"]
URL_ATTRIBUTE = re.compile(r"""\s(?:src|href|srcset|action|data|poster)\s*=\s*["']?([^"'\s>]*)""", re.IGNORECASE)


@dataclass(frozen=True)
class Pipeline:
    cli: Cli
    record: dict[str, Any]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, embedder: Embedder) -> Pipeline:
    """A small demo catalogue (6 artists x 2 works: the page needs only K = 5 of them) ingested and one query
    attributed, once per module; the session's model is reused."""
    root = tmp_path_factory.mktemp("pipeline")
    demo_catalogue = make_demo_catalogue(root / "demo", works_per_artist=2)
    shutil.copyfile(sqlite_template, root / "audit.sqlite")
    cli = Cli(root / "data", f"sqlite:///{root / 'audit.sqlite'}", CliRunner())
    cli("ingest", str(demo_catalogue.manifest), *EMBEDDER)
    out = cli("attribute", str(demo_catalogue.queries[0].path), "--k", "5", "--json", *EMBEDDER).stdout
    return Pipeline(cli, json.loads(out)[0])


def _chromium() -> str:
    browser = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium (Debian package chromium) is required in CI")
        pytest.skip("Chromium is not installed")
    return browser


def _html_page(pipeline: Pipeline, out: Path) -> str:
    pipeline.cli("report", "request", pipeline.record["request_id"], "--html", str(out))
    return out.read_text(encoding="utf-8")


@pytest.mark.slow
def test_request_page_is_self_contained(pipeline: Pipeline, tmp_path: Path) -> None:
    html = _html_page(pipeline, tmp_path / "page.html")
    urls = URL_ATTRIBUTE.findall(html)
    assert urls and all(u.startswith("data:image/jpeg;base64,") for u in urls), [u[:40] for u in urls]
    assert len(urls) == 1 + len(pipeline.record["neighbours"])  # the generated image and every work, inlined
    assert not re.search(r"(?:https?|file|ftp)://", html, re.IGNORECASE)
    assert not re.search(r"<script|<link|<iframe|<object|<embed|@import|url\(", html, re.IGNORECASE)
    assert "image not available" not in html


@pytest.mark.slow
def test_request_page_renders_in_chromium(pipeline: Pipeline, tmp_path: Path) -> None:
    browser = _chromium()
    page = tmp_path / "page.html"
    _html_page(pipeline, page)
    flags = [flag for flag in CHROMIUM_FLAGS if flag != "--no-pdf-header-footer"]
    rendered = subprocess.run(
        [browser, *flags, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=600 * float(os.environ.get("ATTRIBUTION_AUDIT_TEST_TIMEOUT_FACTOR", "1")),
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    dom = rendered.stdout
    record = pipeline.record
    assert record["request_id"] in dom and record["record_hash"] in dom
    assert "intact: the stored hash matches the record" in dom and "MODIFIED" not in dom
    for neighbour in record["neighbours"]:
        assert neighbour["work_id"] in dom and neighbour["artist"] in dom
        assert f"{neighbour['share']:.6f}" in dom and f"{neighbour['similarity']:.4f}" in dom
    for artist, share in record["artist_shares"].items():
        assert f"<td>{artist}</td><td>{share:.6f}</td>" in dom
    assert dom.count('src="data:image/jpeg;base64,') == 1 + len(record["neighbours"])


@pytest.mark.slow
def test_request_pdf(pipeline: Pipeline, tmp_path: Path) -> None:
    _chromium()
    out = tmp_path / "pdf" / "request.pdf"
    result = pipeline.cli("report", "request", pipeline.record["request_id"], "--pdf", str(out))
    assert f"wrote {out}" in result.stdout
    data = out.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 10_000


def test_summary_of_a_log_with_a_confidence_changed_to_text_says_where_the_chain_breaks(
    cli: Cli, sqlite_db: Engine
) -> None:
    log = build_known_log(sqlite_db)
    superuser_edit(sqlite_db, f"UPDATE attribution_metrics SET confidence = 'high' WHERE request_id = '{log.id('r2')}'")
    cli("audit", "verify", code=1)
    assert "BROKEN at seq 2" in cli("report", "summary").stdout  # SQLite keeps the text in a float column
