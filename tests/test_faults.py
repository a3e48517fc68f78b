"""Faults give one line that says what to do, and lose nothing: a damaged embedded shard (corrupt or missing
metadata, a corrupt segment file), too little free disk space, a read-only data dir, a full disk under the audit
log."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import EMBEDDER, Cli, Ingested, ingest_once
from dbtools import complete_request, superuser_edit
from sqlalchemy import make_url
from typer.testing import CliRunner

from attribution_audit.cli import app
from attribution_audit.embedding.base import Embedder
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store import chain
from attribution_audit.store.database import create_db_engine

SHARD = "qdrant/works_efficientnet_lite0"


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("faults-ingested"), sqlite_template, demo_catalogue.manifest)


def _overwrite(pattern: str, data: bytes) -> Callable[[Path], None]:
    def damage(shard: Path) -> None:
        files = list(shard.glob(pattern))
        assert files, pattern
        for file in files:
            file.write_bytes(data)

    return damage


def _remove_metadata(shard: Path) -> None:
    (shard / "attribution-audit.json").unlink()


DAMAGE = {
    "corrupt metadata": _overwrite("attribution-audit.json", b"{not json"),
    "missing metadata": _remove_metadata,
    "corrupt segment state": _overwrite("segments/*/segment.json", b"{x"),
    # random bytes in the id mapping make the engine abort the whole process when it loads them: the seal written
    # at the last clean close refuses the file first
    "corrupt id mapping": _overwrite("segments/*/id_tracker.mappings", bytes(range(256)) * 4),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_shard_gives_one_line_and_repair_rebuilds_it(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, damage: str
) -> None:
    cli.restore(ingested)
    query = str(demo_catalogue.queries[0].path)
    DAMAGE[damage](cli.data_dir / SHARD)
    result = cli("attribute", query, "--embedder", EMBEDDER, code=1)
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {cli.data_dir / SHARD}: the embedded shard is damaged")
    assert "catalogue check --repair" in line
    assert json.loads(cli("audit", "list", "--format", "json").stdout) == []  # nothing was half-written

    repaired = json.loads(cli("catalogue", "check", "--repair", "--format", "json", "--embedder", EMBEDDER).stdout)
    assert repaired["set_aside"] and Path(repaired["set_aside"]).is_dir() and len(repaired["missing"]) == 48
    cli("ingest", str(demo_catalogue.manifest), "--embedder", EMBEDDER)
    checked = json.loads(cli("catalogue", "check", "--deep", "--format", "json", "--embedder", EMBEDDER).stdout)
    assert (checked["points"], checked["clean"]) == (48, True)
    cli("attribute", query, "--embedder", EMBEDDER)


def test_a_shard_copied_without_its_modification_times_says_to_copy_it_keeping_them(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    """`cp -r` gives every file a new time: a large file, sealed by size and time, then looks changed."""
    cli.restore(ingested)
    query = str(demo_catalogue.queries[0].path)
    pages = list((cli.data_dir / SHARD).glob("segments/*/payload_storage/page_0.dat"))
    assert pages and all(p.stat().st_size > 1024 * 1024 for p in pages)  # sealed by size and time, not hashed
    times = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in pages]
    for page in pages:
        os.utime(page, ns=(page.stat().st_atime_ns, page.stat().st_mtime_ns + 10**9))
    (line,) = cli("attribute", query, "--embedder", EMBEDDER, code=1).stderr.splitlines()
    assert "same size, another modification time" in line and "`cp -a` or `rsync -a`" in line
    for page, ns in zip(pages, times, strict=True):
        os.utime(page, ns=ns)  # the times kept, as `cp -a` does: the shard opens
    cli("attribute", query, "--embedder", EMBEDDER)


def test_a_shard_is_not_opened_without_free_space(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_MIN_FREE_MB", str(10**12))  # more than any disk here has free
    result = cli("attribute", str(demo_catalogue.queries[0].path), "--embedder", EMBEDDER, code=1)
    (line,) = result.stderr.splitlines()
    assert "MB free on its disk, under the 1000000000000 MB the embedded shard needs" in line
    assert "free some space" in line
    monkeypatch.setenv("ATTRIBUTION_AUDIT_MIN_FREE_MB", "0")
    cli("attribute", str(demo_catalogue.queries[0].path), "--embedder", EMBEDDER)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """A read-only view of a folder (a read-only bind mount: permissions do not stop root); skipped where this
    process may not mount."""
    mounts: list[Path] = []

    def mount(source: Path) -> Path:
        target = tmp_path / f"read-only-{len(mounts)}"
        target.mkdir()
        for command in (["mount", "--bind", str(source), str(target)], ["mount", "-o", "remount,ro,bind", str(target)]):
            if subprocess.run(command, capture_output=True).returncode:
                subprocess.run(["umount", str(target)], capture_output=True)
                pytest.skip("this process may not mount a read-only folder")
        mounts.append(target)
        return target

    yield mount
    for target in mounts:
        subprocess.run(["umount", str(target)], check=True)


def test_a_read_only_data_dir_gives_one_line(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, read_only: Callable[[Path], Path]
) -> None:
    cli.restore(ingested)
    shutil.copyfile(ingested.database, cli.data_dir / "audit.sqlite")  # also as the embedded log of the data dir
    frozen = read_only(cli.data_dir)
    query = str(demo_catalogue.queries[0].path)
    # the audit DB elsewhere (as with PostgreSQL): the shard cannot take its lock
    result = Cli(frozen, cli.database_url, cli.runner)("attribute", query, "--embedder", EMBEDDER, code=1)
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "the embedded store needs a writable data dir" in line
    # the embedded SQLite log inside the read-only data dir
    result = cli.runner.invoke(app, ["--data-dir", str(frozen), "attribute", query, "--embedder", EMBEDDER])
    (line,) = result.stderr.splitlines()
    assert result.exit_code == 1 and line.startswith(f"error: {frozen}: the data dir is read-only")


# -- a full disk under the audit log -------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on its own 4 MB filesystem (a tmpfs); skipped where this process may not mount."""
    target = tmp_path / "small-disk"
    target.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)], capture_output=True).returncode:
        pytest.skip("this process may not mount a small filesystem")
    yield target
    subprocess.run(["umount", "--lazy", str(target)], check=True)  # (the in-process CLI's engines hold the log)


