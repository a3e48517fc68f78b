"""The fault suite (`make faults`): real CLI processes against a throw-away PostgreSQL cluster and a real embedded
shard, through kills, an outage, a full disk, a read-only data dir, a damaged shard, a truncated log and a swapped
image. Prints one row per scenario: what should happen, what did, and whether that is it; exits 1 if any is not.

The cluster is made with initdb/pg_ctl (as the ``postgres`` user when run as root); without them the local server
of ATTRIBUTION_AUDIT_TEST_POSTGRES_URL gets a throw-away database, and the outage scenario is not run. The full-disk
and read-only scenarios mount a small tmpfs and a read-only bind mount; where this process may not mount, they are
not run. Nothing outside a temporary folder is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from attribution_audit.sources.synthetic import DemoCatalogue, make_demo_catalogue

EMBEDDER = "efficientnet-lite0"
SHARD = "qdrant/works_efficientnet_lite0"


@dataclass
class Row:
    scenario: str
    expected: str
    observed: str
    ok: bool | None  # None: not run here


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def one_line_error(self) -> bool:
        lines = self.stderr.strip().splitlines()
        return self.code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in self.stderr


class Suite:
    """The CLI as a user runs it (a new process per command) on one data dir and PostgreSQL database."""

    def __init__(self, root: Path, url: str) -> None:
        self.root, self.url = root, url
        self.data = root / "data"
        self.env = {
            **os.environ,
            "ATTRIBUTION_AUDIT_CHECKPOINT_KEY": str(root / "keys" / "checkpoint.pem"),
            "ATTRIBUTION_AUDIT_EMBEDDER": EMBEDDER,
            "PYTHONWARNINGS": "ignore",
        }

    def argv(self, *args: str, data: Path | None = None) -> list[str]:
        return [
            sys.executable,
            "-m",
            "attribution_audit",
            "--data-dir",
            str(data or self.data),
            "--database-url",
            self.url,
            *args,
        ]

    def cli(self, *args: str, data: Path | None = None, timeout: float = 300) -> Run:
        done = subprocess.run(
            self.argv(*args, data=data), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def superuser(self, sql: str) -> None:
        """What a superuser can do: switch the append-only triggers off for one statement."""
        engine = create_engine(self.url)
        try:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL session_replication_role = replica"))
                connection.execute(text(sql))
        finally:
            engine.dispose()


# -- PostgreSQL: a throw-away cluster, else a throw-away database on the local server --------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *command: str) -> None:
        subprocess.run([*self.as_postgres, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> str:
        self.folder.mkdir(parents=True)
        if self.as_postgres:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.folder / "data"), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")


@contextmanager
def postgres(root: Path) -> Iterator[tuple[str, Cluster | None]]:
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        cluster = Cluster(root / "pg")
        url = cluster.init()
        try:
            yield url, cluster
        finally:
            cluster.stop()
        return
    server = os.environ.get("ATTRIBUTION_AUDIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    name = f"aa_faults_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False), None
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def mounted(*commands: list[str], target: Path) -> Iterator[bool]:
    """Run mount commands for ``target``; yields whether they worked (unmounted after)."""
    target.mkdir(parents=True, exist_ok=True)
    ok = all(subprocess.run(c, capture_output=True).returncode == 0 for c in commands)
    try:
        yield ok
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


# -- the scenarios -------------------------------------------------------------------------------------------------
def kill(suite: Suite, demo: DemoCatalogue) -> Row:
    images = [str(q.path) for q in demo.queries] * 4
    process = subprocess.Popen(suite.argv("attribute", *images), env=suite.env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    printed = []
    for line in process.stdout:
        if line.startswith("request "):
            printed.append(line.split()[1])
        if len(printed) == 3:
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    logged = {r["request_id"] for r in json.loads(suite.cli("audit", "list", "--limit", "1000", "--json").stdout)}
    verified = suite.cli("audit", "verify")
    checked = suite.cli("catalogue", "check")
    again = suite.cli("attribute", str(demo.queries[0].path))
    ok = set(printed) <= logged and verified.code == 0 and checked.code == 0 and again.code == 0
    observed = (
        f"killed after {len(printed)} printed; all logged: {set(printed) <= logged}; verify exit {verified.code}; "
        f"catalogue check exit {checked.code}; next attribute exit {again.code}"
    )
    return Row("kill -9 during attribute", "every printed attribution logged, chain and shard intact", observed, ok)


def outage(suite: Suite, demo: DemoCatalogue, cluster: Cluster | None) -> Row:
    expected = "one error line, exit 1, nothing logged; works again once PostgreSQL is back"
    if cluster is None:
        return Row("PostgreSQL outage", expected, "not run: no initdb/pg_ctl here", None)
    before = len(json.loads(suite.cli("audit", "list", "--limit", "1000", "--json").stdout))
    cluster.stop()
    try:
        down = suite.cli("attribute", str(demo.queries[0].path))
    finally:
        cluster.start()
    after = len(json.loads(suite.cli("audit", "list", "--limit", "1000", "--json").stdout))
    back = suite.cli("attribute", str(demo.queries[0].path))
    ok = down.one_line_error and before == after and back.code == 0
    return Row("PostgreSQL outage", expected, f"{down.stderr.strip()[:90]}...; back: exit {back.code}", ok)


def full_disk(suite: Suite, demo: DemoCatalogue) -> Row:
    expected = "refused before opening the shard: one line, nothing written"
    target = suite.root / "small-disk"
    with mounted(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(target)], target=target) as ok:
        if not ok:
            return Row("full disk (64 MB tmpfs)", expected, "not run: this process may not mount", None)
        data = target / "data"
        done = suite.cli("ingest", str(demo.manifest), data=data)
        written = (data / "qdrant").exists() and any((data / "qdrant").iterdir())
        return Row(
            "full disk (64 MB tmpfs)",
            expected,
            f"{done.stderr.strip()[:100]}...; shard written: {written}",
            done.one_line_error and "MB free" in done.stderr and not written,
        )


def read_only(suite: Suite, demo: DemoCatalogue) -> Row:
    expected = "one error line saying the data dir must be writable"
    target = suite.root / "read-only"
    bind = ["mount", "--bind", str(suite.data), str(target)]
    with mounted(bind, ["mount", "-o", "remount,ro,bind", str(target)], target=target) as ok:
        if not ok:
            return Row("read-only data dir", expected, "not run: this process may not mount", None)
        done = suite.cli("attribute", str(demo.queries[0].path), data=target)
        return Row("read-only data dir", expected, done.stderr.strip()[:110], done.one_line_error)


def corrupt_shard(suite: Suite, demo: DemoCatalogue) -> Row:
    expected = "one line naming catalogue check --repair; repair + ingest restore it"
    copy = suite.root / "damaged"
    shutil.copytree(suite.data, copy)
    for mapping in (copy / SHARD).glob("segments/*/id_tracker.mappings"):
        mapping.write_bytes(os.urandom(mapping.stat().st_size or 64))
    refused = suite.cli("attribute", str(demo.queries[0].path), data=copy)
    repaired = suite.cli("catalogue", "check", "--repair", data=copy)
    ingested = suite.cli("ingest", str(demo.manifest), data=copy)
    works = suite.cli("attribute", str(demo.queries[0].path), data=copy)
    ok = (
        refused.one_line_error
        and "--repair" in refused.stderr
        and (repaired.code, ingested.code, works.code) == (0,) * 3
    )
    observed = (
        f"{refused.stderr.strip()[:70]}...; repair {repaired.code}, ingest {ingested.code}, attribute {works.code}"
    )
    return Row("corrupt shard segment", expected, observed, ok)


def rotated_vectors(suite: Suite) -> Row:
    expected = "catalogue check finds every moved vector; --deep --repair rewrites them"
    copy = suite.root / "rotated"
    shutil.copytree(suite.data, copy)
    (matrix,) = (copy / SHARD).glob("segments/*/vector_storage-content/matrix.dat")
    raw = matrix.read_bytes()
    width = 1280 * 4
    matrix.write_bytes(raw[:4] + raw[4 + width :] + raw[4 : 4 + width])
    checked = suite.cli("catalogue", "check", "--format", "json", data=copy)
    if not checked.stdout:
        return Row("vector rows rotated in the shard file", expected, checked.stderr.strip()[-120:], False)
    found = json.loads(checked.stdout)
    repaired = suite.cli("catalogue", "check", "--deep", "--repair", data=copy)
    clean = suite.cli("catalogue", "check", "--deep", data=copy)
    ok = len(found.get("corrupt", [])) == found.get("points") and repaired.code == 0 and clean.code == 0
    observed = (
        f"{len(found.get('corrupt', []))}/{found.get('points')} corrupt; repair {repaired.code}, then {clean.code}"
    )
    return Row("vector rows rotated in the shard file", expected, observed, ok)


def swapped_image(suite: Suite, demo: DemoCatalogue) -> Row:
    image = suite.root / "swapped.png"
    shutil.copyfile(demo.queries[1].path, image)
    attributed = json.loads(suite.cli("attribute", str(image), "--format", "json").stdout)[0]
    shutil.copyfile(demo.queries[2].path, image)  # another image under the recorded name
    page = suite.root / "page.html"
    suite.cli("report", "request", attributed["request_id"], "--html", str(page))
    changed = "changed since attribution" in page.read_text()
    return Row(
        "generated image swapped after attribution",
        "the page says changed, not intact",
        f"page says changed: {changed}",
        changed,
    )


def truncated_log(suite: Suite) -> Row:
    checkpoint = suite.root / "checkpoint.json"
    suite.cli("audit", "checkpoint", "--out", str(checkpoint))
    newest = json.loads(suite.cli("audit", "list", "--limit", "1", "--json").stdout)[0]["request_id"]
    for table, key in (
        ("attribution_neighbours", "request_id"),
        ("attribution_artist_shares", "request_id"),
        ("attribution_metrics", "request_id"),
        ("recall_checks", "request_id"),
        ("attribution_requests", "id"),
    ):
        suite.superuser(f"DELETE FROM {table} WHERE {key} = '{newest}'")
    plain = suite.cli("audit", "verify")
    explicit = suite.cli("audit", "verify", "--checkpoint", str(checkpoint))
    ok = plain.code == 1 and explicit.code == 1 and "records were removed" in explicit.stderr
    return Row(
        "newest record deleted as superuser",
        "audit verify fails against the checkpoint",
        f"verify exit {plain.code}, --checkpoint exit {explicit.code}: {explicit.stderr.strip()[-60:]}",
        ok,
    )


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="attribution-audit-faults-"))
    os.chmod(root, 0o755)  # the cluster's user must reach its folder
    rows: list[Row] = []
    try:
        with postgres(root) as (url, cluster):
            demo = make_demo_catalogue(root / "catalogue", queries_per_artist=1)
            suite = Suite(root, url)
            for setup in (("db", "upgrade"), ("ingest", str(demo.manifest))):
                done = suite.cli(*setup)
                if done.code:
                    print(f"setup `{' '.join(setup)}` failed: {done.stderr.strip()}", file=sys.stderr)
                    return 1
            scenarios: list[Callable[[], Row]] = [
                lambda: kill(suite, demo),
                lambda: outage(suite, demo, cluster),
                lambda: full_disk(suite, demo),
                lambda: read_only(suite, demo),
                lambda: swapped_image(suite, demo),
                lambda: rotated_vectors(suite),
                lambda: corrupt_shard(suite, demo),
                lambda: truncated_log(suite),
            ]
            for scenario in scenarios:
                started = time.monotonic()
                try:
                    row = scenario()
                except Exception as exc:  # a scenario that crashes is a failure to report, not to hide
                    row = Row(getattr(scenario, "__name__", "scenario"), "", f"crashed: {exc!r}"[:120], False)
                rows.append(row)
                print(
                    f"... {row.scenario}: {'ok' if row.ok else row.ok} ({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    width = max(len(r.scenario) for r in rows)
    print(f"{'scenario':<{width}}  result  expected / observed")
    for r in rows:
        verdict = {True: "ok", False: "FAILED", None: "not run"}[r.ok]
        print(f"{r.scenario:<{width}}  {verdict:<6}  expected: {r.expected}")
        print(f"{'':<{width}}          observed: {r.observed}")
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
