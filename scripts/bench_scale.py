"""Scale: ingestion, requests and the audit log of the product against the raw Qdrant Edge engine, per catalogue size.

For each N (``--sizes``): N clustered 512-d unit vectors with artist/work ids (and ``--metadata`` columns of text
a work) are written as a manifest and an aligned ``.npy`` in ``--work`` (kept: parts may run in separate invocations
on the same data dirs), then the ``--parts`` asked for, each saving its result to ``--results`` as it ends:

* ingest: ``attribution-audit ingest --embeddings`` in a fresh process (wall, CPU and peak RSS from ``wait4``, disk);
  with ``--audit-postgres`` the data dir's audit log is a database of its own on that server;
* raw: a raw qdrant-edge shard of the same points (the same HNSW and indexing settings: upsert + optimize) in a
  child process;
* int8 (with ``--int8``): a second product ingest with ``--quantization int8``;
* serve: the peak RSS of a fresh process that opens each data dir and answers ``--serve`` requests;
* pgcopy (with ``--audit-postgres``): the SQLite audit DB of the data dir ingested without it copied into the
  folder's PostgreSQL database, so that requests and log run on PostgreSQL against the same shard without a second
  ingest of N works (at 1M an ingest is an hour of HNSW build);
* requests, excluding embedding (query = a catalogue vector plus noise): the product (`Attributor` of the ingested
  data dir: engine search, K policy and indicators; exact check when the verify mode says; the audit write) split
  into search / exact / audit write, alternating request by request with the raw engine's search of the same query
  at the same depth, the audit database's commit floor and (verify always) a NumPy brute-force scan; verify off,
  sample:0.1 and always, at K=10 and K=100; recall@K against the exact top K; CPU time of the calling thread;
* log: requests against a copy of the audit DB as it is and a copy grown by ``--log-records`` records, alternating;
* ef: requests at K=``--ef-k`` (verify off) on the ingested data dir at each HNSW search ef of ``--efs`` (the
  ``--ef`` setting: no re-ingest), the same queries at every ef, in rounds that alternate the efs: search p50/p95
  (engine candidates, K policy, indicators) and recall@K against the exact top K; written to a section of its own;
* chain: chains of ``--log`` records (10 neighbours each) verified and exported by the CLI in fresh processes
  (records/s, peak RSS), on SQLite and, with ``--postgres-url``, on PostgreSQL, with the raw reference (a bare DBAPI
  fetch of the same rows, a bare sha256 of the same bytes) in the same run; written to a section of its own.

The section of docs/benchmarks.md between this script's markers is written from every result in ``--results``
(``--parts none`` only writes it); the machine is shared: see the note there.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import markers, provenance, write_section
from qdrant_edge import EdgeShard, Query, QueryRequest, SearchParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dbtools import fill_chain

from attribution_audit.config import load_settings, read_record
from attribution_audit.domain.params import AttributionParams, verify_rate
from attribution_audit.domain.points import point_id_for
from attribution_audit.domain.results import Neighbour
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.database import create_db_engine, upgrade
from attribution_audit.store.exact import overlap_at_k
from attribution_audit.store.models import Base

NAME = "bench_scale"
LOG_NAME = "bench_scale_log"
EF_NAME = "bench_scale_ef"
DIM = 512
EMBEDDER = "clip"  # names the collection of new data dirs (CLIP ViT-B/32: 512-d); the vectors are precomputed


def embedder_of(data_dir: Path) -> str:
    """The embedder the data dir was built with (its record), EMBEDDER for a new one (older runs used another)."""
    record = read_record(data_dir)
    return record.embedder if record else EMBEDDER


VERIFY_MODES = ("off", "sample:0.1", "always")
BLOCK = 50_000
EF_BLOCK = 20  # queries per ef before the next ef's turn
PARTS = ("ingest", "raw", "int8", "pgcopy", "serve", "requests", "log", "ef", "chain")


@dataclass(frozen=True)
class Run:
    """A child process's wall and CPU seconds and peak RSS."""

    wall: float
    cpu: float
    rss_mib: float


