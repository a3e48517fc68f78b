"""Scale: ingestion, requests and the audit log of the product against the raw Qdrant Edge engine, per catalogue size.

For each N (``--sizes``): N clustered 512-d unit vectors with artist/work ids are written as a manifest and an
aligned ``.npy``, then, interleaved in this one run:

* ingest: ``attribution-audit ingest --embeddings`` in a fresh process (wall, CPU and peak RSS from ``wait4``),
  then a raw qdrant-edge shard of the same points (the same HNSW and indexing settings: upsert + optimize) in a
  child process; with ``--int8`` a second product ingest with ``--quantization int8``;
* requests, excluding embedding (query = a catalogue vector plus noise): the product (`Attributor` of the ingested
  data dir: engine search, K policy and indicators; exact check when the verify mode says; the audit write) split
  into search / exact / audit write, alternating with the raw engine's search of the same query at the same depth;
  verify off, sample:0.1 and always, at K=10 and K=100; recall@K against the exact top K;
* the audit log (alone with ``--only log``): chains of ``--log`` records (10 neighbours each) verified and exported
  by the CLI in fresh processes (records/s, peak RSS), on SQLite and, with ``--postgres-url``, on PostgreSQL, with
  the raw reference (a bare DBAPI fetch of the same rows, a bare sha256 of the same bytes) in the same run;
* the data dir: disk per store, and the ingest's peak RSS.

Results go to docs/benchmarks.md between this script's markers (the machine is shared: see the note there).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from benchlib import markers, provenance, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dbtools import fill_chain

from attribution_audit.config import load_settings
from attribution_audit.domain.params import AttributionParams, verify_rate
from attribution_audit.domain.points import point_id_for
from attribution_audit.domain.results import Neighbour
from attribution_audit.domain.spaces import QueryVectors
from attribution_audit.services.wiring import open_attributor, open_audit
from attribution_audit.store.database import create_db_engine, upgrade
from attribution_audit.store.exact import overlap_at_k

NAME = "bench_scale"
LOG_NAME = "bench_scale_log"
DIM = 512
EMBEDDER = "efficientnet-lite0"  # names the collection; the vectors are precomputed
VERIFY_MODES = ("off", "sample:0.1", "always")


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
    """n unit vectors around n/20 centres (one artist each); the artist of each row."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // 20)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    vectors = centres[labels] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, [f"artist {c}" for c in labels]


def write_catalogue(folder: Path, vectors: np.ndarray, artists: list[str]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    manifest, table = folder / "catalogue.csv", folder / "vectors.npy"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "artist", "work_id"])
        writer.writerows([f"img/{i}.png", artist, f"w{i}"] for i, artist in enumerate(artists))
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


