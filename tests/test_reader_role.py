"""A LOGIN user in a role made by `db grant-reader` reads, shows, verifies, exports and reports the audit log through
the views it was granted, and nothing else: it cannot read the tables (nor the query vectors) or write anything,
and every refusal is a one-line permissions error, never an outage. PostgreSQL only: SQLite has no roles."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Cli
from dbtools import complete_request, request_row, superuser_edit
from PIL import Image
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from test_fresh_reads import _calibrate, _fit

from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import DatabaseError
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import create_db_engine, upgrade
from attribution_audit.store.models import (
    Artist,
    AttributionArtistShare,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
    Catalogue,
    Work,
    WorkVersion,
)
from attribution_audit.store.reports import READER_VIEWS, REPORTING_VIEWS

ROOT = Path(__file__).resolve().parents[1]
EMBEDDER = "efficientnet-lite0"
DAY = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
# Audit view -> the table it mirrors (its binary columns as <name>_sha256).
MIRRORS = {
    "v_audit_requests": "attribution_requests",
    "v_audit_neighbours": "attribution_neighbours",
    "v_audit_artist_shares": "attribution_artist_shares",
    "v_audit_metrics": "attribution_metrics",
}


# -- databases and roles ---------------------------------------------------------------------------------------
@dataclass
class Cluster:
    """Test databases and roles on the PostgreSQL server, all dropped after the test (databases first: their grants
    go with them, so the roles can then be dropped)."""

    admin: Engine
    databases: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)

    def database(self, template: str | None = None) -> str:
        """A new database (a copy of ``template``); its URL, connecting as the superuser that owns it."""
        name = f"aa_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        self.databases.append(name)
        return self.admin.url.set(database=name).render_as_string(hide_password=False)

    def engine(self, url: str) -> Engine:
        engine = create_db_engine(url)
        self.engines.append(engine)
        return engine

    def role(self, prefix: str) -> str:
        """A unique role name (roles are cluster-wide), dropped after the test."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.roles.append(name)
        return name

    def login(self, url: str, *, in_role: str | None) -> str:
        """A new LOGIN user (trust authentication: no password), member of ``in_role``; ``url`` as that user."""
        user = self.role("alice")
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE ROLE "{user}" LOGIN' + (f' IN ROLE "{in_role}"' if in_role else "")))
        return make_url(url).set(username=user).render_as_string(hide_password=False)

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()
        with self.admin.connect() as connection:
            for name in self.databases:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for role in reversed(self.roles):
                connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :role"),
                    {"role": role},
                )
                connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


@pytest.fixture
def cluster(postgres_admin: Engine) -> Iterator[Cluster]:
    cluster = Cluster(postgres_admin)
    try:
        yield cluster
    finally:
        cluster.close()


@dataclass
class ReaderLog:
    """A log written by the owner, and the CLI as the owner and as a LOGIN user in a `db grant-reader` role."""

    owner: Engine
    requests: list[AttributionRequest]
    owner_cli: Cli
    reader_cli: Cli
    reader_url: str
    role: str