# Runs a command and writes its wall and CPU seconds and peak RSS (KiB) to a file. A small process of its own, so the
# command's ru_maxrss (which on Linux counts the memory of the process it was forked from) is not this one's.
MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    out.write(f"{code} {time.perf_counter() - started} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
"""


def timed_child(command: list[str]) -> Run:
    """A child process's wall and CPU seconds and its own peak RSS; exits on failure."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as result:
        subprocess.run([sys.executable, "-c", MEASURE, result.name, *command], check=True)
        code, wall, cpu, rss = result.read().split()
    if int(code):
        raise SystemExit(f"{' '.join(command)} failed (exit {code}); run it by hand to see why")
    return Run(float(wall), float(cpu), int(rss) / 1024)


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """n unit vectors around n/20 centres (one artist each); the artist of each row (made in blocks: at 1M the
    float64 noise of one draw would take 4 GiB)."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // 20)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    vectors = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, BLOCK):
        block = centres[labels[start : start + BLOCK]] + 0.6 * rng.normal(
            size=(len(labels[start : start + BLOCK]), DIM)
        ).astype(np.float32)
        vectors[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors, [f"artist {c}" for c in labels]


def write_catalogue(folder: Path, vectors: np.ndarray, artists: list[str], metadata: int = 0) -> tuple[Path, Path]:
    """The manifest (with ``metadata`` columns of ~50 characters a work besides its path, artist and work id, as a
    real catalogue's description, source and licence columns) and the aligned vectors table."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest, table = folder / "catalogue.csv", folder / "vectors.npy"
    columns = [f"meta_{j}" for j in range(metadata)]
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_id", *columns])
        writer.writerows(
            [
                f"img/{i}.png",
                artist,
                f"w{i}",
                *(f"{column} of work w{i}: descriptive text, a source" for column in columns),
            ]
            for i, artist in enumerate(artists)
        )
    np.save(table, vectors)
    return manifest, table


def cli(data_dir: Path, *args: str, database_url: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "attribution_audit", "--data-dir", str(data_dir)]
    if database_url:
        command += ["--database-url", database_url]
    return [*command, *args]


RAW_INGEST = """
import sys, time, numpy as np
from qdrant_edge import (Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard, EdgeVectorParams, HnswIndexConfig,
                         PayloadSchemaType, Point, UpdateOperation)
path, table, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
vectors = np.load(table)
config = EdgeConfig(vectors={"content": EdgeVectorParams(size=vectors.shape[1], distance=Distance.Cosine)},
                    hnsw_config=HnswIndexConfig(m=16, ef_construct=128, full_scan_threshold=1),
                    optimizers=EdgeOptimizersConfig(indexing_threshold=1, default_segment_number=1))
shard = EdgeShard.create(path, config)
shard.update(UpdateOperation.create_field_index("artist", PayloadSchemaType.Keyword))
ids = [str(__import__("uuid").uuid5(__import__("uuid").NAMESPACE_URL, f"w{i}")) for i in range(n)]
for start in range(0, n, 512):
    batch = [Point(id=ids[i], vector={"content": vectors[i].tolist()},
                   payload={"work_id": f"w{i}", "artist": f"a{i % 50}"}) for i in range(start, min(start + 512, n))]
    shard.update(UpdateOperation.upsert_points(batch))
shard.optimize()
shard.flush()
shard.close()
"""


def raw_search(shard: EdgeShard, vector: np.ndarray, limit: int) -> list[str]:
    request = QueryRequest(
        limit=limit,
        query=Query.Nearest(vector.tolist(), using="content"),
        with_payload=True,
        with_vector=False,
        params=SearchParams(hnsw_ef=128),
    )
    return [str(p.id) for p in shard.query(request)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Floor:
    """The commit floor of the audit database: a one-row insert + commit into a scratch table of the same database
    (SQLite: a file in the data dir, WAL, the default synchronous=FULL, as the audit log; PostgreSQL: a logged table,
    synchronous_commit as configured), which no audit write can beat."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        if database_url:
            import psycopg

            self.pg = psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True)
            self.pg.execute("CREATE TABLE IF NOT EXISTS bench_floor (id serial PRIMARY KEY, v text)")
        else:
            self.lite = sqlite3.connect(data_dir / "floor.sqlite", isolation_level=None)
            self.lite.execute("PRAGMA journal_mode=WAL")
            self.lite.execute("CREATE TABLE IF NOT EXISTS bench_floor (id INTEGER PRIMARY KEY, v TEXT)")
        self.url = database_url

    def __call__(self) -> float:
        started = time.perf_counter()
        if self.url:
            with self.pg.transaction():
                self.pg.execute("INSERT INTO bench_floor (v) VALUES ('x')")
        else:
            self.lite.execute("BEGIN IMMEDIATE")
            self.lite.execute("INSERT INTO bench_floor (v) VALUES ('x')")
            self.lite.execute("COMMIT")
        return time.perf_counter() - started

    def close(self) -> None:
        if self.url:
            self.pg.execute("DROP TABLE bench_floor")
            self.pg.close()
        else:
            self.lite.close()


def query_of(vectors: np.ndarray, rng: np.random.Generator) -> QueryVectors:
    """A catalogue vector plus noise, as a unit query."""
    query = np.asarray(vectors[rng.integers(len(vectors))]) + 0.5 * rng.normal(size=DIM).astype(np.float32) / np.sqrt(
        DIM
    )
    return QueryVectors((query / np.linalg.norm(query)).astype(np.float32))


def brute_scan(matrix: np.ndarray, query: np.ndarray) -> float:
    """Seconds of one brute-force scan of the collection: NumPy matrix-vector product and top 100."""
    started = time.perf_counter()
    sims = matrix @ query
    np.argpartition(sims, -100)[-100:]
    return time.perf_counter() - started


def request_rows(
    data_dir: Path, raw_path: Path, vectors: np.ndarray, requests: int, database_url: str | None
) -> list[dict[str, float | str | int]]:
    """Per (K, verify mode): product p50/p95 with the split, raw p50/p95, recall@K; interleaved with each request,
    the commit floor and (verify always) one brute-force NumPy scan of the same vectors."""
    embedder = embedder_of(data_dir)
    settings = load_settings(data_dir=data_dir, embedder=embedder, database_url=database_url)
    audit = open_audit(settings)
    rng = np.random.default_rng(1)
    rows = []
    shard = EdgeShard.load(str(raw_path))
    floor = Floor(data_dir, database_url)
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        with open_attributor(settings, audit, embedder, fingerprint=f"precomputed:{embedder}") as attributor:
            for k in (10, 100):
                for mode in VERIFY_MODES:
                    params = AttributionParams(k=k, verify="off")
                    rate = verify_rate(mode)
                    draw = random.Random(k)
                    split: dict[str, list[float]] = {
                        key: []
                        for key in ("search", "exact", "write", "total", "raw", "floor", "numpy", "cpu", "raw_cpu")
                    }
                    recall: list[float] = []
                    for i in range(requests + 3):  # 3 warm-up requests
                        query = query_of(vectors, rng)
                        started, cpu_started = time.perf_counter(), time.thread_time()
                        outcome = attributor.compute(query, params)
                        searched, cpu_searched = time.perf_counter(), time.thread_time()
                        # the product holds its neighbours' point ids; the benchmark derives them (uuid5, ~4 us
                        # each: 0.4 ms at K=100), outside the timed steps
                        kept = [point_of(n_) for n_ in outcome.neighbours] if draw.random() < rate else None
                        resumed, cpu_resumed = time.perf_counter(), time.thread_time()
                        exact_ids = None
                        if kept is not None:
                            exact_ids = attributor.exact_top([query], params)[0]
                            outcome = replace(outcome, overlap_at_k=overlap_at_k(kept, exact_ids), exact_method="brute")
                        checked = time.perf_counter()
                        attributor.record("bench", "00" * 32, query, params, outcome)
                        written, cpu_written = time.perf_counter(), time.thread_time()
                        timed = (searched - started) + (written - resumed)
                        cpu = (cpu_searched - cpu_started) + (cpu_written - cpu_resumed)
                        raw_started, raw_cpu_started = time.perf_counter(), time.thread_time()
                        raw_search(shard, query.content, k * params.oversampling)
                        raw_done, raw_cpu_done = time.perf_counter(), time.thread_time()
                        floor_s = floor()
                        numpy_s = brute_scan(matrix, query.content) if mode == "always" else 0.0
                        if i < 3:
                            continue
                        split["search"].append(searched - started)
                        split["exact"].append(checked - resumed)
                        split["write"].append(written - checked)
                        split["total"].append(timed)
                        split["raw"].append(raw_done - raw_started)
                        split["cpu"].append(cpu)
                        split["raw_cpu"].append(raw_cpu_done - raw_cpu_started)
                        split["floor"].append(floor_s)
                        split["numpy"].append(numpy_s)
                        if exact_ids is None and len(recall) < 20:
                            exact_ids = attributor.exact_top([query], params)[0]
                        if exact_ids is not None:
                            kept = [point_of(n_) for n_ in outcome.neighbours]
                            recall.append(overlap_at_k(kept, exact_ids))
                    ms = {key: [v * 1000 for v in values] for key, values in split.items()}
                    rows.append(
                        {
                            "k": k,
                            "verify": mode,
                            "p50": percentile(ms["total"], 50),
                            "p95": percentile(ms["total"], 95),
                            "search": statistics.median(ms["search"]),
                            "exact": statistics.mean(ms["exact"]),
                            "exact_p50": statistics.median(ms["exact"]),
                            "write": statistics.median(ms["write"]),
                            "floor": statistics.median(ms["floor"]),
                            "numpy": statistics.median(ms["numpy"]),
                            "raw_p50": percentile(ms["raw"], 50),
                            "cpu": statistics.median(ms["cpu"]),
                            "raw_cpu": statistics.median(ms["raw_cpu"]),
                            "raw_p95": percentile(ms["raw"], 95),
                            "recall": float(np.mean(recall)) if recall else float("nan"),
                        }
                    )
                    print(f"  K={k} verify={mode}: p50 {rows[-1]['p50']:.2f} ms, raw {rows[-1]['raw_p50']:.2f} ms")
    finally:
        shard.close()
        floor.close()
        audit.engine.dispose()
    return rows


def ef_rows(
    data_dir: Path, vectors: np.ndarray, efs: list[int], k: int, requests: int, database_url: str | None
) -> list[dict[str, float]]:
    """Per search ef: the compute's p50/p95 (ms; verify off, nothing recorded) and recall@K against the exact top K,
    over the same ``requests`` queries at every ef, in rounds of ``EF_BLOCK`` queries that alternate the efs, each
    round starting at the next (the shard opens in one store at a time)."""
    embedder = embedder_of(data_dir)
    params = AttributionParams(k=k, verify="off")
    rng = np.random.default_rng(5)
    queries = [query_of(vectors, rng) for _ in range(requests)]
    times: dict[int, list[float]] = {ef: [] for ef in efs}
    recall: dict[int, list[float]] = {ef: [] for ef in efs}
    settings = load_settings(data_dir=data_dir, embedder=embedder, database_url=database_url)
    audit = open_audit(settings)
    try:
        with open_attributor(settings, audit, embedder, fingerprint=f"precomputed:{embedder}") as attributor:
            exact = attributor.exact_top(queries, params)
        for turn, start in enumerate(range(0, requests, EF_BLOCK)):
            for ef in efs[turn % len(efs) :] + efs[: turn % len(efs)]:  # each round starts at the next ef
                at_ef = replace(settings, hnsw_ef=ef)
                with open_attributor(at_ef, audit, embedder, fingerprint=f"precomputed:{embedder}") as attributor:
                    attributor.compute(queries[start], params)  # warm-up: the shard's pages after reopening
                    for i in range(start, min(start + EF_BLOCK, requests)):
                        started = time.perf_counter()
                        outcome = attributor.compute(queries[i], params)
                        times[ef].append(time.perf_counter() - started)
                        recall[ef].append(overlap_at_k([point_of(n_) for n_ in outcome.neighbours], exact[i]))
    finally:
        audit.engine.dispose()
    rows = []
    for ef in efs:
        ms = [t * 1000 for t in times[ef]]
        rows.append(
            {
                "ef": ef,
                "k": k,
                "depth": k * params.oversampling,
                "p50": percentile(ms, 50),
                "p95": percentile(ms, 95),
                "recall": float(np.mean(recall[ef])),
                "requests": len(ms),
            }
        )
        print(f"  ef={ef} K={k}: p50 {rows[-1]['p50']:.2f} ms, recall@K {rows[-1]['recall']:.3f}")
    return rows


def copy_log(settings_url: str, data_dir: Path, label: str) -> str:
    """A copy of the data dir's audit database (its works, its log so far) under another name (SQLite: kept, and
    reused by the next run); its URL."""
    if settings_url.startswith("sqlite"):
        copy = data_dir / f"audit-{label}.sqlite"
        if copy.exists():
            return f"sqlite:///{copy}"
        source = sqlite3.connect(settings_url.removeprefix("sqlite:///"))
        target = sqlite3.connect(copy)
        source.backup(target)
        source.close()
        target.close()
        return f"sqlite:///{copy}"
    name = f"bench_log_{label}_{uuid.uuid4().hex[:6]}"
    admin = create_db_engine(settings_url.rsplit("/", 1)[0] + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{settings_url.rsplit("/", 1)[1]}"')
    admin.dispose()
    return settings_url.rsplit("/", 1)[0] + f"/{name}"


def fill_log(audit: AuditStore, records: int, batch: int = 10_000) -> float:
    """Append ``records`` valid chain records (10 neighbours each) in bulk transactions of ``batch`` (tests' dbtools:
    each record hashed and linked as a request's, a long log in minutes even on PostgreSQL); seconds taken."""
    started = time.perf_counter()
    for start in range(0, records, batch):
        fill_chain(audit.engine, min(batch, records - start))
    return time.perf_counter() - started


def log_rows(
    data_dir: Path, raw_path: Path, vectors: np.ndarray, requests: int, database_url: str | None, records: int
) -> dict[str, float]:
    """Requests (K=10, verify off) against a copy of the audit DB as it is (a short log) and against a copy grown by
    ``records`` records, alternating request by request with the raw engine's search: p50 of each."""
    embedder = embedder_of(data_dir)
    settings = load_settings(data_dir=data_dir, embedder=embedder, database_url=database_url)
    short_audit = AuditStore.open(copy_log(settings.resolved_database_url, data_dir, "short"))
    long_audit = AuditStore.open(copy_log(settings.resolved_database_url, data_dir, "long"))
    rng = np.random.default_rng(3)
    params = AttributionParams(k=10, verify="off")
    times: dict[str, list[float]] = {"short": [], "long": [], "raw": []}
    shard = EdgeShard.load(str(raw_path))
    try:
        with open_attributor(settings, short_audit, embedder, fingerprint=f"precomputed:{embedder}") as short:
            missing = records - (long_audit.requests.count() - short_audit.requests.count())  # a kept copy: grown
            filled = fill_log(long_audit, missing) if missing > 0 else 0.0
            long = copy.copy(short)
            long.audit = long_audit
            sizes = {"short": short_audit.requests.count(), "long": long_audit.requests.count()}
            print(f"  log: {max(missing, 0)} records appended in {filled:.0f} s; logs of {sizes}")
            for i in range(2 * requests + 6):
                query = query_of(vectors, rng)
                label, attributor = ("short", short) if i % 2 == 0 else ("long", long)
                started = time.perf_counter()
                attributor.record("bench", "00" * 32, query, params, attributor.compute(query, params))
                done = time.perf_counter()
                raw_search(shard, query.content, params.k * params.oversampling)
                if i >= 6:
                    times[label].append(done - started)
                    times["raw"].append(time.perf_counter() - done)
    finally:
        shard.close()
        short_audit.engine.dispose()
        long_audit.engine.dispose()
    return {
        "short_records": sizes["short"],
        "long_records": sizes["long"],
        "fill_s": filled,
        **{f"{key}_p50": statistics.median(values) * 1000 for key, values in times.items()},
    }


def point_of(neighbour: Neighbour) -> str:
    return point_id_for(neighbour.catalogue, neighbour.work_id)


def du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


# The raw reference for the audit log, in a fresh process: every row of the four hashed tables (on PostgreSQL the
# audit views the product reads) fetched through the bare DBAPI cursor, then a bare sha256 (prev hash + content) of
# each record's content bytes as the export holds them; prints the wall and CPU seconds of the fetch, and the
# seconds of the hashing.
RAW_CHAIN = """
import json, sys, time
from hashlib import sha256
from sqlalchemy import create_engine
url, export, sources = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
engine = create_engine(url)
started, cpu = time.perf_counter(), time.process_time()
with engine.connect() as connection:
    cursor = connection.connection.cursor()
    for source in sources:
        cursor.execute(f"SELECT * FROM {source}")
        while cursor.fetchmany(10000):
            pass
fetched, fetched_cpu = time.perf_counter() - started, time.process_time() - cpu
hashing = 0.0
with open(export, "rb") as handle:
    next(handle)
    for line in handle:
        content = line[len(b'{"content":') : line.rindex(b',"prev_hash":')]
        prev = line[line.rindex(b'"prev_hash":"') + 13 :][:64]
        started = time.perf_counter()
        digest = sha256(prev)
        digest.update(content)
        digest.hexdigest()
        hashing += time.perf_counter() - started
print(json.dumps({"fetch": fetched, "fetch_cpu": fetched_cpu, "sha256": hashing}))
"""
LOG_SOURCES = {
    "SQLite": "attribution_requests,attribution_neighbours,attribution_artist_shares,attribution_metrics",
    "PostgreSQL": "v_audit_requests,v_audit_neighbours,v_audit_artist_shares,v_audit_metrics",
}


@dataclass(frozen=True)
class LogRow:
    """The audit log of one database at one length: the product's verify and export, and the raw reference."""

    database: str
    records: int
    workers: int  # audit verify / export --workers
    startup: Run  # `audit verify` of the empty log: the CLI's start, left out of the rates
    verify: Run
    export: Run
    fetch_s: float
    fetch_cpu_s: float
    sha256_s: float

    def rate(self, run: Run, cpu: bool = False) -> float:
        """Records per second of a CLI run, its start left out (wall, or the process's own CPU)."""
        return self.records / (run.cpu - self.startup.cpu if cpu else run.wall - self.startup.wall)


def chain_rows(tmp: Path, sizes: list[int], postgres_url: str | None) -> list[LogRow]:
    """Per database and log length: `audit verify` and `audit export` in fresh processes, interleaved with the raw
    reference (bare DBAPI fetch of the same rows, bare sha256 of the same bytes)."""
    urls = [("SQLite", f"sqlite:///{tmp / 'chain.sqlite'}")]
    if postgres_url:
        name = f"bench_chain_{uuid.uuid4().hex[:8]}"
        admin = create_db_engine(postgres_url)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        urls.append(("PostgreSQL", postgres_url.rsplit("/", 1)[0] + f"/{name}"))
    rows = []
    for label, url in urls:
        engine = create_db_engine(url)
        upgrade(engine)
        startup = timed_child(cli(tmp / "chain-data", "audit", "verify", database_url=url))
        filled = 0
        for records in sizes:
            for start in range(filled, records, 10_000):
                fill_chain(engine, min(10_000, records - start))
            filled = records
            out = tmp / "log.jsonl"
            runs = {}
            for workers in sorted({1, os.cpu_count() or 1}):  # one process, and the default: one per CPU
                given = ("--workers", str(workers))
                verify = timed_child(cli(tmp / "chain-data", "audit", "verify", *given, database_url=url))
                export = timed_child(
                    cli(tmp / "chain-data", "audit", "export", str(out), "--force", *given, database_url=url)
                )
                runs[workers] = (verify, export)
            raw = subprocess.run(
                [sys.executable, "-c", RAW_CHAIN, url, str(out), LOG_SOURCES[label]],
                check=True,
                capture_output=True,
                text=True,
            )
            seconds = json.loads(raw.stdout)
            for workers, (verify, export) in runs.items():
                row = LogRow(
                    label,
                    records,
                    workers,
                    startup,
                    verify,
                    export,
                    *(seconds[k] for k in ("fetch", "fetch_cpu", "sha256")),
                )
                rows.append(row)
                print(
                    f"  chain {label} {records} workers {workers}: verify {row.rate(verify):.0f}/s "
                    f"({row.rate(verify, cpu=True):.0f}/s CPU), export {row.rate(export):.0f}/s "
                    f"({row.rate(export, cpu=True):.0f}/s CPU), raw fetch {records / row.fetch_s:.0f}/s "
                    f"({records / row.fetch_cpu_s:.0f}/s CPU), raw sha256 {records / row.sha256_s:.0f}/s"
                )
            out.unlink()
        engine.dispose()
    if postgres_url:  # the database created above, dropped once every run has ended
        admin = create_db_engine(postgres_url)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}"')
        admin.dispose()
    return rows


SERVE = """
import sys, numpy as np
from attribution_audit.config import load_settings, read_record
from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.services.wiring import open_attributor, open_audit
data, table, count, embedder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
vectors = np.load(table, mmap_mode="r")
settings = load_settings(data_dir=data, embedder=embedder)
audit = open_audit(settings)
rng = np.random.default_rng(2)
params = AttributionParams(k=10, verify="off")
with open_attributor(settings, audit, embedder, fingerprint=f"precomputed:{embedder}") as attributor:
    for _ in range(count):
        query = np.asarray(vectors[rng.integers(len(vectors))]) + 0.03 * rng.normal(size=vectors.shape[1])
        query = QueryVectors((query / np.linalg.norm(query)).astype(np.float32))
        attributor.record("bench", "00" * 32, query, params, attributor.compute(query, params))
audit.engine.dispose()
"""


def save(results: Path, key: str, value: object) -> None:
    """One part's result, in a file of its own (parts may run in separate invocations, even at the same time)."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{key}.json").write_text(json.dumps(value))


def load_results(results: Path) -> dict[str, Any]:
    return {f.stem: json.loads(f.read_text()) for f in sorted(results.glob("*.json"))}


def fresh_ingest(data: Path, manifest: Path, table: Path, url: str | None, *extra: str) -> dict[str, float]:
    """Ingest the catalogue into a new data dir in a fresh process: wall, CPU, peak RSS and disk."""
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run(cli(data, "db", "upgrade", database_url=url), check=True, capture_output=True)
    ingest = ("ingest", str(manifest), "--embeddings", str(table), "--embedder", EMBEDDER, *extra)
    run = timed_child(cli(data, *ingest, database_url=url))
    return {
        "wall": run.wall,
        "cpu": run.cpu,
        "rss": run.rss_mib,
        "qdrant": du_mib(data / "qdrant"),
        "data": du_mib(data),
    }


def copy_catalogue(data_dir: Path, url: str) -> float:
    """Every row of the data dir's SQLite audit DB but its identity (what an ingest writes: catalogues, artists,
    works, versions, embeddings, runs) into the PostgreSQL database ``url``, migrated first, its sequences moved past
    the copied ids; seconds taken."""
    started = time.perf_counter()
    source, target = create_db_engine(f"sqlite:///{data_dir / 'audit.sqlite'}"), create_db_engine(url)
    try:
        upgrade(target)
        with source.connect() as reading, target.begin() as writing:
            for table in Base.metadata.sorted_tables:
                if table.name == "audit_identity":
                    continue
                rows = reading.execution_options(yield_per=10_000).execute(table.select()).mappings()
                for batch in rows.partitions():
                    writing.execute(table.insert(), [dict(row) for row in batch])
                for column in table.primary_key.columns:  # a serial id's sequence (NULL, a no-op, for others)
                    if column.type.python_type is int:
                        writing.exec_driver_sql(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                            f"(SELECT max({column.name}) FROM {table.name})) WHERE EXISTS (SELECT 1 FROM {table.name})"
                        )
    finally:
        source.dispose()
        target.dispose()
    return time.perf_counter() - started


def audit_database(folder: Path, server: str | None) -> str | None:
    """With a PostgreSQL server: the URL of this folder's own database on it (created once, kept in the folder)."""
    if not server:
        return None
    kept = folder / "database_url.txt"
    if not kept.exists():
        name = f"bench_scale_{uuid.uuid4().hex[:8]}"
        admin = create_db_engine(server)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        kept.write_text(server.rsplit("/", 1)[0] + f"/{name}")
    return kept.read_text()


def outputs(folder: Path) -> dict[str, Path]:
    """What the log and requests parts read of a size's folder, by the part that makes it: the product's data dir
    (ingest) and the raw engine's shard (raw)."""
    return {"ingest": folder / "data", "raw": folder / "raw"}


def run_size(n: int, folder: Path, parts: set[str], args: argparse.Namespace) -> None:
    """The parts asked for at catalogue size n, in ``folder`` (kept between invocations: ingest now, serve later)."""
    manifest, table = folder / "catalogue.csv", folder / "vectors.npy"
    if not table.exists():
        write_catalogue(folder, *clustered(n), args.metadata)
    vectors = np.load(table, mmap_mode="r")
    url = audit_database(folder, args.audit_postgres)
    db = "PostgreSQL" if url else "SQLite"
    made = outputs(folder)
    data, data8, raw_path = made["ingest"], folder / "data-int8", made["raw"]
    if "ingest" in parts:
        save(args.results, f"{n}-ingest-{db}", fresh_ingest(data, manifest, table, url))
    if "raw" in parts:
        shutil.rmtree(raw_path, ignore_errors=True)
        raw = timed_child([sys.executable, "-c", RAW_INGEST, str(raw_path), str(table), str(n)])
        save(args.results, f"{n}-raw", {"wall": raw.wall, "cpu": raw.cpu, "rss": raw.rss_mib})
    if "pgcopy" in parts:
        if url is None:
            raise SystemExit("--parts pgcopy needs --audit-postgres")
        print(f"  pgcopy: {copy_catalogue(data, url):.0f} s")
    if "int8" in parts:
        save(args.results, f"{n}-int8-{db}", fresh_ingest(data8, manifest, table, None, "--quantization", "int8"))
    if "serve" in parts:
        for label, path in (("none", data), ("int8", data8)):
            if path.exists():
                serve = timed_child(
                    [sys.executable, "-c", SERVE, str(path), str(table), str(args.serve), embedder_of(path)]
                )
                save(args.results, f"{n}-serve-{label}", {"rss": serve.rss_mib, "requests": args.serve})
                print(f"  serving {label}: peak RSS {serve.rss_mib:.0f} MiB")
    if "log" in parts:
        save(args.results, f"{n}-log-{db}", log_rows(data, raw_path, vectors, args.requests, url, args.log_records))
    if "requests" in parts:
        rows = request_rows(data, raw_path, vectors, args.requests, url)
        save(args.results, f"{n}-requests-{db}", {"rows": rows, "exact": du_mib(data / "exact")})
    if "ef" in parts:
        efs = [int(ef) for ef in args.efs.split(",")]
        save(args.results, f"{n}-ef-{db}", {"rows": ef_rows(data, vectors, efs, args.ef_k, args.requests, url)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated catalogue sizes")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts of {', '.join(PARTS)} (none: only write the table from --results)",
    )
    parser.add_argument(
        "--work", type=Path, help="folder kept between runs for catalogues and data dirs (default: temporary)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="folder of the parts' results (default: WORK/results); the "
        "table is written from every result in it, so runs of separate parts and sizes add up",
    )
    parser.add_argument("--requests", type=int, default=60, help="timed requests per (K, verify mode)")
    parser.add_argument("--serve", type=int, default=500, help="requests answered by the serving process")
    parser.add_argument("--log", default="50000", help="comma-separated lengths of the audit log for verify/export")
    parser.add_argument("--int8", action="store_true", help="also ingest with --quantization int8")
    parser.add_argument(
        "--metadata",
        type=int,
        default=0,
        help="metadata columns of each work in a new --work folder's manifest (kept in the catalogue and the payload)",
    )
    parser.add_argument("--postgres-url", help="PostgreSQL server URL (a database is created) for the chain runs")
    parser.add_argument(
        "--audit-postgres", help="PostgreSQL server URL: the data dirs' audit log in a database of their own on it"
    )
    parser.add_argument("--log-records", type=int, default=100_000, help="records added for the log-length part")
    parser.add_argument("--efs", default="128,512,1024,2048", help="comma-separated HNSW search efs of the ef part")
    parser.add_argument("--ef-k", type=int, default=100, help="K of the ef part's requests")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    parts = set(args.parts.split(","))
    if not args.int8:
        parts.discard("int8")
    with tempfile.TemporaryDirectory() as folder:
        work = args.work or Path(folder)
        args.results = args.results or work / "results"
        readers = sorted(parts & {"log", "requests"})  # they read what ingest and raw make, now or in an earlier run
        for n in sizes:  # (checked before anything runs)
            for part, made in outputs(work / f"n{n}").items():
                if readers and part not in parts and not made.exists():
                    raise SystemExit(f"--parts {','.join(readers)} read the {part} part's {made}: add {part}")
        for n in sizes:
            print(f"n={n}")
            run_size(n, work / f"n{n}", parts, args)
        if "chain" in parts:
            before = os.getloadavg()
            chain = chain_rows(work, [int(n) for n in args.log.split(",")], args.postgres_url)
            load = tuple(max(pair) for pair in zip(before, os.getloadavg(), strict=True))
            write_log(args, chain, load)
        if "ef" in parts:
            write_ef(args, load_results(args.results))
        if parts - {"chain", "ef"}:
            write(args, load_results(args.results))


def cpu_overhead(row: dict[str, Any]) -> str:
    """The product's CPU per request less the raw search's (rows of runs before it was measured: blank)."""
    return f"{row['cpu'] - row['raw_cpu']:.2f}" if "cpu" in row else ""


def shown(value: float | None) -> str:
    return "not run" if value is None else f"{value:.0f}"


def write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The section of docs/benchmarks.md from every part's result (a part not run shows as not run)."""
    sizes = sorted({int(key.split("-")[0]) for key in results if key[0].isdigit()})
    start, end = markers(NAME)
    lines = [
        start,
        "## Scale: ingestion, requests and the audit log against the raw engine (scripts/bench_scale.py)",
        "",
        *provenance(("qdrant-edge-py", "sqlalchemy", "numpy")),
        "",
        "The machine is shared with other engineers' builds and tests (2 cores, loaded): absolute times are noisy, "
        "the product/raw ratios were measured interleaved in the same run. 512-d clustered unit vectors "
        "(n/20 clusters = artists), ingested through `attribution-audit ingest --embeddings` (SQLite audit log).",
        "",
        "**Ingest** (wall time of a fresh process; raw = qdrant-edge upsert of the same points + `optimize`, same "
        "HNSW settings, in a fresh process; per row = CPU ms per vector):",
        "",
        "| works | product vectors/s | product CPU s | raw vectors/s | raw CPU s | product / raw (rate) "
        "| product CPU ms/row | raw CPU ms/row | product peak RSS MiB | raw peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        product, raw = results.get(f"{n}-ingest-SQLite"), results.get(f"{n}-raw")
        if product and raw:
            lines.append(
                f"| {n} | {n / product['wall']:.0f} | {product['cpu']:.1f} | {n / raw['wall']:.0f} "
                f"| {raw['cpu']:.1f} | {raw['wall'] / product['wall']:.2f} | {1000 * product['cpu'] / n:.2f} "
                f"| {1000 * raw['cpu'] / n:.2f} "
                f"| {product['rss']:.0f} | {raw['rss']:.0f} |"
            )
        elif done := product or raw:
            who = "product" if product else "raw"
            lines.append(f"| {n} | {who} only: {n / done['wall']:.0f}/s, {done['cpu']:.1f} s CPU | | | | | | | | |")
    lines += [
        "",
        "**Requests**, excluding embedding (ms; search = engine candidates, K policy and indicators; exact = the "
        "exact check, mean over requests, so sample:0.1 shows a tenth of always; write = the hash-chained audit "
        "record, committed; floor = a one-row insert + commit into a scratch table of the same database, the least "
        "any durable write costs; NumPy scan = one brute-force matrix-vector product over the same vectors (verify "
        "always: exact p50 / scan p50 is the target's ratio); raw = qdrant-edge's own search at the same depth "
        "K x 4; all interleaved request by request; overhead = p50 - raw p50 - exact; CPU = the calling thread's CPU "
        "time, product request minus raw search, medians: the overhead without waiting for the disk or the cores; "
        "recall@K of the product's neighbours against the exact top K):",
        "",
        "| works | database | K | verify | p50 | p95 | search p50 | exact mean | audit write p50 | commit floor p50 "
        "| NumPy scan p50 | raw p50 | raw p95 | overhead p50 | CPU overhead | recall@K |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        for db in ("SQLite", "PostgreSQL"):
            for r in results.get(f"{n}-requests-{db}", {}).get("rows", []):
                overhead = float(r["p50"]) - float(r["raw_p50"]) - float(r["exact"])
                scan = f"{r['numpy']:.2f}" if r["verify"] == "always" else ""
                lines.append(
                    f"| {n} | {db} | {r['k']} | {r['verify']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['search']:.2f} "
                    f"| {r['exact']:.2f} | {r['write']:.2f} | {r['floor']:.2f} | {scan} | {r['raw_p50']:.2f} "
                    f"| {r['raw_p95']:.2f} | {overhead:.2f} | {cpu_overhead(r)} | {r['recall']:.3f} |"
                )
    lines += [
        "",
        f"**Log length**: requests (K=10, verify off) alternating between a copy of the audit DB as ingested (a "
        f"short log) and a copy grown by {args.log_records} valid chain records written in bulk "
        "(tests/dbtools.py), each "
        "followed by the raw engine's search (ms):",
        "",
        "| works | database | short log records | p50 | long log records | p50 | long / short | raw p50 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        for db in ("SQLite", "PostgreSQL"):
            g = results.get(f"{n}-log-{db}")
            if g:
                lines.append(
                    f"| {n} | {db} | {g['short_records']} | {g['short_p50']:.2f} | {g['long_records']} "
                    f"| {g['long_p50']:.2f} | {g['long_p50'] / g['short_p50']:.2f} | {g['raw_p50']:.2f} |"
                )
    lines += [
        "",
        "**Data dir** (peak RSS of the ingest process; disk right after the ingest; serving = peak RSS of a fresh "
        f"process that opens the data dir and answers {args.serve} requests (K=10, verify off, each written to the "
        "log); the exact cache, which `--verify` builds, holds the float32 originals whatever the quantisation: add "
        "it for a data dir that verifies):",
        "",
        "| works | quantisation | ingest peak RSS MiB | Qdrant disk MiB | data dir disk MiB | serving peak RSS MiB "
        "| + exact cache MiB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        exact = results.get(f"{n}-requests-SQLite", {}).get("exact")
        for label, key in (("none", f"{n}-ingest-SQLite"), ("int8", f"{n}-int8-SQLite")):
            if key in results:
                row = results[key]
                serve = results.get(f"{n}-serve-{label}", {}).get("rss")
                lines.append(
                    f"| {n} | {label} | {row['rss']:.0f} | {row['qdrant']:.0f} | {row['data']:.0f} "
                    f"| {shown(serve)} | {shown(exact)} |"
                )
    lines += ["", "The audit log's verify and export: the next section (`--parts chain` reruns only that).", end]
    write_section(args.out, NAME, "\n".join(lines) + "\n")


def write_ef(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The search ef's section of docs/benchmarks.md (its own markers: ``--parts ef`` rewrites only it)."""
    start, end = markers(EF_NAME)
    lines = [
        start,
        "## Scale: recall and search time against the HNSW search ef (scripts/bench_scale.py --parts ef)",
        "",
        *provenance(("qdrant-edge-py", "numpy")),
        "Load average (1, 5, 15 min, at the end): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "",
        "The data dirs of the ingest part (512-d clustered unit vectors, n/20 clusters, `m=16`, `ef_construct=128`), "
        "searched through the product (`Attributor.compute`: engine candidates, K policy and indicators; verify off, "
        "nothing recorded) at each search ef (`--ef` / `ATTRIBUTION_AUDIT_HNSW_EF`, no re-ingest), the same queries "
        f"at every ef, in rounds of {EF_BLOCK} that alternate the efs (each round starting at the next). The engine "
        "searches max(ef, depth) candidates, depth = K x oversampling (4): an ef at or below the depth is the "
        "default's search. Recall@K: mean overlap of the product's top K with the exact top K (brute force).",
        "",
        "| works | database | K | depth | ef | engine ef | requests | search p50 ms | search p95 ms | recall@K |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sizes = sorted({int(key.split("-")[0]) for key in results if "-ef-" in key})
    for n in sizes:
        for db in ("SQLite", "PostgreSQL"):
            for r in results.get(f"{n}-ef-{db}", {}).get("rows", []):
                lines.append(
                    f"| {n} | {db} | {r['k']} | {r['depth']} | {r['ef']} | {max(r['ef'], r['depth'])} "
                    f"| {r['requests']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['recall']:.3f} |"
                )
    lines.append(end)
    write_section(args.out, EF_NAME, "\n".join(lines) + "\n")


def write_log(args: argparse.Namespace, chain: list[LogRow], load: tuple[float, ...]) -> None:
    """The audit log's section of docs/benchmarks.md (its own markers: ``--parts chain`` rewrites only it)."""
    start, end = markers(LOG_NAME)
    lines = [
        start,
        "## Scale: the audit log's verify and export against a bare fetch and a bare sha256 (scripts/bench_scale.py)",
        "",
        *provenance(("sqlalchemy", "psycopg")),
        "Load average (1, 5, 15 min; the highest seen before and after the runs): "
        + ", ".join(f"{x:.1f}" for x in load),
        "",
        "A chain of 10 neighbours, 4 artist shares and metrics a record (`tests/dbtools.py` fill_chain), verified "
        "(`audit verify`) and exported (`audit export`, which verifies in the same pass) by the CLI in fresh "
        "processes; their rates leave out the CLI's start (the same command on the empty log, first in the run: "
        + "; ".join(sorted({f"{r.database} {r.startup.wall:.1f} s wall, {r.startup.cpu:.1f} s CPU" for r in chain}))
        + "). Interleaved, the raw reference in a fresh process: every row of the same four tables (PostgreSQL: the "
        "same audit views) through the bare DBAPI cursor, and a bare sha256 of each record's exported content bytes. "
        "Each with `--workers 1` (one process) and the default, one worker process per CPU (the CLI checks the "
        "links in order). CPU = the client's CPU seconds, its worker processes included (PostgreSQL's server works "
        "besides); peak RSS: the largest process's; raw CPU = fetch CPU + sha256: what one thread cannot beat "
        "without building the canonical JSON at all.",
        "",
        "| database | records | workers | verify records/s | verify records/s CPU | export records/s "
        "| export records/s CPU | verify / export peak RSS MiB | raw fetch records/s | raw fetch records/s CPU "
        "| raw sha256 records/s | verify CPU / raw CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in chain:
        raw = r.records / (r.fetch_cpu_s + r.sha256_s)
        lines.append(
            f"| {r.database} | {r.records} | {r.workers} | {r.rate(r.verify):.0f} | {r.rate(r.verify, cpu=True):.0f} "
            f"| {r.rate(r.export):.0f} | {r.rate(r.export, cpu=True):.0f} | {r.verify.rss_mib:.0f} / "
            f"{r.export.rss_mib:.0f} | {r.records / r.fetch_s:.0f} | {r.records / r.fetch_cpu_s:.0f} "
            f"| {r.records / r.sha256_s:.0f} | {r.rate(r.verify, cpu=True) / raw:.2f} |"
        )
    lines.append(end)
    write_section(args.out, LOG_NAME, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
