"""`spaces fit --crops N`: learned spaces fitted on crops of the works too (each embedded by the collection's
embedder, labelled with its work's artist), seeded by the work's file so that a refit cuts the same crops; crops of
held-out works never fit the validation's projection; works without their image file as ingested are counted."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDER, Cli
from PIL import Image
from test_learned_spaces import _shared_content_data

from attribution_audit.config import load_settings
from attribution_audit.domain.projection import (
    CROP_SIDE,
    DEFAULT_CROPS,
    Crops,
    crop_boxes,
    fit_lda,
    join_bases,
    unit_rows,
)
from attribution_audit.embedding.style import StyleEmbedder
from attribution_audit.errors import AttributionAuditError
from attribution_audit.services.spaces import fit_space, held_out_validation
from attribution_audit.services.wiring import open_attributor
from attribution_audit.sources.synthetic import DemoCatalogue

SHA = "ab" * 32


def test_crop_boxes_follow_the_recipe_seeded_by_the_file() -> None:
    """Each crop's side a fraction uniform in CROP_SIDE of the image's (one fraction for both sides), at a uniform
    position inside the image, drawn from a generator seeded by the file's sha256: a refit cuts the same crops."""
    boxes = crop_boxes(300, 200, 40, SHA)
    rng = np.random.default_rng(int(SHA, 16))
    for left, upper, right, lower in boxes:
        f = rng.uniform(*CROP_SIDE)
        cw, ch = int(300 * f), int(200 * f)
        assert (right - left, lower - upper) == (cw, ch)
        assert (left, upper) == (int(rng.integers(0, 300 - cw + 1)), int(rng.integers(0, 200 - ch + 1)))
        assert min(left, upper) >= 0 and right <= 300 and lower <= 200
    assert boxes == crop_boxes(300, 200, 40, SHA) and boxes[:4] == crop_boxes(300, 200, 4, SHA)
    assert crop_boxes(300, 200, 4, "cd" * 32) != boxes[:4] and crop_boxes(300, 200, 0, SHA) == []
    for left, upper, right, lower in crop_boxes(1, 20, 8, SHA):  # a 1-px side keeps its pixel: no empty crop
        assert (left, right) == (0, 1) and 12 <= lower - upper <= 17


def test_the_held_out_projection_is_fitted_on_the_training_works_and_their_crops_only() -> None:
    """The validation's split and the base space's scores are the works' alone; each shrinkage's projection (and the
    held-out one the version's own confidence model is fitted in) is fitted on the training works and the crops of
    those works, never a held-out work's crop; without crops, exactly as before."""
    rows, labels, _ = _shared_content_data(0, 16)
    owners = np.repeat(np.arange(len(rows)), 2)
    noise = np.random.default_rng(5).normal(size=(len(owners), rows.shape[1]))
    crops = Crops(unit_rows(rows[owners] + noise * 2.0), owners)
    plain, plain_held = held_out_validation(rows, labels)
    cropped, held = held_out_validation(rows, labels, crops=crops)
    assert (held.train == plain_held.train).all() and (held.scored == plain_held.scored).all()
    same = ("split", "held_out_works", "base_hit@1", "base_hit@10")
    assert {key: cropped[key] for key in same} == {key: plain[key] for key in same}
    train = held.train
    fitted = np.vstack([rows[train], crops.rows[train[owners]]])
    fitted_labels = [a for a, t in zip(labels, train, strict=True) if t] + [labels[o] for o in owners if train[o]]
    expected = fit_lda(fitted, fitted_labels, cropped["shrinkage"])
    assert np.array_equal(held.projection.matrix, expected.matrix) and np.array_equal(
        held.projection.mean, expected.mean
    )
    before = fit_lda(rows[train], [a for a, t in zip(labels, train, strict=True) if t], plain["shrinkage"])
    assert np.array_equal(plain_held.projection.matrix, before.matrix)  # no crops: the old fit
    assert not np.allclose(held.projection.mean, plain_held.projection.mean)


