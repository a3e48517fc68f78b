"""Confidence calibration: the logistic fit, the default formula, AUROC, labelled-query files, and the calibrate
round trip (fit -> stored model -> later requests record and use it) with the real EfficientNet-Lite0 embedder."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDER
from dbtools import catalogue_points, superuser_edit
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from attribution_audit.config import Settings, load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, FEATURES, LogisticModel, confidence, fit_logistic
from attribution_audit.domain.indicators import confidence_score
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import WorkPoint, point_id_for
from attribution_audit.domain.results import diff_attributions
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import AttributionAuditError, DatabaseError, ImageError, ManifestError
from attribution_audit.evaluation.metrics import auroc
from attribution_audit.services.attribution import Attributor
from attribution_audit.services.calibrate import Baseline, calibrate, fit_and_score, worse
from attribution_audit.services.ingest import ingest_source
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.labelled import read_labelled
from attribution_audit.sources.manifest import open_source
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.evaluations import CalibrationEvidence
from attribution_audit.store.models import AttributionRequest, CalibrationModel
from attribution_audit.store.vectors import open_store
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

TRUE_COEF = np.array([-4.0, -5.0, 20.0])  # per unit of entropy, nn_distance, margin (the order of FEATURES)


def synthetic(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (entropy, nn_distance, margin), labels drawn from a known logistic model, and its probabilities."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0, 0.8, n), rng.uniform(0, 0.2, n)])
    p = 1 / (1 + np.exp(-(1.5 + x @ TRUE_COEF)))
    return x, (rng.random(n) < p).astype(float), p


CONFIDENT = {"entropy": 0.05, "nn_distance": 0.05, "margin": 0.18}
POOR = {"entropy": 0.95, "nn_distance": 0.75, "margin": 0.0}


# -- the logistic fit --------------------------------------------------------------------------------------------------
def test_fit_logistic_recovers_the_direction_of_each_indicator() -> None:
    x, y, p = synthetic()
    model = fit_logistic(x, y, name="logistic-test")
    assert FEATURES == ("entropy", "nn_distance", "margin")
    entropy, distance, margin = model.coef
    assert entropy < 0 and distance < 0 and margin > 0  # correct <=> low entropy, low distance, high margin
    # On the original scale the coefficients are near the true ones (L2 shrinks them a little).
    np.testing.assert_allclose(np.array(model.coef) / np.array(model.std), TRUE_COEF, rtol=0.4)
    np.testing.assert_allclose(model.mean, x.mean(axis=0))
    np.testing.assert_allclose(model.std, x.std(axis=0))
    assert model.predict(CONFIDENT) > 0.5 > model.predict(POOR)
    predicted = np.array([model.predict(dict(zip(FEATURES, row, strict=True))) for row in x])
    assert np.mean(np.abs(predicted - p)) < 0.06
    assert model.name == "logistic-test"


def test_fit_logistic_stays_finite_on_separable_data_and_constant_features() -> None:
    x, _, _ = synthetic(n=60, seed=3)
    x[:, 0] = 0.0  # K=1: the entropy is always 0
    y = (x[:, 1] < 0.4).astype(float)  # perfectly separable by distance
    model = fit_logistic(x, y)
    assert all(math.isfinite(c) for c in [*model.coef, model.intercept])
    assert model.std[0] == 1.0 and model.coef[0] == 0.0  # a constant feature carries no weight
    predicted = [model.predict(dict(zip(FEATURES, row, strict=True))) for row in x]
    assert all(0.0 < q < 1.0 for q in predicted)
    # The L2 penalty keeps the weights finite, so only cases away from the boundary are sure to be separated.
    clear = np.abs(x[:, 1] - 0.4) > 0.1
    assert clear.sum() > 30
    assert [q > 0.5 for q, c in zip(predicted, clear, strict=True) if c] == [bool(v) for v in y[clear]]


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_fit_logistic_needs_both_classes(label: float) -> None:
    x, _, _ = synthetic(n=20)
    with pytest.raises(ValueError, match="both correct and incorrect"):
        fit_logistic(x, np.full(20, label))


def test_predict_takes_missing_indicators_at_their_least_confident_value() -> None:
    x, y, _ = synthetic()
    model = fit_logistic(x, y)
    assert model.predict({"entropy": 0.2, "nn_distance": None, "margin": None}) == model.predict(
        {"entropy": 0.2, "nn_distance": 1.0, "margin": 0.0}
    )
    assert model.predict({"entropy": None, "nn_distance": 0.1, "margin": 0.1}) == model.predict(
        {"entropy": 1.0, "nn_distance": 0.1, "margin": 0.1}
    )


def test_confidence_without_a_model_is_the_default_formula() -> None:
    for features in (CONFIDENT, POOR, {"entropy": 0.4, "nn_distance": 1.7, "margin": None}):
        expected = confidence_score(features["entropy"], features["nn_distance"])  # type: ignore[arg-type]
        assert confidence(None, features) == (expected, "default-v1")
    assert confidence(None, {"entropy": 0.0, "nn_distance": None, "margin": None}) == (0.0, "default-v1")
    assert confidence(None, CONFIDENT)[0] == pytest.approx(0.95 * 0.95)


def test_confidence_with_a_model_is_its_prediction() -> None:
    x, y, _ = synthetic()
    model = fit_logistic(x, y, name="logistic-v7")
    assert confidence(model, CONFIDENT) == (model.predict(CONFIDENT), "logistic-v7")


# -- AUROC -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.1, 0.2, 0.8, 0.9], [False, False, True, True], 1.0),
        ([0.9, 0.8, 0.2, 0.1], [False, False, True, True], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [False, True, False, True], 0.5),
        ([0.1, 0.4, 0.35, 0.8], [False, False, True, True], 0.75),  # 3 of 4 positive-negative pairs in order
        ([0.3, 0.3, 0.9], [True, False, False], 0.25),  # one tie (half) and one loss out of 2 pairs
        ([0.1, 0.2], [True, True], None),
        ([0.1, 0.2], [False, False], None),
        ([], [], None),
    ],
)
def test_auroc_hand_cases(scores: list[float], labels: list[bool], expected: float | None) -> None:
    assert auroc(scores, labels) == expected


# -- stored models -----------------------------------------------------------------------------------------------------
def store_model(
    audit: AuditStore, model: LogisticModel, fingerprint: str, parameters: dict[str, object] | None = None
) -> str:
    """Store a fitted model as ``calibrate`` does (``parameters``: the attribution parameters it was fitted at);
    its recorded name."""
    evidence = CalibrationEvidence(
        embedder_fingerprint=fingerprint,
        labelled_path="/labelled.csv",
        labelled_sha256="0" * 64,
        n_samples=400,
        n_positive=200,
        fit_metrics={} if parameters is None else {"parameters": parameters},
    )
    return audit.evaluations.add_calibration(model, evidence)


@pytest.mark.parametrize(
    "statement", ["UPDATE calibration_models SET fit_metrics = '{}'", "DELETE FROM calibration_models"]
)
def test_a_stored_model_cannot_be_changed_or_deleted(audit: AuditStore, statement: str) -> None:
    """Records name the model that scored them and the parameters it scores are not in its fingerprint: the table
    is append-only (revision 0002), like the audit tables."""
    x, y, _ = synthetic()
    name = store_model(audit, fit_logistic(x, y), "test@0", {"space": "content", "top": "share", "k": 10})
    with pytest.raises(DBAPIError, match="append-only"), audit.engine.begin() as connection:
        connection.execute(text(statement))
    assert audit.evaluations.calibration(name).name == name


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("features", {"names": ["entropy"], "std": [1.0], "coef": [1.0], "intercept": 0.0}, "KeyError: 'mean'"),
        (
            "features",
            {"names": ["entropy", "margin"], "mean": [0, 0], "std": [1, 1], "coef": [1], "intercept": 0},
            "coef is not 2 finite numbers",
        ),
        ("features", {"names": ["bogus"], "mean": [0], "std": [1], "coef": [1], "intercept": 0}, "unknown feature"),
        ("features", {"names": ["entropy"], "mean": [0], "std": [0], "coef": [1], "intercept": 0}, "std is not"),
        ("features", {"names": ["entropy"], "mean": [0], "std": [1], "coef": ["x"], "intercept": 0}, "coef is not"),
        ("features", {"names": ["entropy"], "mean": [0], "std": [1], "coef": [1], "intercept": None}, "intercept"),
        ("features", [1, 2], "AttributeError"),
        ("fit_metrics", [1], "fit metrics are not a JSON object"),
        ("fit_metrics", {"parameters": ["content"]}, "fit parameters are not a JSON object"),
    ],
)
def test_a_model_changed_in_the_database_is_one_error_naming_it(
    audit: AuditStore, column: str, value: object, problem: str
) -> None:
    """(It was a KeyError, AttributeError or a ValueError from numpy at the next request: a traceback.)"""
    x, y, _ = synthetic()
    name = store_model(audit, fit_logistic(x, y), "test@0")
    superuser_edit(audit.engine, f"UPDATE calibration_models SET {column} = '{json.dumps(value)}'")
    with pytest.raises(DatabaseError) as refused:
        audit.evaluations.latest_calibration("test@0")
    said = str(refused.value)
    assert f"calibration model {name} in the audit database is not a model" in said and problem in said, said
    assert "\n" not in said


def test_latest_model_is_the_newest_for_the_embedder_and_is_used_by_new_attributors(
    audit: AuditStore, tmp_path: Path
) -> None:
    """Both databases: the model's floats must read back exactly from JSON (JSONB on PostgreSQL)."""
    x, y, _ = synthetic()
    old, new = fit_logistic(x[:200], y[:200]), fit_logistic(x, y)
    calibrations = audit.evaluations
    assert calibrations.latest_calibration("test@0") is None
    store_model(audit, old, "test@0")
    newest = store_model(audit, new, "test@0")
    other = store_model(audit, old, "other@0")
    # Models fitted later in other spaces score other distances: they never replace the content space's.
    styled = store_model(audit, old, "test@0", AttributionParams(space="style").as_json())
    learned = store_model(audit, old, "test@0", {"space": "fontstyle", "space_version": 2})
    # and one fitted under the other top-artist rule labels other answers right: it scores only that rule's requests
    nearest = store_model(audit, old, "test@0", AttributionParams(top="nearest").as_json())

    loaded = calibrations.latest_calibration("test@0")
    assert loaded is not None and loaded.name == newest
    assert calibrations.latest_calibration("test@0", "content") == loaded
    assert getattr(calibrations.latest_calibration("test@0", "style"), "name", None) == styled
    assert getattr(calibrations.latest_calibration("test@0", "fontstyle", 2), "name", None) == learned
    assert calibrations.latest_calibration("test@0", "fontstyle", 1) is None
    assert calibrations.latest_calibration("test@0", "fused") is None
    assert getattr(calibrations.latest_calibration("test@0", "content", None, "nearest"), "name", None) == nearest
    assert calibrations.latest_calibration("test@0", "style", None, "nearest") is None
    assert (loaded.mean, loaded.std, loaded.coef, loaded.intercept) == (new.mean, new.std, new.coef, new.intercept)
    assert calibrations.latest_calibration("unknown@0") is None

    # An Attributor of that embedder records the model's name and prediction; another embedder's does not.
    store = EdgeStore(tmp_path / "qdrant", "works_cal")
    store.ensure_collection(4)
    store.upsert(
        [
            WorkPoint(
                point_id_for("c", f"w{i}"),
                np.array(v, dtype=np.float32),
                {"work_id": f"w{i}", "artist": a, "catalogue": "c"},
            )
            for i, (v, a) in enumerate([([1, 0.1, 0, 0], "A"), ([1, 0, 0.3, 0], "A"), ([0.2, 1, 0, 0], "B")])
        ]
    )
    store.build_index()
    catalogue_points(audit, store)  # (as ingested: a request cites works the catalogue holds)
    try:
        query = QueryVectors(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))
        params = AttributionParams(k=3)
        for fingerprint, expected_name in (("test@0", loaded.name), ("other@0", other), ("none@0", None)):
            attributor = Attributor(
                audit,
                store,
                embedder_name="test",
                embedder_fingerprint=fingerprint,
                requester="pytest",
                exact_cache_dir=tmp_path / "exact",
            )
            outcome = attributor.compute(query, params)
            result = attributor.record("q.png", "ab" * 32, query, params, outcome)
            if expected_name is None:
                assert result.confidence_model == "default-v1"
                assert result.confidence == confidence_score(result.entropy, result.nn_distance)
            else:
                model = calibrations.latest_calibration(fingerprint)
                assert model is not None and result.confidence_model == expected_name == model.name
                assert result.confidence == model.predict(outcome.features)
    finally:
        store.close()


