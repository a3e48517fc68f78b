"""Embedded default: Qdrant's own engine in-process (qdrant-edge), one on-disk shard per collection."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attribution_audit.errors import VectorStoreError
from attribution_audit.vectorstore.base import (
    CONTENT,
    STYLE,
    Hit,
    HnswParams,
    WorkPoint,
    hit_from,
    named_vectors,
    point_vectors,
)

META_FILE = "attribution-audit.json"
UPSERT_BATCH = 512
SCROLL_PAGE = 2048


def _as_array(vector: Any, space: str = CONTENT) -> np.ndarray:
    """One named vector of a stored point as float32."""
    return np.asarray(vector[space] if isinstance(vector, dict) else vector, dtype=np.float32)


class EdgeStore:
    """A Qdrant Edge shard under ``root/collection``.

    A shard can be open in one process at a time: the store takes an exclusive file lock, waiting up to
    ``lock_timeout`` seconds for another process to finish, so concurrent CLI calls queue instead of failing.
    The indexing thresholds are set to 1 KB so that the HNSW graph is always built (Qdrant's default builds
    none below ~5k vectors of 512-d, which would silently make every search exact).
    """

    kind = "qdrant-edge"

    def __init__(
        self, root: Path, collection: str, params: HnswParams | None = None, lock_timeout: float = 120.0
    ) -> None:
        self.collection = collection
        self.params = params or HnswParams()
        self.path = Path(root) / collection
        self._lock_timeout = lock_timeout
        self._lock_file: Any = None
        self._shard: Any = None
        self._dim: int | None = None
        self._style_dim: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path.parent / f"{self.collection}.lock", "w")  # noqa: SIM115
        deadline = time.monotonic() + self._lock_timeout
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock_file.close()
                    self._lock_file = None
                    raise VectorStoreError(
                        f"{self.path}: the embedded Qdrant shard is busy in another process for over "
                        f"{self._lock_timeout:g} s; wait for it to finish, or use a Qdrant server (--qdrant-url)"
                    ) from None
                time.sleep(0.05)

    def _meta(self) -> dict[str, Any] | None:
        meta = self.path / META_FILE
        return json.loads(meta.read_text()) if meta.exists() else None

    def _open(self, dim: int | None, style_dim: int | None = None) -> Any:
        if self._shard is None:
            self._load_or_create(dim, style_dim)
        if dim is not None and self._dim is not None and dim != self._dim:
            stored = self._dim
            self.close()
            raise VectorStoreError(
                f"{self.path}: collection holds {stored}-d vectors but the embedder gives {dim}-d; "
                "use the embedder the catalogue was ingested with, or another --data-dir"
            )
        return self._shard

    def _load_or_create(self, dim: int | None, style_dim: int | None) -> None:
        from qdrant_edge import EdgeShard

        self._acquire_lock()
        meta = self._meta()
        if meta is not None:
            self.params = HnswParams(**meta["hnsw"])
            self._dim = int(meta["dim"])
            self._style_dim = meta.get("style_dim")
            self._shard = EdgeShard.load(str(self.path))
        elif dim is not None:
            self._shard = self._create(dim, style_dim)
            self._dim, self._style_dim = dim, style_dim

    def _create(self, dim: int, style_dim: int | None) -> Any:
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeOptimizersConfig,
            EdgeShard,
            EdgeVectorParams,
            HnswIndexConfig,
            PayloadSchemaType,
            UpdateOperation,
        )

        vectors = {CONTENT: EdgeVectorParams(size=dim, distance=Distance.Cosine)}
        if style_dim:
            vectors[STYLE] = EdgeVectorParams(size=style_dim, distance=Distance.Cosine)
        config = EdgeConfig(
            vectors=vectors,
            hnsw_config=HnswIndexConfig(m=self.params.m, ef_construct=self.params.ef_construct, full_scan_threshold=1),
            optimizers=EdgeOptimizersConfig(indexing_threshold=1, default_segment_number=1),
        )
        shard = EdgeShard.create(str(self.path), config)
        shard.update(UpdateOperation.create_field_index("artist", PayloadSchemaType.Keyword))
        meta = {"dim": dim, "style_dim": style_dim, "hnsw": self.params.as_dict(), "distance": "cosine", "epoch": 0}
        self._write_meta(meta)
        return shard

    def _write_meta(self, meta: dict[str, Any]) -> None:
        temporary = self.path / f"{META_FILE}.tmp"
        temporary.write_text(json.dumps(meta, indent=2))
        os.replace(temporary, self.path / META_FILE)

    def _bump_epoch(self) -> None:
        """Count writes, before they happen: any write (even one cut short) changes :meth:`content_version`."""
        meta = self._meta() or {}
        meta["epoch"] = int(meta.get("epoch", 0)) + 1
        self._write_meta(meta)

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- operations ----------------------------------------------------------------------------------------
    def _require(self) -> Any:
        shard = self._open(None)
        if shard is None:
            raise VectorStoreError(
                f"{self.path}: no catalogue has been ingested into collection '{self.collection}' yet; "
                "run `attribution-audit ingest MANIFEST.csv` with the same --embedder first"
            )
        return shard

    def ensure_collection(self, dim: int, style_dim: int | None = None) -> None:
        self._open(dim, style_dim)
        if style_dim and self._style_dim != style_dim:
            if self._style_dim:
                raise VectorStoreError(
                    f"{self.path}: style vectors are {self._style_dim}-d but the style embedder gives {style_dim}-d; "
                    "use the same embedder and style settings as at ingestion"
                )
            from qdrant_edge import Distance, UpdateOperation

            self._shard.update(UpdateOperation.create_dense_vector(STYLE, style_dim, Distance.Cosine))
            self._style_dim = style_dim
            self._write_meta({**(self._meta() or {}), "style_dim": style_dim})

    def spaces(self) -> tuple[str, ...]:
        self._open(None)
        return (CONTENT, STYLE) if self._style_dim else (CONTENT,)

    def upsert(self, points: Sequence[WorkPoint]) -> None:
        from qdrant_edge import Point, UpdateOperation

        shard = self._require()
        self._bump_epoch()
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                Point(id=p.point_id, vector=point_vectors(p), payload=p.payload)
                for p in points[start : start + UPSERT_BATCH]
            ]
            shard.update(UpdateOperation.upsert_points(batch))

    def build_index(self) -> None:
        self._require().optimize()

    def search(
        self,
        vector: np.ndarray,
        limit: int,
        *,
        exact: bool = False,
        with_vectors: bool = False,
        space: str = CONTENT,
    ) -> list[Hit]:
        from qdrant_edge import Query, QueryRequest, SearchParams

        self._check_space(space, vector)
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=space),
            with_payload=True,
            with_vector=with_vectors,
            params=SearchParams(hnsw_ef=self.params.hnsw_ef, exact=exact),
        )
        return [hit_from(p, with_vectors, space) for p in self._require().query(request)]

    def search_fused(
        self,
        vectors: dict[str, np.ndarray],
        limit: int,
        *,
        prefetch: int,
        weights: dict[str, float],
        rrf_k: int = 60,
        with_vectors: bool = False,
    ) -> list[Hit]:
        from qdrant_edge import Fusion, Prefetch, Query, QueryRequest, SearchParams

        names = list(vectors)
        for name in names:
            self._check_space(name, vectors[name])
        request = QueryRequest(
            limit=limit,
            prefetches=[
                Prefetch(
                    limit=prefetch,
                    query=Query.Nearest(np.asarray(vectors[n], dtype=np.float32).tolist(), using=n),
                    params=SearchParams(hnsw_ef=self.params.hnsw_ef),
                )
                for n in names
            ],
            query=Fusion.Rrf(k=rrf_k, weights=[float(weights[n]) for n in names]),
            with_payload=True,
            with_vector=with_vectors,
        )
        return [hit_from(p, with_vectors, CONTENT) for p in self._require().query(request)]

    def _check_space(self, space: str, vector: np.ndarray | None = None) -> None:
        self._require()
        if space not in self.spaces():
            raise VectorStoreError(
                f"collection '{self.collection}' has no {space} vectors; ingest with --spaces content,{space} first"
            )
        size = self._dim if space == CONTENT else self._style_dim
        if vector is not None and len(vector) != size:
            raise VectorStoreError(
                f"collection '{self.collection}' holds {size}-d {space} vectors but the query is {len(vector)}-d; "
                "query with the embedder the catalogue was ingested with"
            )

    def _scroll(self, with_vector: bool | list[str], with_payload: bool | list[str]) -> Iterator[Any]:
        from qdrant_edge import ScrollRequest

        shard = self._require()
        offset = None
        while True:
            records, offset = shard.scroll(
                ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=with_payload, with_vector=with_vector)
            )
            yield from records
            if offset is None or not records:
                return

    def fetch_all(self, space: str = CONTENT) -> tuple[list[str], np.ndarray]:
        self._check_space(space)
        ids: list[str] = []
        rows: list[np.ndarray] = []
        for record in self._scroll(with_vector=[space], with_payload=False):
            if space in (record.vector or {}):
                ids.append(str(record.id))
                rows.append(_as_array(record.vector, space))
        size = self._dim if space == CONTENT else self._style_dim
        return ids, np.vstack(rows) if rows else np.zeros((0, size or 0), dtype=np.float32)

    def iter_points(self) -> Iterator[WorkPoint]:
        for record in self._scroll(with_vector=True, with_payload=True):
            vectors = named_vectors(record.vector)
            yield WorkPoint(str(record.id), vectors[CONTENT], dict(record.payload or {}), vectors.get(STYLE))

    def image_hashes(self) -> dict[str, str]:
        if self._open(None) is None:
            return {}
        return {
            str(r.id): str((r.payload or {}).get("image_sha256", ""))
            for r in self._scroll(with_vector=False, with_payload=["image_sha256"])
        }

    def delete(self, point_ids: Sequence[str]) -> None:
        from qdrant_edge import UpdateOperation

        if not point_ids or self._open(None) is None:
            return
        self._bump_epoch()
        self._shard.update(UpdateOperation.delete_points(list(point_ids)))

    def content_version(self) -> str:
        self._require()
        meta = self._meta() or {}
        return f"{self.collection}-epoch{meta.get('epoch', 0)}-n{self.count()}"

    def existing_ids(self, point_ids: Sequence[str]) -> set[str]:
        if not point_ids or self._open(None) is None:
            return set()
        records = self._shard.retrieve(list(point_ids), with_payload=False, with_vector=False)
        return {str(r.id) for r in records}

    def count(self) -> int:
        shard = self._open(None)
        return 0 if shard is None else int(shard.info().points_count)

    def index_info(self) -> dict[str, Any]:
        shard = self._open(None)
        info = shard.info() if shard is not None else None
        return {
            "store": self.kind,
            "collection": self.collection,
            **self.params.as_dict(),
            "points": int(info.points_count) if info else 0,
            "indexed_vectors": int(info.indexed_vectors_count) if info else 0,
            "spaces": list(self.spaces()) if info else [CONTENT],
            "index": "hnsw",
        }