def raw_search(shard: object, vector: np.ndarray, limit: int) -> list[str]:
    from qdrant_edge import Query, QueryRequest, SearchParams

    request = QueryRequest(
        limit=limit,
        query=Query.Nearest(vector.tolist(), using="content"),
        with_payload=True,
        with_vector=False,
        params=SearchParams(hnsw_ef=128),
    )
    return [str(p.id) for p in shard.query(request)]  # type: ignore[attr-defined]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def request_rows(
    data_dir: Path, raw_path: Path, vectors: np.ndarray, requests: int, database_url: str | None
) -> list[dict[str, float | str | int]]:
    """Per (K, verify mode): product p50/p95 with the split, raw p50/p95, recall@K."""
    from qdrant_edge import EdgeShard

    settings = load_settings(data_dir=data_dir, embedder=EMBEDDER, database_url=database_url)
    audit = open_audit(settings)
    rng = np.random.default_rng(1)
    rows = []
    shard = EdgeShard.load(str(raw_path))
    try:
        with open_attributor(settings, audit, EMBEDDER, fingerprint=f"precomputed:{EMBEDDER}") as attributor:
            for k in (10, 100):
                for mode in VERIFY_MODES:
                    params = AttributionParams(k=k, verify="off")
                    rate = verify_rate(mode)
                    draw = random.Random(k)
                    split: dict[str, list[float]] = {"search": [], "exact": [], "write": [], "total": [], "raw": []}
                    recall = []
                    for i in range(requests + 3):  # 3 warm-up requests
                        base = vectors[rng.integers(len(vectors))]
                        query = base + 0.5 * rng.normal(size=DIM).astype(np.float32) / np.sqrt(DIM)
                        query = (query / np.linalg.norm(query)).astype(np.float32)
                        started = time.perf_counter()
                        outcome = attributor.compute(QueryVectors(query), params)
                        searched = time.perf_counter()
                        exact_ids = None
                        if draw.random() < rate:
                            exact_ids = attributor.exact_top([QueryVectors(query)], params)[0]
                            kept = [point_of(n_) for n_ in outcome.neighbours]
                            outcome = replace(outcome, overlap_at_k=overlap_at_k(kept, exact_ids), exact_method="brute")
                        checked = time.perf_counter()
                        attributor.record("bench", "00" * 32, QueryVectors(query), params, outcome)
                        written = time.perf_counter()
                        raw_started = time.perf_counter()
                        raw_search(shard, query, k * params.oversampling)
                        raw_done = time.perf_counter()
                        if i < 3:
                            continue
                        split["search"].append(searched - started)
                        split["exact"].append(checked - searched)
                        split["write"].append(written - checked)
                        split["total"].append(written - started)
                        split["raw"].append(raw_done - raw_started)
                        if exact_ids is None and len(recall) < 20:
                            exact_ids = attributor.exact_top([QueryVectors(query)], params)[0]
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
                            "write": statistics.median(ms["write"]),
                            "raw_p50": percentile(ms["raw"], 50),
                            "raw_p95": percentile(ms["raw"], 95),
                            "recall": float(np.mean(recall)) if recall else float("nan"),
                        }
                    )
                    print(f"  K={k} verify={mode}: p50 {rows[-1]['p50']:.2f} ms, raw {rows[-1]['raw_p50']:.2f} ms")
    finally:
        shard.close()
        audit.engine.dispose()
    return rows


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
            verify = timed_child(cli(tmp / "chain-data", "audit", "verify", database_url=url))
            export = timed_child(cli(tmp / "chain-data", "audit", "export", str(out), database_url=url))
            raw = subprocess.run(
                [sys.executable, "-c", RAW_CHAIN, url, str(out), LOG_SOURCES[label]],
                check=True,
                capture_output=True,
                text=True,
            )
            seconds = json.loads(raw.stdout)
            row = LogRow(
                label, records, startup, verify, export, *(seconds[k] for k in ("fetch", "fetch_cpu", "sha256"))
            )
            rows.append(row)
            print(
                f"  chain {label} {records}: verify {row.rate(verify):.0f}/s ({row.rate(verify, cpu=True):.0f}/s CPU), "
                f"export {row.rate(export):.0f}/s, raw fetch {records / row.fetch_s:.0f}/s "
                f"({records / row.fetch_cpu_s:.0f}/s CPU), raw sha256 {records / row.sha256_s:.0f}/s"
            )
            out.unlink()
        engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated catalogue sizes")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per (K, verify mode)")
    parser.add_argument("--log", default="50000", help="comma-separated lengths of the audit log for verify/export")
    parser.add_argument("--only", choices=("all", "log"), default="all", help="log: only the audit log runs")
    parser.add_argument("--int8", action="store_true", help="also ingest with --quantization int8")
    parser.add_argument("--postgres-url", help="PostgreSQL server URL (a database is created) for the chain runs")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ingest_rows, request_tables, storage_rows = [], {}, []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for n in sizes if args.only == "all" else ():
            print(f"n={n}")
            vectors, artists = clustered(n)
            manifest, table = write_catalogue(tmp / f"cat{n}", vectors, artists)
            data = tmp / f"data{n}"
            subprocess.run(cli(data, "db", "upgrade"), check=True, capture_output=True)
            ingest = ("ingest", str(manifest), "--embeddings", str(table), "--embedder", EMBEDDER)
            product = timed_child(cli(data, *ingest))
            raw_path = tmp / f"raw{n}"
            raw = timed_child([sys.executable, "-c", RAW_INGEST, str(raw_path), str(table), str(n)])
            ingest_rows.append((n, n / product.wall, product.cpu, n / raw.wall, raw.cpu, product.rss_mib, raw.rss_mib))
            print(f"  ingest: product {n / product.wall:.0f}/s ({product.cpu:.1f} s CPU), raw {n / raw.wall:.0f}/s")
            storage_rows.append((n, "none", product.rss_mib, du_mib(data / "qdrant"), du_mib(data), 0.0))
            if args.int8:
                data8 = tmp / f"data{n}-int8"
                subprocess.run(cli(data8, "db", "upgrade"), check=True, capture_output=True)
                quantised = timed_child(cli(data8, *ingest, "--quantization", "int8"))
                storage_rows.append((n, "int8", quantised.rss_mib, du_mib(data8 / "qdrant"), du_mib(data8), 0.0))
                shutil.rmtree(data8)
            request_tables[n] = request_rows(data, raw_path, vectors, args.requests, None)
            exact = du_mib(data / "exact")  # built by the requests: float32 originals, whatever the quantisation
            storage_rows[-1 - args.int8 :] = [(*row[:5], exact) for row in storage_rows[-1 - args.int8 :]]
            shutil.rmtree(raw_path)
        load = os.getloadavg()
        chain = chain_rows(tmp, [int(n) for n in args.log.split(",")], args.postgres_url)
        load = tuple(max(pair) for pair in zip(load, os.getloadavg(), strict=True))
    if args.only == "all":
        write(args, ingest_rows, request_tables, storage_rows)
    write_log(args, chain, load)


