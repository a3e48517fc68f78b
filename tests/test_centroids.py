"""Centroid log-odds (revision 0016): a request in a learned space records its top artist's log-odds under LDA's
Gaussian model of the catalogue's artists there (their centroids and pooled within-artist covariance); ``calibrate``
and a space's own confidence model fit on it; the hash covers it when set, older records and models keep theirs.
The ``centroid`` top rule reports the artist of maximum posterior under that model, in a learned space only."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import EMBEDDER, Cli
from dbtools import superuser_edit
from PIL import Image
from sqlalchemy import create_engine

from attribution_audit.config import load_settings
from attribution_audit.domain.confidence import CALIBRATION_FEATURES, FEATURES, LogisticModel, confidence
from attribution_audit.domain.indicators import request_indicators
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import STYLE
from attribution_audit.domain.projection import ArtistCentroids, Projection
from attribution_audit.domain.shares import DEFAULT_TEMPERATURE
from attribution_audit.domain.spaces import SPACES, LearnedSpace, QueryVectors
from attribution_audit.embedding.crops import corner_crops
from attribution_audit.evaluation.metrics import scored_confidence
from attribution_audit.services.evaluate import load_outcomes
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.images import load_image
from attribution_audit.sources.synthetic import ARTIST_NAMES, DemoCatalogue, make_demo_catalogue
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.chain import StoredRequest, canonical_content
from attribution_audit.store.evaluations import CalibrationEvidence


def _artists(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three artists in 2-d with a shared covariance that is wide along x and narrow along y, 40 works each."""
    rng = np.random.default_rng(seed)
    means = {"a": (0.0, 0.0), "b": (3.0, 0.5), "c": (-3.0, -0.5)}
    labels = [name for name in means for _ in range(40)]
    points = np.array([means[name] for name in labels]) + rng.normal(size=(len(labels), 2)) * [3.0, 0.2]
    return points, labels


def _identity_works(
    points: np.ndarray, labels: list[str]
) -> tuple[Projection, list[tuple[str, dict[str, Any], QueryVectors]]]:
    """A projection whose coordinates are the (unit-joined) rows, and the points as style-space works of ``labels``."""
    projection = Projection(mean=np.zeros(2), matrix=np.eye(2))
    return projection, [(f"p{i}", {"artist": a}, QueryVectors(np.zeros(2), points[i])) for i, a in enumerate(labels)]


def test_log_odds_is_the_gaussian_posterior_with_the_pooled_within_artist_covariance() -> None:
    points, labels = _artists()
    model = ArtistCentroids.fit(points, labels)
    assert model is not None and model.artists == ("a", "b", "c")
    names = np.array(labels)
    centres = np.array([points[names == a].mean(axis=0) for a in model.artists])
    within = points - centres[[model.artists.index(a) for a in labels]]
    inverse = np.linalg.inv(within.T @ within / (len(points) - 3))
    query = np.array([0.4, 0.4])  # Euclidean: nearest a's centroid; along the narrow axis it is b's
    likelihood = np.array([math.exp(-0.5 * (query - c) @ inverse @ (query - c)) for c in centres])
    for i, artist in enumerate(model.artists):
        expected = math.log(likelihood[i] / (likelihood.sum() - likelihood[i]))  # equal priors
        assert abs(expected) < 30 and model.log_odds(query, artist) == pytest.approx(
            expected, rel=1e-3
        )  # up to the ridge
    assert (model.log_odds(query, "b") or 0) > 0 > (model.log_odds(query, "a") or 0)
    assert model.log_odds(np.array([3.0, 40.0]), "a") == -30.0  # clipped: far from every centroid
    assert model.log_odds(query, "an artist without works") is None


def test_no_model_without_two_artists_or_within_artist_spread() -> None:
    points, _ = _artists()
    assert ArtistCentroids.fit(points, ["a"] * len(points)) is None
    assert ArtistCentroids.fit(points[[0, 40, 80]], ["a", "b", "c"]) is None  # one work each


def test_a_learned_space_built_with_its_works_artists_has_the_model_and_the_base_spaces_none() -> None:
    points, labels = _artists()
    projection, works = _identity_works(points, labels)
    query = QueryVectors(np.zeros(2), points[45])
    space = LearnedSpace.over("s", 1, STYLE, projection, works, labels)
    model = ArtistCentroids.fit(space.coordinates([w[2] for w in works]), labels)
    assert model is not None
    assert space.centroid_log_odds(query, "b") == pytest.approx(model.log_odds(space.coordinates([query])[0], "b"))
    assert LearnedSpace.over("s", 1, STYLE, projection, works).centroid_log_odds(query, "b") is None
    assert all(space.centroid_log_odds(query, "b") is None for space in SPACES.values())


