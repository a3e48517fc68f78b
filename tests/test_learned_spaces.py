"""Learned spaces: the regularised LDA finds the artist signal that the base space hides, fits are stored as new
versions, ``--space NAME`` searches the projected catalogue and records the version, replays keep theirs."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDER, Cli
from dbtools import superuser_edit
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from attribution_audit.config import load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, LogisticModel, confidence
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import STYLE
from attribution_audit.domain.projection import (
    SHRINKAGES,
    Projection,
    artist_hits,
    content_groups,
    fit_lda,
    held_out_split,
    join_bases,
    unit_rows,
    validation_split,
)
from attribution_audit.domain.results import RequestDraft
from attribution_audit.domain.spaces import LearnedSpace, QueryVectors
from attribution_audit.errors import DatabaseError
from attribution_audit.services.spaces import default_confidence, held_out_validation, validate
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.synthetic import DemoCatalogue, make_demo_catalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.evaluations import CalibrationEvidence
from attribution_audit.store.spaces import SpaceConfidence, SpaceInfo


def _nuisance_data(seed: int, per_artist: int) -> tuple[np.ndarray, list[str]]:
    """12 artists whose signal lives in 4 weak dimensions, under 20 dimensions of strong shared nuisance."""
    centres = np.random.default_rng(100).normal(size=(12, 4))  # the artists: the same in every sample
    rng = np.random.default_rng(seed)
    labels = [f"a{i % 12}" for i in range(12 * per_artist)]
    signal = np.vstack([centres[i % 12] for i in range(len(labels))]) * 0.3 + rng.normal(0, 0.05, (len(labels), 4))
    return np.hstack([signal, rng.normal(0, 1.0, (len(labels), 20))]), labels


def _store(
    audit: AuditStore,
    projection: Projection,
    n_works: int,
    confidence: SpaceConfidence | None = None,
    artists: list[str] | None = None,
) -> SpaceInfo:
    """Store a version of style space "s" of collection "c" (embedder "fp"), fitted on ``artists`` (kept with it),
    or on 12 artists not kept."""
    return audit.spaces.add(
        "s",
        projection,
        base=STYLE,
        method="lda",
        embedder_fingerprint="fp",
        collection="c",
        n_works=n_works,
        n_artists=12 if artists is None else len(artists),
        validation={"hit@1": 0.5} if artists is None else {"hit@1": 0.5, "artists": artists},
        confidence=confidence,
    )


def _shared_content_data(seed: int, contents: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Every one of 10 artists shows each of ``contents`` contents (as the font benchmark's pages do): a work is its
    artist's vector + its content's (twice as strong) + noise, 120-d; the seed draws the contents."""
    artists = np.random.default_rng(100).normal(size=(10, 120)) * 0.5
    rng = np.random.default_rng(seed)
    shown = rng.normal(size=(contents, 120)) * 2.0
    pairs = [(c, a) for c in range(contents) for a in range(10)]
    rows = np.vstack([artists[a] + shown[c] + rng.normal(size=120) * 0.3 for c, a in pairs])
    return rows, [f"a{a}" for _, a in pairs], np.array([c for c, _ in pairs])


def test_content_groups_put_one_content_of_every_artist_together() -> None:
    rows, labels, content = _shared_content_data(0, 16)
    groups = content_groups(rows, labels)
    assert all(len(set(groups[content == c])) == 1 for c in range(16))  # no content split across groups
    train, scored, split = validation_split(rows, labels)
    assert split == "content groups" and not set(content[scored]) & set(content[train])


def test_validation_on_held_out_content_chooses_what_new_content_needs() -> None:
    """A held-out work whose content stays among the training works (in other artists' works) rewards the
    projection that removes the catalogue's own contents (small shrinkage); queries bring new contents."""
    works, labels, _ = _shared_content_data(0, 16)
    queries, query_labels, _ = _shared_content_data(1, 4)  # new contents
    chosen = validate(works, labels)["shrinkage"]
    held = held_out_split(labels)  # the former split: a fifth of each artist's works
    train_labels = [label for label, h in zip(labels, held, strict=True) if not h]
    held_labels = [label for label, h in zip(labels, held, strict=True) if h]

    def per_artist_score(shrinkage: float) -> float:
        projection = fit_lda(works[~held], train_labels, shrinkage)
        hits = artist_hits(projection.apply(works[held]), held_labels, projection.apply(works[~held]), train_labels)
        return hits["hit@1"] + hits["hit@10"]

    def query_hit10(shrinkage: float) -> float:
        projection = fit_lda(works, labels, shrinkage)
        return artist_hits(projection.apply(queries), query_labels, projection.apply(works), labels)["hit@10"]

    per_artist = max(SHRINKAGES, key=per_artist_score)
    assert chosen > per_artist
    assert query_hit10(chosen) >= query_hit10(per_artist) + 0.1


