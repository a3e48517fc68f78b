"""A long-running service reads what another process stored while it runs (a learned space's new version, a new
learned space, a calibration model), and each record names the other learned space versions its cross-space
indicators read (revision 0018), hashed, so that a replay measures them there."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from conftest import EMBEDDER, Cli
from dbtools import complete_request, superuser_edit
from sqlalchemy import event, text
from test_calibration import store_model

from attribution_audit import AttributionParams, Upload, load_settings, open_service
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, LogisticModel
from attribution_audit.domain.projection import Projection
from attribution_audit.domain.results import parse_space_versions, space_versions
from attribution_audit.errors import ConflictError
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.sources.images import load_image
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store import chain
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import create_db_engine
from attribution_audit.store.spaces import SpaceConfidence


def test_space_versions_are_written_sorted_and_read_back() -> None:
    assert space_versions({"painters": 2, "brushes": 1}) == "brushes:1,painters:2"
    assert space_versions({}) == ""
    assert parse_space_versions("brushes:1,painters:2") == {"brushes": 1, "painters": 2}
    assert parse_space_versions("") == {}
    with pytest.raises(ValueError):
        parse_space_versions("painters")


def _store_version(other: AuditStore, name: str, projection: Projection, fitted_as: str) -> None:
    """What `spaces fit` stores, from another process: a version of ``name`` with ``projection``, otherwise as
    ``fitted_as``'s newest version was fitted."""
    info = other.spaces.load(fitted_as)
    assert info is not None
    other.spaces.add(
        name,
        projection,
        base=info[0].base,
        method=info[0].method,
        embedder_fingerprint=info[0].embedder_fingerprint,
        collection=info[0].collection,
        n_works=info[0].n_works,
        n_artists=info[0].n_artists,
        validation={key: value for key, value in info[0].validation.items() if key != "confidence"},
    )


def _fit(audit: AuditStore, name: str, versions: int) -> None:
    """Versions 1..``versions`` of learned space ``name``, each with another random projection."""
    for seed in range(versions):
        projection = Projection(np.zeros(4), np.random.default_rng(seed).normal(size=(2, 4)))
        audit.spaces.add(
            name, projection, base="style", method="lda", embedder_fingerprint="fp", collection="c", n_works=8,
            n_artists=2, validation={"hit@1": 0.5},
        )  # fmt: skip


def _calibrate(other: AuditStore, fingerprint: str, k: int) -> str:
    """What `calibrate` stores, from another process: a model of the content space under the share rule."""
    n = len(CALIBRATION_FEATURES)
    model = LogisticModel("fitted", [0.0] * n, [1.0] * n, [0.25] * n, 0.5, CALIBRATION_FEATURES)
    return store_model(other, model, fingerprint, {"space": "content", "top": "share", "k": k})


