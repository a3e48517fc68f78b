"""Settings: CLI options > environment variables (ATTRIBUTION_AUDIT_*) > what the data dir recorded > defaults.

A data dir remembers, at its first ingest, which embedder built it and which spaces its collection holds
(``<data dir>/attribution-audit.json``); later commands on it use that embedder unless told otherwise.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attribution_audit.errors import AttributionAuditError, OptionError

ENV_PREFIX = "ATTRIBUTION_AUDIT_"
DEFAULT_DATA_DIR = Path(".attribution-audit")
DEFAULT_EMBEDDER = "clip"
RECORD_FILE = "attribution-audit.json"
WITNESS_FILE = "witness.jsonl"
DEFAULT_CHECKPOINT_EVERY = 100
DEFAULT_MIN_FREE_MB = 256  # the embedded shard is not opened with less free space (its files are memory-mapped)
DEFAULT_COPY_DEPTH = 40  # copy detection: candidate works drawn from each base space
# copy detection: candidate works drawn from the layout vectors (embedding.layout), besides; a blurred, tinted or
# JPEG-compressed copy's source was the first of them on every benchmark build, 10 leaves room for look-alike pages
COPY_LAYOUT_DEPTH = 10
# ... of those, the works whose layout correlates with the query's this much or more: the edits the layout serves keep
# it at 0.96 and above (benchmark builds 7, 16, 23: every blurred, tinted and JPEG copy against its source), while
# works of unrelated layout, which no such edit could have made, are not compared
COPY_LAYOUT_FLOOR = 0.9
# `serve`: decoded pixels in flight (Pillow keeps an RGB pixel in 4 bytes: 256 Mpx is ~1 GiB), and in one request (two
# images at the 64 Mpx decompression-bomb limit).
DEFAULT_MAX_INFLIGHT_PIXELS = 256_000_000
DEFAULT_MAX_REQUEST_PIXELS = 128_000_000
# Characters of a requester: the width of the audit log's requester columns (store/models.py), so changing it
# changes the schema and needs a migration.
MAX_REQUESTER = 200


def default_checkpoint_key() -> Path:
    """Where the checkpoint signing key lives unless configured: the user's config dir, away from any data dir."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "attribution-audit" / "checkpoint-ed25519.pem"


MAX_CHECKPOINT_MINUTES = 100 * 365 * 24 * 60  # a century: more is never, and overflows a time span


def _count(name: str, default: int, meaning: str, most: int | None = None, least: int = 0) -> int:
    """The whole number >= ``least`` (and <= ``most``) in environment variable ``ENV_PREFIX + name`` (``default``
    when unset)."""
    raw = os.environ.get(f"{ENV_PREFIX}{name}")
    try:
        value = default if raw in (None, "") else int(str(raw))
        if value < least or (most is not None and value > most):
            raise ValueError
    except ValueError:
        bounds = f" from {least} to {most:,}" if most is not None else f" of at least {least}" if least else ""
        raise AttributionAuditError(
            f"{ENV_PREFIX}{name}={raw!r} is not a whole number{bounds}; set {meaning}"
        ) from None
    return value


@dataclass(frozen=True)
class DataDirRecord:
    """What a data dir remembers: the default embedder, and each ingested embedder's spaces."""

    embedder: str
    collections: dict[str, list[str]] = field(default_factory=dict)  # embedder -> spaces of its collection
    announced: bool = False  # whether a command already said that it uses the recorded embedder

    def as_json(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "collections": self.collections, "announced": self.announced}