def test_lda_recovers_the_artist_signal_the_base_space_hides() -> None:
    works, labels = _nuisance_data(0, 30)
    queries, query_labels = _nuisance_data(1, 3)
    base = artist_hits(unit_rows(queries), query_labels, unit_rows(works), labels)
    projection = fit_lda(works, labels, shrinkage=0.01)
    learned = artist_hits(projection.apply(queries), query_labels, projection.apply(works), labels)
    assert projection.dim == 11  # artists - 1
    assert base["hit@1"] < 0.4 and learned["hit@1"] > 0.9


def test_lda_needs_two_artists() -> None:
    with pytest.raises(ValueError, match="at least two artists"):
        fit_lda(np.ones((3, 4)), ["a", "a", "a"], 0.1)


def test_held_out_split_takes_a_fifth_of_each_artist_with_two_works_or_more() -> None:
    labels = ["a"] * 10 + ["b"] * 2 + ["c"]
    held = held_out_split(labels)
    assert held[:10].sum() == 2 and held[10:12].sum() == 1 and not held[12]
    assert (held == held_out_split(labels)).all()  # seeded


def test_learned_space_answer_is_its_own_exact_answer() -> None:
    works, labels = _nuisance_data(2, 6)
    projection = fit_lda(join_bases([works]), labels, 0.1)
    catalogue = [
        (f"p{i}", {"artist": label}, QueryVectors(np.zeros(2, np.float32), works[i].astype(np.float32)))
        for i, label in enumerate(labels)
    ]
    space = LearnedSpace.over("learned", 1, STYLE, projection, catalogue)
    query = catalogue[5][2]
    params = AttributionParams(k=4, space="learned", space_version=1)
    ranked = space.candidates(None, query, params)  # type: ignore[arg-type]
    assert ranked[0][0].point_id == "p5" and ranked[0][1] == pytest.approx(1.0, abs=1e-5)
    assert len(ranked) == 16 and all(a[1] >= b[1] for a, b in itertools.pairwise(ranked))
    assert space.exact_top(None, [query], params) == [[hit.point_id for hit, _ in ranked[:4]]]  # type: ignore[arg-type]


def test_validation_scores_every_shrinkage_and_the_base_on_one_split() -> None:
    works, labels = _nuisance_data(4, 10)
    scores = validate(works, labels)
    assert [t["shrinkage"] for t in scores["tried"]] == list(SHRINKAGES)
    best = max(scores["tried"], key=lambda t: t["hit@1"] + t["hit@10"])
    assert scores["shrinkage"] == best["shrinkage"] and scores["hit@1"] == best["hit@1"]
    assert scores["split"] == "content groups" and scores["held_out_works"] >= 24  # whole groups, a fifth at least
    assert scores["base_hit@1"] < scores["hit@1"]
    assert validate(works, labels, (0.3,))["shrinkage"] == 0.3


def test_a_tie_between_shrinkages_chooses_the_strongest() -> None:
    """Where the held-out works cannot tell the shrinkages apart (artists far apart: every one scores 1.0), the most
    regularised is chosen, not the one that fits the training works' noise."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 32)) * 10
    works = np.vstack([centre + rng.normal(scale=0.1, size=(8, 32)) for centre in centres])
    labels = [f"artist {a}" for a in range(4) for _ in range(8)]
    scores = validate(works, labels)
    assert {t["hit@1"] for t in scores["tried"]} == {1.0} and scores["shrinkage"] == max(SHRINKAGES)


def test_params_take_a_learned_name_and_version_only_for_learned_spaces() -> None:
    assert AttributionParams(space="fontstyle", space_version=2).as_json()["space_version"] == 2
    for bad in ({"space": "Font Style"}, {"space": "content", "space_version": 1}, {"space": "x", "space_version": 0}):
        with pytest.raises(ValueError):
            AttributionParams(**bad)


def test_fits_are_stored_as_versions(audit: AuditStore) -> None:
    works, labels = _nuisance_data(3, 5)
    first, second = fit_lda(works, labels, 0.1), fit_lda(works, labels, 0.5)
    stored = [_store(audit, projection, len(labels)) for projection in (first, second)]
    assert [s.version for s in stored] == [1, 2] and stored[0].fingerprint != stored[1].fingerprint
    newest = audit.spaces.load("s")
    assert newest is not None and newest[0].version == 2
    old = audit.spaces.load("s", 1)
    assert old is not None and np.array_equal(old[1].matrix, first.matrix) and np.array_equal(old[1].mean, first.mean)
    assert audit.spaces.load("s", 3) is None and audit.spaces.load("t") is None
    assert [(s.name, s.version) for s in audit.spaces.versions()] == [("s", 1), ("s", 2)]


@pytest.mark.parametrize("statement", ["UPDATE learned_spaces SET matrix = mean", "DELETE FROM learned_spaces"])
def test_a_stored_version_cannot_be_changed_or_deleted(audit: AuditStore, statement: str) -> None:
    """Records name the versions they used: the table is append-only (revision 0020), like the audit tables."""
    works, labels = _nuisance_data(3, 5)
    _store(audit, fit_lda(works, labels, 0.1), len(labels))
    with pytest.raises(DBAPIError, match="append-only"), audit.engine.begin() as connection:
        connection.execute(text(statement))
    assert audit.spaces.load("s") is not None


def test_a_projection_changed_in_the_database_is_refused(audit: AuditStore) -> None:
    """Requests in the space would have used another projection under the version's name (or failed on its shape)."""
    works, labels = _nuisance_data(3, 5)
    _store(audit, fit_lda(works, labels, 0.1), len(labels))
    superuser_edit(audit.engine, "UPDATE learned_spaces SET matrix = mean")
    with pytest.raises(DatabaseError, match="learned space s version 1 in the audit database does not match its"):
        audit.spaces.load("s")