# -- labelled query files ----------------------------------------------------------------------------------------------
def test_read_labelled_parses_paths_artists_work_ids_and_subsets(tmp_path: Path) -> None:
    csv_path = tmp_path / "labels" / "labelled.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "\ufeffpath, artist ,work_ids,subset\n"
        "gen/a.png,  Ada   Vermeer ,A-1; A-2;;,style\n"
        f"{tmp_path / 'b.png'},Bruno Kahlo,,\n",
        encoding="utf-8",
    )
    first, second = read_labelled(csv_path)
    assert first.line == 2 and second.line == 3
    assert first.path == (csv_path.parent / "gen" / "a.png").resolve()  # relative to the CSV's folder
    assert second.path == tmp_path / "b.png"
    assert first.artist == "Ada Vermeer" and second.artist == "Bruno Kahlo"
    assert first.work_ids == ("A-1", "A-2") and second.work_ids == ()
    assert first.subset == "style" and second.subset is None


def test_read_labelled_removes_control_characters_from_subsets_and_captions(tmp_path: Path) -> None:
    """Subsets are printed to the terminal and written in reports and plot titles: no escape sequence gets there."""
    csv_path = tmp_path / "labelled.csv"
    csv_path.write_text('path,artist,work_ids,subset,caption\na.png,Ada,"W1;W2","a\x1b[31mred\x07","x\x00y\x1bz"\n')
    (query,) = read_labelled(csv_path)
    assert query.subset == "a[31mred" and query.work_ids == ("W1", "W2") and query.caption == "xyz"
    csv_path.write_text('path,artist,subset\na.png,Ada,"\x1b"\n')
    assert read_labelled(csv_path)[0].subset is None  # nothing left: no subset


