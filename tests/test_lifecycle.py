"""Catalogue lifecycle: withdrawing works, merging artist aliases, and checking (and repairing) the agreement
between the vector store and the audit DB. Vectors are precomputed and hand-placed, so no model is loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partialmethod
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import Result

from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.errors import ConflictError, NotFoundError, VectorStoreError
from attribution_audit.services.attribution import AttributionParams, Attributor
from attribution_audit.services.audit_log import get_attribution
from attribution_audit.services.catalogue import check, list_artists, merge_artists, unmerge_artist
from attribution_audit.services.ingest import IngestReport, ingest_source
from attribution_audit.sources.manifest import open_source
from attribution_audit.sources.precomputed import load_vectors
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import ArtistRow
from attribution_audit.store.models import IngestionRun, Work, WorkEmbedding, WorkVersion
from attribution_audit.store.vectors import WorkPoint, collection_name, point_id_for
from attribution_audit.store.vectors.qdrant_edge import EdgeStore

DIM = 8
EMBEDDER = "vec8"  # a name only: with --embeddings the CLI loads no model; the collection is works_vec8
COLLECTION = collection_name(EMBEDDER)
SHA = "ab" * 32


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def axis(i: int) -> np.ndarray:
    return np.eye(DIM, dtype=np.float32)[i]


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def write_catalogue(folder: Path, name: str, works: list[tuple[str, str, np.ndarray]]) -> tuple[Path, Path]:
    """A CSV manifest with one tiny real image per work, and an .npz of their vectors keyed by work id."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = ["path,artist,work_id"]
    for seed, (work_id, artist, _) in enumerate(works):
        pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img" / f"{work_id}.png")
        lines.append(f'img/{work_id}.png,"{artist}",{work_id}')
    manifest = folder / f"{name}.csv"
    manifest.write_text("\n".join(lines) + "\n")
    embeddings = folder / f"{name}.npz"
    np.savez(embeddings, work_ids=np.array([w for w, _, _ in works]), vectors=np.vstack([v for *_, v in works]))
    return manifest, embeddings


def ingest(audit: AuditStore, store: EdgeStore, manifest: Path, embeddings: Path) -> IngestReport:
    source = open_source(manifest)
    table = load_vectors(embeddings, source)
    return ingest_source(
        source,
        audit=audit,
        store=store,
        embedder=None,
        embedder_fingerprint=f"precomputed:{EMBEDDER}",
        vectors=lambda row: table.get(row.work_id),
    )


def attributor(audit: AuditStore, store: EdgeStore, tmp_path: Path) -> Attributor:
    """A fresh Attributor: it reads the artist merges when it is built."""
    return Attributor(
        audit,
        store,
        embedder_name=EMBEDDER,
        embedder_fingerprint=f"precomputed:{EMBEDDER}",
        requester="pytest",
        exact_cache_dir=tmp_path / "exact",
    )


def one_line_error(result: Result) -> str:
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture
def data_store(cli: Cli) -> Iterator[EdgeStore]:
    """The store the CLI uses for --embedder vec8 in its data dir (close it before a CLI call)."""
    store = EdgeStore(cli.data_dir / "qdrant", COLLECTION)
    yield store
    store.close()


# -- withdraw ----------------------------------------------------------------------------------------------------
WITHDRAW_WORKS = [
    ("W0", "Ada", unit(axis(0) + 0.05 * axis(1))),
    ("W1", "Ada", unit(axis(0) + 0.10 * axis(2))),
    ("W2", "Ada", unit(axis(0) + 0.15 * axis(3))),
    ("W3", "Bruno", unit(axis(4))),
    ("W4", "Bruno", unit(axis(5))),
    ("W5", "Chiara", unit(axis(6))),
]