def test_an_artist_ingested_since_the_fit_has_no_centroid() -> None:
    """The projection has no direction for an artist it was not fitted on: a new artist's centroid captured the
    centroid rule's answers (log-odds 30) for queries whose neighbours were all other artists'."""
    points, labels = _artists()
    projection, works = _identity_works(points, labels)
    query = QueryVectors(np.zeros(2), points[45])  # one of b's works
    space = LearnedSpace.over("s", 1, STYLE, projection, works, labels, fitted={"a", "c"})
    assert space.since_fit == ("b",) and space.centroid_log_odds(query, "b") is None
    assert space.most_likely_artist(query) in {"a", "c"}
    kept = [w[2] for w, a in zip(works, labels, strict=True) if a != "b"]
    model = ArtistCentroids.fit(space.coordinates(kept), [a for a in labels if a != "b"])
    assert model is not None and space.centroids is not None and space.centroids.artists == ("a", "c")
    assert space.centroid_log_odds(query, "a") == pytest.approx(model.log_odds(space.coordinates([query])[0], "a"))
    assert LearnedSpace.over("s", 1, STYLE, projection, works, labels, fitted=set(labels)).since_fit == ()


@pytest.mark.slow
def test_a_space_fitted_before_an_artist_was_ingested_says_so_and_gives_it_no_centroid(
    cli: Cli, tmp_path: Path
) -> None:
    embedder = ["--embedder", EMBEDDER]
    four = make_demo_catalogue(tmp_path / "four", artists=4, works_per_artist=6)
    five = make_demo_catalogue(tmp_path / "five", artists=5, works_per_artist=6)
    cli("ingest", str(four.manifest), *embedder, "--spaces", "content,style", "--catalogue", "demo")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", "--k", "5", *embedder)
    (listed,) = json.loads(cli("spaces", "list", "--json").stdout)
    assert listed["artists_since_fit"] == 0 and "artists" not in listed["validation"]
    own = listed["validation"]["confidence"]["model"]
    cli("ingest", str(five.manifest), *embedder, "--spaces", "content,style", "--catalogue", "demo")
    (listed,) = json.loads(cli("spaces", "list", "--json").stdout)
    assert listed["artists"] == 4 and listed["artists_since_fit"] == 1
    new = ARTIST_NAMES[4]
    args = ("attribute", str(five.queries[4].path), "--space", "painters", "--top", "centroid", "--json", *embedder)
    done = cli(*args)
    (record,) = json.loads(done.stdout)
    assert record["top_artist"] != new and record["top_artist"] in ARTIST_NAMES[:4]
    # The refit the note suggests keeps the version's own K (5, not the default); the own model, fitted under the
    # share rule, does not score these centroid-rule requests: a second note says so, and how to fit one.
    assert record["confidence_model"] == "default-centroid-v1"
    since_fit, elsewhere = done.stderr.splitlines()
    assert since_fit == (
        f"note: space painters (version 1) was fitted before 1 artist(s) were ingested ({new}): they have no "
        "centroid; refit it with `attribution-audit spaces fit painters --from style --k 5` to include them"
    )
    assert elsewhere == (
        f"note: space painters (version 1)'s own confidence model {own} was fitted at K = 5 under --top share, not "
        "these requests' K = 10 under --top centroid: their confidence is the default formula's "
        "(default-centroid-v1, recorded as their confidence model); `attribution-audit calibrate LABELLED.csv "
        "--space painters --k 10 --top centroid` fits one for --top centroid (spaces fit fits only --top share) on "
        "labelled queries"
    )
    refit = re.search(r"`attribution-audit (spaces fit [^`]*)`", since_fit)
    assert refit is not None
    cli(*refit.group(1).split(), "--crops", "0", *embedder)
    versions = json.loads(cli("spaces", "list", "--json").stdout)
    assert [s["artists_since_fit"] for s in versions] == [1, 0]
    assert versions[1]["validation"]["confidence"]["parameters"]["k"] == 5
    (refitted,) = json.loads(cli(*args).stdout)
    assert refitted["parameters"]["space_version"] == 2


