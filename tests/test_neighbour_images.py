"""Each neighbour's image is pinned by its record (revision 0015): the digest the work was attributed as is hashed
with the record, the request page checks the file against it and says when the catalogue now names another image;
records written before keep their hash and export bytes, and say that their images are not pinned."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EMBEDDER, Cli, Ingested, ingest_once
from dbtools import complete_request, downgrade, fill_chain, superuser_edit
from PIL import Image
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from attribution_audit.embedding.base import Embedder
from attribution_audit.reporting.html import CHANGED, UNPINNED
from attribution_audit.services import audit_log
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import create_db_engine, current_revision, head_revision, upgrade
from attribution_audit.store.models import Artist, AttributionRequest, Catalogue, Work, WorkVersion

MOVED = "the catalogue now names another image"


@dataclass(frozen=True)
class Log:
    """Two works by two artists (their images on disk) and two requests that attributed both: ``pinned`` (written
    with the digests) and ``old`` (as written before revision 0015)."""

    pinned: AttributionRequest
    old: AttributionRequest
    sha: dict[str, str]
    images: Path


def _log(engine: Engine, images: Path) -> Log:
    sha = {}
    for work_id, colour in (("w1", (200, 30, 30)), ("w2", (30, 30, 200))):
        Image.new("RGB", (16, 16), colour).save(images / f"{work_id}.png")
        sha[work_id] = hashlib.sha256((images / f"{work_id}.png").read_bytes()).hexdigest()
    with Session(engine) as session:
        museum = Catalogue(name="c")
        for work_id, artist in (("w1", "A"), ("w2", "B")):
            work = Work(
                catalogue=museum,
                work_id=work_id,
                artist=Artist(name=artist),
                image_path=str(images / f"{work_id}.png"),
                image_sha256=sha[work_id],
                version=1,
            )
            session.add(work)
            session.flush()
            session.add(WorkVersion(work_pk=work.id, version=1, image_path=work.image_path, image_sha256=sha[work_id]))
        session.commit()
        pks = {str(w): int(i) for w, i in session.execute(text("SELECT work_id, id FROM works"))}

    def request(label: str, pinned: bool) -> AttributionRequest:
        row = complete_request(label)
        for n in row.neighbours:
            n.work_pk, n.work_version = pks[n.work_id], 1
            n.image_sha256 = sha[n.work_id] if pinned else None
        return chain.append(engine, row)

    return Log(request("pinned", True), request("old", False), sha, images)


def _page(cli: Cli, request_id: str, out: Path) -> str:
    cli("report", "request", request_id, "--html", str(out))
    return out.read_text(encoding="utf-8")


def test_a_record_pins_its_neighbours_images_and_the_page_says_when_the_catalogue_moved(
    fresh_db: Engine, migrated_url: str, cli_on: Callable[[str], Cli], tmp_path: Path
) -> None:
    log = _log(fresh_db, tmp_path)
    cli = cli_on(migrated_url)
    shown = json.loads(cli("audit", "show", log.pinned.id, "--json").stdout)
    assert [n["image_sha256"] for n in shown["neighbours"]] == [log.sha["w1"], log.sha["w2"]]
    assert f"rank 1 image sha256 {log.sha['w1']}" in cli("audit", "show", log.pinned.id).stdout
    old = json.loads(cli("audit", "show", log.old.id, "--json").stdout)
    assert [n["image_sha256"] for n in old["neighbours"]] == [None, None]
    assert "rank 1 image sha256 not pinned" in cli("audit", "show", log.old.id).stdout

    page = _page(cli, log.pinned.id, tmp_path / "pinned.html")
    assert page.count("same file as attributed") == 2 and MOVED not in page and UNPINNED not in page
    assert f"pinned by the record: sha256 {log.sha['w1']}" in page
    assert _page(cli, log.old.id, tmp_path / "old.html").count(UNPINNED) == 2

    # The catalogue's version of w1 now names w2's image (another artist's): a catalogue change, not a record's.
    superuser_edit(
        fresh_db,
        f"UPDATE work_versions SET image_path = '{log.images / 'w2.png'}', image_sha256 = '{log.sha['w2']}' "
        f"WHERE image_sha256 = '{log.sha['w1']}'",
    )
    assert cli("audit", "verify").stdout.startswith("chain OK")
    page = _page(cli, log.pinned.id, tmp_path / "pinned.html")
    assert page.count(MOVED) == 1 and f"sha256 {log.sha['w2']}) for this work version" in page
    assert page.count(CHANGED) == 1 and page.count("same file as attributed") == 1  # w2's file is not shown as w1
    old_page = _page(cli, log.old.id, tmp_path / "old.html")
    assert old_page.count(UNPINNED) == 2 and MOVED not in old_page  # (its images were never pinned)


def test_a_changed_digest_breaks_the_chain_at_its_record(fresh_db: Engine, migrated_url: str, tmp_path: Path) -> None:
    log = _log(fresh_db, tmp_path)
    audit = AuditStore(fresh_db)
    assert audit.requests.verify_chain().ok
    streamed = [record.canonical for record in chain.iter_chain(fresh_db)]  # the column-wise encoder's bytes
    assert streamed == [chain.canonical_bytes(r) for r in chain.load_requests(fresh_db)]  # = record by record
    assert streamed[0].count(b'"image_sha256":') == 1 + 2 and streamed[1].count(b'"image_sha256":') == 1
    with pytest.raises(DBAPIError, match="append-only"), fresh_db.begin() as connection:
        connection.execute(text("UPDATE attribution_neighbours SET image_sha256 = NULL"))
    pinned, old = (f"request_id = '{r.id}' AND rank = 1" for r in (log.pinned, log.old))
    for where, change, back, seq in (
        (pinned, f"'{log.sha['w2']}'", f"'{log.sha['w1']}'", log.pinned.seq),  # another image
        (pinned, "NULL", f"'{log.sha['w1']}'", log.pinned.seq),  # unpinned
        (old, f"'{log.sha['w1']}'", "NULL", log.old.seq),  # pinned afterwards
    ):
        superuser_edit(fresh_db, f"UPDATE attribution_neighbours SET image_sha256 = {change} WHERE {where}")
        report = audit.requests.verify_chain()
        assert not report.ok and report.broken_seq == seq
        superuser_edit(fresh_db, f"UPDATE attribution_neighbours SET image_sha256 = {back} WHERE {where}")
        assert audit.requests.verify_chain().ok


def _records(audit: AuditStore, out: Path) -> list[str]:
    """The record lines of an export of the whole log (its header holds the time of the export)."""
    audit_log.export_records(audit, out, overwrite=True)
    return out.read_text().splitlines()[1:]


def _columns(engine: Engine, name: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(name)}


def test_records_written_before_0015_keep_their_hash_and_export_bytes_across_the_migration(
    database_url: str, tmp_path: Path
) -> None:
    engine = create_db_engine(database_url)
    postgres = engine.dialect.name == "postgresql"
    try:
        upgrade(engine, "0014")
        fill_chain(engine, 3, neighbours=2)  # rows as revision 0014 holds them
        upgrade(engine)
        assert "image_sha256" in _columns(engine, "attribution_neighbours")
        if postgres:
            assert "image_sha256" in _columns(engine, "v_audit_neighbours")
        audit = AuditStore(engine)
        assert audit.requests.verify_chain().ok
        exported = _records(audit, tmp_path / "export.jsonl")
        assert all("image_sha256" not in n for line in exported for n in json.loads(line)["content"]["neighbours"])

        downgrade(engine, "0014")
        assert current_revision(engine) == "0014" and "image_sha256" not in _columns(engine, "attribution_neighbours")
        if postgres:
            assert "image_sha256" not in _columns(engine, "v_audit_neighbours")
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text("DELETE FROM attribution_neighbours"))  # the triggers are still there
        assert upgrade(engine) == head_revision(engine)
        assert _records(audit, tmp_path / "export.jsonl") == exported

        pinned = complete_request("pinned")
        for n in pinned.neighbours:
            n.image_sha256 = "ab" * 32
        chain.append(engine, pinned)
        report = audit.requests.verify_chain()
        assert report.ok and report.checked == 4
        assert _records(audit, tmp_path / "export.jsonl")[:3] == exported
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("pinned-ingested"), sqlite_template, demo_catalogue.manifest)


def test_attribute_records_the_digest_each_work_was_ingested_with(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    attributed = json.loads(
        cli("attribute", str(demo_catalogue.queries[0].path), "--embedder", EMBEDDER, "--json").stdout
    )[0]
    first = attributed["neighbours"][0]
    with cli.engine().connect() as connection:
        catalogue = {
            str(work_id): str(digest)
            for work_id, digest in connection.execute(
                text("SELECT w.work_id, v.image_sha256 FROM works w JOIN work_versions v ON v.work_pk = w.id")
            )
        }
        other_path, other_sha = connection.execute(
            text(
                "SELECT w.image_path, w.image_sha256 FROM works w JOIN artists a ON a.id = w.artist_id "
                "WHERE a.name != :artist LIMIT 1"
            ),
            {"artist": first["artist"]},
        ).one()
    assert [n["image_sha256"] for n in attributed["neighbours"]] == [
        catalogue[n["work_id"]] for n in attributed["neighbours"]
    ]
    superuser_edit(  # the version attributed now names another artist's image
        cli.engine(),
        f"UPDATE work_versions SET image_path = '{other_path}', image_sha256 = '{other_sha}' "
        f"WHERE image_sha256 = '{first['image_sha256']}'",
    )
    assert cli("audit", "verify").stdout.startswith("chain OK")
    page = _page(cli, attributed["request_id"], tmp_path / "page.html")
    assert page.count(MOVED) == 1 and page.count(CHANGED) == 1 and UNPINNED not in page