@pytest.mark.slow
def test_the_service_answers_with_what_another_process_stored_and_replay_reads_the_recorded_versions(
    cli: Cli, demo_catalogue: DemoCatalogue
) -> None:
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    upload = Upload.from_path(demo_catalogue.queries[2].path)
    other = cli.audit()  # another process on the same audit log (a second service, `spaces fit`, `calibrate`)
    settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url, embedder=EMBEDDER)
    with open_service(settings) as service:
        (first,) = service.attribute([upload])
        assert first.other_space_versions == "painters:1" and first.confidence_model == "default-v1"
        (in_painters,) = service.attribute([upload], AttributionParams(space="painters"))
        assert in_painters.other_space_versions == ""  # no other learned space: none read
        fitted = other.spaces.load("painters")
        assert fitted is not None
        projection = fitted[1]
        half = Projection(projection.mean, projection.matrix[:, : projection.dim // 2])
        _store_version(other, "painters", half, "painters")  # a refit: version 2
        _store_version(other, "brushes", projection, "painters")  # a new learned space
        model = _calibrate(other, first.embedder_fingerprint, first.k)
        (second,) = service.attribute([upload])
        assert second.other_space_versions == "brushes:1,painters:2"  # not the versions read at first use
        assert second.confidence_model == model  # not the model read at first use
        assert first.confidence_model_sha256 is None  # a default formula: no stored model
        assert second.confidence_model_sha256 == other.evaluations.calibration(model).fingerprint()
        (again,) = service.attribute([upload], AttributionParams(space="painters"))
        assert again.parameters["space_version"] == 2 and again.other_space_versions == "brushes:1"
        assert service.verify().report.ok
        assert service.attribution(first.request_id).other_space_versions == "painters:1"
    shown = cli("audit", "show", first.request_id).stdout
    assert "other learned spaces read (name:version) painters:1 (by the agreement of spaces and log-odds)" in shown
    assert "other learned spaces read" not in cli("audit", "show", in_painters.request_id).stdout  # it read none
    assert json.loads(cli("audit", "show", second.request_id, "--json").stdout)["other_space_versions"] == (
        "brushes:1,painters:2"
    )

    # A replay measures the cross-space indicators in the versions its record names, not the newest.
    replay = json.loads(cli("audit", "replay", first.request_id, "--json").stdout)
    assert replay["replay"]["other_space_versions"] == "painters:1"
    for indicator in ("agreement_spaces", "centroid_log_odds_others"):
        assert replay["replay"][indicator] == pytest.approx(getattr(first, indicator)), indicator
    assert replay["differences"] == [] and replay["not_recorded"] == []
    replay = json.loads(cli("audit", "replay", in_painters.request_id, "--json").stdout)
    assert replay["replay"]["other_space_versions"] == "" and replay["replay"]["centroid_log_odds_others"] is None
    replay = json.loads(cli("audit", "replay", second.request_id, "--json").stdout)
    assert replay["replay"]["other_space_versions"] == "brushes:1,painters:2"
    assert replay["replay"]["centroid_log_odds_others"] == pytest.approx(second.centroid_log_odds_others)

    # The model's row changed by hand since (its append-only trigger off): the replay says it no longer matches.
    assert "\nno differences\n" in cli("audit", "replay", second.request_id).stdout
    number = model.removeprefix("logistic-v")
    superuser_edit(
        cli.engine(),
        f"UPDATE calibration_models SET features = json_set(features, '$.intercept', 3.5) WHERE id = {number}",
    )
    replayed = cli("audit", "replay", second.request_id).stdout
    edited = other.evaluations.calibration(model).fingerprint()
    assert f"~ confidence_model_sha256: {second.confidence_model_sha256} -> {edited} (the stored confidence model" in (
        replayed
    )
    assert "its calibration_models row was changed after the request" in replayed and "~ confidence: " in replayed
    failed = cli("audit", "verify", code=1)
    assert "chain OK" in failed.stdout
    assert f"models FAIL: confidence model {model} no longer matches the fingerprint" in failed.stderr
    # Nor does the changed model score a new request: the request fails, naming it, and nothing is recorded.
    records = len(cli("audit", "list").stdout.splitlines())
    refused = cli("attribute", str(demo_catalogue.queries[2].path), *embedder, code=1).stderr
    assert f"confidence model {model} no longer matches the fingerprint" in refused and "audit verify" in refused
    assert refused.count("\n") == 1 and len(cli("audit", "list").stdout.splitlines()) == records

    # A record made before revision 0018 names none: replayed in the newest versions, shown as not recorded then.
    superuser_edit(
        cli.engine(),
        f"UPDATE attribution_metrics SET other_space_versions = NULL WHERE request_id = '{first.request_id}'",
    )
    replay = json.loads(cli("audit", "replay", first.request_id, "--json").stdout)
    assert replay["replay"]["other_space_versions"] == "brushes:1,painters:2"
    assert "~ other_space_versions: None -> brushes:1,painters:2" in replay["differences"]  # not intact: a change


def test_the_recorded_versions_are_hashed_only_when_set_and_an_edit_breaks_verify(
    cli_on: Callable[[str], Cli], migrated_url: str
) -> None:
    """Older records (null) keep their hash; a record's versions changed or removed by hand fail `audit verify`, on
    SQLite and PostgreSQL."""
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    older = chain.append(engine, complete_request("older"))
    model = _calibrate(AuditStore(engine), "fp", 10)
    _fit(AuditStore(engine), "fontboth", 3)  # the versions the records name
    _fit(AuditStore(engine), "fontstyle", 2)
    ids = []
    for label in ("one", "two", "three"):
        request = complete_request(label)
        assert request.metrics is not None
        request.metrics.other_space_versions = "fontboth:3,fontstyle:2"
        request.metrics.confidence_model = model
        request.metrics.confidence_model_sha256 = AuditStore(engine).evaluations.calibration(model).fingerprint()
        ids.append(chain.append(engine, request).id)
    assert "chain OK: 4 records" in cli("audit", "verify").stdout
    assert AuditStore(engine).requests.get(older.id).other_space_versions is None
    superuser_edit(
        engine, f"UPDATE attribution_metrics SET other_space_versions = 'fontboth:2' WHERE request_id = '{ids[1]}'"
    )
    assert cli("audit", "verify", code=1).stderr.startswith(f"chain BROKEN at seq 3 (request {ids[1]})")
    assert "NOT INTACT" in cli("audit", "show", ids[1]).stdout
    superuser_edit(
        engine,
        f"UPDATE attribution_metrics SET other_space_versions = 'fontboth:3,fontstyle:2' WHERE request_id = '{ids[1]}'",
    )
    assert "chain OK: 4 records" in cli("audit", "verify").stdout
    superuser_edit(engine, f"UPDATE attribution_metrics SET other_space_versions = NULL WHERE request_id = '{ids[0]}'")
    assert cli("audit", "verify", code=1).stderr.startswith(f"chain BROKEN at seq 2 (request {ids[0]})")
    superuser_edit(
        engine,
        f"UPDATE attribution_metrics SET other_space_versions = 'fontboth:3,fontstyle:2' WHERE request_id = '{ids[0]}'",
    )
    fingerprint = (
        f"UPDATE attribution_metrics SET confidence_model_sha256 = '{'cd' * 32}' WHERE request_id = '{ids[2]}'"
    )
    superuser_edit(engine, fingerprint)
    assert cli("audit", "verify", code=1).stderr.startswith(f"chain BROKEN at seq 4 (request {ids[2]})")
    engine.dispose()


def models_failed(cli: Cli, records: int) -> str:
    """What `audit verify` writes to stderr where the chain of ``records`` holds but the models check fails."""
    failed = cli("audit", "verify", code=1)
    assert f"chain OK: {records} record" in failed.stdout and "models OK" not in failed.stdout
    return str(failed.stderr)


def test_verify_fails_where_a_stored_model_no_longer_matches_the_records_it_scored(
    cli_on: Callable[[str], Cli], migrated_url: str
) -> None:
    """A calibration_models row changed by hand (its append-only trigger off) after it scored requests: `audit verify`
    names it, on SQLite and PostgreSQL, though every record still matches its hash."""
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    audit = AuditStore(engine)
    name = _calibrate(audit, "fp", 10)
    for label in ("one", "two"):
        request = complete_request(label)
        assert request.metrics is not None
        request.metrics.confidence_model = name
        request.metrics.confidence_model_sha256 = audit.evaluations.calibration(name).fingerprint()
        chain.append(engine, request)
    ok = "models OK: the 1 stored confidence model(s) that scored records match the fingerprint and the parameters"
    assert ok in cli("audit", "verify").stdout and ok in cli("report", "summary").stdout
    edited = {**audit.evaluations.calibration(name).as_json(), "intercept": 3.5}
    number = name.removeprefix("logistic-v")
    superuser_edit(engine, f"UPDATE calibration_models SET features = '{json.dumps(edited)}' WHERE id = {number}")
    stderr = models_failed(cli, 2)
    line = f"models FAIL: confidence model {name} no longer matches the fingerprint "
    assert line in stderr and "that 2 record(s) it scored hold" in stderr
    verdict = json.loads(cli("audit", "verify", "--format", "json", code=1).stdout)
    assert verdict["ok"] is False and verdict["models"]["ok"] is False
    summary = cli("report", "summary").stdout
    assert line in summary and "models OK" not in summary  # as report summary shows the schema's check
    with pytest.raises(ConflictError, match=f"confidence model {name} no longer matches .* audit verify"):
        audit.evaluations.latest_calibration("fp", "content", None, "share", 10)  # what scores a new request
    engine.dispose()


def test_verify_fails_where_records_were_scored_at_other_parameters_than_their_model_now_says(
    cli_on: Callable[[str], Cli], migrated_url: str
) -> None:
    """The fingerprint covers a model's coefficients, not the parameters it scores (``fit_metrics.parameters``):
    those changed by hand (the append-only trigger off) after it scored records fail `audit verify`'s models check,
    naming the model, the parameters and the first record, on SQLite and PostgreSQL."""
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    audit = AuditStore(engine)
    name = _calibrate(audit, "fp", 10)
    ids = []
    for label in ("one", "two"):  # recorded at k 2, in the content space, under the share rule
        request = complete_request(label)
        assert request.metrics is not None
        request.metrics.confidence_model = name
        request.metrics.confidence_model_sha256 = audit.evaluations.calibration(name).fingerprint()
        chain.append(engine, request)
        ids.append(request.id)
    number = name.removeprefix("logistic-v")

    def fit_metrics(value: object) -> None:
        superuser_edit(engine, f"UPDATE calibration_models SET fit_metrics = '{json.dumps(value)}' WHERE id = {number}")

    ok = "models OK: the 1 stored confidence model(s) that scored records match the fingerprint and the parameters "
    assert ok in cli("audit", "verify").stdout
    fit_metrics({"parameters": {"space": "content", "top": "share", "k": 2}, "source": "spaces fit"})
    # a calibrate model said to be a version's own that no version names
    assert (
        f"models FAIL: confidence model {name} scored 2 record(s) (the first: seq 1, request {ids[0]}) but its "
        "parameters cannot be read: its fit source is 'spaces fit', though no learned space version names it its "
        "own model: its calibration_models row was changed after them; restore it from a backup"
    ) in models_failed(cli, 2)
    fit_metrics({"parameters": {"space": "style", "top": "share", "k": 10}})
    assert (
        f"models FAIL: confidence model {name} now scores space style, space_version none, top share, but 2 "
        f"record(s) it scored (the first: seq 1, request {ids[0]}) were attributed at space content, space_version "
        "none, top share: its calibration_models row's parameters were changed after them; restore it from a backup"
    ) in models_failed(cli, 2)
    verdict = json.loads(cli("audit", "verify", "--format", "json", code=1).stdout)
    assert verdict["ok"] is False and verdict["models"]["ok"] is False and len(verdict["models"]["problems"]) == 1
    fit_metrics("not an object")
    summary = cli("report", "summary").stdout
    assert (
        f"models FAIL: confidence model {name} scored 2 record(s) (the first: seq 1, request {ids[0]}) but its "
        in (summary)
        and "parameters cannot be read: calibration model" in summary
    )
    engine.dispose()


def test_verify_fails_where_a_space_own_model_no_longer_says_it_is_one(
    cli_on: Callable[[str], Cli], migrated_url: str
) -> None:
    """A learned space version's own model (``spaces fit``) scores only the K it was fitted at, and only where no
    ``calibrate`` model of that version is: its row's ``source`` (outside the fingerprint) changed by hand would make
    it score any K and outrank the version's ``calibrate`` models. The version's row (append-only) names its own
    model, so `audit verify` names the changed source, on SQLite and PostgreSQL."""
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    audit = AuditStore(engine)
    n = len(CALIBRATION_FEATURES)
    own = SpaceConfidence(
        LogisticModel("own", [0.0] * n, [1.0] * n, [0.1] * n, 0.0, CALIBRATION_FEATURES),
        "0" * 64,
        {"held_out_works": 12, "right": 7, "parameters": AttributionParams(k=10).as_json()},
    )
    projection = Projection(np.zeros(4), np.random.default_rng(0).normal(size=(2, 4)))
    info = audit.spaces.add(
        "s", projection, base="style", method="lda", embedder_fingerprint="fp", collection="c", n_works=8,
        n_artists=2, validation={"hit@1": 0.5}, confidence=own,
    )  # fmt: skip
    name = info.validation["confidence"]["model"]
    request = complete_request("own")  # scored at the K it was fitted at
    assert request.metrics is not None
    request.parameters = {**request.parameters, "space": "s", "space_version": 1, "k": 10}
    request.metrics.confidence_model = name
    request.metrics.confidence_model_sha256 = audit.evaluations.calibration(name).fingerprint()
    chain.append(engine, request)
    assert "models OK" in cli("audit", "verify").stdout
    number = name.removeprefix("logistic-v")
    with engine.connect() as connection:
        metrics = connection.scalar(text(f"SELECT fit_metrics FROM calibration_models WHERE id = {number}"))
    metrics = json.loads(metrics) if isinstance(metrics, str) else metrics
    other_k = json.dumps({**metrics, "parameters": {**metrics["parameters"], "k": 5}})
    superuser_edit(engine, f"UPDATE calibration_models SET fit_metrics = '{other_k}' WHERE id = {number}")
    stderr = models_failed(cli, 1)  # an own model scores only the K it was fitted at: the records' too
    assert f"confidence model {name} now scores space s, space_version 1, top share, k 5, but 1" in stderr
    assert "were attributed at space s, space_version 1, top share, k 10:" in stderr
    edited = json.dumps({**metrics, "source": "calibrate"})
    superuser_edit(engine, f"UPDATE calibration_models SET fit_metrics = '{edited}' WHERE id = {number}")
    assert (
        f"models FAIL: confidence model {name} scored 1 record(s) (the first: seq 1, request {request.id}) but its "
        "parameters cannot be read: its fit source is 'calibrate', not 'spaces fit', though learned space s version "
        "1 names it its own model: its calibration_models row was changed after them; restore it from a backup"
    ) in models_failed(cli, 1)
    engine.dispose()


@pytest.mark.slow
def test_a_record_names_the_version_its_neighbours_were_found_in_when_another_is_stored_before_it_is_written(
    cli: Cli, demo_catalogue: DemoCatalogue
) -> None:
    """The Attributor's steps driven one by one, a new version of the learned space stored (and read: the next
    request's refresh) between compute and record: the record names the version the neighbours were found in and is
    scored by that version's model, not the new one's. What was read stays the same until the next refresh (a run's
    queries, the service's job), a clone included; a request reads the change marker once; a value of the wrong type
    where the versions read are recorded fails replay with one line."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    other = cli.audit()  # another process (`spaces fit`)
    fitted = other.spaces.load("painters")
    assert fitted is not None
    own_model = fitted[0].validation["confidence"]["model"]  # version 1's own confidence model
    settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url, embedder=EMBEDDER)
    audit = open_audit(settings)
    unpinned = AttributionParams(space="painters", verify="off")
    with open_attributor(settings, audit, EMBEDDER) as attributor:
        image = load_image(demo_catalogue.queries[2].path, target_size=224)
        attributor.refresh()
        query = attributor.embed([image.image], "painters")[0]
        outcome = attributor.compute(query, unpinned)
        assert outcome.space_version == 1
        half = Projection(fitted[1].mean, fitted[1].matrix[:, : fitted[1].dim // 2])
        _store_version(other, "painters", half, "painters")  # version 2, without an own model
        assert attributor.compute(query, unpinned).space_version == 1  # not read again before the next refresh
        clone = attributor.with_store(attributor.store)
        clone.refresh()  # the clone reads version 2; the attributor keeps what it read
        assert clone.compute(query, unpinned).space_version == 2
        assert attributor.compute(query, unpinned).space_version == 1
        attributor.refresh()  # version 2 read now (the next request's), between this request's compute and record
        record = attributor.record("q.png", image.sha256, query, unpinned, outcome)
        newer = attributor.compute(query, unpinned)
        statements: list[str] = []

        def seen(_connection: object, _cursor: object, statement: str, *_: object) -> None:
            statements.append(statement)

        event.listen(audit.engine, "before_cursor_execute", seen)
        attributed = attributor.attribute(demo_catalogue.queries[2].path, unpinned)  # a request of its own
        event.remove(audit.engine, "before_cursor_execute", seen)
    audit.close()
    assert attributed.parameters["space_version"] == 2
    assert sum("count(learned_spaces.id)" in s for s in statements) == 1  # one read of the change marker a request
    assert newer.space_version == 2 and [n.distance for n in newer.neighbours] != [
        n.distance for n in outcome.neighbours
    ]
    assert record.parameters["space_version"] == 1
    assert record.confidence_model == own_model  # version 1's model, not version 2's (none: a default formula)
    assert [(n.work_id, n.distance) for n in record.neighbours] == [
        (n.work_id, pytest.approx(n.distance)) for n in outcome.neighbours
    ]
    replay = json.loads(cli("audit", "replay", record.request_id, "--json").stdout)
    assert replay["differences"] == [] and replay["replay"]["parameters"]["space_version"] == 1

    superuser_edit(
        cli.engine(),
        f"UPDATE attribution_metrics SET other_space_versions = X'00ff' WHERE request_id = '{record.request_id}'",
    )
    failed = cli("audit", "replay", record.request_id, code=1)
    assert "records other learned spaces b'\\x00\\xff', which no request writes" in failed.stderr
    assert failed.stderr.count("\n") == 1


def test_a_fingerprint_put_in_a_default_formula_record_breaks_the_chain_not_the_models(
    cli_on: Callable[[str], Cli], migrated_url: str
) -> None:
    """A default formula names no stored model: the models check skips its record; the chain reports the edit."""
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    request = chain.append(engine, complete_request("default"))
    superuser_edit(
        engine,
        f"UPDATE attribution_metrics SET confidence_model_sha256 = '{'ab' * 32}' WHERE request_id = '{request.id}'",
    )
    failed = cli("audit", "verify", code=1)
    assert (
        failed.stderr.startswith(f"chain BROKEN at seq 1 (request {request.id})") and "models FAIL" not in failed.stderr
    )
    assert json.loads(cli("audit", "verify", "--format", "json", code=1).stdout)["models"]["ok"] is True
    engine.dispose()


def test_verify_fails_where_a_learned_space_version_that_records_name_is_changed_or_deleted(
    cli_on: Callable[[str], Cli], migrated_url: str
) -> None:
    """A version rewritten or deleted by hand (its append-only trigger off) after records used it: `audit verify`
    names it, on SQLite and PostgreSQL, though every record still matches its hash; versions no record names and
    the default formulas' records are no concern."""
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    audit = AuditStore(engine)
    _fit(audit, "s", 3)
    own = complete_request("own")
    own.parameters = {**own.parameters, "space": "s", "space_version": 1}
    other = complete_request("other")
    assert other.metrics is not None
    other.metrics.other_space_versions = "s:2"
    for request in (own, other, complete_request("content")):
        chain.append(engine, request)
    verified = cli("audit", "verify")
    assert "spaces FAIL" not in verified.stderr  # s:1 and s:2 named; s:3 is named by no record
    assert "spaces OK: the 2 learned space version(s) that records name are stored unchanged\n" in verified.stdout
    verdict = json.loads(cli("audit", "verify", "--format", "json").stdout)
    assert verdict["spaces"] == {"ok": True, "problems": [], "unchecked": None, "checked": 2}
    assert (
        "spaces OK: the 2 learned space version(s) that records name are stored unchanged\n"
        in cli("report", "summary").stdout
    )
    superuser_edit(engine, "UPDATE learned_spaces SET matrix = mean WHERE version = 1")
    superuser_edit(engine, "DELETE FROM learned_spaces WHERE version IN (2, 3)")
    failed = cli("audit", "verify", code=1)
    assert "chain OK: 3 records" in failed.stdout
    lines = [line for line in failed.stderr.splitlines() if line.startswith("spaces FAIL")]
    assert lines == [
        "spaces FAIL: learned space s version 1, named by 1 record(s), is changed (its row no longer matches its "
        "fingerprint): it was deleted or rewritten after them; restore it from a backup",
        "spaces FAIL: learned space s version 2, named by 1 record(s), is missing: it was deleted or rewritten after "
        "them; restore it from a backup",
    ]
    verdict = json.loads(cli("audit", "verify", "--format", "json", code=1).stdout)
    assert verdict["ok"] is False and verdict["spaces"]["ok"] is False and len(verdict["spaces"]["problems"]) == 2
    summary = cli("report", "summary").stdout  # the same lines, as it shows the models' check
    assert all(line in summary for line in lines) and "spaces OK" not in summary
    as_json = json.loads(cli("report", "summary", "--format", "json").stdout)["spaces"]
    assert as_json == verdict["spaces"]
    engine.dispose()