@pytest.mark.slow
def test_a_request_page_notes_only_the_artists_ingested_before_the_request(
    cli_on: Callable[[str], Cli], migrated_url: str, tmp_path: Path
) -> None:
    """The since-fit note of a request's page (and of `audit show --format json`) counted every artist ingested
    since the fit, also those ingested after the request: a request made before any had the note all the same."""
    cli = cli_on(migrated_url)  # SQLite and PostgreSQL: the works' ingest times against the request's
    embedder = ["--embedder", EMBEDDER]
    catalogues = [make_demo_catalogue(tmp_path / str(n), artists=n, works_per_artist=6) for n in (4, 5, 6)]
    ingest = ("--spaces", "content,style", "--catalogue", "demo", *embedder)
    args = ("--space", "painters", "--k", "5", "--json", *embedder)
    query = str(catalogues[0].queries[0].path)
    cli("ingest", str(catalogues[0].manifest), *ingest)
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    (before,) = json.loads(cli("attribute", query, *args).stdout)
    cli("ingest", str(catalogues[1].manifest), *ingest)
    (after,) = json.loads(cli("attribute", query, *args).stdout)
    cli("ingest", str(catalogues[2].manifest), *ingest)
    note = (
        f"space painters (version 1) was fitted before 1 artist(s) were ingested ({ARTIST_NAMES[4]}): they have no "
        "centroid; refit it with `attribution-audit spaces fit painters --from style` to include them"
    )
    for record, notes in ((before, []), (after, [note])):
        shown = json.loads(cli("audit", "show", record["request_id"], "--format", "json").stdout)
        assert shown["notes"] == notes
        page = tmp_path / "page.html"
        cli("report", "request", record["request_id"], "--html", str(page))
        shown_notes = [
            line for line in page.read_text(encoding="utf-8").splitlines() if "<strong>Note</strong>" in line
        ]
        assert shown_notes == [f'<p class="warn"><strong>Note</strong>: {n}</p>' for n in notes]
    assert json.loads(cli("spaces", "list", "--json").stdout)[0]["artists_since_fit"] == 2  # as of now


@pytest.mark.slow
def test_the_centroid_rule_without_the_fitted_artists_says_to_refit_when_others_were_ingested_since(
    cli: Cli, tmp_path: Path
) -> None:
    """The fitted artists' works withdrawn but one's, a new artist's ingested: the new artist has no centroid, so
    the rule has one artist, and ingesting more works would not help; refitting would."""
    embedder = ["--embedder", EMBEDDER]
    four = make_demo_catalogue(tmp_path / "four", artists=4, works_per_artist=6)
    five = make_demo_catalogue(tmp_path / "five", artists=5, works_per_artist=6)
    cli("ingest", str(four.manifest), *embedder, "--spaces", "content,style", "--catalogue", "demo")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    cli("ingest", str(five.manifest), *embedder, "--spaces", "content,style", "--catalogue", "demo")
    cli("catalogue", "withdraw", *[f"A{a}-W{w:03d}" for a in range(3) for w in range(6)], "--catalogue", "demo")
    args = ("attribute", str(five.queries[4].path), "--space", "painters", "--top", "centroid", *embedder)
    (line,) = cli(*args, code=1).stderr.splitlines()
    assert line.endswith(
        f"now holds 6 works of the 1 artist it was fitted on; space painters (version 1) was fitted before 1 "
        f"artist(s) were ingested ({ARTIST_NAMES[4]}): they have no centroid; refit it with `attribution-audit "
        "spaces fit painters --from style` to include them (a new request can use the top rule share or nearest)"
    )