def write(
    args: argparse.Namespace,
    ingest_rows: list[tuple[int, float, float, float, float, float, float]],
    request_tables: dict[int, list[dict[str, float | str | int]]],
    storage_rows: list[tuple[int, str, float, float, float, float]],
) -> None:
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
        "HNSW settings, in a fresh process):",
        "",
        "| works | product vectors/s | product CPU s | raw vectors/s | raw CPU s | product / raw (rate) "
        "| product peak RSS MiB | raw peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, rate, cpu, raw_rate, raw_cpu, rss, raw_rss in ingest_rows:
        lines.append(
            f"| {n} | {rate:.0f} | {cpu:.1f} | {raw_rate:.0f} | {raw_cpu:.1f} | {rate / raw_rate:.2f} "
            f"| {rss:.0f} | {raw_rss:.0f} |"
        )
    lines += [
        "",
        "**Requests**, excluding embedding (ms; search = engine candidates, K policy and indicators; exact = the "
        "exact check, mean over requests, so sample:0.1 shows a tenth of always; write = the hash-chained audit "
        "record; raw = qdrant-edge's own search at the same depth K x 4, interleaved; recall@K of the product's "
        "neighbours against the exact top K):",
        "",
        "| works | K | verify | p50 | p95 | search p50 | exact mean | audit write p50 | raw p50 | raw p95 "
        "| p50 - raw p50 | recall@K |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, rows in request_tables.items():
        for r in rows:
            lines.append(
                f"| {n} | {r['k']} | {r['verify']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['search']:.2f} "
                f"| {r['exact']:.2f} | {r['write']:.2f} | {r['raw_p50']:.2f} | {r['raw_p95']:.2f} "
                f"| {float(r['p50']) - float(r['raw_p50']):.2f} | {r['recall']:.3f} |"
            )
    lines += [
        "",
        "**Data dir** (peak RSS of the ingest process; disk right after the ingest; the exact cache, which the "
        "requests build, holds the float32 originals whatever the quantisation: add it for a serving data dir):",
        "",
        "| works | quantisation | ingest peak RSS MiB | Qdrant disk MiB | data dir disk MiB | + exact cache MiB |",
        "|---:|---|---:|---:|---:|---:|",
        *(f"| {n} | {q} | {rss:.0f} | {qd:.0f} | {dd:.0f} | {ex:.0f} |" for n, q, rss, qd, dd, ex in storage_rows),
        "",
        "The audit log's verify and export: the next section (`--only log` reruns only that).",
        end,
    ]
    write_section(args.out, NAME, "\n".join(lines) + "\n")


def write_log(args: argparse.Namespace, chain: list[LogRow], load: tuple[float, ...]) -> None:
    """The audit log's section of docs/benchmarks.md (its own markers: ``--only log`` rewrites only it)."""
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
        "CPU = the client process's own CPU seconds (PostgreSQL's server works besides); raw CPU = fetch CPU + "
        "sha256: what one thread cannot beat without building the canonical JSON at all.",
        "",
        "| database | records | verify records/s | verify records/s CPU | export records/s | export records/s CPU "
        "| verify / export peak RSS MiB | raw fetch records/s | raw fetch records/s CPU | raw sha256 records/s "
        "| verify CPU / raw CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in chain:
        raw = r.records / (r.fetch_cpu_s + r.sha256_s)
        lines.append(
            f"| {r.database} | {r.records} | {r.rate(r.verify):.0f} | {r.rate(r.verify, cpu=True):.0f} "
            f"| {r.rate(r.export):.0f} | {r.rate(r.export, cpu=True):.0f} | {r.verify.rss_mib:.0f} / "
            f"{r.export.rss_mib:.0f} | {r.records / r.fetch_s:.0f} | {r.records / r.fetch_cpu_s:.0f} "
            f"| {r.records / r.sha256_s:.0f} | {r.rate(r.verify, cpu=True) / raw:.2f} |"
        )
    lines.append(end)
    write_section(args.out, LOG_NAME, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