def test_withdrawn_work_leaves_new_attributions_but_stays_in_the_audit_log(
    tmp_path: Path, cli: Cli, sqlite_audit: AuditStore, data_store: EdgeStore
) -> None:
    manifest, embeddings = write_catalogue(tmp_path, "lc", WITHDRAW_WORKS)
    ingest_args = ("ingest", str(manifest), "--embedder", EMBEDDER, "--embeddings", str(embeddings))
    assert "6 added" in cli(*ingest_args).stdout

    audit = sqlite_audit
    query = QueryVectors(axis(0))
    params = AttributionParams(k=3)
    before = attributor(audit, data_store, tmp_path)
    old = before.record("q.png", SHA, query, params, before.compute(query, params))
    assert [n.work_id for n in old.neighbours] == ["W0", "W1", "W2"]
    data_store.close()  # the CLI opens the same shard

    # Unknown ids or catalogue: one line naming them, and nothing is withdrawn.
    error = one_line_error(cli("catalogue", "withdraw", "W0", "NOPE", "--catalogue", "lc", code=1))
    assert "'NOPE'" in error and "nothing withdrawn" in error and "'W0'" not in error
    error = one_line_error(cli("catalogue", "withdraw", "W0", "--catalogue", "nocat", code=1))
    assert "'nocat'" in error and "lc" in error
    with Session(audit.engine) as session:
        assert session.scalars(select(Work.withdrawn_at)).all() == [None] * 6
    assert data_store.count() == 6
    data_store.close()

    out = cli("catalogue", "withdraw", "W0", "--catalogue", "lc").stdout
    assert "withdrew 1 work(s) from lc; removed from 1 collection(s)" in out
    again = cli("catalogue", "withdraw", "W0", "--catalogue", "lc").stdout  # says so, rather than withdrawing again
    assert "withdrew 0 work(s) from lc (1 withdrawn before); removed from 0 collection(s)" in again

    # New attributions no longer see W0; search does not return it.
    assert data_store.count() == 5
    assert all(h.payload["work_id"] != "W0" for h in data_store.search(query.content, 6))
    after = attributor(audit, data_store, tmp_path)
    new = after.record("q.png", SHA, query, params, after.compute(query, params))
    assert "W0" not in {n.work_id for n in new.neighbours}
    assert [n.work_id for n in new.neighbours][:2] == ["W1", "W2"]
    assert new.overlap_at_k == 1.0  # the exact check agrees: W0 is gone from the ground truth as well
    data_store.close()

    # The work row remains, marked withdrawn; the old record still names it; the chain verifies.
    with Session(audit.engine) as session:
        work = session.scalars(select(Work).where(Work.work_id == "W0")).one()
        assert work.withdrawn_at is not None
    shown = json.loads(cli("audit", "show", old.request_id, "--json").stdout)
    assert [n["work_id"] for n in shown["neighbours"]] == ["W0", "W1", "W2"]
    assert shown["record_hash"] == old.record_hash
    assert "chain OK: 2 records" in cli("audit", "verify").stdout
    checked = cli("catalogue", "check", "--embedder", EMBEDDER).stdout
    assert "5 points, 5 expected; 0 orphan, 0 missing, 0 stale" in checked
    assert "Ada,,2" in cli("artists", "list", "--format", "csv").stdout.splitlines()

    # Re-ingesting the unchanged manifest does not bring it back.
    again = cli(*ingest_args).stdout
    assert "0 added, 0 updated, 5 unchanged, 1 withdrawn (skipped), 0 failed" in again
    with Session(audit.engine) as session:
        last = session.scalars(select(IngestionRun).order_by(IngestionRun.id.desc())).first()
        assert last is not None and (last.withdrawn, last.unchanged, last.status) == (1, 5, "completed")
    assert data_store.count() == 5
    assert audit.requests.verify_chain().ok


def test_a_withdrawn_works_point_left_in_the_store_is_refused_until_repaired(
    tmp_path: Path, cli: Cli, sqlite_audit: AuditStore, data_store: EdgeStore
) -> None:
    """A withdrawal marks the catalogue, then deletes the points: one that stopped in between (or a point written
    back behind the catalogue) left the work searchable, and requests cited a withdrawn work as a valid attribution.
    Now such a request is refused before anything is recorded, and the check's repair removes the point."""
    manifest, embeddings = write_catalogue(tmp_path, "lc", WITHDRAW_WORKS)
    cli("ingest", str(manifest), "--embedder", EMBEDDER, "--embeddings", str(embeddings))
    (left,) = data_store.points_of([point_id_for("lc", "W0")]).values()
    data_store.close()
    cli("catalogue", "withdraw", "W0", "--catalogue", "lc")
    data_store.upsert([left])  # the point as a withdrawal cut short leaves it
    query, params = QueryVectors(axis(0)), AttributionParams(k=3)
    computer = attributor(sqlite_audit, data_store, tmp_path)
    outcome = computer.compute(query, params)
    assert outcome.neighbours[0].work_id == "W0"
    with pytest.raises(VectorStoreError) as refused:
        computer.record("q.png", SHA, query, params, outcome)
    assert str(refused.value) == (
        "the vector store names work 'W0' of catalogue 'lc', which the catalogue withdrew: its withdrawal is "
        "deleting the point now, or stopped before it did; this request was not recorded: retry once a running "
        "withdrawal ends; otherwise remove the point with `attribution-audit catalogue check --repair`"
    )
    assert sqlite_audit.requests.verify_chain().checked == 0
    data_store.close()
    assert "1 orphan" in cli("catalogue", "check", "--embedder", EMBEDDER, "--repair").stdout
    again = attributor(sqlite_audit, data_store, tmp_path)
    recorded = again.record("q.png", SHA, query, params, again.compute(query, params))
    assert [n.work_id for n in recorded.neighbours][:2] == ["W1", "W2"]  # (then one of the ties at 0)
    assert "W0" not in {n.work_id for n in recorded.neighbours}


