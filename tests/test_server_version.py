"""A Qdrant server collection's content version (what keys the exact and learned-space caches and is recorded with
every request) is two calls (the collection's description and its count), whatever the collection holds, and
changes with every write made through the store, for any process that reads it (qdrant-client's in-process mode
stands in for the server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dbtools import catalogue_points, make_attributor

from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.errors import VectorStoreError
from attribution_audit.services import ingest as ingest_service
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.vectors import WorkPoint, point_id_for
from attribution_audit.store.vectors import qdrant_server as server_module
from attribution_audit.store.vectors.base import UPSERT_BATCH
from attribution_audit.store.vectors.qdrant_server import WRITE_MARK, WRITING, ServerStore

DIM = 16
CATALOGUE = "cat"

pytestmark = pytest.mark.filterwarnings(
    "ignore:Payload indexes have no effect:UserWarning", "ignore:Local mode performs exact:UserWarning"
)


def unit(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows / np.linalg.norm(rows, axis=-1, keepdims=True), dtype=np.float32)


def works(n: int, start: int = 0) -> list[WorkPoint]:
    vectors = unit(np.random.default_rng(start).standard_normal((n, DIM)))
    return [
        WorkPoint(
            point_id_for(CATALOGUE, f"w{i}"),
            vectors[i - start],
            {"work_id": f"w{i}", "artist": f"Artist {i % 5}", "catalogue": CATALOGUE, "image_sha256": f"{i:064x}"},
        )
        for i in range(start, start + n)
    ]


class Counted:
    """Counts the calls of some of a store's engine primitives (scrolls, marks)."""

    def __init__(self, store: ServerStore, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
        self.calls = dict.fromkeys(names, 0)
        for name in names:
            monkeypatch.setattr(store, name, self._counting(name, getattr(store, name)))

    def _counting(self, name: str, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


@pytest.fixture
def store() -> Iterator[ServerStore]:
    s = ServerStore(":memory:", "works")
    s.ensure_collection(DIM)
    s.upsert(works(50))
    yield s
    s.close()


def test_the_version_is_read_without_reading_a_point_and_changes_with_each_write(
    store: ServerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(store, monkeypatch, "_scroll")
    first = store.content_version()
    store.search(works(1)[0].vector, 5)
    assert store.content_version() == first  # reads change nothing
    store.upsert(works(3, start=50))
    added = store.content_version()
    store.delete([point_id_for(CATALOGUE, "w0")])
    deleted = store.content_version()
    store.upsert([WorkPoint(p.point_id, p.vector, {**p.payload, "artist": "Other"}) for p in works(1, start=1)])
    assert len({first, added, deleted, store.content_version()}) == 4  # a payload rewritten alone changes it too
    assert counted.calls == {"_scroll": 0}


def test_a_run_of_writes_marks_the_collection_once_before_and_once_after(
    store: ServerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(store, monkeypatch, "_mark_changed", "_scroll")
    before = store.content_version()
    with store.writing():
        assert store.content_version() == before  # nothing written yet: nothing marked
        store.upsert(works(2 * UPSERT_BATCH + 1, start=100))  # three batches
        during = store.content_version()  # while a run writes: read from every point, as it changes
        store.delete([point_id_for(CATALOGUE, "w1")])
        with store.writing():  # a nested run is part of the outer one
            store.upsert(works(1, start=900))
        assert store.content_version() != during and counted.calls["_scroll"] > 0
    assert counted.calls["_mark_changed"] == 2
    assert len({before, during, store.content_version()}) == 3
    with store.writing():
        pass
    assert counted.calls["_mark_changed"] == 2  # a run that wrote nothing marks nothing
    store.upsert(works(2 * UPSERT_BATCH, start=2000))  # outside a run: before and after the operation
    assert counted.calls["_mark_changed"] == 4


def test_a_write_cut_short_still_changes_the_version_and_reports_its_own_error(
    store: ServerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that read the collection before (or while) a failed write must not keep its caches."""
    before = store.content_version()
    written = store._upsert

    def first_batch_only(points: Any) -> None:
        if len(points) < UPSERT_BATCH:
            raise VectorStoreError("Qdrant at http://q: upserting points failed (connection reset)")
        written(points)

    monkeypatch.setattr(store, "_upsert", first_batch_only)
    with pytest.raises(VectorStoreError, match="upserting points failed"):
        store.upsert(works(UPSERT_BATCH + 3, start=100))
    assert store.content_version() != before

    def server_gone(writing: bool) -> None:
        raise VectorStoreError("Qdrant at http://q: marking the collection as written failed (connection refused)")

    monkeypatch.setattr(store, "_mark_changed", server_gone)
    with pytest.raises(VectorStoreError, match="marking the collection"):  # no mark, no write
        store.upsert(works(1, start=700))
    assert store.count() == 50 + UPSERT_BATCH


def test_a_collection_without_a_write_mark_is_versioned_by_its_points_until_written(store: ServerStore) -> None:
    """A collection made before the marks (or on a server that keeps no collection metadata) is still versioned
    correctly, by reading every point; its first write through the store gives it a mark."""
    store._client.update_collection("works", metadata={WRITE_MARK: None})  # (null removes a key)
    unmarked = store.content_version()
    assert unmarked == store.content_version() and "-n50" in unmarked and "-m" not in unmarked
    store.upsert(works(1, start=60))
    marked = store.content_version()
    assert marked != unmarked and marked == store.content_version() and "-m" in marked


def other_writer(store: ServerStore) -> ServerStore:
    """Another process's store on the same server and collection."""
    other = ServerStore(":memory:", store.collection)
    other._client, other._sizes = store._client, store.sizes()
    return other


def test_a_writer_killed_mid_run_leaves_the_version_read_from_the_points_until_its_key_is_abandoned(
    store: ServerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that never marked its end (killed, out of memory, the server lost) may have written more after a reader
    cached what it read: the version follows every point's digest until its key, no longer refreshed, is old enough
    to be a dead writer's; then the next run to end (one that finds nothing to write too) removes it."""
    writer = other_writer(store)
    writer._mark_changed(writing=True)
    writer._upsert(works(2, start=300))  # ... then killed: no end mark
    read = store.content_version()
    assert "-m" not in read and store.content_version() == read
    writer._upsert(works(1, start=400))  # what it wrote after the reader read changes the version
    assert store.content_version() != read
    with store.writing():  # an empty run at once: the writer may still be at work (its key is fresh)
        store.delete([point_id_for(CATALOGUE, "absent")])
    assert "-m" not in store.content_version()
    key = f"{WRITING}{writer._run.mark}"
    assert set(store._metadata()) == {WRITE_MARK, key}
    monkeypatch.setattr(server_module, "ABANDONED_S", 0.0)  # as 15 minutes later, the writer's key not refreshed
    with store.writing():  # the ingest run again, with nothing to write
        pass
    ended = store.content_version()
    assert "-m" in ended and key not in store._metadata()
    with store.writing():  # and then marks nothing more
        pass
    assert store.content_version() == ended


def test_a_writing_key_dated_far_ahead_is_taken_for_a_dead_writers(store: ServerStore) -> None:
    """A key whose time is ABANDONED_S or more ahead of the clock (a hand edit, a writer whose clock was far off) was
    never old enough to end: every request read every point for good. The next run ends it as it ends a dead one."""
    with store.writing():
        store.upsert(works(2))
    ahead = (datetime.now(UTC) + timedelta(seconds=2 * server_module.ABANDONED_S)).isoformat()
    store._set_metadata({f"{WRITING}forged": ahead})
    assert "-m" not in store.content_version()
    with store.writing():  # the next ingest run, with nothing to write
        pass
    assert "-m" in store.content_version() and f"{WRITING}forged" not in store._metadata()


def test_a_writing_run_refreshes_its_key_so_that_it_is_not_taken_for_a_dead_one(
    store: ServerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "HEARTBEAT_S", 0.0)
    with store.writing():
        store.upsert(works(1, start=100))
        key = f"{WRITING}{store._run.mark}"
        first = store._metadata()[key]
        store.upsert(works(1, start=101))
        assert store._metadata()[key] > first
        beaten, update = store._metadata()[key], store._client.update_collection

        def beat_lost(name: str, metadata: dict[str, Any]) -> Any:
            if set(metadata) == {key}:
                raise ConnectionError("connection reset")
            return update(name, metadata=metadata)

        monkeypatch.setattr(store._client, "update_collection", beat_lost)
        store.upsert(works(1, start=102))  # written; only its heartbeat is lost, not the write
        assert store._metadata()[key] == beaten and store.count() == 53
    assert key not in store._metadata()


def test_a_run_stays_marked_as_writing_until_it_ends_whatever_other_writers_end_meanwhile(store: ServerStore) -> None:
    """Each run has a writing key of its own: another writer's end (or an empty run's settling) does not make the
    collection read as settled while a run still writes in place."""
    other = other_writer(store)
    with store.writing():
        store.upsert(works(1, start=100))
        other.upsert(works(1, start=200))  # another writer's whole operation, begun and ended meanwhile
        read = store.content_version()
        assert "-m" not in read  # still read from the points
        rewritten = works(1, start=100)[0]
        store.upsert(
            [WorkPoint(rewritten.point_id, -rewritten.vector, {**rewritten.payload, "image_sha256": "f" * 64})]
        )
        assert store.content_version() != read
    assert "-m" in store.content_version()


def test_a_run_knows_whether_it_alone_changed_the_collection_since_a_version(store: ServerStore) -> None:
    """What an ingest asks before bringing an exact cache forward from its own points alone."""
    other = other_writer(store)
    before = store.content_version()
    with store.writing():
        store.upsert(works(2, start=100))
    assert store.wrote_alone_since(before)
    before = store.content_version()
    with store.writing():
        store.upsert(works(2, start=200))
        other.delete([point_id_for(CATALOGUE, "w5")])  # a withdrawal in another process, during the run
    assert not store.wrote_alone_since(before)
    before = store.content_version()
    other.upsert(works(1, start=300))  # after the version was read, before the run began
    with store.writing():
        store.upsert(works(1, start=400))
    assert not store.wrote_alone_since(before)
    before = store.content_version()
    with store.writing():
        store.upsert(works(1, start=500))
    other._mark_changed(writing=True)  # a run begun as this one ended: its start mark overwritten by the end mark
    store._client.update_collection("works", metadata={WRITE_MARK: store._run.end})
    assert not store.wrote_alone_since(before)


def test_a_write_behind_the_store_that_adds_or_removes_points_changes_the_version(store: ServerStore) -> None:
    """A write through the Qdrant API or another tool sets no mark; one that changes the number of points is seen
    (one that rewrites points in place is for `catalogue check` to find)."""
    from qdrant_client import models

    first = store.content_version()
    store._client.delete("works", points_selector=models.PointIdsList(points=[point_id_for(CATALOGUE, "w3")]))
    assert store.content_version() != first


def test_a_multi_chunk_ingest_marks_the_collection_twice(
    tmp_path: Path, sqlite_audit: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest is one run of writes: on a cluster each mark is a consensus operation, so not one per chunk."""
    from attribution_audit.config import load_settings
    from attribution_audit.services.ingest import ingest_catalogue

    marks: list[bool] = []
    monkeypatch.setattr(ServerStore, "_mark_changed", lambda self, writing: marks.append(writing))
    monkeypatch.setattr(ingest_service, "CHUNK_ROWS", 2)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,artist,work_id\n" + "".join(f"{i}.png,Ada,Q{i}\n" for i in range(7)))
    vectors = unit(np.random.default_rng(3).standard_normal((7, 8)))
    embeddings = tmp_path / "e.npz"
    np.savez(embeddings, work_ids=np.array([f"Q{i}" for i in range(7)]), vectors=vectors)
    settings = load_settings(data_dir=tmp_path / "data", embedder="vec8", qdrant_url=":memory:")
    report = ingest_catalogue(settings, manifest, audit=sqlite_audit, embeddings=embeddings)
    assert (report.added, report.failed) == (7, 0)
    assert marks == [True, False]


def test_a_request_on_a_server_reads_no_point_beyond_its_search(
    store: ServerStore, sqlite_audit: AuditStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalogue version each request records costs the same at any size of the collection; an exact check
    reads the vectors once, then again only after a write."""
    attributor = make_attributor(sqlite_audit, store, tmp_path)
    counted = Counted(store, monkeypatch, "_scroll")
    query = QueryVectors(works(1, start=5000)[0].vector)
    off, always = AttributionParams(k=5, verify="off"), AttributionParams(k=5, verify="always")
    for params in (off, off, always, always, off):
        outcome = attributor.compute(query, params)
        attributor.record("q.png", "0" * 64, query, params, outcome)
    assert counted.calls["_scroll"] == 1  # the first exact check's read of the vectors
    store.upsert(works(1, start=70))
    catalogue_points(sqlite_audit, store)  # (reads every point, as an ingest's records would be made)
    scrolled = counted.calls["_scroll"]
    outcome = attributor.compute(query, always)
    assert counted.calls["_scroll"] == scrolled + 1 and outcome.catalogue_version == store.content_version()


def test_a_request_records_the_version_read_before_its_search(
    store: ServerStore, sqlite_audit: AuditStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that ends while a request searches leaves the request recorded under the version before it, never
    under a later one (verify-recall would count the works the write added as misses of the index)."""
    attributor = make_attributor(sqlite_audit, store, tmp_path)
    before = store.content_version()
    searched = store._query

    def search_then_write(*args: Any, **kwargs: Any) -> Any:
        found = searched(*args, **kwargs)
        store.upsert(works(1, start=800))  # another process's ingest, ending meanwhile
        return found

    monkeypatch.setattr(store, "_query", search_then_write)
    outcome = attributor.compute(QueryVectors(works(1, start=5000)[0].vector), AttributionParams(k=5))
    assert outcome.catalogue_version == before != store.content_version()


def test_catalogue_check_names_a_run_left_unended_and_its_repair_ends_it_once_abandoned(
    store: ServerStore, sqlite_audit: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why every request reads every point (slow requests after a killed ingest) is said by the check, which the
    README sends the operator to; its repair ends such a run once it is a dead writer's."""
    from attribution_audit.services.catalogue import check

    catalogue_points(sqlite_audit, store)
    assert check(sqlite_audit, store).unended_writes == {}
    writer = other_writer(store)
    writer._mark_changed(writing=True)  # ... killed before its end mark
    found = check(sqlite_audit, store)
    assert list(found.unended_writes) == [writer._run.mark] and found.clean
    assert check(sqlite_audit, store, repair=True).unended_writes == found.unended_writes  # may still be at work
    monkeypatch.setattr(server_module, "ABANDONED_S", 0.0)
    assert check(sqlite_audit, store, repair=True).unended_writes == {}
    assert "-m" in store.content_version()