@pytest.mark.parametrize(("header", "missing"), [("path,work_ids", "artist"), ("file,artist", "path"), ("x", "path")])
def test_read_labelled_names_the_file_when_columns_are_missing(tmp_path: Path, header: str, missing: str) -> None:
    csv_path = tmp_path / "labelled.csv"
    csv_path.write_text(f"{header}\na.png,b\n")
    with pytest.raises(ManifestError, match=r"labelled\.csv: missing column\(s\) " + missing) as info:
        read_labelled(csv_path)
    assert str(csv_path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("row", ["a.png,", ",Ada", "a.png,   "])
def test_read_labelled_names_the_line_of_an_empty_path_or_artist(tmp_path: Path, row: str) -> None:
    csv_path = tmp_path / "labelled.csv"
    csv_path.write_text(f"path,artist\nok.png,Ada\n{row}\n")
    with pytest.raises(ManifestError, match="empty path or artist") as info:
        read_labelled(csv_path)
    assert f"{csv_path}:3:" in str(info.value)


def test_read_labelled_refuses_an_image_listed_twice_naming_both_lines(tmp_path: Path) -> None:
    """The same image under two rows (spelt two ways) would count twice in a calibration, and an evaluation's query
    set holds each image once (it failed on the database's unique key, as if the database were down)."""
    csv_path = tmp_path / "labelled.csv"
    (tmp_path / "sub").mkdir()
    csv_path.write_text("path,artist\na.png,Ada\nb.png,Bruno\nsub/../a.png,Chiara\n")
    with pytest.raises(ManifestError) as info:
        read_labelled(csv_path)
    assert str(info.value) == (
        f"{csv_path}:4: image sub/../a.png is already listed at line 2; list each labelled image once"
    )


def test_read_labelled_refuses_a_value_in_a_column_the_header_does_not_name(tmp_path: Path) -> None:
    """A value under an unnamed column (``path,,artist``) or beyond the header's last was dropped silently (an artist
    or work id in the wrong place, never read): refused naming the file's line and the column, as the catalogue's
    manifest refuses it; such cells left empty (a spreadsheet's trailing commas) are read as before."""
    csv_path = tmp_path / "labelled.csv"
    csv_path.write_text("path,,artist\na.png,,Ada\nb.png,Bruno,Ada\n")
    with pytest.raises(ManifestError) as info:
        read_labelled(csv_path)
    assert str(info.value) == (
        f"{csv_path}:3: a value in column 2, which the header does not name; name the column or move the value"
    )
    csv_path.write_text("path,artist,,\na.png,Ada,,\nb.png,Bruno,,,, \n")
    assert [(q.line, q.artist) for q in read_labelled(csv_path)] == [(2, "Ada"), (3, "Bruno")]
    csv_path.write_text("path,artist,work_ids\na.png,Ada,W1\nb.png,Bruno,W2,,W3\n")
    with pytest.raises(ManifestError) as info:
        read_labelled(csv_path)
    assert str(info.value) == (
        f"{csv_path}:3: a value in column 5, which the header does not name; name the column or move the value"
    )


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("a.png,\x01\x7f", "artist is empty or longer than 300 characters once cleaned"),
        ("a.png," + "\u0958" * 300, "artist is empty or longer than 300 characters once cleaned"),  # 600 once NFC
        ("a.png,Ada," + "s" * 101, "subset is empty or longer than 100 characters once cleaned"),
    ],
)
def test_read_labelled_refuses_names_the_audit_db_would_not_store_as_read(
    tmp_path: Path, row: str, problem: str
) -> None:
    """An artist of control characters was stored as '' (a blank true artist); one that NFC makes longer than its
    column, or an over-long subset, failed on PostgreSQL at the write, saying to retry when it is reachable."""
    csv_path = tmp_path / "labelled.csv"
    csv_path.write_text(f"path,artist,subset\n{row}\n", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        read_labelled(csv_path)
    assert str(info.value).startswith(f"{csv_path}:2: {problem} ")


def test_read_labelled_rejects_empty_and_missing_files(tmp_path: Path) -> None:
    csv_path = tmp_path / "labelled.csv"
    csv_path.write_text("path,artist\n")
    with pytest.raises(ManifestError, match="no labelled queries"):
        read_labelled(csv_path)
    with pytest.raises(ManifestError, match="not found"):
        read_labelled(tmp_path / "absent.csv")
    csv_path.write_bytes(b"path,artist\n\xff\xfe.png,Ada\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_labelled(csv_path)


# -- calibrate, end to end with the real embedder ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ingested_demo(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, demo_catalogue: DemoCatalogue, embedder: Embedder
) -> Path:
    """A data dir whose audit log (SQLite) and embedded collection hold the demo catalogue, ingested once."""
    data_dir = tmp_path_factory.mktemp("calibration") / "data"
    data_dir.mkdir()
    shutil.copyfile(sqlite_template, data_dir / "audit.sqlite")
    settings = load_settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'audit.sqlite'}")
    audit = AuditStore.open(settings.resolved_database_url)
    store = open_store(settings, EMBEDDER)
    try:
        ingest_source(open_source(demo_catalogue.manifest), audit=audit, store=store, embedder=embedder)
    finally:
        store.close()
        audit.close()
    return data_dir