def build_log(engine: Engine, images: Path) -> list[AttributionRequest]:
    """A catalogue (one work with two image versions, artists whose order may differ between Python and the
    server's collation; the images written to ``images``) and four chained requests: a style vector, a -0.0, a
    replay, requests on three UTC days."""
    for name in ("w1-v1", "w1-v2", "w2"):
        Image.new("RGB", (16, 16), (len(name) * 20, 90, 160)).save(images / f"{name}.png")
    sha = {path.stem: hashlib.sha256(path.read_bytes()).hexdigest() for path in images.glob("*.png")}
    with Session(engine) as session:
        museum = Catalogue(name="museum")
        artists = {name: Artist(name=name) for name in ("Zoe", "émile")}
        works = {
            work_id: Work(
                catalogue=museum,
                work_id=work_id,
                artist=artists[artist],
                image_path=f"{images}/{image}.png",
                image_sha256=sha[image],
                version=version,
            )
            for work_id, artist, image, version in (("w1", "Zoe", "w1-v2", 2), ("w2", "émile", "w2", 1))
        }
        session.add_all(works.values())
        session.flush()
        for version in (1, 2):
            session.add(
                WorkVersion(
                    work_pk=works["w1"].id,
                    version=version,
                    image_path=f"{images}/w1-v{version}.png",
                    image_sha256=sha[f"w1-v{version}"],
                )
            )
        session.commit()
        pks = {work_id: work.id for work_id, work in works.items()}

    def request(label: str, neighbours: list[tuple[str, str, int, float, float]], **fields: Any) -> AttributionRequest:
        row = request_row(label, image_path=f"/generated/{label}.png", k=len(neighbours), **fields)
        row.neighbours = [
            AttributionNeighbour(
                rank=rank,
                work_pk=pks[work_id],
                catalogue="museum",
                work_id=work_id,
                work_version=version,
                artist=artist,
                canonical_artist=artist,
                similarity=similarity,
                distance=1 - similarity,
                share=share,
            )
            for rank, (work_id, artist, version, similarity, share) in enumerate(neighbours, start=1)
        ]
        shares: dict[str, float] = {}
        for _, artist, _, _, share in neighbours:
            shares[artist] = shares.get(artist, 0.0) + share
        row.artist_shares = [AttributionArtistShare(artist=a, share=s) for a, s in shares.items()]
        top = max(shares, key=lambda a: shares[a])
        row.metrics = AttributionMetrics(
            entropy=0.5 if len(shares) > 1 else 0.0,
            nn_distance=1 - neighbours[0][3],
            margin=-0.0 if len(shares) > 1 else 0.2,
            top_artist=top,
            top_artist_share=shares[top],
            overlap_at_k={"r2": 0.5, "r3": None}.get(label, 1.0),
            exact_method="brute" if label != "r3" else None,
            confidence=0.3 if label == "r2" else 0.8,
            confidence_model="default-v1",
        )
        return row

    style = np.linspace(-1, 1, 8, dtype="<f4").tobytes()
    specs = [
        ("r1", [("w1", "Zoe", 1, 0.9, 0.5), ("w2", "émile", 1, 0.85, 0.5)], {"style_vector": style}, DAY),
        ("r2", [("w2", "émile", 1, 0.7, 1.0)], {}, DAY + timedelta(days=1)),
        ("r3", [("w1", "Zoe", 2, 0.95, 1.0)], {}, DAY + timedelta(days=1, hours=2)),
    ]
    requests = [chain.append(engine, request(label, n, **fields), at=moment) for label, n, fields, moment in specs]
    replay = request("r4", [("w1", "Zoe", 2, 0.9, 1.0)], replay_of=requests[0].id)
    requests.append(chain.append(engine, replay, at=DAY + timedelta(days=2)))
    return requests


@pytest.fixture
def reader_log(
    cluster: Cluster, postgres_template: str, cli_on: Callable[[str], Cli], embedder: Embedder, tmp_path: Path
) -> ReaderLog:
    url = cluster.database(template=postgres_template)
    owner = cluster.engine(url)
    requests = build_log(owner, tmp_path)
    owner_cli, role = cli_on(url), cluster.role("analysts")
    assert f"role {role} can read the reporting views" in owner_cli("db", "grant-reader", role).stdout
    reader_url = cluster.login(url, in_role=role)
    return ReaderLog(owner, requests, owner_cli, cli_on(reader_url), reader_url, role)


def _permission_error(result: Any) -> str:
    """The CLI's stderr, checked to be the one-line permissions error."""
    stderr = str(result.stderr)
    assert stderr.startswith("error: permission denied: ") and stderr.count("\n") == 1, stderr
    assert "permissions problem, not an outage" in stderr and "cannot reach" not in stderr, stderr
    return stderr


def _not_recorded(stderr: str) -> str:
    """A reader's ``audit verify`` stderr without what only a reader's says, checked: its last line, that the
    verification is not recorded."""
    *lines, warning = stderr.splitlines(keepends=True)
    assert warning.startswith("warning: this verification is not recorded") and "may only read" in warning, stderr
    return "".join(lines)