def read_record(data_dir: Path) -> DataDirRecord | None:
    """The data dir's record, None when it has none; a one-line error when the file is unreadable."""
    path = data_dir / RECORD_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        embedder, collections = raw["embedder"], raw.get("collections", {})
        if not (isinstance(embedder, str) and embedder.strip()):
            raise ValueError("'embedder' is not a name")
        if not (isinstance(collections, dict) and all(isinstance(v, list) for v in collections.values())):
            raise ValueError("'collections' is not a mapping of embedder to spaces")
        return DataDirRecord(
            embedder, {str(k): [str(s) for s in v] for k, v in collections.items()}, bool(raw.get("announced"))
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AttributionAuditError(
            f"{path}: unreadable data dir record ({exc}); fix or delete it, or pass --embedder "
            "(or ATTRIBUTION_AUDIT_EMBEDDER) to choose the embedder"
        ) from None


def write_record(data_dir: Path, record: DataDirRecord) -> None:
    """Replace the data dir's record atomically."""
    path = data_dir / RECORD_FILE
    data = {**record.as_json(), "updated_at": datetime.now(UTC).isoformat()}
    temporary = None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # A fresh, exclusively created temporary file per writer: concurrent writers do not collide, and a planted
        # file or symlink is never written through; the rename then replaces the record in one step.
        handle, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{RECORD_FILE}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise AttributionAuditError(f"{path}: cannot write the data dir record ({exc.strerror})") from None


@dataclass(frozen=True)
class Settings:
    """Where the data lives and which parts to use. Build with :func:`load_settings`.

    ``embedder_from`` says where the embedder came from: ``option``, ``environment``, ``data dir`` or ``default``.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    embedder: str = DEFAULT_EMBEDDER
    requester: str | None = None
    embedder_from: str = "default"
    record_problem: str | None = None  # why the data dir's record could not be read, if it could not
    checkpoint_key: Path | None = None  # the Ed25519 signing key of checkpoints; None: default_checkpoint_key()
    witness_file: Path | None = None  # where every checkpoint is appended; None: <data dir>/witness.jsonl
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY  # automatic checkpoint every N records attributed (0: never)
    checkpoint_minutes: int = 0  # also when the last checkpoint is older than this, at the next record (0: never)
    min_free_mb: int = DEFAULT_MIN_FREE_MB  # free disk space the embedded shard needs to be opened
    copy_depth: int = DEFAULT_COPY_DEPTH  # copy detection's candidates from each base space (0: the check is off)
    query_crops: bool = True  # a learned-space request embeds its image's corner crops too (the crop log-odds)
    max_inflight_pixels: int = DEFAULT_MAX_INFLIGHT_PIXELS  # `serve`: decoded pixels of all requests at once
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS  # `serve`: decoded pixels of one request
    new_audit_log: bool = False  # the operator says an empty audit DB beside an existing shard or witness is new
    # How a new collection stores its vectors (domain.points.StorageParams); an existing one keeps its own.
    quantization: str = "none"
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    # The HNSW search's ef (search time: no re-ingest); None: the collection's recorded one (128).
    hnsw_ef: int | None = None

    def __post_init__(self) -> None:
        if self.requester is not None:  # a directly built Settings, load_settings(requester=...), with_options
            object.__setattr__(self, "requester", checked_requester(self.requester))

    @property
    def embedded_database(self) -> Path | None:
        """The SQLite file of the data dir when no database URL is configured (the embedded default)."""
        return None if self.database_url else (self.data_dir / "audit.sqlite").resolve()

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, else a SQLite file inside the data dir."""
        if self.database_url:
            return self.database_url
        # escaped: a data dir whose path holds '?' or '#' stays one file name, not URL parameters
        escaped = str(self.embedded_database).replace("%", "%25").replace("?", "%3F").replace("#", "%23")
        return f"sqlite:///{escaped}"

    @property
    def resolved_checkpoint_key(self) -> Path:
        return self.checkpoint_key or default_checkpoint_key()

    @property
    def resolved_witness_file(self) -> Path:
        return self.witness_file or self.data_dir / WITNESS_FILE

    @property
    def qdrant_path(self) -> Path:
        """Folder of the embedded Qdrant Edge shards."""
        return self.data_dir / "qdrant"

    @property
    def exact_cache_path(self) -> Path:
        """Folder of the exact indexes' cache (per collection version)."""
        return self.data_dir / "exact"

    @property
    def uploads_path(self) -> Path:
        """Folder of every image the service attributed, named by its sha256."""
        return self.data_dir / "uploads"

    @property
    def resolved_requester(self) -> str:
        """Who asks: the configured requester, else :func:`os_account`."""
        return self.requester or os_account()

    def with_embedder(self, embedder: str | None) -> Settings:
        """These settings with ``--embedder`` applied when given; for a command that needs the embedder, an
        unreadable data dir record is an error unless the embedder is chosen explicitly."""
        if embedder is not None:
            return replace(self, embedder=embedder, embedder_from="option")
        if self.record_problem and self.embedder_from == "default":
            raise AttributionAuditError(self.record_problem)
        return self


def requester_name(value: str) -> str | None:
    """``value`` stripped when it can be recorded as a requester: 1 to :data:`MAX_REQUESTER` printable characters
    (no control characters, and no undecodable bytes of a non-UTF-8 login name); else None."""
    name = value.strip()
    return name if name and len(name) <= MAX_REQUESTER and name.isprintable() else None


def checked_requester(value: object) -> str:
    """``value`` as :func:`requester_name` records it; a one-line OptionError where it cannot be recorded (the
    requester given to the Python API or to Settings, which the environment's and the OS account's checks miss)."""
    name = requester_name(value) if isinstance(value, str) else None
    if name is None:
        shown = (
            f"{value[:40]!r}{'...' if len(value) > 40 else ''} ({len(value)} characters)"
            if isinstance(value, str)
            else repr(value)
        )
        raise OptionError(
            f"requester {shown} cannot be recorded; give 1 to {MAX_REQUESTER} printable UTF-8 characters (no control "
            "characters)"
        )
    return name


def os_account() -> str:
    """The OS account running this process: its login name (LOGNAME, USER, LNAME or USERNAME, else the account
    database's name of the user id), else ``uid:<n>`` (a container or cron job whose user id has no account entry,
    or a login name that cannot be recorded: see :func:`requester_name`)."""
    try:
        name = requester_name(getpass.getuser())
    except (KeyError, OSError, ImportError):  # no variable set, and no account entry (or no pwd module)
        name = None
    return name or (f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown")


def _requester(env: Mapping[str, str]) -> str | None:
    """ATTRIBUTION_AUDIT_REQUESTER (None when unset, empty or blank); a one-line error when it cannot be recorded."""
    raw = env.get(f"{ENV_PREFIX}REQUESTER") or ""
    name = requester_name(raw)
    if raw.strip() and name is None:
        raise AttributionAuditError(
            f"{ENV_PREFIX}REQUESTER={raw!r} cannot be recorded as the requester; set it to 1 to {MAX_REQUESTER} "
            "printable UTF-8 characters (no control characters), or unset it to record the OS account"
        )
    return name


def with_options(settings: Settings, **given: Any) -> Settings:
    """These settings with the options given (storage, search ef; None: keep the environment's or the default)."""
    return replace(settings, **{key: value for key, value in given.items() if value is not None})


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and the data dir's record, then apply the non-None ``overrides``."""
    env = os.environ
    given = {key: value for key, value in overrides.items() if value is not None}
    data_dir = Path(given.pop("data_dir", None) or env.get(f"{ENV_PREFIX}DATA_DIR", str(DEFAULT_DATA_DIR)))
    embedder, embedder_from = DEFAULT_EMBEDDER, "default"
    if "embedder" in given:
        embedder, embedder_from = given.pop("embedder"), "option"
    elif env.get(f"{ENV_PREFIX}EMBEDDER"):
        embedder, embedder_from = env[f"{ENV_PREFIX}EMBEDDER"], "environment"
    else:
        try:
            record = read_record(data_dir)
        except AttributionAuditError as exc:  # only commands that need the embedder fail on it
            given.setdefault("record_problem", str(exc))
            record = None
        if record is not None:
            embedder, embedder_from = record.embedder, "data dir"
    settings = Settings(
        data_dir=data_dir,
        database_url=env.get(f"{ENV_PREFIX}DATABASE_URL") or None,
        qdrant_url=env.get(f"{ENV_PREFIX}QDRANT_URL") or None,
        qdrant_api_key=env.get(f"{ENV_PREFIX}QDRANT_API_KEY") or None,
        embedder=embedder,
        requester=_requester(env),
        embedder_from=embedder_from,
        checkpoint_key=Path(env[f"{ENV_PREFIX}CHECKPOINT_KEY"]) if env.get(f"{ENV_PREFIX}CHECKPOINT_KEY") else None,
        witness_file=Path(env[f"{ENV_PREFIX}WITNESS_FILE"]) if env.get(f"{ENV_PREFIX}WITNESS_FILE") else None,
        checkpoint_every=_count("CHECKPOINT_EVERY", DEFAULT_CHECKPOINT_EVERY, "a count of records (0: never)"),
        checkpoint_minutes=_count("CHECKPOINT_MINUTES", 0, "minutes (0: never)", MAX_CHECKPOINT_MINUTES),
        min_free_mb=_count("MIN_FREE_MB", DEFAULT_MIN_FREE_MB, "megabytes (0: no check)"),
        copy_depth=_count("COPY_DEPTH", DEFAULT_COPY_DEPTH, "works per space (0: no copy detection)"),
        query_crops=bool(_count("QUERY_CROPS", 1, "1 to embed a learned-space request's corner crops, 0 not to", 1)),
        max_inflight_pixels=_count(
            "MAX_INFLIGHT_PIXELS", DEFAULT_MAX_INFLIGHT_PIXELS, "a count of decoded pixels", least=1
        ),
        max_request_pixels=_count(
            "MAX_REQUEST_PIXELS", DEFAULT_MAX_REQUEST_PIXELS, "a count of decoded pixels", least=1
        ),
        quantization=env.get(f"{ENV_PREFIX}QUANTIZATION") or "none",
        shard_number=_whole(env, "shard_number"),
        replication_factor=_whole(env, "replication_factor"),
        write_consistency_factor=_whole(env, "write_consistency_factor"),
        hnsw_ef=_whole(env, "hnsw_ef"),
    )
    return replace(settings, **given)


def _whole(env: Mapping[str, str], name: str) -> int | None:
    """A whole-number setting from ``ATTRIBUTION_AUDIT_<NAME>``; unset is None."""
    key = f"{ENV_PREFIX}{name.upper()}"
    value = env.get(key) or None
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise AttributionAuditError(f"{key}={value!r} is not a whole number; set it to 1, 2, ... or unset it") from None