def test_fitted_artists_changed_in_the_database_are_refused(audit: AuditStore) -> None:
    """The fitted artists decide which artists get a centroid (the ``centroid`` answers and log-odds): an edit of them
    is refused as a changed projection is; a version stored without them keeps the projection-only fingerprint."""
    works, labels = _nuisance_data(3, 5)
    projection = fit_lda(works, labels, 0.1)
    _store(audit, projection, len(labels))  # version 1: no artists kept
    artists = sorted(set(labels))
    _store(audit, projection, len(labels), artists=artists)
    loaded = audit.spaces.load("s")
    assert loaded is not None and loaded[0].artists == tuple(artists)
    edited = json.dumps({"hit@1": 0.5, "artists": artists[:-1]})
    superuser_edit(audit.engine, f"UPDATE learned_spaces SET validation = '{edited}' WHERE version = 2")
    with pytest.raises(DatabaseError, match="learned space s version 2 in the audit database does not match its"):
        audit.spaces.load("s")
    assert audit.spaces.load("s", 1) is not None


def test_a_learned_space_fits_its_own_confidence_on_its_held_out_works() -> None:
    """The default formula's distances are the base spaces'; the space's own model, fitted on the held-out works
    as queries, ranks and calibrates them better there (out of fold); with too few wrong answers to rank, every
    request gets the held-out rate."""
    rows, labels, _ = _shared_content_data(0, 24)
    validation, held_out = held_out_validation(rows, labels)
    without = default_confidence(held_out, rows, labels, None)
    scores = without.fit_metrics
    assert scores["kind"] == "logistic" and scores["held_out_works"] == validation["held_out_works"]
    assert 0 < scores["right"] < scores["held_out_works"] and scores["parameters"] == AttributionParams().as_json()
    assert scores["cv_ece"] < scores["default_ece"] and scores["cv_auroc"] > scores["default_auroc"]
    with_agreement = default_confidence(held_out, rows, labels, rows + 1.0)  # another space's vectors
    agreement = CALIBRATION_FEATURES.index("agreement")
    assert without.model.std[agreement] == 1.0  # a constant 0 without
    assert with_agreement.model.std[agreement] not in (0.0, 1.0)
    centroid = CALIBRATION_FEATURES.index("centroid_log_odds")  # among the training works' artist centroids
    assert without.model.std[centroid] not in (0.0, 1.0) and without.model.coef[centroid] > 0
    few_rows, few_labels = rows[:40], labels[:40]  # 4 contents: too few wrong answers for 5 folds
    few = default_confidence(held_out_validation(few_rows, few_labels)[1], few_rows, few_labels, None)
    right, works = few.fit_metrics["right"], few.fit_metrics["held_out_works"]
    assert few.fit_metrics["kind"] == "held-out rate" and min(right, works - right) < 5
    sure = {"entropy": 0.0, "nn_distance": 0.0, "margin": 1.0, "top_share": 1.0, "agreement": 1.0}
    assert few.model.predict(sure) == pytest.approx((right + 1) / (works + 2))  # not the formula's 1.0