# -- reading -----------------------------------------------------------------------------------------------------
@pytest.mark.postgres
def test_the_reader_lists_shows_verifies_and_reports_what_the_owner_does(reader_log: ReaderLog, tmp_path: Path) -> None:
    owner, reader = reader_log.owner_cli, reader_log.reader_cli
    ids = [r.id for r in reader_log.requests]

    assert reader("db", "current").stdout == owner("db", "current").stdout
    listed = reader("audit", "list").stdout
    assert listed == owner("audit", "list").stdout
    assert [line.split()[0] for line in listed.splitlines()[1:]] == ids[::-1]
    assert json.loads(reader("audit", "list", "--json").stdout) == json.loads(owner("audit", "list", "--json").stdout)
    for request_id in ids:
        shown = reader("audit", "show", request_id).stdout
        assert shown == owner("audit", "show", request_id).stdout and request_id in shown
        as_json = json.loads(reader("audit", "show", request_id, "--json").stdout)
        assert as_json == json.loads(owner("audit", "show", request_id, "--json").stdout)
    first = json.loads(reader("audit", "show", ids[0], "--json").stdout)
    assert list(first["artist_shares"]) == ["Zoe", "émile"] and first["neighbours"][0]["work_id"] == "w1"

    verified = reader("audit", "verify")
    assert verified.stdout.splitlines()[0] == f"chain OK: 4 records, head {reader_log.requests[-1].record_hash}"
    # no record names a stored model nor a learned space: the reader checks that through the views, as the owner
    assert "spaces OK: no record names a learned space version (nothing to compare)\n" in verified.stdout
    assert verified.stdout == owner("audit", "verify").stdout
    as_json = json.loads(reader("audit", "verify", "--format", "json").stdout)
    assert as_json["ok"] is True and as_json["spaces"] == {"ok": True, "problems": [], "unchecked": None, "checked": 0}
    checkpoint = tmp_path / "checkpoint.json"
    owner("audit", "checkpoint", "--out", str(checkpoint))  # the reader checks the owner's signed head
    assert "checkpoint seq 4 of" in reader("audit", "verify", "--checkpoint", str(checkpoint)).stdout

    csv = reader("report", "artists", "--format", "csv").stdout
    assert csv == owner("report", "artists", "--format", "csv").stdout
    assert csv.splitlines()[0] == "artist,attributions,share_sum,mean_confidence"
    assert {line.split(",")[0] for line in csv.splitlines()[1:]} == {"Zoe", "émile"}  # r4, a replay, not counted

    summary = json.loads(reader("report", "summary", "--json").stdout)
    owned = json.loads(owner("report", "summary", "--json").stdout)
    basis = {"checked_now"} | {f"verified_in_full_{k}" for k in ("at", "age_s", "records", "head_hash")}
    # (a reader cannot read remembered checks; no record names a learned space, so its spaces check is the owner's)
    assert {**summary, "chain": {k: v for k, v in summary["chain"].items() if k not in basis}} == {
        **owned,
        "chain": {k: v for k, v in owned["chain"].items() if k not in basis},
    }
    assert summary["spaces"] == {"ok": True, "problems": [], "unchecked": None, "checked": 0}
    assert (
        "spaces OK: no record names a learned space version (nothing to compare)" in reader("report", "summary").stdout
    )
    assert (summary["requests"], summary["production_requests"], summary["low_confidence_requests"]) == (4, 3, 1)
    assert summary["chain"]["ok"] and summary["chain"]["records"] == 4
    assert "chain OK: 4 records" in reader("report", "summary").stdout

    # The page of a request names the image of the work version each neighbour was attributed as.
    reader("report", "request", ids[0], "--html", str(tmp_path / "reader.html"))
    owner("report", "request", ids[0], "--html", str(tmp_path / "owner.html"))
    page = (tmp_path / "reader.html").read_text(encoding="utf-8")
    assert page == (tmp_path / "owner.html").read_text(encoding="utf-8")
    assert 'alt="w1-v1.png"' in page and 'alt="w2.png"' in page and "intact: the stored hash matches" in page

    reader("audit", "export", str(tmp_path / "reader.jsonl"))
    owner("audit", "export", str(tmp_path / "owner.jsonl"))
    exports = [(tmp_path / f"{who}.jsonl").read_text(encoding="utf-8").splitlines() for who in ("reader", "owner")]
    for export in exports:
        del (header := json.loads(export[0]))["exported_at"]
        export[0] = header
    assert exports[0] == exports[1] and len(exports[0]) == 5
    assert "export OK: 4 records" in reader("audit", "verify", "--file", str(tmp_path / "reader.jsonl")).stdout


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("statement", "seq"),
    [
        ("UPDATE attribution_requests SET requester = 'mallory' WHERE seq = 2", 2),
        # The vectors the reader cannot read are still covered: through their digests.
        ("UPDATE attribution_requests SET style_vector = query_vector WHERE seq = 1", 1),
        ("UPDATE attribution_requests SET query_vector = decode('0000803f', 'hex') WHERE seq = 3", 3),
        ("UPDATE attribution_neighbours SET work_pk = NULL WHERE rank = 2", 1),
        ("UPDATE attribution_artist_shares SET share = 0.4 WHERE artist = 'émile' AND share = 1", 2),
        ("UPDATE attribution_metrics SET margin = 0.1 WHERE margin = 0", 1),
    ],
)
def test_the_reader_detects_what_the_owner_detects(reader_log: ReaderLog, statement: str, seq: int) -> None:
    superuser_edit(reader_log.owner, statement)
    broken = _not_recorded(reader_log.reader_cli("audit", "verify", code=1).stderr)
    assert broken.startswith(f"chain BROKEN at seq {seq} ") and "record was modified" in broken, broken
    assert broken == reader_log.owner_cli("audit", "verify", code=1).stderr
    summary = json.loads(reader_log.reader_cli("report", "summary", "--json").stdout)
    assert summary["chain"]["ok"] is False and summary["chain"]["broken_seq"] == seq


