"""Checkpoints of the audit chain: sign the head with a key kept outside the audit DB, append it to a witness file,
check a database or an export against checkpoints, and refuse an unannounced new audit DB beside old evidence.

The signing key (Ed25519, PEM, mode 0600) is created on first use at ``Settings.resolved_checkpoint_key`` (by
default in the user's config dir); the witness file (JSON lines, one checkpoint each) at
``Settings.resolved_witness_file`` (by default ``<data dir>/witness.jsonl``). Keep copies of both elsewhere: a
checkpoint proves what the log held only to someone who trusts its key and still has the checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from attribution_audit.config import Settings
from attribution_audit.domain import checkpoint as statement
from attribution_audit.domain.chain import ChainReport
from attribution_audit.domain.checkpoint import Checkpoint
from attribution_audit.domain.results import Attribution
from attribution_audit.errors import (
    AttributionAuditError,
    ConflictError,
    DatabaseError,
    PermissionDeniedError,
    SchemaCheckError,
    UnreadableValueError,
)
from attribution_audit.reporting import export, output_file
from attribution_audit.services.audit_log import verify_chain
from attribution_audit.sources.files import irregular_file_problem
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.evaluations import OffParameters

NEW_LOG_FLAG = "--new-audit-log"
SCHEMA_REMEDY = (
    "have the schema owner run `attribution-audit db repair` (it re-creates them as the migrations do), or restore "
    "the audit DB from a backup, then run `attribution-audit audit verify` again"
)


@dataclass(frozen=True)
class Signed:
    """A checkpoint just written: where its key is (and whether it was just created), the witness it was appended
    to, and the file it was also written to, if any."""

    checkpoint: Checkpoint
    key_path: Path
    key_created: bool
    witness: Path
    out: Path | None = None


@dataclass(frozen=True)
class CheckpointCheck:
    """One checkpoint compared with a log: None when the log agrees with it, else why not; ``signer_checked``: whether
    its key was compared with a trusted one (without one, a valid signature by any key passes)."""

    checkpoint: Checkpoint
    problem: str | None
    signer_checked: bool = True

    def as_json(self) -> dict[str, Any]:
        c = self.checkpoint
        stated = {"seq": c.seq, "time": c.time, "db_identity": c.db_identity, "key": c.key_fingerprint}
        return {**stated, "ok": self.problem is None, "problem": self.problem, "signer_checked": self.signer_checked}


@dataclass(frozen=True)
class Verification:
    """The verdict of ``audit verify`` on the audit DB (the CLI's, the service's and the console's): the chain's
    verification, its comparison with checkpoints, and the schema objects that the reports and the verification read
    through (``schema``: one line per view, trigger or trigger function that is not what the migrations create;
    ``schema_unchecked``: why they could not be compared), made at ``at``. ``ok`` only when the chain verifies, every
    checkpoint agrees and the schema objects are as migrated; ``not_recorded``: why the chain's outcome could not be
    remembered for ``report summary`` (a user that may only read, a read-only log, a full disk), which does not
    change the verdict."""

    at: datetime
    report: ChainReport
    checkpoints: list[CheckpointCheck] = field(default_factory=list)
    schema: list[str] = field(default_factory=list)
    schema_unchecked: str | None = None
    not_recorded: str | None = None
    models: list[str] = field(default_factory=list)  # stored confidence models that no longer match their records
    models_unchecked: str | None = None  # why they could not be compared (a reader may not read them)
    spaces: list[str] = field(default_factory=list)  # learned space versions named by records: missing or changed
    spaces_unchecked: str | None = None  # why they could not be checked (a user that may only read the views)
    models_checked: int = 0  # how many stored models that scored records were compared
    spaces_checked: int = 0  # how many learned space versions that records name were compared

    @property
    def ok(self) -> bool:
        checkpoints_agree = all(check.problem is None for check in self.checkpoints)
        return self.report.ok and checkpoints_agree and self.schema_problem is None and not self.models + self.spaces

    @property
    def schema_problem(self) -> str | None:
        """Why the views and triggers fail, in one line that says what to do; None when they are as migrated."""
        if self.schema_unchecked:
            return f"the views and triggers cannot be checked: {self.schema_unchecked}"
        if not self.schema:
            return None
        return (
            f"{'; '.join(self.schema)}: what the reports or audit verify read was changed outside the migrations; "
            f"{SCHEMA_REMEDY}"
        )

    @property
    def problem(self) -> str | None:
        """Why the log fails, in one line (the broken record, else the first contradicted checkpoint, else the schema
        objects); None if ok."""
        report = self.report
        if not report.ok:
            return f"chain broken{report.located}: {report.reason}"
        failed = next((check for check in self.checkpoints if check.problem), None)
        if failed is None:
            return self.schema_problem or ("; ".join(self.models + self.spaces) or None)
        return (
            f"the log contradicts checkpoint seq {failed.checkpoint.seq} of {failed.checkpoint.time}: {failed.problem}"
        )

    def as_json(self) -> dict[str, Any]:
        """What ``audit verify --format json`` prints."""
        report = self.report
        return {
            "ok": self.ok,
            "records": report.checked,
            "head_hash": report.head_hash,
            "broken_seq": report.broken_seq,
            "broken_request_id": report.broken_request_id,
            "reason": report.reason,
            "checkpoints": [check.as_json() for check in self.checkpoints],
            "schema": {"ok": self.schema_problem is None, "problems": self.schema, "unchecked": self.schema_unchecked},
            "not_recorded": self.not_recorded,
            "models": check_json(self.models, self.models_unchecked, self.models_checked),
            "spaces": check_json(self.spaces, self.spaces_unchecked, self.spaces_checked),
        }

    def check_lines(self) -> list[tuple[str, bool]]:
        """The lines of the models and spaces checks (:func:`check_lines`)."""
        return [
            *check_lines("models", self.models, self.models_unchecked, self.models_checked),
            *check_lines("spaces", self.spaces, self.spaces_unchecked, self.spaces_checked),
        ]


CHECKS_OK = {  # what an OK line says: when nothing was there to compare, and when ``{n}`` things were
    "models": (
        "no record was scored by a stored confidence model (nothing to compare)",
        "the {n} stored confidence model(s) that scored records match the fingerprint and the parameters their "
        "records hold",
    ),
    "spaces": (
        "no record names a learned space version (nothing to compare)",
        "the {n} learned space version(s) that records name are stored unchanged",
    ),
}


def check_json(problems: list[str], unchecked: str | None, checked: int) -> dict[str, Any]:
    """A check's verdict as JSON (``models``, ``spaces``): ``ok`` null where it could not be made (``unchecked``:
    why), else whether no ``problems``; ``checked``: how many models or versions were compared."""
    return {"ok": None if unchecked else not problems, "problems": problems, "unchecked": unchecked, "checked": checked}


def check_lines(check: str, problems: Sequence[str], unchecked: str | None, checked: int) -> list[tuple[str, bool]]:
    """How ``audit verify``, ``report summary`` and the console show a check (``models``, ``spaces``): one
    ``FAIL`` line per problem, an ``UNCHECKED`` line saying why it could not be made, else one ``OK`` line saying
    what was compared (``checked`` of them, or nothing); each with whether it reports a failure or a check not made
    (the CLI writes those to stderr)."""
    lines = [(f"{check} FAIL: {problem}", True) for problem in problems]
    if unchecked:
        return [*lines, (f"{check} UNCHECKED: {unchecked}", True)]
    none, some = CHECKS_OK[check]
    return lines or [(f"{check} OK: {some.format(n=checked) if checked else none}", False)]


# -- files -------------------------------------------------------------------------------------------------------
_ELSEWHERE = "or set ATTRIBUTION_AUDIT_CHECKPOINT_KEY to the path of the key that signed your checkpoints"
_KEY_BYTES = 1 << 16  # far more than a PEM key holds


def _key_bytes(path: Path) -> bytes:
    """The start of a key file, never waiting on a pipe nor reading a device without end (then not a key)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(descriptor, _KEY_BYTES)
    finally:
        os.close(descriptor)


