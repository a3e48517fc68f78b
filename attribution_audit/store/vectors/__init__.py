"""Vector stores: embedded Qdrant Edge by default, a Qdrant server when a URL is configured."""

from __future__ import annotations

import re
from typing import Any

from attribution_audit.config import ENV_PREFIX, Settings
from attribution_audit.domain.points import HnswParams, StorageParams
from attribution_audit.errors import VectorStoreError
from attribution_audit.store.vectors.base import Hit, VectorStore, WorkPoint, point_id_for

__all__ = [
    "Hit",
    "HnswParams",
    "StorageParams",
    "VectorStore",
    "WorkPoint",
    "collection_name",
    "open_collection",
    "open_store",
    "point_id_for",
    "search_ef_of",
    "set_aside",
    "storage_of",
]


def collection_name(embedder_name: str) -> str:
    """One collection per embedder, so vectors of different models never mix: ``works_<embedder>``."""
    return "works_" + re.sub(r"[^a-z0-9]+", "_", embedder_name.lower()).strip("_")


def open_store(settings: Settings, embedder_name: str, params: HnswParams | None = None) -> VectorStore:
    """A URL in the settings selects the Qdrant server; otherwise the embedded shard in the data dir."""
    return open_collection(settings, collection_name(embedder_name), params)


def storage_of(settings: Settings) -> StorageParams:
    """The storage settings for a new collection; one-line errors for bad values or cluster settings without a
    server."""
    values: dict[str, Any] = {
        "quantization": settings.quantization,
        "shard_number": settings.shard_number,
        "replication_factor": settings.replication_factor,
        "write_consistency_factor": settings.write_consistency_factor,
    }
    for name, value in values.items():  # one at a time, so that the error names the setting to fix
        try:
            StorageParams(**{name: value})
        except ValueError as exc:
            option = "--" + name.replace("_", "-")
            raise VectorStoreError(f"{exc}; fix {option} or {ENV_PREFIX}{name.upper()}") from None
    storage = StorageParams(**values)
    if storage.distributed and not settings.qdrant_url:
        raise VectorStoreError(
            "shard_number, replication_factor and write_consistency_factor need a Qdrant server or cluster: pass "
            "--qdrant-url (the embedded shard is one shard on one machine)"
        )
    return storage


def search_ef_of(settings: Settings) -> int | None:
    """The searches' HNSW ef from the settings (None: the collection's recorded one); a one-line error for a value
    that is not a whole number of at least 1."""
    if settings.hnsw_ef is None:
        return None
    try:
        HnswParams(hnsw_ef=settings.hnsw_ef)
    except ValueError as exc:
        raise VectorStoreError(f"{exc}; fix --ef or {ENV_PREFIX}HNSW_EF") from None
    return settings.hnsw_ef


def open_collection(settings: Settings, collection: str, params: HnswParams | None = None) -> VectorStore:
    """The store of a named collection (as recorded in the audit DB), searching with the settings' ef if any."""
    storage, ef = storage_of(settings), search_ef_of(settings)
    if settings.qdrant_url:
        from attribution_audit.store.vectors.qdrant_server import ServerStore

        return ServerStore(
            settings.qdrant_url, collection, params, api_key=settings.qdrant_api_key, storage=storage, search_ef=ef
        )
    from attribution_audit.store.vectors.qdrant_edge import EdgeStore, require_free_space

    require_free_space(settings.qdrant_path, settings.min_free_mb)
    return EdgeStore(settings.qdrant_path, collection, params, storage=storage, search_ef=ef)


def set_aside(path: str) -> str:
    """Move a damaged embedded shard out of the way (kept beside, renamed); its new path."""
    from attribution_audit.store.vectors.qdrant_edge import set_aside as move

    return str(move(path))
