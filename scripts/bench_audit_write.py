"""The audit write of one request at K neighbours, alone: the median CPU (calling thread) and wall time of
``AuditStore.requests.record`` over ``--records`` requests citing random works of a catalogue of ``--works`` works,
on a fresh SQLite file or a fresh database of a PostgreSQL server. Run it once per code tree to compare two versions
in alternate processes (``PYTHONPATH=OLD_TREE python scripts/bench_audit_write.py ...``), as docs/benchmarks.md
reports; it prints one line and writes nothing else.

    python scripts/bench_audit_write.py --database sqlite
    python scripts/bench_audit_write.py --database postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

from attribution_audit.domain.results import Neighbour, Outcome, RequestDraft
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.catalogue import WorkRecord
from attribution_audit.store.database import create_db_engine, upgrade

ARTISTS = 500
WARM_UP = 20


def _artist(number: int) -> str:
    return f"artist {number % ARTISTS}"


def _catalogue(audit: AuditStore, works: int) -> None:
    """Catalogue "museum": works w0..w<works-1>, version 1, embedded in collection "works_x"."""
    source = {"source_format": "csv", "manifest_path": "/m.csv", "manifest_sha256": "0" * 64}
    run, catalogue = audit.catalogue.start_ingestion(
        "museum", **source, collection="works_x", embedder_fingerprint="x", requester="bench"
    )
    for start in range(0, works, 5000):
        records = [
            WorkRecord(
                f"w{i}", _artist(i), None, f"/img/{i}.png", hashlib.sha256(b"%d" % i).hexdigest(), {}, 1, f"p{i}"
            )
            for i in range(start, min(works, start + 5000))
        ]
        audit.catalogue.record_works(
            catalogue, "works_x", run_id=run, embedder_fingerprint="x", spaces="content", works=records
        )


def _draft(numbers: list[int]) -> RequestDraft:
    """A request whose neighbours are the works ``numbers``, in that order, with equal shares."""
    k = len(numbers)
    neighbours = [
        Neighbour(rank, f"w{i}", "museum", _artist(i), 0.9 - rank / 1000, 0.1 + rank / 1000, 1 / k, _artist(i), 1)
        for rank, i in enumerate(numbers, start=1)
    ]
    shares: dict[str, float] = {}
    for n in neighbours:
        shares[n.artist] = shares.get(n.artist, 0.0) + n.share
    features: dict[str, float | None] = {"entropy": 0.5, "nn_distance": 0.1, "margin": 0.01}
    top = max(shares, key=shares.__getitem__)
    outcome = Outcome(neighbours, [], None, None, "v1", features, top, shares[top], shares)
    vector = np.ones(512, dtype=np.float32)
    return RequestDraft(
        "/q.png", "ab" * 32, vector, None, "bench", "x", "x", "edge", "works_x", {}, {}, k, outcome, 0.5, "default-v1"
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="sqlite", help="sqlite, or a PostgreSQL server URL to create a DB on")
    parser.add_argument("--works", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--records", type=int, default=230)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        admin, name = None, f"bench_{uuid.uuid4().hex[:8]}"
        if args.database == "sqlite":
            url = f"sqlite:///{Path(folder) / 'audit.sqlite'}"
        else:
            admin = create_engine(args.database, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f"CREATE DATABASE {name}"))
            url = args.database.rsplit("/", 1)[0] + "/" + name
        engine = create_db_engine(url)
        try:
            upgrade(engine)
            audit = AuditStore(engine)
            _catalogue(audit, args.works)
            draw = random.Random(1)
            drafts = [_draft(draw.sample(range(args.works), args.k)) for _ in range(args.records + WARM_UP)]
            cpu, wall = [], []
            for number, draft in enumerate(drafts):
                started, thread = time.perf_counter(), time.thread_time()
                audit.requests.record(draft)
                if number >= WARM_UP:
                    cpu.append((time.thread_time() - thread) * 1000)
                    wall.append((time.perf_counter() - started) * 1000)
        finally:
            engine.dispose()
            if admin is not None:
                with admin.connect() as connection:
                    connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    print(
        f"{engine.dialect.name} works={args.works} K={args.k} records={args.records}: "
        f"CPU p50 {statistics.median(cpu):.3f} ms, wall p50 {statistics.median(wall):.3f} ms"
    )


if __name__ == "__main__":
    main()