def _load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(_key_bytes(path), password=None)
    except FileNotFoundError:  # a link to nothing (or removed meanwhile)
        raise AttributionAuditError(
            f"{path}: the checkpoint key is missing (a link to a file that is gone?); restore the key from your copy, "
            f"{_ELSEWHERE}"
        ) from None
    except OSError as exc:
        raise AttributionAuditError(
            f"{path}: cannot read the checkpoint key ({exc.strerror}); make it a file this user may read, {_ELSEWHERE}"
        ) from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise AttributionAuditError(
            f"{path}: not a checkpoint key (an unencrypted Ed25519 private key in PEM); restore the key from your "
            f"copy, {_ELSEWHERE}"
        )
    return key


def signing_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key at ``path``, created (mode 0600, never overwritten) when absent; whether it was just created."""
    if path.exists():
        return _load_key(path), False
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
    except FileExistsError:  # another process created it first: use that one
        return _load_key(path), False
    except OSError as exc:
        raise AttributionAuditError(
            f"{path}: cannot create the checkpoint key ({exc.strerror}); set ATTRIBUTION_AUDIT_CHECKPOINT_KEY to a "
            "writable path outside the data dir"
        ) from None
    return key, True


@dataclass(frozen=True)
class TrustedKey:
    """The public key (hex) that checkpoints must be signed with, and what it is, for messages."""

    hex: str
    source: str


def trusted_key(settings: Settings, public_key: Path | None = None) -> TrustedKey | None:
    """The public key of ``public_key`` (a PEM file, as ``audit public-key`` prints it: an auditor without the
    private key), else of the configured signing key; None when neither is given nor present."""
    if public_key is not None:
        return TrustedKey(_read_public_key(public_key), f"the public key in {public_key}")
    path = settings.resolved_checkpoint_key
    if not path.exists():
        return None
    return TrustedKey(statement.public_key_hex(_load_key(path).public_key()), "this installation's checkpoint key")


def _read_public_key(path: Path) -> str:
    try:
        key = load_pem_public_key(_key_bytes(path))
    except OSError as exc:
        raise AttributionAuditError(f"{path}: cannot read the public key ({exc.strerror})") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise AttributionAuditError(
            f"{path}: not an Ed25519 public key in PEM; ask for the file `attribution-audit audit public-key` prints"
        )
    return statement.public_key_hex(key)


def public_key_pem(settings: Settings) -> str:
    """The PEM of the configured signing key's public key, to hand to auditors (who check with ``--public-key``)."""
    path = settings.resolved_checkpoint_key
    if not path.exists():
        raise AttributionAuditError(
            f"{path}: no checkpoint key here; sign one with `attribution-audit audit checkpoint` first, or set "
            "ATTRIBUTION_AUDIT_CHECKPOINT_KEY to the key's path"
        )
    return _load_key(path).public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Every checkpoint of a file (one written by ``audit checkpoint --out`` or a witness file). A last line without
    its newline is an append cut short (a crash, a full disk): never a whole checkpoint, it is skipped."""
    irregular = irregular_file_problem(path)
    if irregular:
        raise AttributionAuditError(f"{path}: {irregular}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise AttributionAuditError(f"{path}: cannot read the checkpoints ({reason})") from None
    lines = text.splitlines()
    torn = len(lines) if lines and not text.endswith("\n") else None
    checkpoints = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            checkpoints.append(statement.parse(json.loads(line)))
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError; RecursionError: nesting
            if number == torn:
                continue
            what = "" if checkpoints else " (give a file from `audit checkpoint --out` or a witness file)"
            raise AttributionAuditError(
                f"{path}: line {number} is not a checkpoint ({exc}){what}; restore the file from your copy of it"
            ) from None
    if not checkpoints:
        raise AttributionAuditError(f"{path}: holds no checkpoint; write one with `attribution-audit audit checkpoint`")
    return checkpoints


_UNREADABLE_TIME = datetime.max.replace(tzinfo=UTC)


def _witness_file(settings: Settings) -> Path | None:
    """The witness file, None when there is none (no file, or an empty one: a pipe or a directory there is refused,
    not taken for an empty file)."""
    path = settings.resolved_witness_file
    if irregular_file_problem(path):  # a path the user set: say which setting names it
        raise AttributionAuditError(
            f"{path}: the witness file is not a regular file; set ATTRIBUTION_AUDIT_WITNESS_FILE to a file's path "
            "(default: <data dir>/witness.jsonl)"
        )
    return path if path.exists() and path.stat().st_size else None


def _newest(checkpoints: Sequence[Checkpoint]) -> Checkpoint | None:
    """The newest checkpoint: of the audit DB that the last one signed (by its time) names, the one of the highest
    seq. Not merely the last line: an older checkpoint appended again (what an append-only witness still allows)
    would let the records signed since be cut unseen; nor merely the latest time: one signed while the clock ran
    ahead would stand for the log until real time passed it. A time that cannot be read counts as the latest, so
    that its failing signature is what is reported; ties: the later line."""
    latest = max(reversed(checkpoints), key=lambda c: c.signed_at or _UNREADABLE_TIME, default=None)
    if latest is None or latest.signed_at is None:
        return latest
    same_log = [c for c in checkpoints if c.db_identity == latest.db_identity]
    return max(reversed(same_log), key=lambda c: (c.seq, c.signed_at or _UNREADABLE_TIME))


def last_witnessed(settings: Settings) -> Checkpoint | None:
    """The newest checkpoint (:func:`_newest`) of the whole witness file, each line checked; None when there is none.
    Remembered in this process while the witness file stays the same file with the same size and modification and
    change times (the change time cannot be set back): each attribution does not parse it again, and any append or
    edit is read in full (only a part, the file's end, would let old checkpoints appended again push the newest out
    of view)."""
    path = _witness_file(settings)
    if path is None:
        return None
    facts = path.stat()
    state = (facts.st_dev, facts.st_ino, facts.st_size, facts.st_mtime_ns, facts.st_ctime_ns)
    remembered = _NEWEST_SEEN.get(path)
    if remembered is not None and remembered[0] == state:
        return remembered[1]
    newest = _newest(read_checkpoints(path))
    _NEWEST_SEEN[path] = (state, newest)
    return newest


_NEWEST_SEEN: dict[Path, tuple[tuple[int, ...], Checkpoint | None]] = {}


def _append(path: Path, checkpoint: Checkpoint) -> None:
    """One line appended in one write (O_APPEND: concurrent writers do not interleave lines) and synced, after
    removing what an append cut short (a crash, a full disk) left of its line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                os.ftruncate(descriptor, path.read_bytes().rfind(b"\n") + 1)
            os.write(descriptor, (checkpoint.line() + "\n").encode())
            os.fsync(descriptor)  # on disk before the checkpoint is reported as signed
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise AttributionAuditError(
            f"{path}: cannot append the checkpoint ({exc.strerror}); set ATTRIBUTION_AUDIT_WITNESS_FILE to a "
            "writable path"
        ) from None