def test_a_withdrawal_whose_shard_is_busy_leaves_the_catalogue_unmarked(
    tmp_path: Path, cli: Cli, sqlite_audit: AuditStore, data_store: EdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A withdrawal run while another process held the shard (a running `serve`) waited for it, failed, and left the
    work marked withdrawn with its point in place: every request near it was refused from then on. It now opens
    the shard before it marks anything."""
    manifest, embeddings = write_catalogue(tmp_path, "lc", WITHDRAW_WORKS)
    cli("ingest", str(manifest), "--embedder", EMBEDDER, "--embeddings", str(embeddings))
    monkeypatch.setattr(EdgeStore, "__init__", partialmethod(EdgeStore.__init__, lock_timeout=0.2))  # not 120 s
    data_store.hold(1.0)  # the shard busy, as in a service
    unknown = one_line_error(cli("catalogue", "withdraw", "W0", "NOPE", "--catalogue", "lc", code=1))
    assert "has no work 'NOPE'" in unknown  # said at once, before the shard is waited for
    refused = one_line_error(cli("catalogue", "withdraw", "W0", "--catalogue", "lc", code=1))
    assert "the embedded Qdrant shard is busy in another process" in refused
    with Session(sqlite_audit.engine) as session:
        assert session.scalars(select(Work.withdrawn_at).where(Work.work_id == "W0")).one() is None
    query, params = QueryVectors(axis(0)), AttributionParams(k=3)
    computer = attributor(sqlite_audit, data_store, tmp_path)
    recorded = computer.record("q.png", SHA, query, params, computer.compute(query, params))
    assert recorded.neighbours[0].work_id == "W0"  # still attributable, as the catalogue still holds it
    data_store.close()
    assert "withdrew 1 work(s) from lc" in cli("catalogue", "withdraw", "W0", "--catalogue", "lc").stdout


def test_withdraw_library_returns_points_per_collection_and_is_idempotent(
    sqlite_audit: AuditStore, tmp_path: Path
) -> None:
    audit = sqlite_audit
    manifest, embeddings = write_catalogue(tmp_path, "lc", WITHDRAW_WORKS)
    store = EdgeStore(tmp_path / "qdrant", COLLECTION)
    try:
        ingest(audit, store, manifest, embeddings)
    finally:
        store.close()
    points, already = audit.catalogue.withdraw("lc", ["W3", "W4"])
    assert {k: sorted(v) for k, v in points.items()} == {
        COLLECTION: sorted([point_id_for("lc", "W3"), point_id_for("lc", "W4")])
    }
    assert already == []
    with Session(audit.engine) as session:
        first = session.scalars(select(Work.withdrawn_at).where(Work.work_id == "W3")).one()
    _, already = audit.catalogue.withdraw("lc", ["W3", "W5"])  # again: the first withdrawal time is kept
    assert already == ["W3"]
    with Session(audit.engine) as session:
        assert session.scalars(select(Work.withdrawn_at).where(Work.work_id == "W3")).one() == first
    with pytest.raises(NotFoundError, match="no work 'X1', 'X2'; nothing withdrawn"):
        audit.catalogue.withdraw("lc", ["W2", "X2", "X1"])
    with Session(audit.engine) as session:
        assert session.scalars(select(Work.withdrawn_at).where(Work.work_id == "W2")).one() is None


# -- merge -------------------------------------------------------------------------------------------------------
MONET_WORKS = [
    ("M1", "Claude Monet", unit(axis(0) + 0.05 * axis(1))),
    ("C1", "C. Monet", unit(axis(0) + 0.06 * axis(2))),
    ("M2", "Claude Monet", unit(axis(0) + 0.07 * axis(3))),
    ("C2", "C. Monet", unit(axis(0) + 0.08 * axis(4))),
    ("F1", "Berthe Morisot", unit(axis(5))),
    ("F2", "Edgar Degas", unit(axis(6))),
    ("F3", "Edgar Degas", unit(axis(7) - axis(0))),
]


def test_merged_alias_counts_as_one_artist_in_new_attributions_only(
    cli: Cli, sqlite_audit: AuditStore, tmp_path: Path
) -> None:
    audit = sqlite_audit
    manifest, embeddings = write_catalogue(tmp_path, "monet", MONET_WORKS)
    store = EdgeStore(cli.data_dir / "qdrant", COLLECTION)
    query, params = QueryVectors(axis(0)), AttributionParams(k=4)
    try:
        ingest(audit, store, manifest, embeddings)
        before = attributor(audit, store, tmp_path)
        old = before.record("q.png", SHA, query, params, before.compute(query, params))
        assert [n.work_id for n in old.neighbours] == ["M1", "C1", "M2", "C2"]
        assert old.entropy == pytest.approx(0.5)  # two artists, two works each, K = 4: log 2 / log 4
        assert old.artist_shares == pytest.approx({"Claude Monet": 0.5, "C. Monet": 0.5})
    finally:
        store.close()

    merged = cli("artists", "merge", " C.  Monet", "Claude\tMonet").stdout  # read as the manifest's names are
    assert "merged 'C. Monet' into 'Claude Monet'" in merged
    assert "C. Monet,Claude Monet,2" in cli("artists", "list", "--format", "csv").stdout.splitlines()
    store = EdgeStore(cli.data_dir / "qdrant", COLLECTION)
    try:
        after = attributor(audit, store, tmp_path)
        outcome = after.compute(query, params)
        new = after.record("q.png", SHA, query, params, outcome)
    finally:
        store.close()
    assert [n.work_id for n in new.neighbours] == ["M1", "C1", "M2", "C2"]
    assert new.entropy == 0.0
    assert new.artist_shares == pytest.approx({"Claude Monet": 1.0})
    assert (new.top_artist, new.top_artist_share) == ("Claude Monet", pytest.approx(1.0))
    # Each neighbour keeps the spelling its manifest used; the canonical name is recorded beside it.
    assert [n.artist for n in new.neighbours] == ["Claude Monet", "C. Monet", "Claude Monet", "C. Monet"]
    assert {n.canonical_artist for n in new.neighbours} == {"Claude Monet"}
    assert new.margin is not None and new.margin > 0.5  # the runner-up is another artist, not the alias

    # The old request is unchanged.
    assert get_attribution(audit, old.request_id) == old
    shown = json.loads(cli("audit", "show", old.request_id, "--json").stdout)
    assert shown["entropy"] == pytest.approx(0.5)
    assert shown["artist_shares"] == pytest.approx({"Claude Monet": 0.5, "C. Monet": 0.5})
    assert [n["canonical_artist"] for n in shown["neighbours"]] == [
        "Claude Monet",
        "C. Monet",
        "Claude Monet",
        "C. Monet",
    ]
    recorded = json.loads(cli("audit", "show", new.request_id, "--json").stdout)
    assert [n["artist"] for n in recorded["neighbours"]] == ["Claude Monet", "C. Monet", "Claude Monet", "C. Monet"]
    assert [n["canonical_artist"] for n in recorded["neighbours"]] == ["Claude Monet"] * 4
    assert "chain OK: 2 records" in cli("audit", "verify").stdout


def test_merges_chain_and_cycles_are_refused(cli: Cli, sqlite_audit: AuditStore, tmp_path: Path) -> None:
    audit = sqlite_audit
    works = [
        ("A1", "Alpha", unit(axis(0) + 0.05 * axis(1))),
        ("B1", "Beta", unit(axis(0) + 0.06 * axis(2))),
        ("G1", "Gamma", unit(axis(0) + 0.07 * axis(3))),
        ("Z1", "Zeta", unit(axis(5))),
    ]
    manifest, embeddings = write_catalogue(tmp_path, "chain", works)
    store = EdgeStore(tmp_path / "qdrant", COLLECTION)
    try:
        ingest(audit, store, manifest, embeddings)
        merge_artists(audit, "Alpha", "Beta")
        assert audit.catalogue.canonical_artists() == {"Alpha": "Beta"}
        merge_artists(audit, "Beta", "Gamma")
        assert audit.catalogue.canonical_artists() == {"Alpha": "Gamma", "Beta": "Gamma"}
        assert list_artists(audit) == [
            ArtistRow("Alpha", "Gamma", 1),
            ArtistRow("Beta", "Gamma", 1),
            ArtistRow("Gamma", None, 1),
            ArtistRow("Zeta", None, 1),
        ]

        # Merging an artist into one of its own aliases would make a cycle.
        for alias, canonical in (("Gamma", "Alpha"), ("Gamma", "Beta"), ("Gamma", "Gamma")):
            with pytest.raises(ConflictError, match="cycle") as info:
                merge_artists(audit, alias, canonical)
            assert "\n" not in str(info.value)
        assert audit.catalogue.canonical_artists() == {"Alpha": "Gamma", "Beta": "Gamma"}

        with pytest.raises(NotFoundError, match=r"^unknown artist 'Nobody'; ") as info:
            merge_artists(audit, "Nobody", "Gamma")
        assert "\n" not in str(info.value)
        with pytest.raises(NotFoundError, match="unknown artist 'Nobody'"):
            merge_artists(audit, "Zeta", "Nobody")
        assert audit.catalogue.canonical_artists() == {"Alpha": "Gamma", "Beta": "Gamma"}

        params = AttributionParams(k=3)
        outcome = attributor(audit, store, tmp_path).compute(QueryVectors(axis(0)), params)
        assert [n.artist for n in outcome.neighbours] == ["Alpha", "Beta", "Gamma"]
        assert outcome.features["entropy"] == 0.0
        assert outcome.artist_shares == pytest.approx({"Gamma": 1.0})

        # A merge made by mistake is undone: Beta is its own artist again; Alpha, sent on to Gamma when Beta was
        # merged, stays there.
        assert unmerge_artist(audit, " Beta ") == ("Beta", "Gamma")
        assert audit.catalogue.canonical_artists() == {"Alpha": "Gamma"}
        outcome = attributor(audit, store, tmp_path).compute(QueryVectors(axis(0)), params)
        assert outcome.artist_shares.keys() == {"Gamma", "Beta"}
        with pytest.raises(ConflictError) as refused:
            unmerge_artist(audit, "Beta")
        assert str(refused.value) == "'Beta' is not merged into another artist; nothing to undo"
        with pytest.raises(NotFoundError, match=r"^unknown artist 'Nobody'; "):
            unmerge_artist(audit, "Nobody")
    finally:
        store.close()
    assert "unknown artist 'Nobody'" in one_line_error(cli("artists", "merge", "Nobody", "Gamma", code=1))


# -- check ---------------------------------------------------------------------------------------------------------
def test_check_finds_missing_and_stale_points_and_repair_plus_reingest_fixes_them(
    cli: Cli, sqlite_audit: AuditStore, tmp_path: Path, data_store: EdgeStore
) -> None:
    audit = sqlite_audit
    works = [
        (f"K{i}", "Ada" if i < 3 else "Bruno", unit(np.random.default_rng(i).standard_normal(DIM))) for i in range(5)
    ]
    manifest, embeddings = write_catalogue(tmp_path, "chk", works)
    first = ingest(audit, data_store, manifest, embeddings)
    assert first.added == 5
    report = check(audit, data_store)
    assert report.clean and (report.points, report.expected) == (5, 5)

    gone, stale = point_id_for("chk", "K1"), point_id_for("chk", "K3")
    data_store.delete([gone])  # deleted behind the DB's back
    data_store.upsert(  # same point id, another image hash: the point no longer matches its DB row
        [WorkPoint(stale, works[3][2], {"work_id": "K3", "artist": "Bruno", "catalogue": "chk", "image_sha256": SHA})]
    )
    report = check(audit, data_store)
    assert (report.orphans, report.missing, report.stale) == ([], [gone], [stale])
    assert not report.clean and (report.points, report.expected) == (4, 5)
    data_store.close()
    out = cli("catalogue", "check", "--embedder", EMBEDDER, code=1).stdout
    assert "4 points, 5 expected; 0 orphan, 1 missing, 1 stale" in out

    out = cli("catalogue", "check", "--embedder", EMBEDDER, "--repair").stdout
    assert "0 orphan, 1 missing, 1 stale" in out and "repaired" in out
    repaired = check(audit, data_store)
    assert repaired.clean and (repaired.points, repaired.expected) == (3, 3)

    again = ingest(audit, data_store, manifest, embeddings)
    assert (again.added, again.updated, again.unchanged, again.failed) == (0, 2, 3, 0)
    final = check(audit, data_store)
    assert final.clean and (final.points, final.expected) == (5, 5)
    hits = {h.payload["work_id"]: h for h in data_store.search(works[3][2], 5)}
    assert hits["K3"].payload["image_sha256"] != SHA and hits["K3"].similarity == pytest.approx(1.0, abs=1e-5)
    # The images did not change: same version, no new version rows.
    assert count(audit.engine, WorkVersion) == 5 and count(audit.engine, WorkEmbedding) == 5
    with Session(audit.engine) as session:
        assert set(session.scalars(select(Work.version))) == {1}
    data_store.close()
    assert (
        "5 points, 5 expected; 0 orphan, 0 missing, 0 stale" in cli("catalogue", "check", "--embedder", EMBEDDER).stdout
    )