def test_the_centroid_rule_reports_the_artist_of_maximum_posterior_where_share_and_nearest_differ() -> None:
    points, labels = _artists()
    projection, works = _identity_works(points, labels)
    space = LearnedSpace.over("s", 1, STYLE, projection, works, labels)
    query = QueryVectors(np.zeros(2), np.array([-1.0, 0.2]))  # among b's works by angle; a's by the model
    names = np.array(labels)
    centres = {a: points[names == a].mean(axis=0) for a in "abc"}
    within = points - np.array([centres[a] for a in labels])
    inverse = np.linalg.inv(within.T @ within / (len(points) - 3))
    distance = {a: (query.of(STYLE) - c) @ inverse @ (query.of(STYLE) - c) for a, c in centres.items()}
    assert min(distance, key=lambda a: distance[a]) == space.most_likely_artist(query) == "a"
    tops, shares = {}, {}
    for rule in ("share", "nearest", "centroid"):
        params = AttributionParams(k=5, space="s", top=rule)
        ranked = space.candidates(space, query, params)  # a learned space searches its own projected works
        centroid = space.most_likely_artist(query) if rule == "centroid" else None
        _, _, features, by_artist, tops[rule] = request_indicators(
            ranked, lambda h: h.payload["artist"], params, centroid
        )
        shares[rule] = (features["top_share"], by_artist.get(tops[rule], 0.0))
    assert tops == {"share": "b", "nearest": "b", "centroid": "a"}
    assert shares["centroid"][0] == shares["centroid"][1] < 0.5  # the reported artist's share of the K works
    assert all(space.most_likely_artist(query) is None for space in SPACES.values())  # no centroids: no rule


@pytest.mark.slow
def test_no_work_within_the_max_distance_reports_no_artist_under_the_centroid_rule_too(
    cli: Cli, demo_catalogue: DemoCatalogue
) -> None:
    """--max-distance is the unknown-artist guard: the centroid rule named its artist with no work kept, where the
    share and nearest rules name none."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder)
    cli("spaces", "fit", "st", "--crops", "0", "--from", "content", *embedder)
    args = ("attribute", str(demo_catalogue.queries[2].path), "--space", "st", "--json", *embedder)
    for rule in ("share", "nearest", "centroid"):
        (kept,) = json.loads(cli(*args, "--top", rule).stdout)
        assert kept["top_artist"] is not None and kept["neighbours"]
        (record,) = json.loads(cli(*args, "--top", rule, "--max-distance", "0").stdout)
        assert (record["neighbours"], record["top_artist"], record["centroid_log_odds"]) == ([], None, None)
        assert "no differences" in cli("audit", "replay", record["request_id"]).stdout


def test_the_centroid_rules_default_confidence_measures_the_reported_artists_neighbours() -> None:
    points, labels = _artists()
    projection, works = _identity_works(points, labels)
    space = LearnedSpace.over("s", 1, STYLE, projection, works, labels)
    query = QueryVectors(np.zeros(2), np.array([-1.0, 0.2]))  # among b's works by angle; a's by the model
    for k, expect_works in ((3, False), (10, True)):  # a has no work among the 3 nearest, 4 among the 10
        params = AttributionParams(k=k, space="s", top="centroid")
        ranked = space.candidates(space, query, params)
        kept, _, features, _, top = request_indicators(ranked, lambda h: h.payload["artist"], params, "a")
        own = [1.0 - sim for hit, sim in kept if hit.payload["artist"] == "a"]
        assert top == "a" and bool(own) == expect_works and kept[0][0].payload["artist"] == "b"
        score, name = confidence(None, features, "centroid")
        assert name == "default-centroid-v1"  # not the share rule's formula: that one measures b's works
        assert score == pytest.approx((features["top_share"] or 0.0) * (1 - min(own, default=1.0)))
        assert (score > 0) == expect_works and score != confidence(None, features)[0]


def test_a_model_fitted_before_it_scores_without_it() -> None:
    old = LogisticModel("logistic-v1", [0.5, 0.2, 0.1], [0.1, 0.1, 0.1], [-1.0, -1.0, 1.0], 0.3, FEATURES)
    features: dict[str, float | None] = {"entropy": 0.4, "nn_distance": 0.3, "margin": 0.2}
    assert old.predict({**features, "centroid_log_odds": 25.0}) == old.predict(features)


def test_the_log_odds_is_hashed_only_when_set() -> None:
    metrics = {"entropy": 0.0, "confidence": 0.5, "confidence_model": "default-v1", "agreement_spaces": 0.5}
    columns = {"id": "r", "record_hash": "h", "seq": 1}
    before = canonical_content(StoredRequest(columns, [], [], metrics))  # a record written before revision 0016
    assert canonical_content(StoredRequest(columns, [], [], {**metrics, "centroid_log_odds": None})) == before
    odds = canonical_content(StoredRequest(columns, [], [], {**metrics, "centroid_log_odds": 2.5}))
    assert odds["metrics"] == {**before["metrics"], "centroid_log_odds": 2.5}
    unset = {**metrics, "centroid_log_odds": 2.5, "centroid_log_odds_others": None}  # before revision 0017
    assert canonical_content(StoredRequest(columns, [], [], unset)) == odds
    others = canonical_content(StoredRequest(columns, [], [], {**unset, "centroid_log_odds_others": -1.5}))
    assert others["metrics"] == {**odds["metrics"], "centroid_log_odds_others": -1.5}


@pytest.mark.slow
def test_a_request_records_its_top_artists_log_odds_in_the_other_learned_spaces(
    cli: Cli, demo_catalogue: DemoCatalogue
) -> None:
    """The mean of the reported artist's centroid log-odds over the learned spaces other than the request's own:
    every learned space for a base-space request, none (null) for the only learned space."""
    embedder = ["--embedder", EMBEDDER]
    image = demo_catalogue.queries[2].path

    def ask(space: str) -> dict[str, Any]:
        return json.loads(cli("attribute", str(image), "--space", space, "--json", *embedder).stdout)[0]

    def log_odds(space: str, artist: str) -> float:
        """The artist's log-odds among the space's centroids, for this image (the space's own model)."""
        settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url)
        with open_attributor(settings, cli.audit(), EMBEDDER) as attributor:
            (query,) = attributor.embed([load_image(image, target_size=224).image], space)
            value = attributor.space_of(AttributionParams(space=space))[0].centroid_log_odds(query, artist)
        assert value is not None
        return value

    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    assert ask("content")["centroid_log_odds_others"] is None  # no learned space
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    content, painters = ask("content"), ask("painters")
    assert painters["centroid_log_odds_others"] is None  # the only learned space: no other
    assert content["centroid_log_odds_others"] == pytest.approx(log_odds("painters", content["top_artist"]))

    cli("spaces", "fit", "both", "--crops", "0", "--from", "content+style", *embedder)
    asked = {space: ask(space) for space in ("content", "painters", "both")}
    for space, others in (("content", ("painters", "both")), ("painters", ("both",)), ("both", ("painters",))):
        top = asked[space]["top_artist"]
        expected = sum(log_odds(other, top) for other in others) / len(others)
        assert asked[space]["centroid_log_odds_others"] == pytest.approx(expected, abs=1e-6), space
    recorded = asked["painters"]["centroid_log_odds_others"]
    assert (
        f"centroid log-odds in the other learned spaces {recorded:.3f}"
        in cli("audit", "show", asked["painters"]["request_id"]).stdout
    )
    replay = json.loads(cli("audit", "replay", asked["content"]["request_id"], "--json").stdout)
    assert replay["replay"]["centroid_log_odds_others"] == pytest.approx(asked["content"]["centroid_log_odds_others"])
    # Measured as none (no other learned space then): replayed in the learned spaces it read (none), not in "both"
    # fitted since (revision 0018).
    replay = json.loads(cli("audit", "replay", painters["request_id"], "--json").stdout)
    assert replay["original"]["other_space_versions"] == replay["replay"]["other_space_versions"] == ""
    assert replay["replay"]["centroid_log_odds_others"] is None and replay["not_recorded"] == []
    assert "\nno differences\n" in cli("audit", "replay", painters["request_id"]).stdout
    assert "chain OK" in cli("audit", "verify").stdout