# -- writing -----------------------------------------------------------------------------------------------------
def _sign(
    settings: Settings,
    audit: AuditStore,
    seq: int,
    head_hash: str,
    last: Checkpoint | None,
    out: Path | None = None,
    overwrite: bool = False,
) -> Signed:
    """Sign ``seq`` / ``head_hash`` and append it to the witness file, whose last checkpoint (as read by the caller)
    is ``last``; then write it to ``out`` too, if given (replacing a file there only if ``overwrite``)."""
    identity = audit.checkpoints.identity()
    if identity is None:
        raise ConflictError(
            f"the audit DB {audit.url} has no identity (its audit_identity row is gone: a wiped DB?); "
            "nothing was signed"
        )
    key_path = settings.resolved_checkpoint_key
    _refuse_keyless(settings, last, "nothing was signed")
    key, created = signing_key(key_path)
    signed = statement.sign(key, identity, seq, head_hash, datetime.now(UTC))
    _append(settings.resolved_witness_file, signed)
    if out is not None:  # (refused before anything was signed where it exists and may not be replaced)
        _write_out(settings, signed, out, overwrite)
    return Signed(signed, key_path, created, settings.resolved_witness_file, out)


def _refuse_keyless(settings: Settings, last: Checkpoint | None, outcome: str) -> None:
    """Refuse when the witness file holds checkpoints (``last`` is its newest) but no key is here: a new key would
    sign checkpoints that the earlier ones cannot vouch for."""
    key_path = settings.resolved_checkpoint_key
    if last is not None and not key_path.exists():
        raise ConflictError(
            f"{key_path}: no checkpoint key here, but the witness file {settings.resolved_witness_file} holds "
            f"checkpoints signed by key {last.key_fingerprint}; restore that key here, {_ELSEWHERE} (if it is lost, "
            f"set ATTRIBUTION_AUDIT_WITNESS_FILE to a new file); {outcome}"
        )