def test_a_calibrate_model_takes_precedence_over_the_space_own(audit: AuditStore) -> None:
    works, labels = _nuisance_data(3, 5)
    names = CALIBRATION_FEATURES
    own = SpaceConfidence(
        LogisticModel("own", [0.0] * len(names), [1.0] * len(names), [0.1] * len(names), 0.0, names),
        "0" * 64,
        {"held_out_works": 12, "right": 7, "parameters": AttributionParams().as_json()},
    )
    stored = [_store(audit, fit_lda(works, labels, 0.5), len(labels), own) for _ in range(2)]
    first, second = (s.validation["confidence"]["model"] for s in stored)
    recorded = [s.validation["confidence"]["parameters"] for s in stored]  # as `spaces list` shows the evidence
    assert [(p["space"], p["space_version"]) for p in recorded] == [("s", 1), ("s", 2)]
    found = audit.evaluations.latest_calibration("fp", "s", 1)
    assert first != second and found is not None and found.name == first and found.coef == [0.1] * len(names)
    # the version's own model scores only requests at the K it was fitted at (the default here)
    assert getattr(audit.evaluations.latest_calibration("fp", "s", 1, k=10), "name", None) == first
    assert audit.evaluations.latest_calibration("fp", "s", 1, k=5) is None
    assert audit.evaluations.calibration(first).coef == [0.1] * len(names)  # what a recorded name resolves to
    assert (
        audit.evaluations.latest_calibration("fp") is None and audit.evaluations.latest_calibration("x", "s", 1) is None
    )
    user = audit.evaluations.add_calibration(
        LogisticModel("user", [0.0] * len(names), [1.0] * len(names), [0.2] * len(names), 0.0, names),
        CalibrationEvidence(
            embedder_fingerprint="fp",
            labelled_path="labelled.csv",
            labelled_sha256="1" * 64,
            n_samples=20,
            n_positive=10,
            fit_metrics={"parameters": AttributionParams(space="s", space_version=1).as_json()},
        ),
    )
    assert [audit.evaluations.latest_calibration("fp", "s", v).name for v in (1, 2)] == [user, second]  # type: ignore[union-attr]
    assert getattr(audit.evaluations.latest_calibration("fp", "s", 1, k=5), "name", None) == user  # at any K
    assert audit.evaluations.calibrated_in("fp", "s", 1) == {user: "share"}  # the version's own is not listed
    assert audit.evaluations.calibrated_in("fp", "s", 2) == {}


@pytest.mark.slow
def test_cli_fit_attribute_refit_and_replay(cli: Cli, demo_catalogue: DemoCatalogue) -> None:
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    fit = cli("spaces", "fit", "painters", "--crops", "0", "--from", "content+style", *embedder)
    fitted = fit.stdout
    assert "stored painters version 1" in fitted and "5-d from content+style, 48 works of 6 artists" in fitted
    assert "note: 8.0 works per artist on average, fewer than K = 10" in fit.stderr and "--k 8 or fewer" in fit.stderr
    assert "--top centroid (the artists' centroids, which do not count works), --top nearest" in fit.stderr
    (listed,) = json.loads(cli("spaces", "list", "--json").stdout)
    assert listed["name"] == "painters" and listed["version"] == 1 and listed["dimension"] == 5
    assert listed["validation"]["split"] == "content groups" and listed["validation"]["held_out_works"] >= 10
    assert 0 <= listed["validation"]["hit@1"] <= 1

    image = str(demo_catalogue.queries[1].path)
    (first,) = json.loads(cli("attribute", image, "--space", "painters", "--k", "5", "--json", *embedder).stdout)
    assert first["parameters"]["space"] == "painters" and first["parameters"]["space_version"] == 1
    assert first["overlap_at_k"] == 1.0 and len(first["neighbours"]) == 5
    own = listed["validation"]["confidence"]  # a model or the held-out rate, fitted at K = 10: not this request's K
    assert first["confidence_model"] == "default-v1" and f"confidence: {own['model']}" in fitted

    audit = cli.audit()
    (version,) = audit.spaces.versions()
    names = CALIBRATION_FEATURES
    user = audit.evaluations.add_calibration(  # as `calibrate --space painters --top nearest` stores it
        LogisticModel("user", [0.0] * len(names), [1.0] * len(names), [0.2] * len(names), 0.0, names),
        CalibrationEvidence(
            embedder_fingerprint=version.embedder_fingerprint,
            labelled_path="labelled.csv",
            labelled_sha256="1" * 64,
            n_samples=20,
            n_positive=10,
            fit_metrics={"parameters": AttributionParams(space="painters", space_version=1, top="nearest").as_json()},
        ),
    )
    refit = cli("spaces", "fit", "painters", "--crops", "0", "--from", "content+style", "--shrinkage", "0.5", *embedder)
    pinned = refit.stdout
    assert "stored painters version 2" in pinned and "shrinkage 0.5," in pinned
    assert (
        f"note: the calibrate model(s) {user} (--top nearest) of painters version 1 do not apply to version 2, "
        "whose requests use its own model until you run `attribution-audit calibrate LABELLED.csv --space painters` "
        "again (with each --top)"
    ) in refit.stderr
    (second,) = json.loads(cli("attribute", image, "--space", "painters", "--json", *embedder).stdout)
    assert second["parameters"]["space_version"] == 2
    replay = json.loads(cli("audit", "replay", first["request_id"], "--json").stdout)
    assert replay["replay"]["parameters"]["space_version"] == 1
    assert [n["work_id"] for n in replay["replay"]["neighbours"]] == [n["work_id"] for n in first["neighbours"]]
    assert "chain OK" in cli("audit", "verify").stdout

    unknown = cli("attribute", image, "--space", "nothing", *embedder, code=1)
    assert unknown.stderr.strip() == (
        "error: no learned space nothing (fitted here: painters); fit one with `attribution-audit spaces fit nothing "
        "--from style` "
        "(see `attribution-audit spaces list`)"
    )
    conflict = cli("spaces", "fit", "painters", "--from", "style", *embedder, code=1)
    assert "fitted from content+style, not style" in conflict.stderr
    bad = cli("spaces", "fit", "painters", "--from", "content+style", "--shrinkage", "1", *embedder, code=1)
    assert "--shrinkage 1.0: choose a number between 0 and 1" in bad.stderr
    assert "space name 'fused'" in cli("spaces", "fit", "fused", "--from", "style", *embedder, code=1).stderr