@pytest.mark.slow
def test_a_request_in_a_learned_space_records_the_centroid_log_odds(cli: Cli, demo_catalogue: DemoCatalogue) -> None:
    embedder = ["--embedder", EMBEDDER]
    image = str(demo_catalogue.queries[2].path)
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    (content,) = json.loads(cli("attribute", image, "--json", *embedder).stdout)
    (learned,) = json.loads(cli("attribute", image, "--space", "painters", "--json", *embedder).stdout)
    assert content["centroid_log_odds"] is None
    assert isinstance(learned["centroid_log_odds"], float) and -30 <= learned["centroid_log_odds"] <= 30
    shown = cli("audit", "show", learned["request_id"]).stdout
    assert f"centroid log-odds {learned['centroid_log_odds']:.3f}" in shown
    replay = json.loads(cli("audit", "replay", learned["request_id"], "--json").stdout)
    assert replay["replay"]["centroid_log_odds"] == pytest.approx(learned["centroid_log_odds"])
    assert "chain OK" in cli("audit", "verify").stdout


@pytest.mark.slow
def test_a_learned_space_request_records_its_artists_log_odds_over_the_images_corner_crops(
    cli: Cli, demo_catalogue: DemoCatalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """crop_log_odds: the mean of the reported artist's log-odds over the four corner crops of the image (each side
    3/4 of the image's), in the request's learned space; null in a base space. The crops' vectors are recorded (the
    chain covers them): a replay measures the same value, and a record whose crop bytes were changed is refused in
    one line. ATTRIBUTION_AUDIT_QUERY_CROPS=0 turns the crops off: none recorded, the indicator null."""
    embedder = ["--embedder", EMBEDDER]
    image = tmp_path / "between.png"  # two artists' images half and half: log-odds within the clip (+-30)
    with Image.open(demo_catalogue.queries[2].path) as a, Image.open(demo_catalogue.queries[3].path) as b:
        Image.blend(a.convert("RGB"), b.convert("RGB").resize(a.size), 0.5).save(image)
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    (content,) = json.loads(cli("attribute", str(image), "--json", *embedder).stdout)
    (learned,) = json.loads(cli("attribute", str(image), "--space", "painters", "--json", *embedder).stdout)
    assert content["crop_log_odds"] is None
    settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url)
    with open_attributor(settings, cli.audit(), EMBEDDER) as attributor:
        picture = load_image(image, target_size=224).image
        w, h = picture.size
        cw, ch = int(w * 0.75), int(h * 0.75)
        corners = [(0, 0, cw, ch), (w - cw, 0, w, ch), (0, h - ch, cw, h), (w - cw, h - ch, w, h)]
        crops = attributor.embed([picture.crop(box) for box in corners], "style")
        space = attributor.space_of(AttributionParams(space="painters"))[0]
        odds = [space.centroid_log_odds(crop, learned["top_artist"]) for crop in crops]
        fingerprint = attributor.embedder_fingerprint
    assert learned["crop_log_odds"] == pytest.approx(float(np.mean(odds)), rel=1e-3, abs=1e-3)
    assert learned["crop_log_odds"] != pytest.approx(learned["centroid_log_odds"], abs=1e-3)  # not the whole image
    shown = cli("audit", "show", learned["request_id"]).stdout
    assert f"crop log-odds {learned['crop_log_odds']:.3f}" in shown
    replay = json.loads(cli("audit", "replay", learned["request_id"], "--json").stdout)
    assert replay["replay"]["crop_log_odds"] == pytest.approx(learned["crop_log_odds"], abs=1e-9)
    assert "chain OK" in cli("audit", "verify").stdout
    where = f"WHERE id = '{learned['request_id']}'"
    for value, said in (("X'0000803f'", "of 4 bytes"), ("X'31323334353637'", "of 7 bytes"), ("'text'", "of type str")):
        superuser_edit(cli.engine(), f"UPDATE attribution_requests SET crop_vectors = {value} {where}")
        refused = cli("audit", "replay", learned["request_id"], code=1)
        assert f"records crop vectors {said}, which" in refused.stderr and refused.stderr.count("\n") == 1
    assert cli("audit", "verify", code=1).stderr.startswith("chain BROKEN at seq 2")
    monkeypatch.setenv("ATTRIBUTION_AUDIT_QUERY_CROPS", "0")
    (plain,) = json.loads(cli("attribute", str(image), "--space", "painters", "--json", *embedder).stdout)
    assert plain["crop_log_odds"] is None and plain["top_artist"] == learned["top_artist"]
    with cli.engine().connect() as connection:
        query = f"SELECT crop_vectors FROM attribution_requests WHERE id = '{plain['request_id']}'"
        assert connection.exec_driver_sql(query).scalar_one() is None
    # a calibrated model that weighs the crop log-odds scores such requests at its least confident value: said
    names = CALIBRATION_FEATURES
    model = LogisticModel("m", [0.0] * len(names), [1.0] * len(names), [0.0] * (len(names) - 1) + [1.0], 0.0, names)
    fitted_here = {"parameters": {"space": "painters", "space_version": 1, "top": "share", "k": 10}}
    evidence = CalibrationEvidence(fingerprint, "/labelled.csv", "0" * 64, 40, 20, fitted_here)
    name = cli.audit().evaluations.add_calibration(model, evidence)
    noted = cli("attribute", str(image), "--space", "painters", *embedder)
    assert f"ATTRIBUTION_AUDIT_QUERY_CROPS=0, but the confidence model {name} weighs the crop log-odds" in noted.stderr
    monkeypatch.setenv("ATTRIBUTION_AUDIT_QUERY_CROPS", "1")
    assert "QUERY_CROPS" not in cli("attribute", str(image), "--space", "painters", *embedder).stderr
    monkeypatch.setenv("ATTRIBUTION_AUDIT_QUERY_CROPS", "4")
    refused = cli("attribute", str(image), "--space", "painters", *embedder, code=1)
    assert "ATTRIBUTION_AUDIT_QUERY_CROPS='4' is not a whole number from 0 to 1" in refused.stderr