def _fill(folder: Path) -> Path:
    """Fill the disk of ``folder`` to its last byte; the file that fills it."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while os.write(descriptor, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    return filler


def _log_on(folder: Path, template: Path, records: int) -> Cli:
    """A data dir on ``folder`` whose embedded SQLite audit log holds ``records`` records; the CLI on it."""
    database = folder / "audit.sqlite"
    shutil.copyfile(template, database)
    engine = create_db_engine(f"sqlite:///{database}")
    for i in range(records):
        chain.append(engine, complete_request(f"r{i}"))
    engine.dispose()
    return Cli(folder, f"sqlite:///{database}", CliRunner())


def _recorded(cli: Cli) -> int | None:
    """Up to which seq ``report summary`` says the chain was verified in full (None: no verification recorded)."""
    summary = json.loads(cli("report", "summary", "--format", "json").stdout)
    recorded: int | None = summary["chain"]["verified_in_full_records"]
    return recorded


@pytest.mark.parametrize("open_elsewhere", [False, True], ids=["log closed", "log open in another process"])
def test_audit_verify_on_a_full_disk_gives_its_verdict_and_says_it_was_not_recorded(
    small_disk: Path, sqlite_template: Path, open_elsewhere: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verifying is a read: a full disk under the audit log does not stop it. Closed, the log has no room for
    SQLite's WAL index (it is read as it is); open in another process (a service), the record of the verification
    finds no room. Either way the verdict, its exit code, and one line: not recorded, where, what to do; recorded
    once there is room."""
    monkeypatch.setattr(chain, "BLOCK", 2)  # --workers 2: two processes read the log's blocks
    cli = _log_on(small_disk, sqlite_template, 3)
    elsewhere = sqlite3.connect(small_disk / "audit.sqlite")
    try:
        if open_elsewhere:
            elsewhere.execute("SELECT count(*) FROM attribution_requests").fetchall()
        filler = _fill(small_disk)
        for workers in ("1", "2"):
            verified = cli("audit", "verify", "--workers", workers)
            assert "chain OK: 3 records" in verified.stdout
            (warning,) = verified.stderr.splitlines()
            assert warning.startswith("warning: this verification is not recorded for report summary: ")
            assert f"{small_disk / 'audit.sqlite'}: its disk is full" in warning and "free some space on it" in warning
        as_json = json.loads(cli("audit", "verify", "--format", "json").stdout)
        assert as_json["ok"] is True and "its disk is full" in as_json["not_recorded"]
        assert _recorded(cli) is None
        filler.unlink()
        assert cli("audit", "verify").stderr == ""
        assert _recorded(cli) == 3
    finally:
        elsewhere.close()


def test_a_broken_chain_on_a_full_disk_still_exits_1_naming_the_record(small_disk: Path, sqlite_template: Path) -> None:
    cli = _log_on(small_disk, sqlite_template, 3)
    engine = cli.engine()
    superuser_edit(engine, "UPDATE attribution_requests SET requester = 'someone else' WHERE seq = 2")
    engine.dispose()  # the log closed: its WAL written back (open, a write may find room in its WAL)
    _fill(small_disk)
    refused = cli("audit", "verify", code=1)
    broken, warning = refused.stderr.splitlines()
    assert broken.startswith("chain BROKEN at seq 2") and warning.startswith("warning: this verification is not")


