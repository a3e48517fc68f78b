"""Settings: CLI options > environment variables (ATTRIBUTION_AUDIT_*) > defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

ENV_PREFIX = "ATTRIBUTION_AUDIT_"
DEFAULT_DATA_DIR = Path(".attribution-audit")
DEFAULT_EMBEDDER = "clip"


@dataclass(frozen=True)
class Settings:
    """Where the data lives and which parts to use. Build with :func:`load_settings`."""

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    embedder: str = DEFAULT_EMBEDDER
    requester: str | None = None

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, else a SQLite file inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'audit.sqlite').resolve()}"

    @property
    def qdrant_path(self) -> Path:
        """Folder of the embedded Qdrant Edge shards."""
        return self.data_dir / "qdrant"

    @property
    def resolved_requester(self) -> str:
        """Who asks: the configured requester, else the OS user."""
        return self.requester or os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, then apply the non-None ``overrides`` (CLI options)."""
    env = os.environ
    settings = Settings(
        data_dir=Path(env.get(f"{ENV_PREFIX}DATA_DIR", str(DEFAULT_DATA_DIR))),
        database_url=env.get(f"{ENV_PREFIX}DATABASE_URL") or None,
        qdrant_url=env.get(f"{ENV_PREFIX}QDRANT_URL") or None,
        qdrant_api_key=env.get(f"{ENV_PREFIX}QDRANT_API_KEY") or None,
        embedder=env.get(f"{ENV_PREFIX}EMBEDDER", DEFAULT_EMBEDDER),
        requester=env.get(f"{ENV_PREFIX}REQUESTER") or None,
    )
    given = {key: value for key, value in overrides.items() if value is not None}
    if "data_dir" in given:
        given["data_dir"] = Path(given["data_dir"])  # type: ignore[arg-type]
    return replace(settings, **given)  # type: ignore[arg-type]
