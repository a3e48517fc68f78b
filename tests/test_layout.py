"""The layout vector, copy detection's third source of candidates: an edited copy keeps its source's layout (blur,
tint, JPEG, faded contrast) where other pages of the same line grid do not; both stores keep it beside the base
spaces, a point may lack it, an older collection gains it; ingest writes it and gives it to works ingested before it
existed; the copy check draws the works nearest the query's layout besides the base spaces'."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDER, Cli
from PIL import Image
from test_copies import EDITS, page
from test_spaces import CONTENT_DIM, STYLE_DIM, _attributor, _catalogued, _filled, data  # noqa: F401

from attribution_audit.config import COPY_LAYOUT_FLOOR
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.points import LAYOUT, StorageParams, WorkPoint, point_id_for
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.embedding.layout import LAYOUT_DIM, layout_vector
from attribution_audit.errors import DamagedShardError, VectorStoreError
from attribution_audit.services import ingest
from attribution_audit.services.catalogue import check
from attribution_audit.sources.images import load_image
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.vectors import VectorStore
from attribution_audit.store.vectors.qdrant_edge import EdgeStore
from attribution_audit.store.vectors.qdrant_server import ServerStore

PAGES = 12


def _layout(image: Image.Image) -> np.ndarray:
    vector = layout_vector(image)
    assert vector is not None
    return vector


@pytest.mark.parametrize("edit", ["blur", "tint", "jpeg", "faint"])
def test_an_edited_copy_is_nearest_its_source_by_layout(edit: str) -> None:
    """Pages of random text on one line grid: every edited copy's layout is nearest its own source's."""
    layouts = np.stack([_layout(page(i)) for i in range(PAGES)])
    for source in range(3):
        similarity = layouts @ _layout(EDITS[edit](page(source)))
        assert int(np.argmax(similarity)) == source, (edit, source, similarity)


def test_a_layout_is_unit_length_and_blind_to_brightness_and_contrast() -> None:
    image = page(1)
    vector = _layout(image)
    assert vector.shape == (LAYOUT_DIM,) and vector.dtype == np.float32
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
    assert float(vector.sum()) == pytest.approx(0.0, abs=1e-4)
    pixels = np.asarray(image, dtype=np.float64)
    darker = Image.fromarray((40 + 0.5 * pixels).astype(np.uint8))  # brighter ink, dimmer paper: one affine map
    assert float(_layout(darker) @ vector) > 0.999


@pytest.mark.parametrize("size", [(64, 64), (1, 1), (500, 3)])
def test_a_flat_image_has_no_layout(size: tuple[int, int]) -> None:
    assert layout_vector(Image.new("RGB", size, (120, 30, 200))) is None
    assert layout_vector(Image.new("L", size, 0)) is None


def _store(kind: str, tmp_path: Path, name: str) -> VectorStore:
    return EdgeStore(tmp_path, name) if kind == "edge" else ServerStore(":memory:", name)


def _points(count: int, rng: np.random.Generator, layouts: bool) -> list[WorkPoint]:
    return [
        WorkPoint(
            point_id_for("c", f"w{i}"),
            rng.normal(size=CONTENT_DIM).astype(np.float32),
            {"work_id": f"w{i}", "artist": "a", "catalogue": "c"},
            layout=rng.normal(size=LAYOUT_DIM).astype(np.float32) if layouts and i % 2 == 0 else None,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_a_collection_keeps_layouts_beside_the_base_spaces_and_a_point_may_lack_one(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path, "laid")
    store.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM)
    assert store.sizes() == {"content": CONTENT_DIM, LAYOUT: LAYOUT_DIM}
    assert store.spaces() == ("content",)  # not a query space
    points = _points(6, np.random.default_rng(0), layouts=True)
    store.upsert(points)
    store.build_index()
    hits = store.search(points[2].layout, 6, space=LAYOUT)  # type: ignore[arg-type]
    assert hits[0].payload["work_id"] == "w2"
    assert {h.payload["work_id"] for h in hits} == {"w0", "w2", "w4"}  # the points without a layout are not found
    assert (store.count_with(LAYOUT), store.count_with("content"), store.count_with("style")) == (3, 6, 0)
    stored = store.points_of([p.point_id for p in points])
    assert [stored[p.point_id].layout is not None for p in points] == [p.layout is not None for p in points]
    assert [h.payload["work_id"] for h in store.search(points[1].vector, 1)] == ["w1"]
    store.close()


def test_a_refused_embedder_adds_no_layout_space(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path, "kept")
    store.ensure_collection(CONTENT_DIM)
    with pytest.raises(VectorStoreError, match="the embedder gives"):
        store.ensure_collection(CONTENT_DIM * 2, None, LAYOUT_DIM)
    reopened = EdgeStore(tmp_path, "kept")
    assert reopened.sizes() == {"content": CONTENT_DIM}
    with pytest.raises(VectorStoreError, match="holds no layouts"):
        reopened.search(np.ones(LAYOUT_DIM, dtype=np.float32), 1, space=LAYOUT)
    reopened.close()


def test_an_embedded_collection_gains_a_layout_space_in_place(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path, "grow")
    store.ensure_collection(CONTENT_DIM)
    old = _points(4, np.random.default_rng(1), layouts=False)
    store.upsert(old)
    store.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM)
    assert store.sizes() == {"content": CONTENT_DIM, LAYOUT: LAYOUT_DIM}
    store.close()
    reopened = EdgeStore(tmp_path, "grow")
    assert reopened.sizes() == {"content": CONTENT_DIM, LAYOUT: LAYOUT_DIM}
    assert reopened.count() == 4
    reopened.close()


def test_a_server_collection_made_before_layouts_takes_points_without_them() -> None:
    """A server cannot add a named vector to a collection: the points are written without their layouts."""
    store = ServerStore(":memory:", "old")
    store.ensure_collection(CONTENT_DIM)
    store.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM)
    assert LAYOUT not in store.sizes()
    points = _points(4, np.random.default_rng(2), layouts=True)
    store.upsert(points)
    assert store.count() == 4
    assert all(p.layout is None for p in store.points_of([p.point_id for p in points]).values())
    store.close()


def test_the_copy_check_draws_the_works_nearest_the_query_layout_too(
    tmp_path: Path,
    sqlite_audit: AuditStore,
    data: tuple,  # type: ignore[type-arg]  # noqa: F811
) -> None:
    """The candidates are the outcome's works, each base space's first ``copy_depth``, then those of the first
    COPY_LAYOUT_DEPTH by layout that correlate with the query's at COPY_LAYOUT_FLOOR or more, without repeats; with
    no layout (a flat query), or one that correlates with no work's, as before."""
    contents, styles, points = data
    rng = np.random.default_rng(3)
    layouts = rng.normal(size=(len(points), LAYOUT_DIM)).astype(np.float32)
    store = EdgeStore(tmp_path, "works_spaces")
    store.ensure_collection(CONTENT_DIM, STYLE_DIM, LAYOUT_DIM)
    store = _filled(store, [replace(p, layout=layouts[i]) for i, p in enumerate(points)])
    _catalogued(sqlite_audit, points)
    attributor = _attributor(sqlite_audit, store, tmp_path, copy_depth=5)
    query = QueryVectors(contents[3], styles[3])
    outcome = attributor.compute(query, AttributionParams(k=3), copies=True)
    before = attributor.copy_candidates(outcome, query)
    far = int(np.argmin(points_ranked := [float(contents[3] @ c) for c in contents]))  # farthest in content
    assert ("c", f"w{far}") not in before, points_ranked[far]
    near = layouts[far] + 0.3 * rng.normal(size=LAYOUT_DIM).astype(np.float32) / np.sqrt(LAYOUT_DIM)
    assert float(near @ layouts[far] / np.linalg.norm(near) / np.linalg.norm(layouts[far])) > COPY_LAYOUT_FLOOR
    with_layout = attributor.copy_candidates(outcome, query, near)
    assert with_layout == [*before, ("c", f"w{far}")]  # the random layouts of the others correlate with it ~0
    assert attributor.copy_candidates(outcome, query, rng.normal(size=LAYOUT_DIM).astype(np.float32)) == before
    store.close()