def _labelled_demo(demo_catalogue: DemoCatalogue, tmp_path: Path) -> Path:
    """The demo's six generated queries and six works labelled with another artist (always wrong)."""
    works = demo_catalogue.manifest.parent / "works"
    artists = [q.artist for q in demo_catalogue.queries]
    rows = [(q.path, q.artist) for q in demo_catalogue.queries]
    rows += [(works / f"a{a}_w{w}.png", artists[a + 1]) for a in range(3) for w in (0, 1)]  # labelled wrong
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("path,artist\n" + "".join(f"{p},{a}\n" for p, a in rows))
    return labelled


def test_calibrate_in_a_learned_space_is_measured_against_the_confidence_requests_keep(
    cli: Cli, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """The gate compares a new model with what requests would keep without it, scored on the same queries: first
    the space's own model from `spaces fit` (here the held-out rate: the same confidence for every request, AUROC
    0.5), then the stored `calibrate` model. The default formula ranks these queries backwards (AUROC 0), so a gate
    measuring against it stored a model that ranks them worse than the one requests keep. A refusal prints its
    scores (the reliability diagram is written anyway) and names the model requests keep and both AUROCs."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "content+style", *embedder)
    (listed,) = json.loads(cli("spaces", "list", "--json").stdout)
    own = listed["validation"]["confidence"]
    assert own["kind"] == "held-out rate"
    shown_own = f"held-out rate {own['rate']:.3f} ({own['model']}) at K = {own['parameters']['k']}"
    assert shown_own in cli("spaces", "list").stdout  # the constant it is, not a model's name alone
    # A request scored by it is told so: every request gets this confidence, and how to get a real model.
    held = cli("attribute", str(demo_catalogue.queries[1].path), "--space", "painters", "--json", *embedder)
    note = f"space painters (version 1)'s own confidence model {own['model']} is the held-out rate: "
    assert (
        f"note: {note}" in held.stderr and "`attribution-audit calibrate LABELLED.csv --space painters`" in held.stderr
    )
    (done,) = json.loads(held.stdout)
    assert done["confidence"] == pytest.approx(own["rate"], abs=1e-6)
    shown = json.loads(cli("audit", "show", done["request_id"], "--json").stdout)["notes"]
    assert [n for n in shown if n.startswith(note)] and "more works per artist" in shown[-1]
    labelled = _labelled_demo(demo_catalogue, tmp_path)
    options = ["--space", "painters", "--folds", "2", *embedder]
    first = cli("calibrate", str(labelled), *options).stdout.splitlines()
    assert first[0].startswith("stored logistic-v2: 12 labelled queries (6 correct)"), first
    assert "default formula: AUROC 0.000" in first[1]
    ece = abs(own["rate"] - 0.5)  # the same confidence for 6 right and 6 wrong
    assert first[2] == (
        f"without it requests keep the space's own model {own['model']}: AUROC 0.500, ECE {ece:.3f} on these queries"
    )
    cv = re.search(r"cross-validated: AUROC (\d\.\d+)", first[1])
    assert cv is not None and float(cv.group(1)) > 0.5  # better than the own model: stored
    plot = tmp_path / "reliability.png"
    refused = cli("calibrate", str(labelled), *options, "--plot", str(plot), code=1)
    stored, scores, kept, diagram = refused.stdout.splitlines()
    assert stored.startswith("fitted, not stored: 12 labelled queries (6 correct)") and scores == first[1]
    assert kept.startswith("without it requests keep the calibrate model logistic-v2: AUROC 1.000, ECE ")
    assert kept.endswith(" on these queries (in-sample: fitted on these queries)")
    assert diagram == f"reliability diagram: {plot}" and plot.read_bytes()[:4] == b"\x89PNG"
    (line,) = refused.stderr.splitlines()
    assert line == (
        f"error: {labelled}: the fitted model's cross-validated AUROC {cv.group(1)} is below the AUROC 1.000 of the "
        "calibrate model logistic-v2, fitted on these queries: its AUROC here is not out of sample; nothing was "
        "stored (use --force to replace it or label new queries)"
    )  # logistic-v2 was fitted on this very file: its 1.000 is in-sample, the new model's out of fold
    image = str(demo_catalogue.queries[1].path)
    scored = cli("attribute", image, "--space", "painters", "--json", *embedder)
    (request,) = json.loads(scored.stdout)
    assert request["confidence_model"] == "logistic-v2" and "held-out rate" not in scored.stderr
    forced = cli("calibrate", str(labelled), *options, "--force")
    assert forced.stdout.startswith("stored logistic-v3: ") and not forced.stderr  # every artist known: no note
    # A misspelt true artist makes its query a wrong attribution whatever the search finds: the run says so.
    misspelt = tmp_path / "misspelt.csv"
    misspelt.write_text(labelled.read_text().replace(f",{demo_catalogue.queries[0].artist}\n", ",Ada Vermer\n", 1))
    noted = cli("calibrate", str(misspelt), *options, "--force")
    assert noted.stdout.startswith("stored logistic-v4: 12 labelled queries (5 correct)")
    assert noted.stderr == (
        f"note: 1 of 12 labelled queries in {misspelt} name an artist with no work in the catalogue: 'Ada Vermer' "
        "(1); they count as wrong: check the spelling (`attribution-audit artists list`), unless the artists are "
        "left out on purpose\n"
    )


def test_a_learned_space_own_confidence_scores_only_the_k_it_was_fitted_at(
    cli: Cli, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """`spaces fit` fits the version's own model at K = 10 (or `--k`) and records it; a request at another K gets
    the default formula's confidence, recorded as its confidence model, with a note that says how to fit one.
    `evaluate run` scores the confidence at its --k (its requests are recorded deeper, at --k-max)."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    noted = cli("spaces", "fit", "painters", "--crops", "0", "--from", "content+style", *embedder).stderr
    assert "training works" not in noted
    image = str(demo_catalogue.queries[1].path)

    def attribute(k: int) -> tuple[str, str]:
        done = cli("attribute", image, "--space", "painters", "--k", str(k), "--json", *embedder)
        return json.loads(done.stdout)[0]["confidence_model"], done.stderr

    (v1,) = json.loads(cli("spaces", "list", "--json").stdout)
    own = v1["validation"]["confidence"]
    assert own["parameters"]["k"] == 10
    model, note = attribute(10)  # scored by it: the held-out rate here (few works), which the note says
    assert model == own["model"] and own["kind"] == "held-out rate"
    assert note.startswith(f"note: space painters (version 1)'s own confidence model {own['model']} is the held-out")
    model, note = attribute(5)
    assert model == "default-v1"
    assert note == (
        f"note: space painters (version 1)'s own confidence model {own['model']} was fitted at K = 10 under --top "
        "share, not these requests' K = 5 under --top share: their confidence is the default formula's (default-v1, "
        "recorded as their confidence model); `attribution-audit spaces fit painters --from content+style --k 5` "
        "fits one at K = 5, or `attribution-audit calibrate LABELLED.csv --space painters --k 5` on labelled queries\n"
    )
    fitted = cli("spaces", "fit", "painters", "--crops", "0", "--from", "content+style", "--k", "5", *embedder).stdout
    assert "right top artist at K = 5, the other parameters the defaults" in fitted
    v2 = json.loads(cli("spaces", "list", "--json").stdout)[1]["validation"]["confidence"]
    assert v2["parameters"]["k"] == 5 and v2["model"] != own["model"]
    model, note = attribute(5)
    assert model == v2["model"] and (v2["kind"] == "held-out rate") == ("is the held-out rate" in note)
    assert attribute(10)[0] == "default-v1"
    table = cli("spaces", "list").stdout
    for version, k in ((own, 10), (v2, 5)):  # a held-out rate is named as such, with the rate and the model
        held_out = version["kind"] == "held-out rate"
        label = f"held-out rate {version['rate']:.3f} ({version['model']})" if held_out else version["model"]
        assert f"{label} at K = {k}" in table
    labelled, out = str(demo_catalogue.labelled), tmp_path / "evaluation"
    cli("evaluate", "run", labelled, "--space", "painters", "--k-max", "20", "--k", "5", "--out", str(out), *embedder)
    assert json.loads((out / "metrics.json").read_text())["confidence_model"] == v2["model"]
    # K above the training works each held-out work is compared against: fitted, with one note that says so
    wide = cli("spaces", "fit", "painters", "--crops", "0", "--from", "content+style", "--k", "60", *embedder)
    held = json.loads(cli("spaces", "list", "--json").stdout)[2]["validation"]["held_out_works"]
    (note,) = [line for line in wide.stderr.splitlines() if "training works" in line]
    assert note.startswith(f"note: K = 60 is more than the {48 - held} training works each held-out work was ")
    assert note.endswith(f"fit it at --k {48 - held} or fewer, or ingest more works")
    too_many = cli("spaces", "fit", "painters", "--from", "content+style", "--k", "10001", *embedder, code=1)
    assert too_many.stderr == "error: --k 10001: choose a number between 1 and 10000\n"


@pytest.mark.slow
def test_a_style_space_needs_style_vectors(cli: Cli, demo_catalogue: DemoCatalogue) -> None:
    cli("ingest", str(demo_catalogue.manifest), "--embedder", EMBEDDER)
    refused = cli("spaces", "fit", "s", "--from", "style", "--embedder", EMBEDDER, code=1)
    assert "--spaces content,style" in refused.stderr and "Traceback" not in refused.output


@pytest.mark.parametrize("base", ["content+style", "style", "nothing"])
def test_a_base_changed_in_the_database_is_refused_in_one_line(
    cli: Cli, demo_catalogue: DemoCatalogue, base: str
) -> None:
    """The fingerprint covers the projection, not the base it takes vectors from: a version whose base was changed
    by a superuser no longer fits the collection's vectors, and ``--space`` refuses it (not a traceback)."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--from", "content", *embedder)
    superuser_edit(cli.engine(), f"UPDATE learned_spaces SET base = '{base}'")
    image = str(demo_catalogue.queries[0].path)
    refused = cli("attribute", image, "--space", "painters", *embedder, code=1)
    assert refused.output.count("\n") == 1 and "Traceback" not in refused.output
    assert f"learned space painters version 1 does not fit its base '{base}'" in refused.stderr
    assert "restore it from a backup or refit it" in refused.stderr


@pytest.mark.slow
def test_the_spaces_examples_run_on_the_demo_as_make_demo_ingests_it(cli: Cli, demo_catalogue: DemoCatalogue) -> None:
    """`make demo` ingests content vectors only (scripts/demo.py): the example fitted a style space there and failed
    ("the style space covers 0 of its 48 works")."""
    cli("ingest", str(demo_catalogue.manifest), "--embedder", EMBEDDER)
    for command in ("fit", "list"):
        (example,) = re.findall(r"^\s*Example: (.*)$", cli("spaces", command, "--help").stdout, flags=re.M)
        words = shlex.split(example)
        assert words[:3] == ["attribution-audit", "spaces", command]
        cli(*words[1:])


def test_a_learned_space_request_records_the_exact_projected_search_and_older_records_replay_unchanged(
    cli: Cli, demo_catalogue: DemoCatalogue
) -> None:
    """A learned space's neighbours are the projected catalogue searched exactly: its requests record
    ``"index": "exact-projected"`` (the engine's own index, which the agreement between spaces still searches, as
    ``engine_index``). A record made before, with the store's index, keeps its bytes and replays without a
    difference."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "content+style", *embedder)
    image = demo_catalogue.queries[1].path
    (new,) = json.loads(cli("attribute", str(image), "--space", "painters", "--json", *embedder).stdout)
    assert new["index_params"]["index"] == "exact-projected" and new["index_params"]["engine_index"] == "hnsw"
    assert new["index_params"]["hnsw_ef"] == 128  # the agreement's engine search ran at it
    (content,) = json.loads(cli("attribute", str(image), "--json", *embedder).stdout)
    assert content["index_params"]["index"] == "hnsw" and "engine_index" not in content["index_params"]

    audit = cli.audit()
    settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url)
    with open_attributor(settings, audit, EMBEDDER) as attributor:  # a record as made before: the store's index
        params = attributor.space_of(AttributionParams(space="painters"))[1]
        loaded = load_image(image, target_size=224)
        query = attributor.embed([loaded.image], "painters")[0]
        outcome = attributor.compute(query, params)
        score, model = confidence(attributor.calibration_for(params), outcome.features, params.top)
        old = audit.requests.record(
            RequestDraft(
                image=str(image),
                image_sha256=loaded.sha256,
                content_vector=query.content,
                style_vector=query.style,
                requester="before",
                embedder_name=attributor.embedder_name,
                embedder_fingerprint=attributor.embedder_fingerprint,
                store_kind=attributor.store.kind,
                collection=attributor.store.collection,
                index_params=attributor.store.index_info(),
                parameters=params.as_json(),
                k=params.k,
                outcome=outcome,
                confidence=score,
                confidence_model=model,
            )
        )
    assert old.index_params["index"] == "hnsw"
    replayed = json.loads(cli("audit", "replay", old.request_id, "--json").stdout)
    assert replayed["differences"] == [] and replayed["original"]["index_params"] == old.index_params
    assert replayed["replay"]["index_params"]["index"] == "exact-projected"
    assert "chain OK" in cli("audit", "verify").stdout


