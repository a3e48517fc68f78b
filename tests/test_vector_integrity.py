"""Images and vectors checked where they are shown or used: stored vectors against the digests ingest recorded
(the shard's own vector file edited behind the DB's back), repaired from their recorded images; the request page
refuses to show an image file that changed since the attribution."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDER, Cli, Ingested, ingest_once
from dbtools import record_catalogue
from PIL import Image
from sqlalchemy import text

from attribution_audit.domain.points import point_id_for
from attribution_audit.domain.results import Neighbour, Outcome, RequestDraft
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import VectorStoreError
from attribution_audit.reporting.html import CHANGED
from attribution_audit.services import vector_check
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import WorkRecord
from attribution_audit.store.vectors.qdrant_edge import EdgeStore


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("vectors-ingested"), sqlite_template, demo_catalogue.manifest)


def _rotate_vector_rows(data_dir: Path) -> None:
    """What an unlucky disk or a hand edit does: the rows of the shard's vector file rotated by one (each point now
    holds its neighbour's vector; the file stays well-formed, so the engine serves it without complaint)."""
    (matrix,) = data_dir.glob("qdrant/works_efficientnet_lite0/segments/*/vector_storage-content/matrix.dat")
    raw = matrix.read_bytes()
    header, rows, width = raw[:4], raw[4:], 1280 * 4
    matrix.write_bytes(header + rows[width:] + rows[:width])


def _check(cli: Cli, *args: str, code: int = 0) -> dict[str, object]:
    return json.loads(cli("catalogue", "check", "--format", "json", "--embedder", EMBEDDER, *args, code=code).stdout)


