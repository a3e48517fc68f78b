"""Production: a Qdrant server (or cluster) through qdrant-client.

``url=":memory:"`` selects qdrant-client's in-process mode. That mode is NumPy brute force (no HNSW) and exists
here only so the tests can exercise this code path without a server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
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

UPSERT_BATCH = 512
SCROLL_PAGE = 2048


class ServerStore:
    """A collection on a Qdrant server; HNSW thresholds set so the graph is always built."""

    kind = "qdrant-server"

    def __init__(self, url: str, collection: str, params: HnswParams | None = None, api_key: str | None = None) -> None:
        from qdrant_client import QdrantClient

        self.collection = collection
        self.params = params or HnswParams()
        self.url = url
        self._sizes: dict[str, int] = {}
        if url == ":memory:":
            self.kind = "qdrant-local"
            self._client = QdrantClient(location=":memory:")
        else:
            self._client = QdrantClient(url=url, api_key=api_key, timeout=30)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VectorStoreError:
            raise
        except Exception as exc:  # connection refused, timeouts, HTTP errors: one line for the user
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VectorStoreError(
                f"Qdrant at {self.url}: {what} failed ({first_line}); check that the server is up and "
                "--qdrant-url is right"
            ) from exc

    def _exists(self) -> bool:
        return bool(self._call("listing collections", self._client.collection_exists, self.collection))

    def _vector_sizes(self) -> dict[str, int]:
        """Named vector sizes of the (existing) collection; read once, since a server collection's spaces are fixed."""
        if not self._sizes:
            info = self._call("reading the collection", self._client.get_collection, self.collection)
            vectors = info.config.params.vectors
            self._sizes = {name: params.size for name, params in vectors.items()} if isinstance(vectors, dict) else {}
        return self._sizes

    def spaces(self) -> tuple[str, ...]:
        if not self._exists():
            return (CONTENT,)
        return tuple(s for s in (CONTENT, STYLE) if s in self._vector_sizes())

    def ensure_collection(self, dim: int, style_dim: int | None = None) -> None:
        from qdrant_client import models

        if self._exists():
            sizes = self._vector_sizes()
            for space, wanted in ((CONTENT, dim), (STYLE, style_dim)):
                if wanted and sizes.get(space) != wanted:
                    held = f"{sizes[space]}-d" if space in sizes else "no"
                    raise VectorStoreError(
                        f"Qdrant collection '{self.collection}' holds {held} {space} vectors but the embedder gives "
                        f"{wanted}-d; use the embedder and spaces the catalogue was ingested with"
                    )
            return
        vectors = {CONTENT: models.VectorParams(size=dim, distance=models.Distance.COSINE)}
        if style_dim:
            vectors[STYLE] = models.VectorParams(size=style_dim, distance=models.Distance.COSINE)
        self._call(
            "creating the collection",
            self._client.create_collection,
            self.collection,
            vectors_config=vectors,
            hnsw_config=models.HnswConfigDiff(
                m=self.params.m, ef_construct=self.params.ef_construct, full_scan_threshold=1
            ),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1),
        )
        self._call(
            "creating the artist index",
            self._client.create_payload_index,
            self.collection,
            field_name="artist",
            field_schema=models.PayloadSchemaType.KEYWORD,
        )

    def _check_space(self, space: str, vector: np.ndarray | None = None) -> None:
        sizes = self._vector_sizes()
        if space not in sizes:
            raise VectorStoreError(
                f"Qdrant collection '{self.collection}' has no {space} vectors; ingest with --spaces content,{space}"
            )
        if vector is not None and len(vector) != sizes[space]:
            raise VectorStoreError(
                f"Qdrant collection '{self.collection}' holds {sizes[space]}-d {space} vectors but the query is "
                f"{len(vector)}-d; query with the embedder the catalogue was ingested with"
            )

    def upsert(self, points: Sequence[WorkPoint]) -> None:
        from qdrant_client import models

        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                models.PointStruct(id=p.point_id, vector=point_vectors(p), payload=p.payload)
                for p in points[start : start + UPSERT_BATCH]
            ]
            self._call("upserting points", self._client.upsert, self.collection, points=batch, wait=True)

    def build_index(self) -> None:
        """The server indexes in the background; upserts already waited for their segments."""

    def search(
        self,
        vector: np.ndarray,
        limit: int,
        *,
        exact: bool = False,
        with_vectors: bool = False,
        space: str = CONTENT,
    ) -> list[Hit]:
        from qdrant_client import models

        self._require_collection()
        self._check_space(space, vector)
        response = self._call(
            "searching",
            self._client.query_points,
            self.collection,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            using=space,
            limit=limit,
            with_payload=True,
            with_vectors=with_vectors,
            search_params=models.SearchParams(hnsw_ef=self.params.hnsw_ef, exact=exact),
        )
        return [hit_from(p, with_vectors, space) for p in response.points]

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
        from qdrant_client import models

        self._require_collection()
        names = list(vectors)
        for name in names:
            self._check_space(name, vectors[name])
        response = self._call(
            "searching",
            self._client.query_points,
            self.collection,
            prefetch=[
                models.Prefetch(
                    query=np.asarray(vectors[n], dtype=np.float32).tolist(),
                    using=n,
                    limit=prefetch,
                    params=models.SearchParams(hnsw_ef=self.params.hnsw_ef),
                )
                for n in names
            ],
            query=models.RrfQuery(rrf=models.Rrf(k=rrf_k, weights=[float(weights[n]) for n in names])),
            limit=limit,
            with_payload=True,
            with_vectors=with_vectors,
        )
        return [hit_from(p, with_vectors, CONTENT) for p in response.points]

    def _require_collection(self) -> None:
        if not self._exists():
            raise VectorStoreError(
                f"Qdrant at {self.url}: no collection '{self.collection}' yet; run `attribution-audit ingest` "
                "with the same --embedder first"
            )

    def _scroll(self, with_vectors: bool | list[str], payload: list[str] | bool) -> list[Any]:
        records: list[Any] = []
        offset = None
        while True:
            page, offset = self._call(
                "scrolling",
                self._client.scroll,
                self.collection,
                offset=offset,
                limit=SCROLL_PAGE,
                with_payload=payload,
                with_vectors=with_vectors,
            )
            records.extend(page)
            if offset is None or not page:
                return records

    def fetch_all(self, space: str = CONTENT) -> tuple[list[str], np.ndarray]:
        self._check_space(space)
        records = [r for r in self._scroll(with_vectors=[space], payload=False) if space in (r.vector or {})]
        vectors = [np.asarray(r.vector[space], dtype=np.float32) for r in records]
        return [str(r.id) for r in records], np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)

    def iter_points(self) -> Iterator[WorkPoint]:
        for record in self._scroll(with_vectors=True, payload=True):
            vectors = named_vectors(record.vector)
            yield WorkPoint(str(record.id), vectors[CONTENT], dict(record.payload or {}), vectors.get(STYLE))

    def image_hashes(self) -> dict[str, str]:
        if not self._exists():
            return {}
        return {
            str(r.id): str((r.payload or {}).get("image_sha256", ""))
            for r in self._scroll(with_vectors=False, payload=["image_sha256"])
        }

    def delete(self, point_ids: Sequence[str]) -> None:
        from qdrant_client import models

        if not point_ids or not self._exists():
            return
        self._call(
            "deleting points",
            self._client.delete,
            self.collection,
            points_selector=models.PointIdsList(points=list(point_ids)),
            wait=True,
        )

    def content_version(self) -> str:
        """A digest of every point id and image hash: a server gives no cheaper change counter."""
        digest = hashlib.sha256()
        hashes = self.image_hashes()
        for point_id in sorted(hashes):
            digest.update(f"{point_id}:{hashes[point_id]};".encode())
        return f"{self.collection}-{digest.hexdigest()[:16]}-n{len(hashes)}"

    def existing_ids(self, point_ids: Sequence[str]) -> set[str]:
        if not point_ids or not self._exists():
            return set()
        records = self._call(
            "retrieving points",
            self._client.retrieve,
            self.collection,
            ids=list(point_ids),
            with_payload=False,
            with_vectors=False,
        )
        return {str(r.id) for r in records}

    def count(self) -> int:
        if not self._exists():
            return 0
        return int(self._call("counting", self._client.count, self.collection, exact=True).count)

    def index_info(self) -> dict[str, Any]:
        indexed = 0
        if self._exists():
            info = self._call("reading the collection", self._client.get_collection, self.collection)
            indexed = int(info.indexed_vectors_count or 0)
        return {
            "store": self.kind,
            "collection": self.collection,
            **self.params.as_dict(),
            "points": self.count(),
            "indexed_vectors": indexed,
            "spaces": list(self.spaces()),
            "index": "exact" if self.kind == "qdrant-local" else "hnsw",
        }

    def close(self) -> None:
        self._client.close()
