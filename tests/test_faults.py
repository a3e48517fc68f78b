"""Faults give one line that says what to do, and lose nothing: a damaged embedded shard (corrupt or missing
metadata, a corrupt segment file), too little free disk space, a read-only data dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import EMBEDDER, Cli, Ingested, ingest_once

from attribution_audit.cli import app
from attribution_audit.embedding.base import Embedder
from attribution_audit.sources.synthetic import DemoCatalogue

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