@pytest.mark.postgres
def test_the_reader_detects_a_changed_view_or_trigger_as_the_owner_does(reader_log: ReaderLog) -> None:
    """The comparison with the migrations is built in the reader's temporary schema: it needs no other right."""
    assert "schema OK" in reader_log.reader_cli("audit", "verify").stdout
    with reader_log.owner.begin() as connection:
        # Shows the same rows, yet is not what the migrations create: it could show a kept copy instead.
        connection.execute(
            text(
                "CREATE OR REPLACE VIEW v_audit_artist_shares AS "
                "SELECT request_id, artist, share FROM attribution_artist_shares WHERE share >= 0"
            )
        )
        connection.execute(text("DROP TRIGGER work_versions_no_truncate ON work_versions"))
    failed = _not_recorded(reader_log.reader_cli("audit", "verify", code=1).stderr)
    assert failed == reader_log.owner_cli("audit", "verify", code=1).stderr
    assert "view v_audit_artist_shares differs" in failed and "trigger work_versions_no_truncate is missing" in failed
    assert "`db repair` needs the user that owns the schema" in _permission_error(
        reader_log.reader_cli("db", "repair", code=1)
    )
    assert len(reader_log.owner_cli("db", "repair").stdout.splitlines()) == 2
    assert "schema OK" in reader_log.reader_cli("audit", "verify").stdout  # the readers' grants kept


@pytest.mark.postgres
def test_a_reader_that_may_not_create_temporary_tables_is_told_so(reader_log: ReaderLog) -> None:
    """Fail closed: views and triggers that cannot be compared are not reported as intact."""
    with reader_log.owner.begin() as connection:
        connection.execute(text(f'REVOKE TEMPORARY ON DATABASE "{reader_log.owner.url.database}" FROM PUBLIC'))
    failed = _not_recorded(reader_log.reader_cli("audit", "verify", code=1).stderr)
    assert failed.startswith("schema FAILS: the views and triggers cannot be checked: this database user may not ")
    assert "GRANT TEMPORARY ON DATABASE" in failed and failed.count("\n") == 1, failed
    data = json.loads(reader_log.reader_cli("audit", "verify", "--format", "json", code=1).stdout)
    assert data["records"] == 4 and data["schema"]["ok"] is False and data["schema"]["unchecked"]
    assert "schema OK" in reader_log.owner_cli("audit", "verify").stdout  # the owner, a superuser, still may


@pytest.mark.postgres
def test_the_reader_library_api_reads_through_the_views(reader_log: ReaderLog) -> None:
    audit = AuditStore.open(reader_log.reader_url)
    try:
        report = audit.requests.verify_chain()
        assert report.ok and report.checked == 4 and report.head_hash == reader_log.requests[-1].record_hash
        assert [r.request_id for r in audit.requests.latest(2)] == [r.id for r in reader_log.requests[:1:-1]]
        assert all(audit.requests.intact(r.id) for r in reader_log.requests)
        images = audit.requests.neighbour_images(reader_log.requests[0].id)
        assert {rank: Path(path).name for rank, (path, _) in images.items()} == {1: "w1-v1.png", 2: "w2.png"}
        with pytest.raises(DatabaseError, match=r"^permission denied: .*permission denied for table attribution_req"):
            audit.requests.get_with_vectors(reader_log.requests[0].id)  # replays need the owner
    finally:
        audit.close()