def test_space_list_is_empty_without_fits(cli: Cli, tmp_path: Path) -> None:
    assert json.loads(cli("spaces", "list", "--json").stdout) == []


def test_a_space_of_two_artists_is_refused(cli: Cli, tmp_path: Path) -> None:
    """Two artists give a one-dimensional space where every work is at similarity +-1: an attribution there showed
    three equally near works and confidence 1.000."""
    two = make_demo_catalogue(tmp_path / "two", artists=2, works_per_artist=6, queries_per_artist=0)
    cli("ingest", str(two.manifest), "--embedder", EMBEDDER, "--spaces", "content,style")
    refused = cli("spaces", "fit", "s", "--from", "style", "--embedder", EMBEDDER, code=1)
    assert "2 artist(s)" in refused.stderr and "at least 3" in refused.stderr and "Traceback" not in refused.output
    assert json.loads(cli("spaces", "list", "--json").stdout) == []


@pytest.mark.slow
def test_evaluate_run_in_a_learned_space(cli: Cli, tmp_path: Path, demo_catalogue: DemoCatalogue) -> None:
    """`evaluate run` and `content-bias --space NAME` (as their help says) work in the learned space, the version
    recorded; an unknown name is refused in one line before a run is started (it used to leave an `interrupted` run
    behind), and `evaluate noise`, whose subset the space was not fitted on, refuses a learned space in one line."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder)
    fitted = cli("spaces", "fit", "painters", "--crops", "0", "--from", "content", *embedder).stdout
    # too few wrong held-out answers to rank: the printed rate says how it follows from the printed counts
    right = "works with the right top artist at K = 10, the other parameters the defaults (its artists' scores; hit@1: "
    assert right in fitted
    assert "the nearest work), Laplace-smoothed: (right + 1) / (works + 2)" in fitted
    labelled = str(demo_catalogue.labelled)
    done = cli(
        "evaluate", "run", labelled, "--space", "painters", "--k-max", "5", "--k", "3", "--out", str(tmp_path / "e")
    )
    assert "evaluation run 1:" in done.stdout
    (request,) = json.loads(cli("audit", "list", "--limit", "1", "--json").stdout)
    shown = json.loads(cli("audit", "show", request["request_id"], "--json").stdout)
    assert shown["parameters"]["space"] == "painters" and shown["parameters"]["space_version"] == 1
    assert isinstance(shown["crop_log_odds"], float)  # measured as `attribute` measures it
    unknown = cli("evaluate", "run", labelled, "--space", "nothing", "--out", str(tmp_path / "u"), *embedder, code=1)
    assert unknown.stderr.strip().startswith("error: no learned space nothing (fitted here: painters);")
    assert "Traceback" not in unknown.output
    evaluation = str(demo_catalogue.evaluation)  # with true works, which content-bias needs
    bias = cli("evaluate", "content-bias", evaluation, "--space", "painters", "--out", str(tmp_path / "b"), *embedder)
    assert "content-bias run 2" in bias.stdout and "caveat" in bias.stdout  # fitted from content: circular
    noise = ("evaluate", "noise", evaluation, "--space", "painters", "--levels", "0.5", "--out", str(tmp_path / "n"))
    refused = cli(*noise, *embedder, code=1)
    assert refused.stderr.count("\n") == 1 and "run it in content, style or fused" in refused.stderr
    runs = json.loads(cli("evaluate", "list", "--format", "json").stdout)
    assert [run["status"] for run in runs] == ["completed", "completed"]
    centroid = ("evaluate", "run", labelled, "--k-max", "5", "--k", "3", "--top", "centroid", *embedder)
    refused = cli(*centroid, "--out", str(tmp_path / "c0"), code=2)  # content has no centroids: refused before a run
    assert refused.stderr.count("\n") == 1 and "top rule centroid needs a learned space" in refused.stderr
    done = cli(*centroid, "--space", "painters", "--out", str(tmp_path / "c"))
    assert "evaluation run 3:" in done.stdout
    (request,) = json.loads(cli("audit", "list", "--limit", "1", "--json").stdout)
    shown = json.loads(cli("audit", "show", request["request_id"], "--json").stdout)
    assert shown["parameters"]["top"] == "centroid" and shown["parameters"]["space"] == "painters"
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["overall"]["confidence"]["queries"] == 6  # scored on the logged centroid artists
    assert len(json.loads(cli("evaluate", "list", "--format", "json").stdout)) == 3


def test_spaces_list_has_its_header_also_with_no_spaces(cli: Cli) -> None:
    """On an empty log the table was `(no rows)` without a header and the CSV nothing at all."""
    header = "name,version,base,method,dimension,works,artists,artists_since_fit,collection,hit@1,hit@10,confidence"
    assert cli("spaces", "list", "--format", "csv").stdout == header + "\n"
    assert cli("spaces", "list").stdout == header.replace(",", "  ") + "\n(no rows)\n"
    assert cli("spaces", "list", "--json").stdout.strip() == "[]"