def refuse_unsignable(settings: Settings, audit: AuditStore, records: int) -> None:
    """Before appending up to ``records`` records: refuse when an automatic checkpoint falls due among them and could
    not be signed (:func:`_refuse_keyless`), instead of failing after appending the records before it."""
    every, minutes = settings.checkpoint_every, settings.checkpoint_minutes
    head, last = audit.checkpoints.head()[0], last_witnessed(settings)
    if (every > 0 and (head + records) // every > head // every) or (minutes > 0 and _older_than(last, minutes)):
        _refuse_keyless(settings, last, "nothing was attributed")


def _write_out(settings: Settings, signed: Checkpoint, out: Path, overwrite: bool) -> None:
    """Write the checkpoint ``signed`` to ``out`` whole (a scratch file beside it, renamed: a crash leaves no half
    of one), over an existing file only if ``overwrite``."""
    try:
        with output_file.writing(out, overwrite) as handle:
            handle.write((signed.line() + "\n").encode())
    except FileExistsError:
        raise AttributionAuditError(
            f"{out}: was written meanwhile; pass --force to overwrite it, or choose another name; the checkpoint is "
            f"in the witness file {settings.resolved_witness_file}"
        ) from None
    except OSError as exc:
        raise AttributionAuditError(
            f"{out}: cannot write the checkpoint ({exc.strerror}); it is in the witness file "
            f"{settings.resolved_witness_file}"
        ) from None


def write_checkpoint(settings: Settings, audit: AuditStore, out: Path | None = None, overwrite: bool = False) -> Signed:
    """Verify the whole chain and the last witnessed checkpoint, then sign the head (refused when either fails:
    a checkpoint never vouches for a broken log) and write it to ``out`` too, if given. An existing ``out`` is
    refused unless ``overwrite``, before anything is verified, signed or appended (a refused call changes nothing)."""
    if out is not None:
        output_file.refuse_as_output(out, overwrite, "the checkpoint")
    report = audit.requests.verify_chain()
    if not report.ok:
        raise ConflictError(
            f"the audit chain is broken at seq {report.broken_seq} ({report.reason}); nothing was signed: "
            "run `attribution-audit audit verify`"
        )
    last = last_witnessed(settings)
    _refuse_contradicted(settings, audit, last, "nothing was signed")
    return _sign(settings, audit, report.checked, report.head_hash, last, out, overwrite)


def auto_checkpoint(settings: Settings, audit: AuditStore, attribution: Attribution) -> Signed | None:
    """Every ``checkpoint_every`` records, and at the first record once the witness file's last checkpoint is older
    than ``checkpoint_minutes`` (or there is none), sign the head that this writer has just appended (no
    re-verification: earlier checkpoints vouch for what came before, once the DB still agrees with the last one:
    records cut and appended again while the writer ran are never signed)."""
    every, minutes = settings.checkpoint_every, settings.checkpoint_minutes
    due = every > 0 and attribution.seq % every == 0
    if not due and minutes <= 0:  # (the witness file is not read)
        return None
    last = last_witnessed(settings)
    if not due and not _older_than(last, minutes):
        return None
    _refuse_contradicted(settings, audit, last, "nothing was signed")
    return _sign(settings, audit, attribution.seq, attribution.record_hash, last)


def _older_than(last: Checkpoint | None, minutes: int) -> bool:
    """Whether the witness file's last checkpoint, ``last``, was signed more than ``minutes`` ago (True when there is
    none)."""
    if last is None or last.signed_at is None:
        return True
    return datetime.now(UTC) - last.signed_at > timedelta(minutes=minutes)


# -- checking ----------------------------------------------------------------------------------------------------
def _key_problem(trusted: TrustedKey | None, checkpoint: Checkpoint) -> str | None:
    if not checkpoint.signature_ok():
        return "its signature does not verify (the statement was altered)"
    if trusted is not None and checkpoint.public_key != trusted.hex:
        return (
            f"it is signed by key {checkpoint.key_fingerprint}, not by {trusted.source} "
            f"{statement.key_fingerprint(trusted.hex)}"
        )
    return None


def _contradiction(audit: AuditStore, checkpoint: Checkpoint, trusted: TrustedKey | None) -> str | None:
    """Why the audit DB contradicts a checkpoint (its key, the DB's identity, the checkpointed record's stored hash);
    None when it agrees. The chain itself is not verified here."""
    held = audit.checkpoints.hash_at(checkpoint.seq) if checkpoint.seq else None
    return _key_problem(trusted, checkpoint) or statement.compare_head(
        checkpoint,
        audit.checkpoints.identity(),
        held,
        checkpoint.seq if held is not None else audit.checkpoints.length(),
    )


def _refuse_contradicted(settings: Settings, audit: AuditStore, last: Checkpoint | None, outcome: str) -> None:
    """Refuse to append to or sign a log that contradicts the witness file's last checkpoint, ``last`` (records cut
    from its tail, or rewritten): appending would reuse the checkpointed seqs and the next checkpoint would vouch for
    the rewrite."""
    if last is None:
        return
    trusted = trusted_key(settings)
    problem = _contradiction(audit, last, trusted)
    if problem:
        if not last.signature_ok():  # the witness file was altered, not the log
            remedy = "restore the witness file from your copy, or set ATTRIBUTION_AUDIT_WITNESS_FILE to that copy"
        elif trusted is not None and last.public_key != trusted.hex:  # the log may be intact: another key is here
            remedy = "point ATTRIBUTION_AUDIT_CHECKPOINT_KEY at the key that signed it"
        else:
            remedy = "restore the audit DB from a backup, then run `attribution-audit audit verify`"
        raise ConflictError(
            f"the audit log {audit.url} contradicts the last checkpoint in {settings.resolved_witness_file}: "
            f"{problem}; {outcome}: {remedy}"
        )


def _check_db(
    audit: AuditStore, checkpoint: Checkpoint, report: ChainReport, trusted: TrustedKey | None
) -> CheckpointCheck:
    problem = _contradiction(audit, checkpoint, trusted)
    if problem is None and not report.ok and report.broken_seq is not None and report.broken_seq <= checkpoint.seq:
        problem = f"checkpointed record seq {report.broken_seq} no longer verifies ({report.reason})"
    return CheckpointCheck(checkpoint, problem, trusted is not None)


def check_database(
    audit: AuditStore, checkpoints: Sequence[Checkpoint], report: ChainReport, trusted: TrustedKey | None
) -> list[CheckpointCheck]:
    """Each checkpoint compared with the audit DB whose chain verification is ``report``."""
    return [_check_db(audit, checkpoint, report, trusted) for checkpoint in checkpoints]


def check_export(path: Path, checkpoints: Sequence[Checkpoint], trusted: TrustedKey | None) -> list[CheckpointCheck]:
    """Each checkpoint compared with an export file (which must hold the checkpointed record)."""
    identity = export.export_identity(path)
    checks = []
    for checkpoint in checkpoints:
        problem = _key_problem(trusted, checkpoint)
        if problem is None and checkpoint.seq:
            held = export.record_hash_at(path, checkpoint.seq)
            if held is None:
                problem = (
                    f"the export holds no record seq {checkpoint.seq} (checkpointed records missing; export a period "
                    "that includes it)"
                )
            else:
                problem = statement.compare_head(checkpoint, identity, held, checkpoint.seq)
        elif problem is None:
            problem = statement.compare_head(checkpoint, identity, None, 0)
        checks.append(CheckpointCheck(checkpoint, problem, trusted is not None))
    return checks


# -- a new audit DB beside old evidence ----------------------------------------------------------------------------
def _has_shard(settings: Settings) -> bool:
    folder = settings.qdrant_path
    return folder.is_dir() and any(folder.iterdir())


def refuse_silent_new_database(settings: Settings, database: str) -> None:
    """Before creating an audit DB's schema (the embedded file, or an empty server database): refuse when the data
    dir already holds a vector shard or a witness file (the log they belong to was deleted, moved or replaced),
    unless the operator said the log is new."""
    if settings.new_audit_log:
        return
    evidence = [
        str(path)
        for path, present in (
            (settings.qdrant_path, _has_shard(settings)),
            (settings.resolved_witness_file, settings.resolved_witness_file.exists()),
        )
        if present
    ]
    if evidence:
        raise ConflictError(
            f"no audit log in {database} but {' and '.join(evidence)} exist: the log they belong to was deleted, "
            f"moved or replaced; restore it, or pass {NEW_LOG_FLAG} to start a new log on purpose"
        )


def guard_witness(settings: Settings, audit: AuditStore) -> Signed | None:
    """Before appending: refuse when this DB contradicts the witness file's last checkpoint (records cut or
    rewritten), or when that checkpoint names another audit DB (this one was replaced or recreated) unless the
    operator said the log is new; then checkpoint this DB's head at once, so that the witness records the switch and
    later commands need no flag."""
    last = last_witnessed(settings)
    identity = audit.checkpoints.identity()
    if last is None:
        return None
    if last.db_identity == identity:
        _refuse_contradicted(settings, audit, last, "nothing was attributed")
        return None
    if not settings.new_audit_log:
        raise ConflictError(
            f"the witness file {settings.resolved_witness_file} last checkpointed audit DB {last.db_identity} at "
            f"seq {last.seq}, but {audit.url} is {identity or 'without identity'} (replaced or recreated?); "
            f"restore the checkpointed DB, or pass {NEW_LOG_FLAG} to start a new log on purpose"
        )
    return _sign(settings, audit, *audit.checkpoints.head(), last)


# -- the use cases of `audit verify` -------------------------------------------------------------------------------
def verify_database(
    settings: Settings,
    audit: AuditStore,
    checkpoint_file: Path | None = None,
    public_key: Path | None = None,
    workers: int = 1,
) -> Verification:
    """The chain's verification (by ``workers`` processes); the comparison with the checkpoints of ``checkpoint_file``
    (by default: the witness file's last checkpoint, when there is a witness file), which must be signed by the key
    of ``public_key`` (by default: the configured signing key, when present); and the views' and triggers'
    comparison with the migrations. The chain's outcome is remembered for ``report summary`` (where this user may
    write, the log is not open read-only and its disk has room)."""
    trusted = trusted_key(settings, public_key)
    report, not_recorded = verify_chain(audit, workers)
    if checkpoint_file is not None:
        checkpoints = read_checkpoints(checkpoint_file)
    else:
        checkpoints = [c for c in [last_witnessed(settings)] if c is not None]
    checks = check_database(audit, checkpoints, report, trusted)
    try:
        schema, unchecked = audit.schema_differences(), None
    except SchemaCheckError as exc:
        schema, unchecked = [], str(exc)
    models, models_unchecked, models_checked = model_problems(audit)
    spaces, spaces_unchecked, spaces_checked = space_problems(audit)
    return Verification(
        datetime.now(UTC),
        report,
        checks,
        schema,
        unchecked,
        not_recorded,
        models=models,
        models_unchecked=models_unchecked,
        spaces=spaces,
        spaces_unchecked=spaces_unchecked,
        models_checked=models_checked,
        spaces_checked=spaces_checked,
    )


def model_problems(audit: AuditStore) -> tuple[list[str], str | None, int]:
    """(one line per stored confidence model whose row no longer matches the fingerprint that the records it scored
    hold (revision 0019): changed by hand since, so their confidence can no longer be reproduced from it; why they
    could not be compared, or None; how many models were compared). A user that may not read the stored models (a
    reader role) gets why where records name some, never an empty list that would read as checked; the chain's
    hashes still cover the fingerprints."""
    try:
        held = audit.requests.model_fingerprints()
    except UnreadableValueError as exc:
        return [], _not_read("the fingerprints the records hold", exc), 0
    except DatabaseError as exc:
        return [], f"the fingerprints the records hold cannot be read ({exc})", 0
    problems = []
    for name, digest, records in held:
        try:
            now = audit.evaluations.calibration(name).fingerprint()
        except PermissionDeniedError:
            models = len({model for model, _, _ in held})
            return (
                [],
                "this database user may not read the stored confidence models (table calibration_models; a `db "
                f"grant-reader` role reads only the audit views), so {models} model(s) that "
                "records name were not compared with the fingerprints they hold; the schema owner or a `db "
                "grant-writer` role can run `attribution-audit audit verify` to check them",
                0,
            )
        except AttributionAuditError as exc:
            now = f"unreadable ({exc})"
        if now != digest:
            now = now[:12] if len(now) == 64 else now
            problems.append(
                f"confidence model {name} no longer matches the fingerprint {digest[:12]} that {records} record(s) "
                f"it scored hold (now {now}): its calibration_models row was changed after them; restore it from "
                "a backup"
            )
    checked = len({name for name, _, _ in held})
    try:
        off = audit.evaluations.off_parameters() if held else []
    except UnreadableValueError as exc:
        return problems, _not_read("the parameters the records were attributed at", exc), checked
    except DatabaseError as exc:  # a user that may not read the records or the learned space versions it reads
        return (
            problems,
            f"the parameters the stored models score cannot be compared with their records' ({exc})",
            checked,
        )
    return problems + [_off_parameters_line(entry) for entry in off], None, checked


def _not_read(what: str, exc: UnreadableValueError) -> str:
    """Why a check could not read ``what`` from the records: a value changed outside attribution-audit (the chain,
    which covers every value these checks read, is then BROKEN at the first such record)."""
    return (
        f"{what} cannot be read ({exc.problem}): a record was changed outside attribution-audit (the chain's verdict "
        "names the first); restore it from a backup"
    )


def _off_parameters_line(off: OffParameters) -> str:
    """A models line for records a stored model scored at other parameters than its row now says it scores."""
    first = f"(the first: seq {off.first_seq}, request {off.first_request})"
    if off.stored is None:
        return (
            f"confidence model {off.model} scored {off.records} record(s) {first} but its parameters cannot be read: "
            f"{off.problem}"
        )
    return (
        f"confidence model {off.model} now scores {_shown(off.stored)}, but {off.records} record(s) it scored {first} "
        f"were attributed at {_shown(off.recorded)}: its calibration_models row's parameters were changed after "
        "them; restore it from a backup"
    )


def _shown(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{key} {'none' if value is None else value}" for key, value in parameters.items())


def space_problems(audit: AuditStore) -> tuple[list[str], str | None, int]:
    """One line per learned space version that records name (revision 0018 and a learned-space request's
    ``space_version``) but that is missing, or whose row no longer matches its stored fingerprint: their replays
    would use another projection, or none; why they could not be checked (a user that may only read the views,
    where records name versions), else None; how many versions were compared."""
    try:
        named = audit.requests.space_versions_named()
        unmatched = audit.spaces.unmatched(named)
    except PermissionDeniedError:
        return (
            [],
            "the learned space versions the records name are not checked: this database user may only read the "
            "audit views; a writer's `audit verify` checks them",
            0,
        )
    except UnreadableValueError as exc:
        return [], _not_read("the learned space versions the records name", exc), 0
    return (
        [
            f"learned space {name} version {version}, named by {named[name, version]} record(s), is "
            + ("missing" if state == "missing" else "changed (its row no longer matches its fingerprint)")
            + ": it was deleted or rewritten after them; restore it from a backup"
            for (name, version), state in unmatched.items()
        ],
        None,
        len(named),
    )


def verify_export(
    settings: Settings, path: Path, checkpoint_file: Path | None, public_key: Path | None = None
) -> tuple[export.ExportReport, list[CheckpointCheck]]:
    """An export's own verification, and its comparison with the checkpoints of ``checkpoint_file`` (signed by the
    key of ``public_key``, by default the configured signing key, when present)."""
    trusted = trusted_key(settings, public_key)
    report = export.verify_export(path)
    if checkpoint_file is None or not report.ok:
        return report, []
    return report, check_export(path, read_checkpoints(checkpoint_file), trusted)