def _edge(data_dir: Path) -> EdgeStore:
    (collection,) = [p.name for p in (data_dir / "qdrant").iterdir() if p.is_dir()]
    return EdgeStore(data_dir / "qdrant", collection)


@pytest.mark.slow
def test_ingest_writes_layouts_and_gives_them_to_works_ingested_before(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "works").mkdir()
    for i in range(4):
        page(i).save(tmp_path / "works" / f"p{i}.png")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "works" / "flat.png")
    rows = "".join(f"works/p{i}.png,Artist {i % 2},W{i},page {i}\n" for i in range(4))
    (tmp_path / "catalogue.csv").write_text("path,artist,work_id,title\n" + rows + "works/flat.png,Artist 0,F,flat\n")
    cli("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER)
    assert "layouts: 4/5 points" in cli("catalogue", "check", "--embedder", EMBEDDER).stdout
    store = _edge(cli.data_dir)
    ids, stored = store.fetch([point_id_for("catalogue", f"W{i}") for i in range(4)], LAYOUT)
    assert len(ids) == 4
    for point_id, vector in zip(ids, stored, strict=True):  # each the layout of its image as loaded for embedding
        work = store.points_of([point_id])[point_id].payload["work_id"]
        image = load_image(tmp_path / "works" / f"p{work[1:]}.png", target_size=224).image
        np.testing.assert_array_equal(vector, _layout(image))
    # as a data dir written before layouts: the points without them
    points = list(store.points_of([point_id_for("catalogue", w) for w in ("W0", "W1", "W2", "W3", "F")]).values())
    store.upsert([replace(p, layout=None) for p in points])
    store.close()
    assert "layouts: 0/5 points" in cli("catalogue", "check", "--embedder", EMBEDDER).stdout
    assert "vectors: 5 compared with their digests (all)" in cli("catalogue", "check", "--embedder", EMBEDDER).stdout
    cli("attribute", str(tmp_path / "works" / "p1.png"), "--verify", "always", "--embedder", EMBEDDER)
    (cache,) = [p for p in (cli.data_dir / "exact").glob("*/*") if p.is_dir()]  # the exact index, built
    again = cli("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER).stdout
    assert "0 added, 0 updated, 5 unchanged" in again
    assert "layouts: 4 unchanged work(s)" in again  # the flat page has none to give
    store = _edge(cli.data_dir)
    assert len(store.fetch([p.point_id for p in points], LAYOUT)[0]) == 4
    for point in points:  # the rest of each point as it was
        now = store.points_of([point.point_id])[point.point_id]
        assert np.array_equal(now.vector, point.vector) and now.payload == point.payload
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [store.content_version()]  # moved on, not dropped
    store.close()
    assert "layouts:" not in cli("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER).stdout
    found = json.loads(
        cli("attribute", str(tmp_path / "works" / "p2.png"), "--format", "json", "--embedder", EMBEDDER).stdout
    )[0]
    assert found["copy_of"] == "W2"


@pytest.mark.slow
def test_a_chunk_of_failed_rows_gives_no_layout_twice(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "works").mkdir()
    for i in range(2):
        page(i).save(tmp_path / "works" / f"p{i}.png")
    rows = "works/p0.png,A,W0,t\nworks/p1.png,A,W1,t\nworks/p0.png,A,W0,dup\nworks/p1.png,A,W1,dup\n"
    (tmp_path / "catalogue.csv").write_text("path,artist,work_id,title\n" + rows)
    cli("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER, "--allow-failures")
    store = _edge(cli.data_dir)
    points = list(store.points_of([point_id_for("catalogue", w) for w in ("W0", "W1")]).values())
    store.upsert([replace(p, layout=None) for p in points])
    store.close()
    monkeypatch.setattr(ingest, "CHUNK_ROWS", 2)  # the second chunk: the two duplicate rows, failed
    again = cli("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER, "--allow-failures").stdout
    assert "2 unchanged" in again and "2 failed" in again and "layouts: 2 unchanged work(s)" in again


def _swap_the_file(ingestion: ingest.Ingestion, works: Path) -> None:
    page(9).save(works / "p0.png")  # another page, under W0's file name


def _delete_the_point(ingestion: ingest.Ingestion, works: Path) -> None:
    ingestion.store.delete([point_id_for("catalogue", "W0")])  # as `catalogue check --repair` may meanwhile


@pytest.mark.slow
@pytest.mark.parametrize("meanwhile", [_swap_the_file, _delete_the_point], ids=["file swapped", "point deleted"])
def test_a_work_changed_during_the_back_fill_gets_no_layout(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[ingest.Ingestion, Path], None]
) -> None:
    """The file of a work is swapped, or its point deleted, after this run found it unchanged and before its layout
    is written: the work gets no layout of another image and the run completes; the next run sees the change and
    embeds the work again, layout included."""
    (tmp_path / "works").mkdir()
    for i in range(3):
        page(i).save(tmp_path / "works" / f"p{i}.png")
    rows = "".join(f"works/p{i}.png,A,W{i},t\n" for i in range(3))
    (tmp_path / "catalogue.csv").write_text("path,artist,work_id,title\n" + rows)
    cli("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER)
    store = _edge(cli.data_dir)
    points = list(store.points_of([point_id_for("catalogue", f"W{i}") for i in range(3)]).values())
    store.upsert([replace(p, layout=None) for p in points])
    store.close()
    classify = ingest.Ingestion.classify

    def then_changed(self: ingest.Ingestion, rows: list[object]) -> list[object]:
        todo = classify(self, rows)  # type: ignore[arg-type]
        meanwhile(self, tmp_path / "works")
        return todo  # type: ignore[return-value]

    monkeypatch.setattr(ingest.Ingestion, "classify", then_changed)
    swapped = cli("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER).stdout
    assert "layouts: 2 unchanged work(s)" in swapped
    monkeypatch.setattr(ingest.Ingestion, "classify", classify)
    store = _edge(cli.data_dir)
    assert point_id_for("catalogue", "W0") not in store.fetch([p.point_id for p in points], LAYOUT)[0]
    store.close()
    again = cli("ingest", str(tmp_path / "catalogue.csv"), "--embedder", EMBEDDER).stdout
    assert "2 unchanged" in again and "0 failed" in again and "layouts:" not in again
    store = _edge(cli.data_dir)
    (vector,) = store.fetch([point_id_for("catalogue", "W0")], LAYOUT)[1]
    np.testing.assert_array_equal(vector, _layout(load_image(tmp_path / "works" / "p0.png", target_size=224).image))
    store.close()


def test_a_catalogue_of_precomputed_vectors_has_no_layouts_and_check_says_so(cli: Cli, tmp_path: Path) -> None:
    ids = [f"W{i}" for i in range(6)]
    (tmp_path / "vectors.csv").write_text("path,artist,work_id\n" + "".join(f"gone/{w}.png,A,{w}\n" for w in ids))
    vectors = np.random.default_rng(4).normal(size=(6, 1280)).astype(np.float32)
    np.savez(tmp_path / "vectors.npz", work_ids=np.array(ids), vectors=vectors)
    cli("ingest", str(tmp_path / "vectors.csv"), "--embedder", EMBEDDER, "--embeddings", str(tmp_path / "vectors.npz"))
    checked = cli("catalogue", "check", "--embedder", EMBEDDER).stdout
    assert "layouts: 0/6 points: the collection has no layout space" in checked
    assert "`ingest` the catalogue's images to add it" in checked
    store = _edge(cli.data_dir)
    # no empty layout space (its storage would take 1 KiB a point): the shard gains it when images are ingested
    assert LAYOUT not in store.sizes()
    store.close()


def test_precomputed_vectors_leave_the_layout_space_to_images_only_where_it_can_be_added_then(tmp_path: Path) -> None:
    """A run without layouts makes no layout space in an embedded shard (a later run adds it in place), but makes it
    in a server collection, which could not gain it later."""
    edge, server = EdgeStore(tmp_path, "works"), ServerStore(":memory:", "works")
    for store in (edge, server):
        store.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM, layouts_later=True)
    assert (LAYOUT in edge.sizes(), LAYOUT in server.sizes()) == (False, True)
    edge.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM)  # an ingest of images
    assert edge.sizes()[LAYOUT] == LAYOUT_DIM
    for store in (edge, server):
        store.close()


def test_a_space_added_to_a_quantised_shard_keeps_its_originals_on_disk_as_the_others(tmp_path: Path) -> None:
    """In an int8 shard every space's float32 originals are memory-mapped cold (read only to rescore), a space added
    in place (layouts after precomputed vectors, style after content) as well: not held in RAM."""
    store = EdgeStore(tmp_path, "works", storage=StorageParams(quantization="int8"))
    store.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM, layouts_later=True)
    store.upsert(_points(30, np.random.default_rng(8), layouts=False))
    store.build_index()
    store.ensure_collection(CONTENT_DIM, STYLE_DIM, LAYOUT_DIM)  # an ingest of images, with the style space
    with_layouts = _points(30, np.random.default_rng(8), layouts=True)
    styled = [replace(p, style=np.ones(STYLE_DIM, dtype=np.float32) / np.sqrt(STYLE_DIM)) for p in with_layouts]
    store.upsert(styled)
    store.build_index()
    assert store.search(styled[0].layout, 1, space=LAYOUT)[0].point_id == styled[0].point_id
    store.close()
    config = json.loads((tmp_path / "works" / "edge_config.json").read_text())
    assert {space: v.get("memory") for space, v in config["vectors"].items()} == dict.fromkeys(
        ("content", "style", LAYOUT), "cold"
    )
    for segment in (tmp_path / "works" / "segments").glob("*/segment.json"):
        stored = json.loads(segment.read_text())["config"]["vector_data"]
        assert not any("InRam" in v["storage_type"] for v in stored.values()), stored


def test_a_quantised_shard_that_fails_to_reopen_with_its_new_space_is_opened_again_at_its_next_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a space to an int8 shard reopens it; where the engine fails there (out of memory, say), the error is one
    line naming the shard, and the store is left closed, not holding the closed shard: its next use opens the shard
    again, with the space it gained and its points."""
    import qdrant_edge

    store = EdgeStore(tmp_path, "works", storage=StorageParams(quantization="int8"))
    store.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM, layouts_later=True)
    points = _points(30, np.random.default_rng(9), layouts=False)
    store.upsert(points)
    store.build_index()

    class Failing:  # the engine's loader, failing as it does (an exception out of the binding)
        @staticmethod
        def load(*_: object) -> None:
            raise RuntimeError("Service runtime error: cannot load edge shard: out of memory")

    monkeypatch.setattr(qdrant_edge, "EdgeShard", Failing)
    with pytest.raises(DamagedShardError, match=f"^{tmp_path / 'works'}: the embedded shard is damaged") as raised:
        store.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM)  # an ingest of images adds the layout space
    assert "\n" not in str(raised.value)
    monkeypatch.undo()
    assert store.sizes() == {"content": CONTENT_DIM, LAYOUT: LAYOUT_DIM}
    assert store.search(points[3].vector, 1)[0].point_id == points[3].point_id
    store.close()


def test_catalogue_check_tells_a_collection_without_a_layout_space(sqlite_audit: AuditStore) -> None:
    """A Qdrant server collection created before layouts holds none and never can: the check says so (None), where
    a collection with the space counts its layouts."""
    old, new = ServerStore(":memory:", "old"), ServerStore(":memory:", "new")
    old.ensure_collection(CONTENT_DIM)
    new.ensure_collection(CONTENT_DIM, None, LAYOUT_DIM)
    for store in (old, new):
        store.upsert(_points(4, np.random.default_rng(5), layouts=True))
    assert (check(sqlite_audit, old).layouts, check(sqlite_audit, new).layouts) == (None, 2)
    old.close()
    new.close()