@pytest.fixture
def demo_settings(ingested_demo: Path, tmp_path: Path) -> Iterator[Settings]:
    """Settings of this test's copy of the ingested data dir (the log starts without calibration models)."""
    data_dir = tmp_path / "data"
    shutil.copytree(ingested_demo, data_dir)
    yield load_settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'audit.sqlite'}")


@pytest.fixture
def demo_audit(demo_settings: Settings) -> Iterator[AuditStore]:
    audit = AuditStore.open(demo_settings.resolved_database_url)
    yield audit
    audit.close()


def write_labelled(path: Path, rows: list[tuple[Path, str]]) -> Path:
    path.write_text("path,artist\n" + "".join(f"{p},{a}\n" for p, a in rows))
    return path


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_calibrate_round_trip(
    demo_settings: Settings, demo_audit: AuditStore, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    engine = demo_audit.engine
    works = demo_catalogue.manifest.parent / "works"
    # The generated queries with their true artist (attributed correctly), and catalogue works of artists 0-2
    # labelled with the next artist's name (so that the top artist is "wrong").
    artists = [q.artist for q in demo_catalogue.queries]
    wrong = [(works / f"a{a}_w{w}.png", artists[a + 1]) for a in range(3) for w in (0, 1)]
    rows = [(q.path, q.artist) for q in demo_catalogue.queries] + wrong
    labelled = write_labelled(tmp_path / "labelled.csv", rows)

    with open_attributor(demo_settings, demo_audit, EMBEDDER) as attributor:
        report = calibrate(attributor, labelled, folds=3, plot=tmp_path / "reliability.png")
        # Positive: the top artist (at the calibration parameters, K=10) is the labelled one.
        assert attributor.embedder is not None
        correct = [
            attributor.compute(
                QueryVectors(attributor.embedder.embed([load_image(path, target_size=224).image])[0]),
                AttributionParams(verify="off"),
            ).top_artist
            == artist
            for path, artist in rows
        ]
        assert not any(correct[6:]) and sum(correct[:6]) >= 4  # the demo's generated queries are mostly right
        assert report.model_name == "logistic-v1"
        assert report.n_samples == 12 and report.n_positive == sum(correct)
        scores = report.scores
        assert scores["auroc"] is not None and 0.0 <= scores["auroc"] <= 1.0 and 0.0 <= (scores["brier"] or 0) <= 1.0
        # Out-of-fold scores of the model, and the alternatives' on the same queries.
        assert scores["cv_auroc"] is not None and 0.0 <= scores["cv_auroc"] <= 1.0 and report.folds == 3
        assert scores["cv_ece"] is not None and 0.0 <= scores["cv_ece"] <= 1.0
        assert scores["nn_distance_auroc"] is not None
        # the content space without a model: requests keep the default formula, the baseline of the refusal
        kept = Baseline("default-v1", "the default formula", scores["default_auroc"], scores["default_ece"])
        assert report.baseline == kept
        assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert count(engine, AttributionRequest) == 0  # calibration queries are not logged as attributions

        with Session(engine) as session:
            row = session.scalars(select(CalibrationModel)).one()
        assert row.embedder_fingerprint == attributor.embedder_fingerprint
        assert (row.n_samples, row.n_positive) == (12, report.n_positive)
        assert row.labelled_path == str(labelled.resolve())
        assert row.features["names"] == [
            "entropy",
            "nn_distance",
            "margin",
            "top_share",
            "agreement",
            "agreement_spaces",
            "centroid_log_odds",
            "centroid_log_odds_others",
            "crop_log_odds",
        ]
        assert row.fit_metrics["cv_auroc"] == scores["cv_auroc"] and row.fit_metrics["folds"] == 3
        model = demo_audit.evaluations.latest_calibration(attributor.embedder_fingerprint)
        assert model is not None and model.name == "logistic-v1"

        # A new Attributor of the same embedder uses the stored model.
        calibrated = Attributor(
            demo_audit,
            attributor.store,
            embedder_name=EMBEDDER,
            embedder_fingerprint=attributor.embedder_fingerprint,
            requester="pytest",
            exact_cache_dir=tmp_path / "exact",
            embedder=attributor.embedder,
        )
        result = calibrated.attribute(demo_catalogue.queries[0].path)
        # Calibrating again on the same queries (the file since edited, or a copy elsewhere): the baseline, the newest
        # model stored (by this attributor's own earlier run too), was fitted on them, so its score there is
        # in-sample, and the baseline says so; other queries not.
        more = [(works / f"a{a}_w0.png", artists[a + 1]) for a in (3, 4)]  # two more wrong (a repeat is refused)
        write_labelled(labelled, rows + more[:1])
        edited = calibrate(calibrated, labelled, folds=3, force=True)
        assert (edited.baseline.model, edited.baseline.fitted_on) == ("logistic-v1", "an earlier version of them")
        copy = write_labelled(tmp_path / "copy.csv", rows + more[:1])
        copied = calibrate(calibrated, copy, folds=3, force=True)
        assert (copied.baseline.model, copied.baseline.fitted_on) == (edited.model_name, "these queries")
        other = write_labelled(tmp_path / "other.csv", rows + more[1:])
        again = calibrate(calibrated, other, folds=3, force=True).baseline
        assert (again.model, again.kind, again.fitted_on) == (copied.model_name, "the calibrate model", None)
    assert result.confidence_model == "logistic-v1"
    features = {
        "entropy": result.entropy,
        "nn_distance": result.nn_distance,
        "margin": result.margin,
        "top_share": result.top_artist_share,
        "agreement": result.agreement,
        "agreement_spaces": result.agreement_spaces,
        "centroid_log_odds": result.centroid_log_odds,
        "centroid_log_odds_others": result.centroid_log_odds_others,
        "crop_log_odds": result.crop_log_odds,
    }
    assert result.confidence == pytest.approx(model.predict(features), abs=1e-12)
    assert result.confidence != pytest.approx(confidence_score(result.entropy, result.nn_distance), abs=1e-6)


def test_calibrate_with_only_correct_labels_fails_with_one_line(
    demo_settings: Settings, demo_audit: AuditStore, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    works = demo_catalogue.manifest.parent / "works"
    artists = [q.artist for q in demo_catalogue.queries]
    labelled = write_labelled(tmp_path / "all-correct.csv", [(works / f"a{a}_w2.png", artists[a]) for a in range(6)])
    with (
        open_attributor(demo_settings, demo_audit, EMBEDDER) as attributor,
        pytest.raises(AttributionAuditError) as info,
    ):
        calibrate(attributor, labelled)
    message = str(info.value)
    assert "\n" not in message
    assert str(labelled) in message and "both correct and incorrect" in message and "6 correct of 6" in message
    assert count(demo_audit.engine, CalibrationModel) == 0


def test_calibrate_names_the_csv_line_of_a_missing_image_read_from_the_csv_folder(
    demo_settings: Settings, demo_audit: AuditStore, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """A path relative to the working directory is read from the CSV's folder: the error says so, with the line."""
    folder = tmp_path / "queries"
    folder.mkdir()
    shutil.copyfile(demo_catalogue.queries[0].path, folder / "q0.png")
    labelled = folder / "labelled.csv"
    labelled.write_text(f"path,artist\nq0.png,{demo_catalogue.queries[0].artist}\nqueries/q1.png,Ada\n")
    with (
        open_attributor(demo_settings, demo_audit, EMBEDDER) as attributor,
        pytest.raises(ImageError) as info,
    ):
        calibrate(attributor, labelled, folds=2)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{labelled}:3: {folder / 'queries' / 'q1.png'}: file not found")
    assert "a relative path is read from the CSV's folder" in message
    assert count(demo_audit.engine, CalibrationModel) == 0


def test_calibrate_refuses_to_store_a_model_it_cannot_cross_validate(
    demo_settings: Settings, demo_audit: AuditStore, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """Three labels (two right, one wrong) give no out-of-fold evidence: such a model must not replace the default
    confidence of every later request."""
    works = demo_catalogue.manifest.parent / "works"
    artists = [q.artist for q in demo_catalogue.queries]
    rows = [(works / f"a{a}_w2.png", artists[a]) for a in range(2)] + [(works / "a0_w0.png", artists[1])]
    labelled = write_labelled(tmp_path / "few.csv", rows)
    with (
        open_attributor(demo_settings, demo_audit, EMBEDDER) as attributor,
        pytest.raises(AttributionAuditError) as info,
    ):
        calibrate(attributor, labelled, folds=2)
    message = str(info.value)
    assert "\n" not in message and str(labelled) in message
    assert "2 correct and 1 incorrect of 3" in message and "add labelled queries;" in message
    assert "--folds" not in message  # already at the fewest folds: lowering them cannot help
    assert count(demo_audit.engine, CalibrationModel) == 0


def test_too_few_of_a_kind_for_the_folds_names_the_folds_that_would_do() -> None:
    y = np.array([1.0] * 6 + [0.0] * 3)
    x = np.random.default_rng(3).normal(size=(9, 5))
    with pytest.raises(AttributionAuditError) as info:
        fit_and_score(x, y, [0.5] * 9, 5, source="labelled.csv")
    message = str(info.value)
    assert "\n" not in message and "6 correct and 3 incorrect of 9" in message
    assert "add labelled queries or pass --folds 3;" in message


def test_a_model_ranking_worse_than_the_confidence_requests_keep_is_refused() -> None:
    """Indicators that carry little (seeded noise, one with a weak signal) against a default formula that ranks every
    query right: the model's out-of-fold AUROC is below the default's, so it must not become the active confidence."""
    rng = np.random.default_rng(12)
    y = np.array([1.0, 0.0] * 20)
    x = rng.normal(size=(40, len(CALIBRATION_FEATURES)))
    x[:, 0] += y  # a weak signal: better than chance, far from the default's ranking
    _, _, scores = fit_and_score(x, y, (0.2 + 0.6 * y).tolist(), 5, source="labelled.csv")
    assert scores["default_auroc"] == 1.0 and scores["cv_auroc"] is not None and 0.5 < scores["cv_auroc"] < 0.9
    formula = Baseline("default-v1", "the default formula", scores["default_auroc"], scores["default_ece"])
    message = worse(scores, "labelled.csv", formula)
    assert message is not None and "\n" not in message and message.startswith("labelled.csv: ")
    assert f"AUROC {scores['cv_auroc']:.3f} is below the AUROC 1.000 of the default formula default-v1 " in message
    assert "requests keep it" in message and "--force" in message
    # The same indicators against a default formula that ranks every query backwards: the model is kept...
    _, _, better = fit_and_score(x, y, (0.8 - 0.6 * y).tolist(), 5, source="labelled.csv")
    assert better["default_auroc"] == 0.0
    backwards = Baseline("default-v1", "the default formula", better["default_auroc"], better["default_ece"])
    assert worse(better, "labelled.csv", backwards) is None
    # ...unless the confidence requests keep (a learned space's own model, say) ranks them better than it does.
    own = Baseline("logistic-v3", "the space's own model", 0.95, 0.1)
    refused = worse(better, "labelled.csv", own)
    assert refused is not None and f"{better['cv_auroc']:.3f} is below the AUROC 0.950 of the space's own " in refused
    # An earlier calibrate model fitted on these same queries: its AUROC there is in-sample, and the refusal says so.
    earlier = Baseline("logistic-v2", "the calibrate model", 0.95, 0.1, fitted_on="these queries")
    in_sample = worse(better, "labelled.csv", earlier)
    assert in_sample is not None and "\n" not in in_sample
    assert (
        "of the calibrate model logistic-v2, fitted on these queries: its AUROC here is not out of sample" in in_sample
    )
    assert in_sample.endswith("(use --force to replace it or label new queries)")


def test_a_model_ranking_worse_than_chance_is_refused_whatever_the_baseline() -> None:
    """A cross-validated AUROC of 0.469 against a baseline of 0.458 (the user's case): refused, worse than chance."""
    scores = {"cv_auroc": 0.469}
    baseline = Baseline("default-v1", "the default formula", 0.458, 0.2)
    message = worse(scores, "labelled.csv", baseline)  # type: ignore[arg-type]
    assert message is not None and "\n" not in message
    assert message.startswith("labelled.csv: the fitted model's cross-validated AUROC 0.469 is below 0.5 (worse ")
    assert "--force" in message
    assert worse({"cv_auroc": 0.5}, "labelled.csv", baseline) is None  # type: ignore[arg-type]


def test_a_replay_scores_with_the_model_its_record_used(
    demo_settings: Settings, demo_audit: AuditStore, demo_catalogue: DemoCatalogue
) -> None:
    """A replay re-runs a request on today's index; its confidence comes from the model the record names, not from a
    model stored since (nor the default formula where the record's model no longer applies): only the index can make
    a replay differ."""
    names = ("entropy", "nn_distance", "margin")
    with open_attributor(demo_settings, demo_audit, EMBEDDER) as attributor:
        fingerprint = attributor.embedder_fingerprint
        first = store_model(
            demo_audit, LogisticModel("x", [0.5] * 3, [0.2] * 3, [-1.0, -2.0, 1.0], 0.3, names), fingerprint
        )
    with open_attributor(demo_settings, demo_audit, EMBEDDER) as attributor:
        recorded = attributor.attribute(demo_catalogue.queries[0].path)
        assert recorded.confidence_model == first
        later = store_model(
            demo_audit, LogisticModel("y", [0.5] * 3, [0.2] * 3, [3.0, 1.0, -1.0], -2.0, names), fingerprint
        )
    with open_attributor(demo_settings, demo_audit, EMBEDDER) as attributor:
        assert attributor.calibration_for(AttributionParams()).name == later  # what a new request would use
        before, replayed = attributor.replay(recorded.request_id)
    assert replayed.confidence_model == first and replayed.confidence == pytest.approx(before.confidence, abs=1e-12)
    assert not diff_attributions(before, replayed).changed