def test_vectors_changed_behind_the_db_are_found_and_rewritten_from_their_images(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    cli.restore(ingested)
    query = str(demo_catalogue.queries[0].path)
    before = json.loads(cli("attribute", query, "--embedder", EMBEDDER, "--format", "json").stdout)[0]
    clean = _check(cli)
    assert (clean["vectors_checked"], clean["corrupt"], clean["clean"]) == (48, [], True)

    _rotate_vector_rows(cli.data_dir)
    broken = _check(cli, code=1)
    assert len(broken["corrupt"]) == 48 and broken["clean"] is False  # type: ignore[arg-type]
    text = cli("catalogue", "check", "--embedder", EMBEDDER, code=1).stdout
    assert "48 corrupt" in text and "catalogue check --deep --repair" in text

    repaired = _check(cli, "--deep", "--repair")
    assert len(repaired["reembedded"]) == 48 and repaired["dropped"] == []  # type: ignore[arg-type]
    assert _check(cli, "--deep")["corrupt"] == []
    store = EdgeStore(cli.data_dir / "qdrant", "works_efficientnet_lite0")
    rewritten = store.points_of(list(repaired["reembedded"]))  # type: ignore[call-overload]
    assert len(rewritten) == 48 and all(p.layout is not None for p in rewritten.values())  # copy candidates kept
    store.close()
    after = json.loads(cli("attribute", query, "--embedder", EMBEDDER, "--format", "json").stdout)[0]
    assert [n["work_id"] for n in after["neighbours"]] == [n["work_id"] for n in before["neighbours"]]


def test_a_payload_rewritten_behind_the_catalogue_is_refused_by_requests_and_found_by_the_check(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    """Whoever can write the shard could name another artist in a point's payload (same vector, same image digest):
    requests computed their shares from it and logged it as a valid attribution, and the check saw nothing. Now the
    request citing that work is refused before anything is recorded, the check calls the point stale, and an ingest
    of the catalogue rewrites it."""
    cli.restore(ingested)
    query = str(demo_catalogue.queries[0].path)
    before = json.loads(cli("attribute", query, "--embedder", EMBEDDER, "--format", "json").stdout)[0]
    nearest = before["neighbours"][0]
    store = EdgeStore(cli.data_dir / "qdrant", "works_efficientnet_lite0")
    (point,) = store.points_of([point_id_for(nearest["catalogue"], nearest["work_id"])]).values()
    store.upsert([replace(point, payload={**point.payload, "artist": "Forger"})])  # its vectors as they were
    store.close()
    logged = len(json.loads(cli("audit", "list", "--format", "json").stdout))

    refused = cli("attribute", query, "--embedder", EMBEDDER, code=1)
    assert refused.stdout == "" and refused.stderr == (
        f"error: the vector store names work {nearest['work_id']!r} of catalogue {nearest['catalogue']!r} by "
        f"'Forger', the catalogue by {nearest['artist']!r}: an ingest is writing it now, or failed before its "
        "commit, or the point was changed behind the catalogue; this request was not recorded: retry once a running "
        "ingest ends; otherwise ingest the catalogue again into this collection (it rewrites such points) or remove "
        "them with `attribution-audit catalogue check --repair`\n"
    )
    assert len(json.loads(cli("audit", "list", "--format", "json").stdout)) == logged  # nothing recorded
    found = _check(cli, code=1)
    assert found["stale"] == [point.point_id] and found["clean"] is False
    assert (
        "stale points (their payload names another image, work or artist than the catalogue records;"
        in cli("catalogue", "check", "--embedder", EMBEDDER, code=1).stdout
    )
    # as the refusal says: the ingest rewrites the point (its catalogue row had not changed: it was "unchanged")
    again = cli("ingest", str(demo_catalogue.manifest), "--embedder", EMBEDDER).stdout
    assert "0 added, 1 updated (0 with a new image), 47 unchanged" in again
    assert _check(cli)["clean"] is True
    after = json.loads(cli("attribute", query, "--embedder", EMBEDDER, "--format", "json").stdout)[0]
    assert after["neighbours"][0]["artist"] == nearest["artist"] and after["top_artist"] == before["top_artist"]


RELABELLED = "another work than its point's"


@pytest.mark.parametrize(
    ("forged", "problem"),
    [
        ({"work_id": "FORGED"}, RELABELLED),
        ({"catalogue": "elsewhere"}, RELABELLED),
        ({"image_sha256": "0" * 64}, "with another image than the catalogue recorded for version 1"),
        ({"work_id": "SIBLING"}, RELABELLED),  # the same artist's
        ({"work_id": "SIBLING", "image_sha256": "SIBLING"}, RELABELLED),  # ... with its digest
        ({"work_id": "SIBLING", "image_sha256": None, "version": None}, RELABELLED),  # ... and nothing to compare
        ({"version": 2}, "at version 2, which the catalogue never recorded"),  # a version made up with its image
        ({"version": None, "image_sha256": "0" * 64}, "with another image than the catalogue recorded for version 1"),
        ({"version": 2, "image_sha256": "0" * 64}, "at version 2, which the catalogue never recorded"),
    ],
)
def test_a_payload_naming_another_work_or_image_is_refused_too(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, forged: dict[str, str], problem: str
) -> None:
    """The same for the work a payload names: a work the catalogue does not hold (it was logged with no work key),
    another work of the same artist (logged twice, its share counted twice), another image at the catalogue's
    version, or the whole of another work's name and digest (then that work is named twice; with no digest or
    version left to compare, it was logged as that work). A point's id is its work's (``point_id_for``): a payload
    naming another work is refused before the shares are written. Each is stale for the check."""
    cli.restore(ingested)
    query = str(demo_catalogue.queries[0].path)
    nearest = json.loads(cli("attribute", query, "--k", "48", *("--embedder", EMBEDDER, "--format", "json")).stdout)
    first, *others = nearest[0]["neighbours"]
    sibling = next(n for n in others if n["artist"] == first["artist"])  # (also among the 48 neighbours)
    forged = {key: sibling[key] if value == "SIBLING" else value for key, value in forged.items()}
    store = EdgeStore(cli.data_dir / "qdrant", "works_efficientnet_lite0")
    (point,) = store.points_of([point_id_for(first["catalogue"], first["work_id"])]).values()
    store.upsert([replace(point, payload={**point.payload, **forged})])
    store.close()
    refused = cli("attribute", query, "--k", "48", "--embedder", EMBEDDER, code=1).stderr
    named = forged.get("work_id", first["work_id"]), forged.get("catalogue", first["catalogue"])
    if problem == RELABELLED:
        assert refused == (
            f"error: the vector store's point {point.point_id} names work {named[0]!r} of catalogue {named[1]!r}, "
            "which is not that point's work: its payload was changed behind the catalogue; this request was not "
            "recorded: ingest the catalogue again into this collection (it rewrites such points) or remove the "
            "point with `attribution-audit catalogue check --repair`\n"
        )
    else:
        assert refused.startswith(
            f"error: the vector store names work {named[0]!r} of catalogue {named[1]!r} {problem}: "
        )
    assert _check(cli, code=1)["stale"] == [point.point_id]
    assert len(json.loads(cli("audit", "list", "--format", "json").stdout)) == 1  # the first request alone


def test_a_version_written_as_text_is_stale_for_the_check_and_rewritten_by_ingest(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    """Requests refuse a payload whose version is not an integer; the check and ingest must not read "1" as 1, or
    the refusal's advice (ingest again) would change nothing."""
    cli.restore(ingested)
    query = str(demo_catalogue.queries[0].path)
    nearest = json.loads(cli("attribute", query, "--embedder", EMBEDDER, "--format", "json").stdout)[0]["neighbours"][0]
    store = EdgeStore(cli.data_dir / "qdrant", "works_efficientnet_lite0")
    (point,) = store.points_of([point_id_for(nearest["catalogue"], nearest["work_id"])]).values()
    store.upsert([replace(point, payload={**point.payload, "version": "1"})])
    store.close()
    assert "not an integer" in cli("attribute", query, "--embedder", EMBEDDER, code=1).stderr
    assert _check(cli, code=1)["stale"] == [point.point_id]
    assert "1 updated" in cli("ingest", str(demo_catalogue.manifest), "--embedder", EMBEDDER).stdout
    cli("attribute", query, "--embedder", EMBEDDER)


def test_a_corrupt_vector_whose_image_is_gone_is_dropped_for_the_next_ingest(cli: Cli, ingested: Ingested) -> None:
    cli.restore(ingested)
    _rotate_vector_rows(cli.data_dir)
    with cli.engine().begin() as connection:  # every work's recorded image moved away: nothing to embed again
        connection.execute(text("UPDATE works SET image_path = '/nowhere/gone.png'"))
    result = _check(cli, "--deep", "--repair")
    assert result["reembedded"] == [] and len(result["dropped"]) == 48  # type: ignore[arg-type]
    after = _check(cli)  # the dropped points and their embeddings are gone: the next ingest embeds them again
    assert (after["points"], after["expected"], after["clean"]) == (0, 0, True)


def test_a_truncated_vector_file_is_reported_corrupt_and_repaired(cli: Cli, ingested: Ingested) -> None:
    """The shard's vector file cut short (a full disk, a bad copy): the engine serves its points without vectors; the
    check counts each as corrupt (it was a KeyError traceback) and the repair embeds them again."""
    cli.restore(ingested)
    (matrix,) = cli.data_dir.glob("qdrant/works_efficientnet_lite0/segments/*/vector_storage-content/matrix.dat")
    with matrix.open("r+b") as handle:
        handle.truncate(1000)
    broken = _check(cli, "--deep", code=1)
    assert len(broken["corrupt"]) == 48 and broken["vectors_checked"] == 48  # type: ignore[arg-type]
    repaired = _check(cli, "--deep", "--repair")
    assert len(repaired["reembedded"]) + len(repaired["dropped"]) == 48  # type: ignore[arg-type]
    assert _check(cli, "--deep")["clean"] is True


def test_a_quick_check_samples_and_a_deep_one_reads_every_vector(
    cli: Cli, ingested: Ingested, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.restore(ingested)
    monkeypatch.setattr(vector_check, "QUICK_SAMPLE", 5)
    assert _check(cli)["vectors_checked"] == 5
    assert _check(cli, "--deep")["vectors_checked"] == 48


def test_the_request_page_does_not_show_an_image_that_changed_since_the_attribution(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    query = tmp_path / "generated.png"
    shutil.copyfile(demo_catalogue.queries[0].path, query)
    attributed = json.loads(cli("attribute", str(query), "--embedder", EMBEDDER, "--format", "json").stdout)[0]
    page = tmp_path / "page.html"
    cli("report", "request", attributed["request_id"], "--html", str(page))
    assert CHANGED not in page.read_text()
    Image.new("RGB", (64, 64), (0, 255, 0)).save(query)  # the generated image swapped after the fact
    cli("report", "request", attributed["request_id"], "--html", str(page))
    shown = page.read_text()
    assert shown.count(CHANGED) == 1 and "intact: the stored hash matches the record" in shown


def test_a_neighbour_at_another_version_is_checked_against_that_versions_image(audit: AuditStore) -> None:
    """Another embedder's collection not ingested again since a work's image changed still holds its version 1: a
    request citing it there is recorded as version 1, with version 1's image. A payload naming version 1 with another
    image, or a version the catalogue never recorded, is refused (only the current version's image was compared)."""
    first, second = hashlib.sha256(b"v1").hexdigest(), hashlib.sha256(b"v2").hexdigest()
    record_catalogue(audit, [WorkRecord("w1", "Ada", None, "/img/w1.png", first, {}, 1, "p-w1")])
    (pk,) = {work.pk for work in audit.catalogue.known_works(1, "works_x", ["w1"]).values()}
    changed = WorkRecord("w1", "Ada", None, "/img/w1.png", second, {}, 2, "p-w1", pk=pk)  # its image changed
    record_catalogue(audit, [changed])  # (version 2 is the catalogue's now)

    def citing(version: int, image: str) -> RequestDraft:
        near = [Neighbour(1, "w1", "museum", "Ada", 0.9, 0.1, 1.0, "Ada", version, image)]
        features = {"entropy": 0.0, "nn_distance": 0.1, "margin": 0.2}
        outcome = replace(Outcome(near, [], None, None, "v1", features), artist_shares={"Ada": 1.0})
        vector = np.ones(4, dtype=np.float32)
        return RequestDraft(
            "/q.png", "ab" * 32, vector, None, "t", "x", "x", "edge", "works_x", {}, {}, 1, outcome, 0.9, "default-v1"
        )

    assert audit.requests.record(citing(1, first)).neighbours[0].work_version == 1
    assert audit.requests.record(citing(2, second)).neighbours[0].work_version == 2
    refusals = {
        (1, second): "with another image than the catalogue recorded for version 1",
        (3, second): "at version 3, which the catalogue never recorded",
    }
    for (version, image), problem in refusals.items():
        with pytest.raises(VectorStoreError, match=f"names work 'w1' of catalogue 'museum' {problem}: "):
            audit.requests.record(citing(version, image))
    assert audit.requests.verify_chain().checked == 2