def _stored(cli: Cli, name: str, version: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    loaded = cli.audit().spaces.load(name, version)
    assert loaded is not None
    return loaded[1].mean, loaded[1].matrix


def _crops_of(cli: Cli, name: str) -> dict[str, object]:
    versions = [s for s in json.loads(cli("spaces", "list", "--json").stdout) if s["name"] == name]
    crops: dict[str, object] = versions[-1]["validation"]["crops"]
    return crops


def _ingested_demo(cli: Cli, demo_catalogue: DemoCatalogue, folder: Path) -> None:
    """The demo catalogue, copied to ``folder`` (the test changes its files), ingested with both base spaces."""
    shutil.copytree(demo_catalogue.manifest.parent, folder)
    cli("ingest", str(folder / "catalogue.csv"), "--embedder", EMBEDDER, "--spaces", "content,style")


def test_spaces_fit_embeds_crops_of_the_works(cli: Cli, demo_catalogue: DemoCatalogue, tmp_path: Path) -> None:
    """A fit with crops records them and differs from `--crops 0`, which is exactly the fit on the works' stored
    vectors it was before crops; works whose file was deleted or replaced since ingest are counted and fitted on
    their stored vector only."""
    folder = tmp_path / "demo"
    _ingested_demo(cli, demo_catalogue, folder)
    embedder = ("--embedder", EMBEDDER)
    fitted = cli("spaces", "fit", "cropped", "--from", "content+style", "--crops", "1", *embedder).stdout
    assert "\ncrops: 48 embedded (1 of each of 48 works) in " in fitted
    crops = _crops_of(cli, "cropped")
    seconds = crops.pop("seconds")
    recipe = {"side": [0.6, 0.85], "seed": "sha256 of the work's image file", "load_size": 224}
    assert crops == {
        "per_work": 1,
        "works": 48,
        "without_image": 0,
        "skipped": {},
        "first_skipped": None,
        **recipe,
    }
    assert isinstance(seconds, float) and seconds > 0

    plain = cli("spaces", "fit", "plain", "--from", "content+style", "--crops", "0", *embedder).stdout
    assert "\ncrops: none (--crops 0): fitted on the works' stored vectors only\n" in plain
    nothing = {"per_work": 0, "works": 0, "without_image": None, "skipped": None, "first_skipped": None, **recipe}
    nothing["seconds"] = 0.0
    assert _crops_of(cli, "plain") == nothing
    mean, matrix = _stored(cli, "plain")
    assert not np.allclose(matrix, _stored(cli, "cropped")[1])
    settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url)
    with open_attributor(settings, cli.audit(), EMBEDDER) as attributor:  # the fit as it was before crops
        points = list(attributor.store.iter_points())
        labels = [attributor.canonical.get(p.payload["artist"], p.payload["artist"]) for p in points]
    rows = join_bases([np.vstack([p.vector for p in points]), np.vstack([np.asarray(p.style) for p in points])])
    before = fit_lda(rows, labels, held_out_validation(rows, labels)[0]["shrinkage"])
    assert np.array_equal(mean, before.mean) and np.array_equal(matrix, before.matrix)

    (folder / "works" / "a0_w0.png").unlink()
    Image.new("RGB", (64, 64), "white").save(folder / "works" / "a1_w1.png")  # not the image ingested
    missing = cli("spaces", "fit", "bycontent", "--from", "content", "--crops", "1", *embedder).stdout
    assert "\ncrops: 46 embedded (1 of each of 46 works) in " in missing
    crops = _crops_of(cli, "bycontent")
    assert (crops["per_work"], crops["works"], crops["without_image"]) == (1, 46, 2)
    assert crops["skipped"] == {"image file changed since ingest": 1, "image unreadable": 1}
    first = crops["first_skipped"]  # the first of the two in the collection's order
    assert isinstance(first, dict) and first["work_id"] in {"A0-W000", "A1-W001"}
    assert first["reason"] == "image file changed since ingest" or first["reason"].startswith("image unreadable (")
    assert (
        "; 2 of 48 works without a readable image file as ingested (image file changed since ingest: 1, image "
        f"unreadable: 1; first: work {first['work_id']}, {first['reason']}) fitted on their stored vector only"
    ) in missing


