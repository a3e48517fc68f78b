"""The documented Python API (``from attribution_audit import ...``): the service in-process, as the module
docstring of attribution_audit.api shows it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ingest_once
from fastapi.testclient import TestClient
from PIL import Image

from attribution_audit import (
    AttributionParams,
    RequestFilter,
    Upload,
    attribute_files,
    get_attribution,
    load_settings,
    open_audit,
    open_service,
)
from attribution_audit.config import Settings
from attribution_audit.domain.points import point_id_for
from attribution_audit.domain.results import Attribution
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import ImageError, NotFoundError, OptionError, PartlyRecordedError
from attribution_audit.http.api import create_app
from attribution_audit.services.keys import create_key
from attribution_audit.sources.synthetic import DemoCatalogue


def test_open_service_attributes_reads_and_verifies(
    tmp_path: Path, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> None:
    ingested = ingest_once(tmp_path, sqlite_template, demo_catalogue.manifest)
    url = f"sqlite:///{ingested.database}"
    queries = demo_catalogue.queries
    with open_service(data_dir=ingested.data_dir, database_url=url) as service:
        results = service.attribute(
            [Upload.from_path(q.path) for q in queries[:3]], AttributionParams(k=4), requester="notebook"
        )
        assert [r.seq for r in results] == [1, 2, 3] and all(r.requester == "notebook" for r in results)
        assert results[0].top_artist == queries[0].artist and len(results[0].neighbours) == 4
        assert service.attribution(results[1].request_id) == results[1]  # what was returned is what is logged
        newest = service.attributions(RequestFilter(limit=2))
        assert [a.request_id for a in newest] == [results[2].request_id, results[1].request_id]
        assert {row["period"] for row in service.shares("month")} and service.verify().report.ok
        with pytest.raises(ImageError, match=r"missing\.png: file not found"):
            Upload.from_path(tmp_path / "missing.png")
        unrecordable = r"requester 'xxxxx.*'\.\.\. \(300 characters\) cannot be recorded; give 1 to 200 printable"
        with pytest.raises(OptionError, match=unrecordable):  # not a database error at commit (varchar(200))
            service.attribute([Upload.from_path(queries[3].path)], requester="x" * 300)
    with pytest.raises(OptionError, match=unrecordable):
        load_settings(data_dir=ingested.data_dir, requester="x" * 300)
    with pytest.raises(OptionError, match=r"requester 'a\\nb' \(3 characters\) cannot be recorded"):
        Settings(requester="a\nb")
    assert Settings(requester=" ops ").requester == "ops"

    # The one-off way the CLI goes: per-file results, a bad file does not stop the others.
    settings = load_settings(data_dir=ingested.data_dir, database_url=url)
    audit = open_audit(settings)
    try:
        outcomes = list(attribute_files(settings, audit, [queries[3].path, tmp_path / "nope.png"], AttributionParams()))
        assert outcomes[0].seq == 4 and isinstance(outcomes[1], ImageError)  # type: ignore[union-attr]
        assert get_attribution(audit, outcomes[0].request_id).requester  # type: ignore[union-attr]
    finally:
        audit.close()


SAME_FOR_THE_SAME_FILE = (
    "neighbours",
    "artist_shares",
    "entropy",
    "nn_distance",
    "margin",
    "top_artist",
    "confidence",
    "copy_of",
    "copy_score",
    "copy_status",
    "agreement",
)


def test_the_service_answers_what_the_cli_answers_for_the_same_large_file(
    tmp_path: Path, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> None:
    """The service holds a decoded image only until it is embedded (its copy check keeps a small grey copy):
    the vectors, the neighbours and the copy verdict are still the CLI's, for a large and elongated file too."""
    ingested = ingest_once(tmp_path, sqlite_template, demo_catalogue.manifest)
    url = f"sqlite:///{ingested.database}"
    large = tmp_path / "large.png"
    with Image.open(demo_catalogue.queries[0].path) as query:
        query.convert("RGB").resize((2600, 1100), Image.Resampling.BICUBIC).save(large)  # cut to 2:1, then resized
    params = AttributionParams(k=5, verify="always")
    with open_service(data_dir=ingested.data_dir, database_url=url) as service:
        served = service.attribute([Upload.from_path(large)], params)[0]
        assert service.pixels.in_use == 0  # given back once embedded
    settings = load_settings(data_dir=ingested.data_dir, database_url=url)
    audit = open_audit(settings)
    try:
        [one_off] = list(attribute_files(settings, audit, [large], params))
    finally:
        audit.close()
    assert isinstance(one_off, Attribution) and served.copy_status and served.copy_score is not None
    assert {f: getattr(served, f) for f in SAME_FOR_THE_SAME_FILE} == {
        f: getattr(one_off, f) for f in SAME_FOR_THE_SAME_FILE
    }


def test_a_request_that_fails_after_some_images_were_recorded_names_them(
    tmp_path: Path, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> None:
    """Each image of a request is committed on its own: one failing after others were recorded said nothing was
    recorded (the HTTP answer too), and a client that sent the request again logged those twice. The failure now
    names the recorded ones, and the HTTP answer carries them beside the error."""
    ingested = ingest_once(tmp_path, sqlite_template, demo_catalogue.manifest)
    url = f"sqlite:///{ingested.database}"
    first, second = (Upload.from_path(q.path) for q in demo_catalogue.queries[:2])
    params = AttributionParams(k=1)
    with open_service(data_dir=ingested.data_dir, database_url=url) as service:
        with pytest.raises(NotFoundError, match="no learned space"):  # before anything: no other job's results
            service.attribute([first], AttributionParams(k=1, space="unfitted"))
        (near,) = service.attribute([second], params)[0].neighbours
        with pytest.raises(NotFoundError, match="no learned space"):  # (the recorder goes on after either)
            service.attribute([first], AttributionParams(k=1, space="unfitted"))
        assert service.attribute([first], params)[0].neighbours[0].work_id != near.work_id
        store = service.attributor.store
        (point,) = store.points_of([point_id_for(near.catalogue, near.work_id)]).values()
        store.upsert([replace(point, payload={**point.payload, "work_id": "RELABELLED"})])  # behind the catalogue
        with pytest.raises(PartlyRecordedError) as failed:
            service.attribute([first, second], params)
        (recorded,) = failed.value.recorded
        assert "which is not that point's work" in str(failed.value)
        assert str(failed.value).endswith(
            f"; 1 of 2 images were attributed and recorded before this error (requests {recorded.request_id}): "
            "do not send them again"
        )
        assert service.attribution(recorded.request_id) == recorded
        key = create_key(service.audit, "writer")
        with TestClient(create_app(service)) as http:
            answer = http.post(
                "/v1/attributions",
                headers={"Authorization": f"Bearer {key}"},
                files=[("images", (name, upload.data)) for name, upload in (("a.png", first), ("b.png", second))],
                data={"k": "1"},
            )
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert "1 of 2 images were attributed and recorded before this error" in body["error"]
        assert [r["seq"] for r in body["recorded"]] == [recorded.seq + 1]
        assert service.verify().report.ok