@pytest.mark.slow
def test_replaying_a_record_made_before_the_centroid_log_odds_shows_them_as_not_recorded(
    cli: Cli, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A learned-space record made before revision 0016 holds no log-odds: its replay shows them as not recorded then
    (not as a change, nor hidden: a None may have been measured). A value changed by hand is a change, a None written
    over one too (the record no longer matches its hash: not a record that predates the field)."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    args = ("attribute", str(demo_catalogue.queries[2].path), "--space", "painters", "--json", *embedder)
    with monkeypatch.context() as before_0016:  # written, and hashed, without the log-odds
        before_0016.setattr(LearnedSpace, "centroid_log_odds", lambda *_: None)
        (old,) = json.loads(cli(*args).stdout)
    assert old["centroid_log_odds"] is None
    replayed = cli("audit", "replay", old["request_id"]).stdout
    assert "NOT INTACT" not in replayed and "~ centroid_log_odds: None" not in replayed
    assert "~ centroid_log_odds: not recorded -> " in replayed and "the record predates revision 0016)" in replayed
    assert "~ confidence: " in replayed and "no differences" not in replayed  # now scored with them: a change
    (record,) = json.loads(cli(*args).stdout)
    where = f"WHERE request_id = '{record['request_id']}'"
    superuser_edit(cli.engine(), f"UPDATE attribution_metrics SET centroid_log_odds = 99.0 {where}")
    changed = cli("audit", "replay", record["request_id"]).stdout
    assert f"~ centroid_log_odds: 99.0 -> {record['centroid_log_odds']}" in changed and "NOT INTACT" in changed
    superuser_edit(cli.engine(), f"UPDATE attribution_metrics SET centroid_log_odds = NULL {where}")
    nulled = cli("audit", "replay", record["request_id"]).stdout
    assert f"~ centroid_log_odds: None -> {record['centroid_log_odds']}" in nulled and "NOT INTACT" in nulled


@pytest.mark.slow
def test_the_centroid_rule_is_recorded_and_replayed_in_a_learned_space_and_refused_in_a_base_space(
    cli: Cli, demo_catalogue: DemoCatalogue
) -> None:
    embedder = ["--embedder", EMBEDDER]
    image = str(demo_catalogue.queries[2].path)
    cli("ingest", str(demo_catalogue.manifest), *embedder, "--spaces", "content,style")
    cli("spaces", "fit", "painters", "--crops", "0", "--from", "style", *embedder)
    (default,) = json.loads(cli("attribute", image, "--space", "painters", "--json", *embedder).stdout)
    assert default["parameters"]["top"] == "share"  # the default rule, in a learned space too
    args = ("attribute", image, "--space", "painters", "--top", "centroid", "--json", *embedder)
    (record,) = json.loads(cli(*args).stdout)
    assert record["parameters"]["top"] == "centroid"
    assert record["top_artist_share"] == record["artist_shares"].get(record["top_artist"], 0.0)
    assert record["centroid_log_odds"] >= 0  # the artist of maximum posterior is at least as likely as the rest
    replay = cli("audit", "replay", record["request_id"]).stdout
    assert "no differences" in replay  # replayed under its own rule
    refused = cli("attribute", image, "--top", "centroid", *embedder, code=2).stderr  # an option its space refuses
    assert refused.count("\n") == 1 and "space content has none" in refused and "painters" in refused
    assert "chain OK" in cli("audit", "verify").stdout


@pytest.mark.slow
def test_the_output_names_the_top_artist_and_the_centroid_rule_fails_plainly_on_a_catalogue_without_its_model(
    cli: Cli, demo_catalogue: DemoCatalogue
) -> None:
    embedder = ["--embedder", EMBEDDER]
    image = str(demo_catalogue.queries[2].path)  # Chiara Monet's: the content space's 5 nearest works are another's
    cli("ingest", str(demo_catalogue.manifest), *embedder)
    cli("spaces", "fit", "st", "--crops", "0", "--from", "content", *embedder)
    args = ("attribute", image, "--space", "st", "--k", "5", *embedder)
    (record,) = json.loads(cli(*args, "--top", "centroid", "--json").stdout)
    assert (record["top_artist"], record["top_artist_share"]) == ("Chiara Monet", 0.0)
    assert (record["confidence"], record["confidence_model"]) == (0.0, "default-centroid-v1")  # no neighbour backs it
    shown = cli("audit", "show", record["request_id"]).stdout
    assert "top artist Chiara Monet (top rule centroid), share 0.0000 of the K neighbours" in shown
    printed = cli(*args).stdout  # the share rule names its top artist too
    assert "top artist Elif Klimt (top rule share), share 1.0000 of the K neighbours" in printed
    withdrawn = [f"A{a}-W{w:03d}" for a in range(5) for w in range(8)]  # only Farid Turner's works stay
    cli("catalogue", "withdraw", *withdrawn, "--catalogue", "catalogue")
    for result in (cli("audit", "replay", record["request_id"], code=1), cli(*args, "--top", "centroid", code=1)):
        error = result.stderr
        assert error.count("\n") == 1 and "space st needs the centroids of two artists" in error
        assert "now holds 8 works of 1 artist:" in error and "fit a learned space" not in error
    assert "chain OK" in cli("audit", "verify").stdout


@pytest.mark.slow
def test_evaluate_run_under_the_centroid_rule_scores_the_confidence_its_requests_record(
    cli: Cli, sqlite_url: str, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    """Without a model calibrated under the rule, evaluation scored the share rule's default formula (and named it)
    while the logged requests carry the centroid rule's: the confidence evaluated is not the one users see."""
    embedder = ["--embedder", EMBEDDER]
    cli("ingest", str(demo_catalogue.manifest), *embedder)
    cli("spaces", "fit", "st", "--crops", "0", "--from", "content", *embedder)
    out = tmp_path / "e"
    args = ("evaluate", "run", str(demo_catalogue.labelled), "--space", "st", "--top", "centroid")
    cli(*args, "--k-max", "5", "--k", "5", "--out", str(out), *embedder)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confidence_model"] == "default-centroid-v1"
    logged = {r["request_id"]: r["confidence"] for r in json.loads(cli("audit", "list", "--json").stdout)}
    audit = AuditStore(create_engine(sqlite_url))
    outcomes = load_outcomes(audit, metrics["run_id"])
    requests = [r.result.request_id for r in audit.evaluations.logged_results(metrics["run_id"])]
    scored = [scored_confidence(o, 5, None, "equal", DEFAULT_TEMPERATURE, "centroid")[0] for o in outcomes]
    assert len(scored) == 6 and len(set(scored)) > 1
    assert scored == pytest.approx([logged[r] for r in requests])


def test_a_querys_corner_crops_are_cut_small_from_its_corners() -> None:
    """Each of the four crops is 3/4 of the image's sides at one corner, resampled to at most 448 px on its shorter
    side (a large decoded image is not copied four times); a tiny image keeps at least one pixel a side."""
    ramp = Image.linear_gradient("L")  # brightness down the image in red, across it in green: each corner differs
    image = Image.merge("RGB", (ramp, ramp.rotate(90), Image.new("L", ramp.size))).resize((2000, 1000))
    crops = corner_crops(image)
    assert [crop.size for crop in crops] == [(896, 448)] * 4
    corners = [(0, 0, 1500, 750), (500, 0, 2000, 750), (0, 250, 1500, 1000), (500, 250, 2000, 1000)]
    for crop, box in zip(crops, corners, strict=True):
        expected = np.asarray(image.crop(box).resize((896, 448), Image.Resampling.BICUBIC), dtype=np.float64)
        assert np.abs(np.asarray(crop, dtype=np.float64) - expected).mean() < 1.0
    assert [crop.size for crop in corner_crops(Image.new("RGB", (3, 2)))] == [(2, 1)] * 4
    assert [crop.size for crop in corner_crops(Image.new("RGB", (1, 1)))] == [(1, 1)] * 4