def test_spaces_fit_crops_bounds_and_embedder_failure(
    cli: Cli, demo_catalogue: DemoCatalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--crops above 16 is refused; the model failing while embedding the crops (a fault injected: out of memory)
    is one error line naming the work and the cause, and no version is stored."""
    _ingested_demo(cli, demo_catalogue, tmp_path / "demo")
    embedder = ("--embedder", EMBEDDER)
    too_many = cli("spaces", "fit", "s", "--from", "content", "--crops", "17", *embedder, code=2)
    assert "Invalid value for '--crops': Input should be less than or equal to 16" in too_many.output
    settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url)
    with pytest.raises(AttributionAuditError, match=r"^--crops 17: choose a number between 0 and 16$"):
        fit_space(settings, cli.audit(), "s", "content", crops=17)  # the service refuses it too (HTTP, scripts)

    def out_of_memory(self: object, images: object) -> object:
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    monkeypatch.setattr(StyleEmbedder, "embed_both", out_of_memory)
    failed = cli("spaces", "fit", "s", "--from", "style", "--crops", "1", *embedder, code=1)
    (line,) = [line for line in failed.output.splitlines() if "spaces fit: embedding the crops of work " in line]
    assert re.search(
        r"spaces fit: embedding the crops of work A\d-W\d{3} failed \(RuntimeError: CUDA out of memory\. Tried to "
        r"allocate 2\.00 GiB\); nothing was stored$",
        line,
    ), line
    assert "Traceback" not in failed.output
    assert [v for v in cli.audit().spaces.versions() if v.name == "s"] == []


def test_collection_images_are_the_image_paths_of_every_point(cli: Cli, demo_catalogue: DemoCatalogue) -> None:
    """The fit reads every work's (file, sha256) of a collection in one query without an IN list: the same as
    image_paths of all its points."""
    cli("ingest", str(demo_catalogue.manifest), "--embedder", EMBEDDER)
    settings = load_settings(data_dir=cli.data_dir, database_url=cli.database_url)
    audit = cli.audit()
    with open_attributor(settings, audit, EMBEDDER) as attributor:
        collection = attributor.store.collection
        ids = [p.point_id for p in attributor.store.iter_points()]
    everything = audit.catalogue.collection_images(collection)
    assert len(everything) == len(ids) == 48
    assert everything == audit.catalogue.image_paths(collection, ids)
    assert audit.catalogue.collection_images("nothing") == {}


@pytest.mark.slow
def test_a_refit_cuts_and_embeds_the_same_crops(cli: Cli, demo_catalogue: DemoCatalogue, tmp_path: Path) -> None:
    """Two fits with the same crops give the same projection (the crops are seeded by the works' files)."""
    _ingested_demo(cli, demo_catalogue, tmp_path / "demo")
    for _ in range(2):
        fitted = cli("spaces", "fit", "s", "--from", "style", "--crops", "2", "--embedder", EMBEDDER).stdout
        assert "\ncrops: 96 embedded (2 of each of 48 works) in " in fitted
    first, again = _stored(cli, "s", 1), _stored(cli, "s", 2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_a_catalogue_of_precomputed_vectors_is_fitted_without_crops(cli: Cli, tmp_path: Path) -> None:
    """Works ingested from `--embeddings` whose images are not on this machine: the fit uses their stored vectors
    and says so in one line, not an error."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 1280))
    ids = [f"W{i}" for i in range(20)]
    vectors = np.vstack([centres[i % 4] + rng.normal(size=1280) for i in range(20)]).astype(np.float32)
    manifest = tmp_path / "vectors.csv"
    manifest.write_text(
        "path,artist,work_id\n" + "".join(f"gone/{w}.png,artist {i % 4},{w}\n" for i, w in enumerate(ids))
    )
    embeddings = tmp_path / "vectors.npz"
    np.savez(embeddings, work_ids=np.array(ids), vectors=vectors)
    cli("ingest", str(manifest), "--embedder", EMBEDDER, "--embeddings", str(embeddings))
    fitted = cli("spaces", "fit", "s", "--from", "content", "--embedder", EMBEDDER)
    (line,) = [line for line in fitted.stdout.splitlines() if line.startswith("crops: ")]
    assert line == (
        "crops: none embedded: none of the 20 works has a readable image file as ingested (a catalogue ingested from "
        "precomputed --embeddings has none); fitted on the works' stored vectors only"
    )
    crops = _crops_of(cli, "s")
    assert (crops["per_work"], crops["works"], crops["without_image"]) == (DEFAULT_CROPS, 0, 20)