def test_a_full_disk_never_hides_records_still_in_the_wal_even_through_a_symlink(
    small_disk: Path, sqlite_template: Path, tmp_path: Path
) -> None:
    """A log whose WAL still holds records (its last writer killed, its WAL index gone) cannot be read as the file
    alone without room for a new WAL index: refused in one line, never a verdict on the stale file; also when the URL
    names a symlink (SQLite keeps the WAL beside the file the link names)."""
    _log_on(small_disk, sqlite_template, 2)
    writer = "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE scratch (x)'); "
    writer += "c.execute('INSERT INTO scratch VALUES (1)'); c.commit(); os.kill(os.getpid(), 9)"
    subprocess.run([sys.executable, "-c", writer, str(small_disk / "audit.sqlite")], check=False)
    assert (small_disk / "audit.sqlite-wal").stat().st_size > 0
    (small_disk / "audit.sqlite-shm").unlink()  # the WAL index must be made again, which a full disk refuses
    link = tmp_path / "link" / "audit.sqlite"
    link.parent.mkdir()
    link.symlink_to(small_disk / "audit.sqlite")
    _fill(small_disk)
    for url in (f"sqlite:///{small_disk / 'audit.sqlite'}", f"sqlite:///{link}"):
        refused = Cli(small_disk, url, CliRunner())("audit", "verify", code=1)
        assert "chain OK" not in refused.stdout
        (line,) = refused.stderr.splitlines()
        assert "its write-ahead log" in line and "holds records" in line and "free some space" in line


# -- a read-only audit log -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["?mode=ro", "SQLite URI"])
def test_audit_verify_on_a_read_only_log_gives_its_verdict_and_says_it_was_not_recorded(
    tmp_path: Path, sqlite_template: Path, form: str
) -> None:
    """A log opened read-only (as a file its user may not write is: SQLITE_READONLY) is verified: the verdict, its
    exit code, and one line that it was not recorded, why and what to do; nothing is written to it."""
    writable = _log_on(tmp_path, sqlite_template, 3)
    database = tmp_path / "audit.sqlite"
    url = f"sqlite:///{database}?mode=ro" if form == "?mode=ro" else f"sqlite:///file:{database}?mode=ro&uri=true"
    cli = Cli(tmp_path, url, CliRunner())
    verified = cli("audit", "verify")
    assert "chain OK: 3 records" in verified.stdout
    (warning,) = verified.stderr.splitlines()
    assert warning.startswith("warning: this verification is not recorded for report summary: ")
    assert f"{database}: the audit log is open read-only here" in warning and "without mode=ro" in warning
    as_json = json.loads(cli("audit", "verify", "--format", "json").stdout)
    assert as_json["ok"] is True and "open read-only" in as_json["not_recorded"]
    assert _recorded(writable) is None
    superuser_edit(writable.engine(), "UPDATE attribution_requests SET requester = 'someone else' WHERE seq = 2")
    broken, warning = cli("audit", "verify", code=1).stderr.splitlines()
    assert broken.startswith("chain BROKEN at seq 2") and warning.startswith("warning: this verification is not")


def test_writes_on_a_read_only_log_say_it_is_open_read_only_and_record_nothing(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    """An attribution or a new key on a log opened ``?mode=ro``: exit 1 and the read-only line (the file, why, what
    to do), not a write "refused" as by an outage; nothing recorded. Other messages show the URL as typed."""
    cli.restore(ingested)
    database = make_url(cli.database_url).database
    read_only = Cli(cli.data_dir, f"{cli.database_url}?mode=ro", cli.runner)
    query = str(demo_catalogue.queries[0].path)
    for command in (("attribute", query, "--embedder", EMBEDDER), ("keys", "create", "generator-1")):
        (line,) = read_only(*command, code=1).stderr.splitlines()
        assert line.startswith(f"error: {database}: the audit log is open read-only here (attempt to write a")
        assert line.endswith("run the command again with a URL without mode=ro, as a user that may write the file")
    assert chain.count_requests(cli.engine()) == 0
    assert json.loads(cli("keys", "list", "--format", "json").stdout) == []
    missing = f"sqlite:///{cli.data_dir / 'missing.sqlite'}?mode=ro"  # messages name a URL as it was typed
    (line,) = Cli(cli.data_dir, missing, cli.runner)("audit", "list", code=1).stderr.splitlines()
    assert line.startswith(f"error: cannot reach the audit database {missing} (unable to open database file)")


def test_audit_export_of_a_read_only_log_writes_its_file_and_says_its_verification_was_not_recorded(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """An export verifies the whole chain and records that verification as `audit verify` does: on a log open
    read-only, the file is written, exit 0, and the same one line that the verification was not recorded."""
    writable = _log_on(tmp_path, sqlite_template, 3)
    cli = Cli(tmp_path, f"sqlite:///{tmp_path / 'audit.sqlite'}?mode=ro", CliRunner())
    out = tmp_path / "export.jsonl"
    exported = cli("audit", "export", str(out))
    assert exported.stdout == f"exported 3 records to {out}\n"
    (warning,) = exported.stderr.splitlines()
    assert warning.startswith("warning: this verification is not recorded") and "open read-only here" in warning
    assert "export OK: 3 records" in cli("audit", "verify", "--file", str(out)).stdout
    assert _recorded(writable) is None
    assert writable("audit", "export", str(out), "--force").stderr == ""
    assert _recorded(writable) == 3