# -- what the reader cannot do -----------------------------------------------------------------------------------
@pytest.mark.postgres
def test_the_reader_can_write_nothing_and_is_told_it_is_a_permissions_problem(
    reader_log: ReaderLog, tmp_path: Path
) -> None:
    reader = reader_log.reader_cli
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "work.png")
    (tmp_path / "catalogue.csv").write_text("path,artist,work_id\nwork.png,Mallory,m1\n", encoding="utf-8")

    stderr = _permission_error(reader("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER, code=1))
    assert "permission denied for table" in stderr and "db grant-reader ROLE" in stderr
    assert "need a user granted a role made by `attribution-audit db grant-writer ROLE`" in stderr
    assert make_url(reader_log.reader_url).username in stderr
    _permission_error(reader("artists", "merge", "Zoe", "émile", code=1))
    listed = _permission_error(reader("spaces", "list", code=1))  # reads a table, writes nothing: said so
    assert "(permission denied for table learned_spaces)" in listed
    assert "or read more than the reporting and audit views (spaces list, evaluate list, ...) need" in listed
    _permission_error(reader("audit", "verify-recall", code=1))
    assert "`db upgrade` needs the user that owns the schema" in _permission_error(reader("db", "upgrade", code=1))
    stderr = _permission_error(reader("db", "grant-reader", f"{reader_log.role}_more", code=1))
    assert "CREATEROLE" in stderr

    with reader_log.owner.connect() as connection:
        assert connection.scalar(text("SELECT COUNT(*) FROM ingestion_runs")) == 0
        assert connection.scalar(text("SELECT COUNT(*) FROM artists WHERE canonical_id IS NOT NULL")) == 0
        assert connection.scalar(text("SELECT COUNT(*) FROM recall_checks")) == 0
        assert connection.scalar(text("SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE :r"), {"r": "%_more"}) == 0
    assert chain.verify_chain(reader_log.owner).ok


@pytest.mark.postgres
def test_the_readers_verification_is_not_recorded_and_it_is_told_so(reader_log: ReaderLog, tmp_path: Path) -> None:
    """A reader verifies and exports (reads), but may not record the verification for report summary: the verdict
    and exit code, and one line that it was not recorded, why (this user may only read) and what to do (a writer)."""
    reader, owner = reader_log.reader_cli, reader_log.owner_cli
    user = make_url(reader_log.reader_url).username

    def recorded() -> int:
        with reader_log.owner.connect() as connection:
            return int(connection.scalar(text("SELECT COUNT(*) FROM chain_verifications")))

    verified = reader("audit", "verify")
    assert verified.stdout.startswith("chain OK: 4 records")
    assert _not_recorded(verified.stderr) == ""
    warning = verified.stderr.splitlines()[-1]
    assert warning.startswith("warning: this verification is not recorded for report summary: ")
    assert f"database user {user!r} may only read the audit database" in warning
    assert "a user granted a role made by `attribution-audit db grant-writer ROLE`" in warning
    assert "may only read" in json.loads(reader("audit", "verify", "--format", "json").stdout)["not_recorded"]
    (warning,) = reader("audit", "export", str(tmp_path / "reader.jsonl")).stderr.splitlines()
    assert warning.startswith("warning: this verification is not recorded") and "may only read" in warning
    assert recorded() == 0
    assert "a `db grant-reader` role neither records nor reads them" in reader("report", "summary").stdout
    assert owner("audit", "verify").stderr == "" and recorded() == 1


@pytest.mark.postgres
def test_the_readers_models_and_spaces_checks_say_unchecked_not_ok(reader_log: ReaderLog) -> None:
    """A reader sees the fingerprints and the learned space versions the records hold (the views) but may not read
    the stored models nor the versions: where records name some, its checks say they were not made and who can make
    them, never OK; the owner's say OK and how many were compared. One also granted the models' table, not the
    records', is told their parameters were not compared (not a crash)."""
    reader, owner = reader_log.reader_cli, reader_log.owner_cli
    assert "models OK: no record was scored by a stored confidence model" in reader("audit", "verify").stdout
    audit = AuditStore(reader_log.owner)
    name = _calibrate(audit, "fp", 10)
    _fit(audit, "s", 1)
    request = complete_request("scored")
    assert request.metrics is not None
    request.metrics.confidence_model = name
    request.metrics.confidence_model_sha256 = audit.evaluations.calibration(name).fingerprint()
    chain.append(reader_log.owner, request)
    in_space = complete_request("in space")
    in_space.parameters = {**in_space.parameters, "space": "s", "space_version": 1}
    chain.append(reader_log.owner, in_space)
    verified = reader("audit", "verify")
    assert "models OK" not in verified.stdout and verified.stdout.startswith("chain OK: 6 records")
    line, spaces = _not_recorded(verified.stderr).splitlines()
    assert spaces.startswith("spaces UNCHECKED: the learned space versions the records name are not checked: this ")
    assert "may only read the audit views; a writer's `audit verify` checks them" in spaces
    assert "spaces OK" not in verified.stdout
    assert json.loads(reader("audit", "verify", "--json").stdout)["spaces"]["ok"] is None
    assert line.startswith("models UNCHECKED: this database user may not read the stored confidence models (")
    assert "1 model(s) that records name were not compared" in line and "`db grant-writer` role can run" in line
    models = json.loads(reader("audit", "verify", "--format", "json").stdout)["models"]
    assert models["ok"] is None and models["problems"] == [] and models["unchecked"] == line.split(": ", 1)[1]
    owned = owner("audit", "verify").stdout
    assert "models OK: the 1 stored confidence model(s) that scored records match the fingerprint and the " in owned
    assert "spaces OK: the 1 learned space version(s) that records name are stored unchanged\n" in owned
    assert line in reader("report", "summary").stdout
    with reader_log.owner.begin() as connection:  # a user that may read the models' table but not the records'
        connection.execute(text(f'GRANT SELECT ON calibration_models TO "{reader_log.role}"'))
    line = _not_recorded(reader("audit", "verify").stderr).splitlines()[0]
    assert line.startswith("models UNCHECKED: the parameters the stored models score cannot be compared with their ")
    assert "permission denied" in line and line.count("\n") == 0


def _as_user(url: str, sql: str, date_style: str = "ISO") -> list[Any]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SET TIME ZONE 'UTC'"))
            connection.execute(text(f"SET DateStyle = '{date_style}'"))
            result = connection.execute(text(sql))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_reader_reads_only_the_views_and_never_the_vectors(reader_log: ReaderLog) -> None:
    url = reader_log.reader_url
    denied = [
        *(
            f"SELECT * FROM {table}"
            for table in (*MIRRORS.values(), "alembic_version", "works", "work_versions", "recall_checks")
        ),
        "SELECT query_vector FROM attribution_requests",
        "INSERT INTO v_audit_artist_shares (request_id, artist, share) VALUES ('x', 'Mallory', 1)",
        "UPDATE v_audit_metrics SET confidence = 1",
        "DELETE FROM v_audit_neighbours",
        "UPDATE v_audit_requests SET requester = 'mallory'",
        "INSERT INTO v_schema_version VALUES ('9999')",
        "CREATE TABLE mallory (i int)",
    ]
    for sql in denied:
        with pytest.raises(DBAPIError) as caught:
            _as_user(url, sql)
        assert "permission denied" in str(caught.value.orig), (sql, caught.value.orig)
    for view in READER_VIEWS:
        assert _as_user(url, f"SELECT COUNT(*) FROM {view}")[0][0] >= 1, view
    assert _as_user(url, "SELECT * FROM v_schema_version") == _as_user(
        reader_log.owner.url.render_as_string(hide_password=False), "SELECT version_num FROM alembic_version"
    )

    # The audit views mirror the hashed tables column for column; the vectors appear only as their digests.
    with reader_log.owner.connect() as connection:

        def columns(name: str) -> list[tuple[str, str]]:
            return [
                (row.column_name, row.data_type)
                for row in connection.execute(
                    text(
                        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = :name "
                        "ORDER BY ordinal_position"
                    ),
                    {"name": name},
                )
            ]

        for view, table in MIRRORS.items():
            expected = [
                (f"{name}_sha256", "text") if kind == "bytea" else (name, kind) for name, kind in columns(table)
            ]
            assert columns(view) == expected, view
        digest = connection.scalar(
            text("SELECT query_vector_sha256 FROM v_audit_requests WHERE seq = 1"),
        )
    assert digest == chain.canonical_content(reader_log.requests[0])["request"]["query_vector"].removeprefix("sha256:")


@pytest.mark.postgres
def test_a_user_granted_nothing_gets_a_permissions_error_not_an_outage(
    cluster: Cluster, reader_log: ReaderLog, cli_on: Callable[[str], Cli]
) -> None:
    stranger = cli_on(cluster.login(reader_log.owner.url.render_as_string(hide_password=False), in_role=None))
    for command in (("audit", "list"), ("report", "summary"), ("audit", "verify"), ("db", "current")):
        stderr = _permission_error(stranger(*command, code=1))
        assert "(permission denied for table alembic_version)" in stderr, stderr


# -- the documentation -------------------------------------------------------------------------------------------
def _schema_doc_examples() -> list[str]:
    examples = re.findall(r"```sql\n(.*?)```", (ROOT / "docs" / "schema.md").read_text(encoding="utf-8"), re.S)
    assert len(examples) >= 6
    used = {view for sql in examples for view in re.findall(r"\bv_[a-z_]+", sql)}
    assert used and used <= set(REPORTING_VIEWS), used  # the views both back ends have
    return examples


@pytest.mark.postgres
def test_every_schema_doc_example_runs_as_the_reader(reader_log: ReaderLog) -> None:
    for sql in _schema_doc_examples():
        as_reader = _as_user(reader_log.reader_url, sql)
        assert as_reader, sql  # every example finds rows in this log
        assert as_reader == _as_user(reader_log.owner.url.render_as_string(hide_password=False), sql), sql
        if "day BETWEEN" in sql:  # a period bounded by ISO literals: whatever the session's date style
            assert _as_user(reader_log.reader_url, sql, "German") == as_reader, sql


def test_every_schema_doc_example_runs_on_sqlite(sqlite_db: Engine, tmp_path: Path) -> None:
    build_log(sqlite_db, tmp_path)
    for sql in _schema_doc_examples():
        with sqlite_db.connect() as connection:
            assert connection.execute(text(sql)).all(), sql


# -- upgrading a database whose readers were granted before the audit views existed ------------------------------
@pytest.mark.postgres
def test_readers_granted_before_the_audit_views_can_read_them_after_db_upgrade(
    cluster: Cluster, cli_on: Callable[[str], Cli], tmp_path: Path
) -> None:
    url = cluster.database()
    owner = cluster.engine(url)
    upgrade(owner, "0003")
    role = cluster.role("analysts")
    with owner.begin() as connection:  # what `db grant-reader` granted at revision 0003
        connection.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        connection.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        connection.execute(text(f'GRANT SELECT ON {", ".join(REPORTING_VIEWS)} TO "{role}"'))
    reader = cli_on(cluster.login(url, in_role=role))
    _permission_error(reader("audit", "list", code=1))  # 0003 has no view of the schema revision

    upgrade(owner)
    requests = build_log(owner, tmp_path)
    assert reader("audit", "verify").stdout.splitlines()[0] == f"chain OK: 4 records, head {requests[-1].record_hash}"
    assert len(reader("audit", "list").stdout.splitlines()) == 5
    with owner.connect() as connection:  # the owner itself, and PUBLIC, were granted nothing new
        grantees = connection.scalars(
            text(
                "SELECT DISTINCT grantee FROM information_schema.role_table_grants "
                "WHERE table_name = 'v_audit_requests' AND grantee <> current_user"
            )
        ).all()
    assert grantees == [role]


@pytest.mark.postgres
def test_the_reader_shows_a_learned_space_request_with_a_note_that_its_notes_are_not_readable(
    reader_log: ReaderLog,
) -> None:
    """A request in a learned space has notes read from the spaces and catalogue tables, which a reader may not read:
    ``audit show`` still shows the record, with one note saying why its notes are not shown (it used to fail)."""
    row = request_row("learned", parameters={"k": 2, "temperature": 0.05, "space": "painters", "space_version": 1})
    row.metrics = AttributionMetrics(
        entropy=0.0,
        nn_distance=0.1,
        margin=0.2,
        top_artist="Zoe",
        top_artist_share=1.0,
        confidence=0.5,
        confidence_model="default-v1",
    )
    request = chain.append(reader_log.owner, row)
    shown = json.loads(reader_log.reader_cli("audit", "show", request.id, "--format", "json").stdout)
    assert shown["request_id"] == request.id
    assert shown["notes"] == [
        "the notes of learned space painters (version 1) are not shown: this database user may only read the audit "
        "views; a writer's `audit show` shows them"
    ]
    owner = json.loads(reader_log.owner_cli("audit", "show", request.id, "--format", "json").stdout)
    assert owner["notes"] == [] and {**owner, "notes": []} == {**shown, "notes": []}
