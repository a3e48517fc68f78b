"""Signed checkpoints of the chain head: what verification catches with them that the chain alone cannot (a truncated
tail, a wipe, a rewritten or replaced log), on SQLite and PostgreSQL, through the real CLI."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import EMBEDDER, Cli, Ingested, ingest_once
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dbtools import complete_request, superuser_edit
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from attribution_audit import AttributionParams, Upload, load_settings, open_service
from attribution_audit.cli import app
from attribution_audit.domain import checkpoint as statement
from attribution_audit.embedding.base import Embedder
from attribution_audit.reporting import output_file
from attribution_audit.services.checkpoints import signing_key
from attribution_audit.sources.synthetic import DemoCatalogue
from attribution_audit.store import chain
from attribution_audit.store.database import create_db_engine, upgrade

CHILDREN = ("attribution_neighbours", "attribution_artist_shares", "attribution_metrics")


def _records(engine: Engine, count: int, label: str = "r") -> list[str]:
    return [chain.append(engine, complete_request(f"{label}{i}")).id for i in range(count)]


def _delete(engine: Engine, request_ids: list[str]) -> None:
    ids = ", ".join(f"'{i}'" for i in request_ids)
    for table in (*CHILDREN, "attribution_requests"):
        key = "id" if table == "attribution_requests" else "request_id"
        superuser_edit(engine, f"DELETE FROM {table} WHERE {key} IN ({ids})")


@pytest.fixture
def logged(cli_on: Callable[[str], Cli], migrated_url: str, tmp_path: Path) -> tuple[Cli, Engine, Path]:
    """A CLI on a log of 4 records, checkpointed into ``checkpoint.json`` (and the data dir's witness file)."""
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    _records(engine, 4)
    out = tmp_path / "checkpoint.json"
    cli("audit", "checkpoint", "--out", str(out))
    return cli, engine, out


def test_verify_says_when_no_witness_file_was_found(
    cli_on: Callable[[str], Cli], migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped witness path must not read as a log checked against its checkpoints."""
    cli = cli_on(migrated_url)
    _records(create_db_engine(migrated_url), 2)
    missing = tmp_path / "witnes.jsonl"
    monkeypatch.setenv("ATTRIBUTION_AUDIT_WITNESS_FILE", str(missing))
    verified = cli("audit", "verify")
    assert "chain OK: 2 records" in verified.stdout
    assert f"no checkpoint compared: no witness file at {missing}" in verified.stdout
    monkeypatch.delenv("ATTRIBUTION_AUDIT_WITNESS_FILE")
    cli("audit", "checkpoint")
    assert "no checkpoint compared" not in cli("audit", "verify").stdout


def test_a_checkpoint_is_signed_by_a_key_outside_the_db_and_holds(
    cli_on: Callable[[str], Cli], migrated_url: str, tmp_path: Path, checkpoint_key: Path
) -> None:
    cli = cli_on(migrated_url)
    engine = create_db_engine(migrated_url)
    _records(engine, 3)
    out = tmp_path / "checkpoint.json"
    result = cli("audit", "checkpoint", "--out", str(out))
    assert f"created the checkpoint signing key {checkpoint_key}" in result.stderr
    assert stat.S_IMODE(checkpoint_key.stat().st_mode) == 0o600
    statement = json.loads(out.read_text())
    head = chain.verify_chain(engine)
    assert (statement["seq"], statement["head_hash"]) == (3, head.head_hash)
    witness = (cli.data_dir / "witness.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in witness] == [statement]
    # a second checkpoint reuses the key and appends to the witness
    again = cli("audit", "checkpoint")
    assert "created" not in again.stderr
    assert len((cli.data_dir / "witness.jsonl").read_text().splitlines()) == 2
    verified = cli("audit", "verify", "--checkpoint", str(out))
    assert "chain OK: 3 records" in verified.stdout and "checkpoint seq 3" in verified.stdout
    assert "holds" in verified.stdout


def test_an_out_name_too_long_is_one_line_before_anything_is_signed(
    cli_on: Callable[[str], Cli], migrated_url: str, tmp_path: Path, checkpoint_key: Path
) -> None:
    """Looking at the path raised (File name too long) outside the command's error handling: a traceback."""
    cli = cli_on(migrated_url)
    _records(create_db_engine(migrated_url), 3)
    over = tmp_path / ("a" * 260 + ".json")
    said = cli("audit", "checkpoint", "--out", str(over), code=1).stderr
    assert said == f"error: {over}: cannot write the checkpoint (File name too long); choose a writable path\n"
    assert not checkpoint_key.exists()


def test_an_existing_out_file_is_refused_before_anything_is_signed_unless_forced(
    cli_on: Callable[[str], Cli], migrated_url: str, tmp_path: Path, checkpoint_key: Path
) -> None:
    """As `audit export`: a file under --out is kept, with one line naming it and --force, and the refused command
    changes nothing (no key created, no checkpoint appended to the witness file); --force replaces it."""
    cli = cli_on(migrated_url)
    _records(create_db_engine(migrated_url), 3)
    out = tmp_path / "checkpoint.json"
    out.write_text("an earlier checkpoint\n")
    refused = cli("audit", "checkpoint", "--out", str(out), code=1)
    assert refused.stderr == f"error: {out}: already exists; pass --force to overwrite it, or choose another name\n"
    assert out.read_text() == "an earlier checkpoint\n"
    assert not (cli.data_dir / "witness.jsonl").exists() and not checkpoint_key.exists()
    cli("audit", "checkpoint", "--out", str(out), "--force")
    witness = (cli.data_dir / "witness.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in witness] == [json.loads(out.read_text())]
    assert json.loads(out.read_text())["seq"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint.json"]


def test_a_checkpoint_file_that_cannot_be_finished_leaves_the_earlier_one_whole(
    logged: tuple[Cli, Engine, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is written beside --out and renamed onto it: a failure before the rename (a full disk, a crash)
    leaves the earlier checkpoint as it was, and no scratch file; the new one is in the witness file."""
    cli, engine, out = logged
    earlier = out.read_text()
    _records(engine, 2)

    def no_space(temporary: Path, target: Path, overwrite: bool) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(output_file, "_publish", no_space)
    failed = cli("audit", "checkpoint", "--out", str(out), "--force", code=1)
    assert f"{out}: cannot write the checkpoint (No space left on device)" in failed.stderr
    assert out.read_text() == earlier
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint.json"]
    assert json.loads((cli.data_dir / "witness.jsonl").read_text().splitlines()[-1])["seq"] == 6


def test_a_truncated_tail_fails_against_the_checkpoint(logged: tuple[Cli, Engine, Path]) -> None:
    cli, engine, out = logged
    newest = chain.load_requests(engine, limit=1, newest_first=True)[0]
    _delete(engine, [newest.id])
    assert chain.verify_chain(engine).ok  # the chain alone still verifies: what checkpoints are for
    result = cli("audit", "verify", "--checkpoint", str(out), code=1)
    assert "FAILS" in result.stderr and "records were removed" in result.stderr
    # without --checkpoint, the witness file's last checkpoint is checked
    assert "records were removed" in cli("audit", "verify", code=1).stderr


def test_a_wiped_log_fails_against_the_checkpoint(logged: tuple[Cli, Engine, Path]) -> None:
    cli, engine, out = logged
    for table in (*CHILDREN, "attribution_requests", "audit_identity"):
        superuser_edit(engine, f"DELETE FROM {table}")
    assert chain.verify_chain(engine).ok
    result = cli("audit", "verify", "--checkpoint", str(out), "--format", "json", code=1)
    assert json.loads(result.stdout)["ok"] is False
    assert "without identity" in result.stderr


def test_a_rewritten_log_fails_against_the_checkpoint(logged: tuple[Cli, Engine, Path]) -> None:
    """Records removed and appended again with recomputed hashes: the chain verifies, the checkpoint does not."""
    cli, engine, out = logged
    _delete(engine, [r.id for r in chain.load_requests(engine)])
    _records(engine, 5, label="forged")
    assert chain.verify_chain(engine).ok
    result = cli("audit", "verify", "--checkpoint", str(out), code=1)
    assert "checkpointed records were changed, replaced or reordered" in result.stderr
    # and a new checkpoint is refused: it would vouch for the rewritten log
    assert "contradicts the last checkpoint" in cli("audit", "checkpoint", code=1).stderr


def test_an_older_checkpoint_appended_again_does_not_stand_for_the_newest(logged: tuple[Cli, Engine, Path]) -> None:
    """An append-only witness still takes an old signed line appended again: it must not become the checkpoint that
    plain ``audit verify`` and the writers compare with, or the records signed since could be cut unseen."""
    cli, engine, _ = logged
    _records(engine, 2, label="later")
    cli("audit", "checkpoint")
    witness = cli.data_dir / "witness.jsonl"
    first = witness.read_text().splitlines()[0]
    with witness.open("a") as handle:
        handle.write(first + "\n")
    _delete(engine, [r.id for r in chain.load_requests(engine, after_seq=4)])
    superuser_edit(engine, "DELETE FROM chain_verifications")  # the log's own memory of its length, gone too
    assert "records were removed" in cli("audit", "verify", code=1).stderr
    assert "contradicts the last checkpoint" in cli("audit", "checkpoint", code=1).stderr


def test_a_checkpoint_signed_with_the_clock_ahead_does_not_stand_for_later_ones(
    logged: tuple[Cli, Engine, Path], checkpoint_key: Path
) -> None:
    """A checkpoint whose time is in the future (the signer's clock ran ahead) stays the latest by time until real
    time passes it: the one that stands for the log is the highest seq of that log, so the records signed since it
    cannot be cut unseen."""
    cli, engine, _ = logged
    witness = cli.data_dir / "witness.jsonl"
    signed = statement.parse(json.loads(witness.read_text().splitlines()[-1]))
    key, _ = signing_key(checkpoint_key)
    ahead = datetime.now(UTC) + timedelta(days=1)
    with witness.open("a") as handle:
        handle.write(statement.sign(key, signed.db_identity, signed.seq, signed.head_hash, ahead).line() + "\n")
    _records(engine, 2, label="later")
    assert '"seq": 6' in cli("audit", "checkpoint").stdout
    _delete(engine, [r.id for r in chain.load_requests(engine, after_seq=4)])
    superuser_edit(engine, "DELETE FROM chain_verifications")
    assert "records were removed" in cli("audit", "verify", code=1).stderr
    assert "contradicts the last checkpoint" in cli("audit", "checkpoint", code=1).stderr


def _other_db(folder: Path) -> str:
    """A new audit DB (its own identity: not a copy of the test template) holding 4 records."""
    folder.mkdir()
    url = f"sqlite:///{folder / 'audit.sqlite'}"
    engine = create_db_engine(url)
    upgrade(engine)
    _records(engine, 4)
    return url


def test_another_audit_db_fails_against_the_checkpoint(
    logged: tuple[Cli, Engine, Path], cli_on: Callable[[str], Cli], tmp_path: Path
) -> None:
    _, _, out = logged
    url = _other_db(tmp_path / "other")
    result = cli_on(url)("audit", "verify", "--checkpoint", str(out), code=1)
    assert "a replaced or recreated audit DB" in result.stderr


def test_an_altered_or_foreign_checkpoint_fails(
    logged: tuple[Cli, Engine, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, _, out = logged
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps({**json.loads(out.read_text()), "seq": 1}))
    assert "signature does not verify" in cli("audit", "verify", "--checkpoint", str(altered), code=1).stderr
    # a checkpoint signed with another key than this installation's
    foreign = tmp_path / "foreign.json"
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_KEY", str(tmp_path / "other-key.pem"))
    monkeypatch.setenv("ATTRIBUTION_AUDIT_WITNESS_FILE", str(tmp_path / "other-witness.jsonl"))
    cli("audit", "checkpoint", "--out", str(foreign))
    monkeypatch.delenv("ATTRIBUTION_AUDIT_CHECKPOINT_KEY")  # back to the test's own key (set by the fixture)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_KEY", str(tmp_path / "keys" / "checkpoint-ed25519.pem"))
    assert (
        "not by this installation's checkpoint key"
        in cli("audit", "verify", "--checkpoint", str(foreign), code=1).stderr
    )
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json\n")
    result = cli("audit", "verify", "--checkpoint", str(garbage), code=1)
    assert result.stderr.startswith("error: ") and "line 1 is not a checkpoint" in result.stderr
    assert "give a file from `audit checkpoint --out` or a witness file" in result.stderr  # not a checkpoint file


def _cut_last_record(exported: Path) -> None:
    """Cut an export's last record, its header made to fit: the count, and the chain head at the new last record."""
    lines = exported.read_text().splitlines()
    last = json.loads(lines[-2])
    head = {"seq": last["seq"], "hash": last["record_hash"]}
    header = {**json.loads(lines[0]), "records": len(lines) - 2, "chain_head": head}
    exported.write_text("\n".join([json.dumps(header), *lines[1:-1]]) + "\n")


def test_an_export_is_checked_against_the_checkpoint(
    logged: tuple[Cli, Engine, Path], cli_on: Callable[[str], Cli], tmp_path: Path
) -> None:
    cli, _, out = logged
    exported = tmp_path / "export.jsonl"
    cli("audit", "export", str(exported))
    assert "holds" in cli("audit", "verify", "--file", str(exported), "--checkpoint", str(out)).stdout
    # the export's tail cut off (and its header's count and chain head fixed up): it verifies alone, not against
    # the checkpoint
    _cut_last_record(exported)
    cli("audit", "verify", "--file", str(exported))
    result = cli("audit", "verify", "--file", str(exported), "--checkpoint", str(out), code=1)
    assert "holds no record seq 4" in result.stderr
    # an export of another DB with as many records
    cli_on(_other_db(tmp_path / "other"))("audit", "export", str(exported), "--force")
    result = cli("audit", "verify", "--file", str(exported), "--checkpoint", str(out), code=1)
    assert "a replaced or recreated audit DB" in result.stderr


# -- through attribution: automatic checkpoints, and a new log beside old evidence ---------------------------------
@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, demo_catalogue: DemoCatalogue, sqlite_template: Path, embedder: Embedder
) -> Ingested:
    return ingest_once(tmp_path_factory.mktemp("checkpoint-ingested"), sqlite_template, demo_catalogue.manifest)


def test_attribution_checkpoints_every_n_records(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_EVERY", "2")
    images = [str(q.path) for q in demo_catalogue.queries[:3]]
    result = cli("attribute", *images, "--embedder", EMBEDDER)
    assert result.stderr.count("checkpoint: seq 2,") == 1 and "seq 3," not in result.stderr
    witness = [json.loads(line) for line in (cli.data_dir / "witness.jsonl").read_text().splitlines()]
    second = chain.load_requests(cli.engine(), after_seq=1, limit=1)[0]
    assert [(w["seq"], w["head_hash"]) for w in witness] == [(2, second.record_hash)]
    assert "checkpoint seq 2" in cli("audit", "verify").stdout
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_EVERY", "two")
    assert "CHECKPOINT_EVERY='two' is not a whole number" in cli("audit", "list", code=1).stderr
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_EVERY", "2")
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_MINUTES", "99999999999999")  # was a traceback (OverflowError)
    refused = cli("attribute", *images, "--embedder", EMBEDDER, code=1)
    assert refused.stderr.startswith("error: ATTRIBUTION_AUDIT_CHECKPOINT_MINUTES='99999999999999' is not a whole")
    assert "from 0 to 52,560,000; set minutes" in refused.stderr


def test_attribution_due_a_checkpoint_without_its_key_is_refused_before_any_record(
    cli: Cli,
    ingested: Ingested,
    demo_catalogue: DemoCatalogue,
    checkpoint_key: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The key of the witnessed checkpoints gone: a batch that would make one (due at seq 4) is refused up front,
    not after appending the records before it and skipping the rest; a batch that makes none goes on."""
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_EVERY", "2")
    images = [str(q.path) for q in demo_catalogue.queries[:2]]
    cli("attribute", *images, "--embedder", EMBEDDER)  # checkpoint at seq 2
    checkpoint_key.rename(checkpoint_key.with_name("away.pem"))
    cli("attribute", images[0], "--embedder", EMBEDDER)  # seq 3: no checkpoint due
    refused = cli("attribute", *images, "--embedder", EMBEDDER, code=1)
    assert refused.stderr.startswith(f"error: {checkpoint_key}: no checkpoint key here, but the witness file ")
    assert refused.stderr.endswith("; nothing was attributed\n") and "request " not in refused.stdout
    assert [r.seq for r in chain.load_requests(cli.engine())] == [1, 2, 3]
    checkpoint_key.with_name("away.pem").rename(checkpoint_key)
    assert cli("attribute", *images, "--embedder", EMBEDDER).stderr.count("checkpoint: seq 4,") == 1


def test_attribution_checkpoints_when_the_last_checkpoint_is_older_than_t_minutes(
    cli: Cli,
    ingested: Ingested,
    demo_catalogue: DemoCatalogue,
    checkpoint_key: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_EVERY", "0")
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_MINUTES", "60")
    images = [str(q.path) for q in demo_catalogue.queries[:2]]
    first = cli("attribute", *images, "--embedder", EMBEDDER)  # no checkpoint yet: the first record is signed
    assert first.stderr.count("checkpoint: seq 1,") == 1 and "seq 2," not in first.stderr
    witness = cli.data_dir / "witness.jsonl"
    # The witness's only statement re-signed (same key, same head) as if made two hours ago: due again.
    last = statement.parse(json.loads(witness.read_text().splitlines()[-1]))
    key, _ = signing_key(checkpoint_key)
    past = datetime.now(UTC) - timedelta(hours=2)
    witness.write_text(statement.sign(key, last.db_identity, 1, last.head_hash, past).line() + "\n")
    later = cli("attribute", images[0], "--embedder", EMBEDDER)
    assert later.stderr.count("checkpoint: seq 3,") == 1
    assert "checkpoint seq 3" in cli("audit", "verify").stdout


def test_attribution_compares_with_the_newest_checkpoint_of_the_whole_witness(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attribution compares the log with the newest checkpoint of the whole witness file: old signed lines
    appended again, however many, do not push it out of view (the records signed since cannot be cut unseen), and
    a damaged line anywhere, a deeply nested one too, refuses the attribution in one line naming it, before any
    record."""
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_MINUTES", "60")
    image = str(demo_catalogue.queries[0].path)
    assert "checkpoint: seq 1," in cli("attribute", image, "--embedder", EMBEDDER).stderr
    witness = cli.data_dir / "witness.jsonl"
    first = witness.read_text()
    cli("attribute", image, "--embedder", EMBEDDER)
    assert '"seq": 2' in cli("audit", "checkpoint").stdout
    newest = witness.read_text()
    with witness.open("a") as handle:
        handle.write(first * (1 + 200_000 // len(first)))  # 200 kB of the first checkpoint again
    engine = cli.engine()
    try:
        superuser_edit(engine, "DELETE FROM chain_verifications")
        _delete(engine, [r.id for r in chain.load_requests(engine, after_seq=1)])
    finally:
        engine.dispose()
    refused = cli("attribute", image, "--embedder", EMBEDDER, code=1)
    assert "contradicts the last checkpoint" in refused.stderr and "request " not in refused.stdout
    for damaged, line in (('{"damaged\n', 1), ("[" * 30_000 + "]" * 30_000 + "\n", 1)):
        witness.write_text(damaged + newest)
        refused = cli("attribute", image, "--embedder", EMBEDDER, code=1)
        assert refused.stderr.count("\n") == 1 and f"witness.jsonl: line {line} is not a checkpoint" in refused.stderr
        assert "line 1 is not a checkpoint" in cli("audit", "verify", code=1).stderr
    engine = cli.engine()
    try:
        assert [r.seq for r in chain.load_requests(engine)] == [1]
    finally:
        engine.dispose()


def _embedded(data_dir: Path, *args: str) -> Result:
    """The CLI on the embedded default (the SQLite log inside the data dir), as an operator without a URL runs it."""
    return CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])


def test_a_new_log_beside_a_shard_or_witness_is_refused_unless_announced(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue
) -> None:
    cli.restore(ingested)
    data_dir = cli.data_dir
    # the embedded log was deleted; its shard remains
    assert not (data_dir / "audit.sqlite").exists()
    refused = _embedded(data_dir, "db", "upgrade")
    assert refused.exit_code == 1 and "pass --new-audit-log" in refused.stderr
    assert str(data_dir / "qdrant") in refused.stderr and not (data_dir / "audit.sqlite").exists()
    assert _embedded(data_dir, "ingest", str(demo_catalogue.manifest), "--embedder", EMBEDDER).exit_code == 1
    assert not (data_dir / "audit.sqlite").exists()
    assert _embedded(data_dir, "--new-audit-log", "db", "upgrade").exit_code == 0
    assert (data_dir / "audit.sqlite").exists()


def test_appending_to_another_db_than_the_witnessed_one_is_refused_unless_announced(
    cli: Cli, cli_on: Callable[[str], Cli], ingested: Ingested, demo_catalogue: DemoCatalogue, tmp_path: Path
) -> None:
    cli.restore(ingested)
    image = str(demo_catalogue.queries[0].path)
    cli("attribute", image, "--embedder", EMBEDDER)
    cli("audit", "checkpoint")
    # the audit DB is replaced by a new one (its own identity) holding the same catalogue
    other = tmp_path / "replacement.sqlite"
    engine = create_db_engine(f"sqlite:///{other}")
    upgrade(engine)
    replaced = cli_on(f"sqlite:///{other}")
    refused = replaced("attribute", image, "--embedder", EMBEDDER, code=1)
    assert "last checkpointed audit DB" in refused.stderr and "--new-audit-log" in refused.stderr
    assert chain.count_requests(engine) == 0
    adopted = replaced("--new-audit-log", "attribute", image, "--embedder", EMBEDDER, code=None)
    assert "checkpoint: seq 0," in adopted.stderr  # the witness now records the switch
    witness = [json.loads(line) for line in (cli.data_dir / "witness.jsonl").read_text().splitlines()]
    assert witness[-1]["db_identity"] != witness[0]["db_identity"] and witness[-1]["seq"] == 0


@pytest.mark.postgres
def test_an_empty_server_database_beside_a_shard_is_refused_unless_announced(
    cli_on: Callable[[str], Cli], ingested: Ingested, postgres_url: str
) -> None:
    fresh = cli_on(postgres_url)  # an empty PostgreSQL database, and the data dir of an ingested catalogue
    shutil.copytree(ingested.data_dir, fresh.data_dir)
    refused = fresh("db", "upgrade", code=1)
    assert "no audit log in postgresql" in refused.stderr and "--new-audit-log" in refused.stderr
    assert "0007" not in fresh("db", "current").stdout.split("head")[0]  # nothing was created
    fresh("--new-audit-log", "db", "upgrade")
    fresh("db", "upgrade")  # at head now: a no-op, no flag needed


def test_appending_with_another_checkpoint_key_names_the_key_not_a_restore(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An intact log whose witness was signed by another key (another user's or machine's installation): the
    remedy is the key, not a restore of the audit DB."""
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_EVERY", "1")
    image = str(demo_catalogue.queries[0].path)
    cli("attribute", image, "--embedder", EMBEDDER)  # signed with the test's own key
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_KEY", str(tmp_path / "other-key.pem"))
    signing_key(tmp_path / "other-key.pem")  # another installation's key, present
    refused = cli("attribute", image, "--embedder", EMBEDDER, code=1)
    assert refused.stderr.count("\n") == 1 and "not by this installation's checkpoint key" in refused.stderr
    assert "point ATTRIBUTION_AUDIT_CHECKPOINT_KEY at the key that signed it" in refused.stderr
    assert "restore" not in refused.stderr


def test_appending_onto_a_log_cut_below_its_last_checkpoint_is_refused(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records cut from the tail, then appended again: the new records would take the checkpointed seqs and the next
    automatic checkpoint would sign the rewritten head, so that plain ``audit verify`` (the witness's last
    checkpoint) said OK. The writer refuses to append instead, and nothing is signed."""
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_EVERY", "2")
    images = [str(q.path) for q in demo_catalogue.queries[:2]]
    cli("attribute", *images, "--embedder", EMBEDDER)
    engine = cli.engine()
    _delete(engine, [chain.load_requests(engine, limit=1, newest_first=True)[0].id])
    witness = cli.data_dir / "witness.jsonl"
    before = witness.read_text()
    refused = cli("attribute", *images, "--embedder", EMBEDDER, code=1)
    assert refused.stderr.startswith("error: ") and "contradicts the last checkpoint" in refused.stderr
    assert "records were removed" in refused.stderr and "restore the audit DB" in refused.stderr
    assert chain.count_requests(engine) == 1 and witness.read_text() == before
    assert "records were removed" in cli("audit", "verify", code=1).stderr


def test_the_service_does_not_sign_a_log_cut_while_it_runs(
    ingested: Ingested, demo_catalogue: DemoCatalogue, tmp_path: Path, checkpoint_key: Path
) -> None:
    """The same cut made while the service runs (after its start-up check): its automatic checkpoint refuses to
    vouch for the rewritten head; the attribution it follows is logged, so it is returned, with the refusal."""
    data_dir = tmp_path / "served"
    shutil.copytree(ingested.data_dir, data_dir)
    copy = tmp_path / "served.sqlite"
    with sqlite3.connect(ingested.database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    url = f"sqlite:///{copy}"
    engine = create_db_engine(url)
    uploads = [Upload.from_path(q.path) for q in demo_catalogue.queries[:2]]
    witness = data_dir / "witness.jsonl"
    settings = load_settings(data_dir=data_dir, database_url=url, embedder=EMBEDDER, checkpoint_every=2)
    with open_service(settings) as service:
        service.attribute(uploads, AttributionParams(k=3), requester="t")
        before = witness.read_text()
        _delete(engine, [chain.load_requests(engine, limit=1, newest_first=True)[0].id])
        done = service.submit(uploads, AttributionParams(k=3), requester="t")
        assert done.checkpoint_problem and "contradicts the last checkpoint" in done.checkpoint_problem
        assert [service.attribution(a.request_id) for a in done.attributions] == done.attributions
        assert service.checkpoint_failures == 1 and not service.verify().ok
    assert witness.read_text() == before


def test_an_export_failing_its_checkpoint_is_not_ok_in_json(logged: tuple[Cli, Engine, Path], tmp_path: Path) -> None:
    """A program reading ``ok`` of ``audit verify --file X --checkpoint C --format json`` sees the failure too."""
    cli, _, out = logged
    exported = tmp_path / "export.jsonl"
    cli("audit", "export", str(exported))
    _cut_last_record(exported)
    result = cli("audit", "verify", "--file", str(exported), "--checkpoint", str(out), "--format", "json", code=1)
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is False and verdict["checkpoints"][0]["ok"] is False
    assert "holds no record seq 4" in result.stderr


def test_a_witness_line_cut_short_by_a_crash_does_not_block_the_log(
    cli: Cli, ingested: Ingested, demo_catalogue: DemoCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint append cut short (a crash, a full disk) leaves a last line without its newline: it is not a
    checkpoint and is skipped, the next one starts on its own line; a damaged complete line says what to do."""
    cli.restore(ingested)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_EVERY", "1")
    image = str(demo_catalogue.queries[0].path)
    cli("attribute", image, "--embedder", EMBEDDER)
    witness = cli.data_dir / "witness.jsonl"
    with witness.open("a") as handle:
        handle.write('{"db_identity": "x", "form')
    assert "checkpoint seq 1" in cli("audit", "verify").stdout
    cli("attribute", image, "--embedder", EMBEDDER)
    lines = witness.read_text().splitlines()
    assert json.loads(lines[-1])["seq"] == 2 and "checkpoint seq 2" in cli("audit", "verify").stdout
    witness.write_text('{"damaged\n' + "\n".join(lines) + "\n")
    refused = cli("audit", "verify", code=1)
    assert "line 1 is not a checkpoint" in refused.stderr and "restore" in refused.stderr


def test_a_witness_file_setting_that_names_a_folder_says_which_setting_to_fix(
    logged: tuple[Cli, Engine, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATTRIBUTION_AUDIT_WITNESS_FILE pointed at a folder: verify and checkpoint say to fix that variable (the user
    passed no path on the command line), and nothing is signed."""
    cli, _, _ = logged
    folder = tmp_path / "witnesses"
    folder.mkdir()
    monkeypatch.setenv("ATTRIBUTION_AUDIT_WITNESS_FILE", str(folder))
    for command in (("audit", "verify"), ("audit", "checkpoint")):
        assert cli(*command, code=1).stderr == (
            f"error: {folder}: the witness file is not a regular file; set ATTRIBUTION_AUDIT_WITNESS_FILE to a "
            "file's path (default: <data dir>/witness.jsonl)\n"
        )
    assert list(folder.iterdir()) == []


def test_a_fifo_as_checkpoint_or_export_file_is_refused_not_waited_on(
    logged: tuple[Cli, Engine, Path], tmp_path: Path
) -> None:
    cli, _, _ = logged
    fifo = tmp_path / "checkpoint.fifo"
    os.mkfifo(fifo)
    outcome: list[Result] = []
    worker = threading.Thread(
        target=lambda: outcome.extend(
            [
                cli("audit", "verify", "--checkpoint", str(fifo), code=1),
                cli("audit", "verify", "--file", str(fifo), code=1),
            ]
        ),
        daemon=True,
    )
    worker.start()
    worker.join(60)
    assert outcome, "audit verify waited on a FIFO"
    for result in outcome:
        assert (
            result.stderr
            == f"error: {fifo}: is not a regular file (a pipe, socket or device); pass the path of a file\n"
        )


def test_a_witness_file_that_is_a_pipe_is_refused_not_taken_for_an_empty_one(logged: tuple[Cli, Engine, Path]) -> None:
    """A pipe where the witness file was: not "no checkpoint yet" (verify passing, and a checkpoint signed into the pipe
    and lost), but the path named, and nothing signed."""
    cli, _, _ = logged
    witness = cli.data_dir / "witness.jsonl"
    witness.unlink()
    os.mkfifo(witness)
    refused = (
        f"error: {witness}: the witness file is not a regular file; set ATTRIBUTION_AUDIT_WITNESS_FILE to a file's "
        "path (default: <data dir>/witness.jsonl)\n"
    )
    assert cli("audit", "verify", code=1).stderr == refused
    assert cli("audit", "checkpoint", code=1).stderr == refused


def test_an_auditor_with_the_public_key_alone_verifies_checkpoints(
    logged: tuple[Cli, Engine, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator hands out `audit public-key`; an auditor without the private key checks an export (or the DB)
    against a checkpoint with it, and a checkpoint validly signed by another key fails."""
    cli, _, out = logged
    pem = cli("audit", "public-key").stdout
    assert pem.startswith("-----BEGIN PUBLIC KEY-----\n") and "PRIVATE" not in pem
    public = tmp_path / "public.pem"
    public.write_text(pem)
    exported = tmp_path / "export.jsonl"
    cli("audit", "export", str(exported))
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_KEY", str(tmp_path / "auditor" / "no-key.pem"))
    given = ["--checkpoint", str(out), "--public-key", str(public)]
    assert "holds" in cli("audit", "verify", "--file", str(exported), *given).stdout
    assert "holds" in cli("audit", "verify", *given).stdout
    assert "not checked" not in cli("audit", "verify", *given).stdout
    assert not (tmp_path / "auditor").exists()  # no key was created on the auditor's side

    forger, _ = signing_key(tmp_path / "forger.pem")
    real = statement.parse(json.loads(out.read_text()))
    forged = tmp_path / "forged.json"
    forged.write_text(statement.sign(forger, real.db_identity, real.seq, real.head_hash, datetime.now(UTC)).line())
    against = ["--checkpoint", str(forged), "--public-key", str(public)]
    failed = cli("audit", "verify", "--file", str(exported), *against, code=1)
    assert f"not by the public key in {public}" in failed.stderr
    assert f"not by the public key in {public}" in cli("audit", "verify", *against, code=1).stderr
    # without a key here or given, a forged signature that verifies passes: the line says its signer went unchecked
    unchecked = cli("audit", "verify", "--checkpoint", str(forged)).stdout
    assert "holds (signer not checked: no checkpoint key here; pass --public-key)" in unchecked

    wrong = cli("audit", "verify", "--checkpoint", str(out), "--public-key", str(out), code=1)
    assert wrong.stderr == (
        f"error: {out}: not an Ed25519 public key in PEM; ask for the file `attribution-audit audit public-key` "
        "prints\n"
    )
    os.mkfifo(pipe := tmp_path / "pipe.pem")  # read without waiting for a writer
    waits = cli("audit", "verify", "--checkpoint", str(out), "--public-key", str(pipe), code=1)
    assert waits.stderr.startswith(f"error: {pipe}: not an Ed25519 public key in PEM")
    assert "no checkpoint key here" in cli("audit", "public-key", code=1).stderr


# -- refusals for the signing key: each one line that names the key and what to do --------------------------------
ELSEWHERE = "or set ATTRIBUTION_AUDIT_CHECKPOINT_KEY to the path of the key that signed your checkpoints"
NOT_A_KEY = "not a checkpoint key (an unencrypted Ed25519 private key in PEM); restore the key from your copy"


def _public_half(path: Path) -> None:
    """The public key's PEM where the private key should be (what `audit public-key` prints)."""
    key, _ = signing_key(path.parent / "real.pem")
    path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))


BAD_KEYS: dict[str, tuple[Callable[[Path], object], str]] = {
    "unreadable": (Path.mkdir, "cannot read the checkpoint key (Is a directory); make it a file this user may read"),
    "missing": (
        lambda path: path.symlink_to(path.parent / "gone.pem"),
        "the checkpoint key is missing (a link to a file that is gone?); restore the key from your copy",
    ),
    "invalid": (lambda path: path.write_text("not a key\n"), NOT_A_KEY),
    "public half": (_public_half, NOT_A_KEY),
    "a pipe": (os.mkfifo, NOT_A_KEY),  # (read without waiting for a writer)
    "a device": (lambda path: path.symlink_to("/dev/zero"), NOT_A_KEY),  # (read without end, out of memory)
}


@pytest.mark.parametrize("kind", list(BAD_KEYS))
def test_a_checkpoint_refused_for_its_key_names_the_key_and_the_remedy(
    cli: Cli, checkpoint_key: Path, kind: str
) -> None:
    make, problem = BAD_KEYS[kind]
    _records(cli.engine(), 2)
    checkpoint_key.parent.mkdir(parents=True)
    make(checkpoint_key)
    refused = cli("audit", "checkpoint", code=1).stderr
    assert refused == f"error: {checkpoint_key}: {problem}, {ELSEWHERE}\n"
    assert not (cli.data_dir / "witness.jsonl").exists()  # nothing was signed


def test_a_checkpoint_is_refused_without_the_key_that_signed_the_witness(
    cli: Cli, checkpoint_key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new key (the old one lost, or ATTRIBUTION_AUDIT_CHECKPOINT_KEY pointing elsewhere) would sign checkpoints
    that the witnessed ones cannot vouch for; the one of another installation is named as the remedy."""
    _records(cli.engine(), 2)
    cli("audit", "checkpoint")
    witness = cli.data_dir / "witness.jsonl"
    signed = witness.read_text()
    fingerprint = statement.parse(json.loads(signed)).key_fingerprint
    elsewhere = tmp_path / "elsewhere" / "key.pem"
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_KEY", str(elsewhere))
    missing = cli("audit", "checkpoint", code=1).stderr
    assert missing == (
        f"error: {elsewhere}: no checkpoint key here, but the witness file {witness} holds checkpoints signed by key "
        f"{fingerprint}; restore that key here, {ELSEWHERE} (if it is lost, set ATTRIBUTION_AUDIT_WITNESS_FILE to a "
        "new file); nothing was signed\n"
    )
    assert not elsewhere.exists() and witness.read_text() == signed
    signing_key(elsewhere)  # another installation's key
    another = cli("audit", "checkpoint", code=1).stderr
    assert another.count("\n") == 1 and f"it is signed by key {fingerprint}, not by this installation's" in another
    assert another.endswith("nothing was signed: point ATTRIBUTION_AUDIT_CHECKPOINT_KEY at the key that signed it\n")
    monkeypatch.setenv("ATTRIBUTION_AUDIT_CHECKPOINT_KEY", str(checkpoint_key))
    witness.write_text(json.dumps({**json.loads(signed), "seq": 1}) + "\n")  # the witness itself altered
    altered = cli("audit", "checkpoint", code=1).stderr
    assert altered.count("\n") == 1 and "its signature does not verify" in altered
    assert altered.endswith(
        "nothing was signed: restore the witness file from your copy, or set ATTRIBUTION_AUDIT_WITNESS_FILE to that "
        "copy\n"
    )
