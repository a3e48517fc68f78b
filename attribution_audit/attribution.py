"""One attribution request: embed -> HNSW candidates -> exact re-rank -> K policy -> indicators -> shares ->
exact recall check -> committed, hash-chained audit record -> result."""

from __future__ import annotations

import copy
import math
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from attribution_audit.audit import chain
from attribution_audit.audit.db import session_scope
from attribution_audit.audit.models import (
    Artist,
    AttributionArtistShare,
    AttributionMetrics,
    AttributionNeighbour,
    AttributionRequest,
    Catalogue,
    Work,
    utcnow,
)
from attribution_audit.calibration import LogisticModel, confidence, latest_model
from attribution_audit.embedding.base import Embedder
from attribution_audit.errors import NotFoundError
from attribution_audit.exact import DEFAULT_EXACT_METHOD, EXACT_METHODS, ExactIndex, load_or_build, overlap_at_k
from attribution_audit.images import load_image, printable_path
from attribution_audit.metrics import artist_entropy, artist_margin
from attribution_audit.shares import DEFAULT_TEMPERATURE, SHARE_MODES, artist_shares, neighbour_shares
from attribution_audit.vectorstore import Hit, VectorStore, point_id_for
from attribution_audit.vectorstore.base import CONTENT, STYLE

if TYPE_CHECKING:
    from attribution_audit.embedding.style import StyleEmbedder

DEFAULT_K = 10
DEFAULT_OVERSAMPLING = 4
MAX_K = 10_000
FUSED = "fused"
QUERY_SPACES = (CONTENT, STYLE, FUSED)


@dataclass(frozen=True)
class AttributionParams:
    """How to attribute; recorded with every request.

    ``k``: number of works; ``max_distance``: keep only works within this cosine distance (still at most k);
    ``oversampling``: HNSW returns k x oversampling candidates that are re-ranked exactly; ``verify``: ``always``,
    ``off`` or ``sample:RATE`` — compare with the exact top K over the whole catalogue (overlap@K);
    ``shares``: ``equal`` or ``similarity`` (softmax of similarity / temperature); ``space``: ``content``,
    ``style`` or ``fused`` (the engine fuses both spaces by weighted reciprocal rank fusion, :func:`rrf_fuse`, with
    ``rrf_k`` and ``fusion_weights`` = (content, style); a fused neighbour's similarity is the weighted mean of its
    two cosines).
    """

    k: int = DEFAULT_K
    max_distance: float | None = None
    oversampling: int = DEFAULT_OVERSAMPLING
    verify: str = "always"
    exact_method: str = DEFAULT_EXACT_METHOD
    shares: str = "equal"
    temperature: float = DEFAULT_TEMPERATURE
    space: str = CONTENT
    fusion_weights: tuple[float, float] = (1.0, 1.0)
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}")
        if self.oversampling < 1:
            raise ValueError("oversampling must be at least 1")
        if self.max_distance is not None and not 0 <= self.max_distance <= 2:
            raise ValueError("max_distance is a cosine distance: between 0 and 2")
        if self.exact_method not in EXACT_METHODS:
            raise ValueError(f"exact method must be one of {', '.join(EXACT_METHODS)}")
        if self.shares not in SHARE_MODES:
            raise ValueError(f"shares must be one of {', '.join(SHARE_MODES)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError("temperature must be a positive finite number")
        if self.space not in QUERY_SPACES:
            raise ValueError(f"space must be one of {', '.join(QUERY_SPACES)}")
        if len(self.fusion_weights) != 2 or not all(w > 0 and math.isfinite(w) for w in self.fusion_weights):
            raise ValueError("fusion weights are two positive numbers (content, style); for one space use --space")
        if self.rrf_k < 1:
            raise ValueError("rrf_k must be at least 1")
        object.__setattr__(self, "fusion_weights", tuple(float(w) for w in self.fusion_weights))
        verify_rate(self.verify)

    @property
    def weights(self) -> dict[str, float]:
        return {CONTENT: self.fusion_weights[0], STYLE: self.fusion_weights[1]}

    def as_json(self) -> dict[str, Any]:
        """Plain JSON values (the fusion weights as a list), as stored in the audit log."""
        return {**asdict(self), "fusion_weights": list(self.fusion_weights)}


def verify_rate(mode: str) -> float:
    """The share of requests to verify for a ``--verify`` mode: always=1, off=0, sample:RATE=RATE."""
    if mode == "always":
        return 1.0
    if mode == "off":
        return 0.0
    if mode.startswith("sample:"):
        try:
            rate = float(mode.removeprefix("sample:"))
        except ValueError:
            rate = -1.0
        if 0.0 <= rate <= 1.0:
            return rate
    raise ValueError(f"verify mode {mode!r}: use always, off or sample:RATE with RATE in [0, 1]")


@dataclass(frozen=True)
class Neighbour:
    """A ranked work; ``artist`` as recorded in the catalogue, ``canonical_artist`` after alias merges."""

    rank: int
    work_id: str
    catalogue: str
    artist: str
    similarity: float
    distance: float
    share: float
    canonical_artist: str = ""
    work_version: int | None = None


@dataclass(frozen=True)
class Attribution:
    """A committed attribution, as printed by ``attribute`` and ``audit show``."""

    request_id: str
    seq: int
    record_hash: str
    created_at: datetime
    image: str
    image_sha256: str
    k: int
    neighbours: list[Neighbour]
    artist_shares: dict[str, float]
    entropy: float
    nn_distance: float | None
    margin: float | None
    top_artist: str | None
    top_artist_share: float | None
    overlap_at_k: float | None
    confidence: float
    confidence_model: str
    embedder_fingerprint: str
    catalogue_version: str
    index_params: dict[str, Any]
    parameters: dict[str, Any]
    replay_of: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form of the CLI."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["shares"] = [n.share for n in self.neighbours]
        return data

    @classmethod
    def from_record(cls, request: AttributionRequest) -> Attribution:
        """Rebuild the result from its audit rows."""
        m = request.metrics
        assert m is not None, "every request is written with its metrics"
        return cls(
            request_id=request.id,
            seq=request.seq,
            record_hash=request.record_hash,
            created_at=as_utc(request.created_at),
            image=request.image_path,
            image_sha256=request.image_sha256,
            k=request.k,
            neighbours=[
                Neighbour(
                    n.rank,
                    n.work_id,
                    n.catalogue,
                    n.artist,
                    n.similarity,
                    n.distance,
                    n.share,
                    n.canonical_artist,
                    n.work_version,
                )
                for n in sorted(request.neighbours, key=lambda n: n.rank)
            ],
            artist_shares={
                s.artist: s.share for s in sorted(request.artist_shares, key=lambda s: (-s.share, s.artist))
            },
            entropy=m.entropy,
            nn_distance=m.nn_distance,
            margin=m.margin,
            top_artist=m.top_artist,
            top_artist_share=m.top_artist_share,
            overlap_at_k=m.overlap_at_k,
            confidence=m.confidence,
            confidence_model=m.confidence_model,
            embedder_fingerprint=request.embedder_fingerprint,
            catalogue_version=request.catalogue_version,
            index_params=request.index_params,
            parameters=request.parameters,
            replay_of=request.replay_of,
        )


@dataclass
class Outcome:
    """What one search produced, before it is recorded."""

    neighbours: list[Neighbour]
    candidates: list[tuple[str, float]]
    overlap_at_k: float | None
    exact_method: str | None
    catalogue_version: str
    features: dict[str, float | None] = field(default_factory=dict)
    top_artist: str | None = None
    top_artist_share: float | None = None
    artist_shares: dict[str, float] = field(default_factory=dict)


def rerank(query: np.ndarray, hits: list[Hit]) -> list[tuple[Hit, float]]:
    """Exact cosine similarity of each candidate with the query, best first (ties by point id)."""
    if not hits:
        return []
    vectors = np.vstack([h.vector for h in hits]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = np.asarray(query, dtype=np.float64)
    sims = vectors @ (query / np.linalg.norm(query))
    order = sorted(range(len(hits)), key=lambda i: (-sims[i], hits[i].point_id))
    return [(hits[i], float(sims[i])) for i in order]


def fused_similarity(hit: Hit, query: np.ndarray, style: np.ndarray, weights: dict[str, float]) -> float:
    """Weighted mean of a fused hit's exact cosine similarities in the content and style spaces."""
    assert hit.vectors is not None, "fused search must return the stored vectors"
    total = 0.0
    for space, q in ((CONTENT, query), (STYLE, style)):
        v = np.asarray(hit.vectors[space], dtype=np.float64)
        q64 = np.asarray(q, dtype=np.float64)
        total += weights[space] * float(v @ q64 / (np.linalg.norm(v) * np.linalg.norm(q64)))
    return total / sum(weights.values())


def rrf_fuse(rankings: dict[str, list[str]], weights: dict[str, float], k: int) -> list[str]:
    """Weighted reciprocal rank fusion exactly as Qdrant computes it (measured against both engines): a point at
    1-based rank r of a list with weight w scores 1 / (k - 1 + r / w), summed over lists; with w = 1 that is the
    classic 1 / (k + r - 1). Ties go to the smaller id."""
    scores = rrf_scores(rankings, weights, k)
    return sorted(scores, key=lambda p: (-scores[p], p))


def rrf_scores(rankings: dict[str, list[str]], weights: dict[str, float], k: int) -> dict[str, float]:
    scores: dict[str, float] = {}
    for space, ids in rankings.items():
        w = weights[space]
        for rank, point_id in enumerate(ids, start=1):
            scores[point_id] = scores.get(point_id, 0.0) + 1.0 / (k - 1 + rank / w)
    return scores


def apply_k_policy(ranked: list[tuple[Any, float]], params: AttributionParams) -> list[tuple[Any, float]]:
    """The first k, then only those within max_distance when it is set."""
    kept = ranked[: params.k]
    if params.max_distance is not None:
        kept = [(item, sim) for item, sim in kept if 1.0 - sim <= params.max_distance]
    return kept


class Attributor:
    """Attributes query vectors against one store and writes every request to the hash-chained audit log."""

    def __init__(
        self,
        engine: Engine,
        store: VectorStore,
        *,
        embedder_name: str,
        embedder_fingerprint: str,
        requester: str,
        exact_cache_dir: Path,
        embedder: Embedder | None = None,
        style_embedder: StyleEmbedder | None = None,
        seed: int | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.embedder = embedder
        self.style_embedder = style_embedder
        self.embedder_name = embedder_name
        self.embedder_fingerprint = embedder_fingerprint
        self.requester = requester
        self.exact_cache_dir = Path(exact_cache_dir)
        self._exact: dict[tuple[str, str], ExactIndex] = {}
        self._random = random.Random(seed)
        self.calibration: LogisticModel | None = latest_model(engine, embedder_fingerprint)
        self.canonical = canonical_artists(engine)

    def with_store(self, store: VectorStore) -> Attributor:
        """The same attributor over another store (a scratch copy, say); exact indexes are not shared."""
        clone = copy.copy(self)
        clone.store, clone._exact = store, {}
        return clone

    # -- exact ground truth ------------------------------------------------------------------------------------
    def exact_index(self, method: str, space: str = CONTENT) -> tuple[ExactIndex, str]:
        """The exact index of one space of the collection's current content (cached on disk by content version)."""
        version = self.store.content_version()
        key = (method, space, version)
        if key not in self._exact:
            folder = (
                self.exact_cache_dir / self.store.collection / (method if space == CONTENT else f"{space}-{method}")
            )
            self._exact[key] = load_or_build(method, folder, version, lambda: self.store.fetch_all(space))
        return self._exact[key], version

    def exact_top(
        self, queries: np.ndarray, params: AttributionParams, styles: np.ndarray | None = None
    ) -> tuple[list[list[str]], str]:
        """Exact top-K point ids (K policy applied) of each query row in the params' space, and the catalogue
        version. ``fused``: exact top (k x oversampling) in each space, merged by the same weighted RRF."""
        if params.space == FUSED:
            if styles is None:
                raise ValueError("a fused exact check needs the style vectors of the queries")
            return self._exact_fused(np.atleast_2d(queries), np.atleast_2d(styles), params)
        index, version = self.exact_index(params.exact_method, params.space)
        source = styles if params.space == STYLE else queries
        if source is None:
            raise ValueError("a style exact check needs the style vectors of the queries")
        rows, sims = index.search(np.atleast_2d(source).astype(np.float32), params.k)
        tops = [
            [index.ids[r] for r, _ in apply_k_policy(list(zip(row, sim, strict=True)), params)]
            for row, sim in zip(rows.tolist(), sims.tolist(), strict=True)
        ]
        return tops, version

    def _exact_fused(
        self, contents: np.ndarray, styles: np.ndarray, params: AttributionParams
    ) -> tuple[list[list[str]], str]:
        depth = params.k * params.oversampling
        rankings: dict[str, list[list[str]]] = {}
        for space, queries in ((CONTENT, contents), (STYLE, styles)):
            index, version = self.exact_index(params.exact_method, space)
            rows, _ = index.search(queries.astype(np.float32), depth)
            rankings[space] = [[index.ids[r] for r in row] for row in rows.tolist()]
        tops = [
            rrf_fuse({s: rankings[s][i] for s in rankings}, params.weights, params.rrf_k)[: params.k]
            for i in range(len(contents))
        ]
        return tops, version

    # -- one request -------------------------------------------------------------------------------------------
    def compute(self, query: np.ndarray, params: AttributionParams, style: np.ndarray | None = None) -> Outcome:
        """Search, re-rank, apply K, measure, share, and verify against the exact search when asked.

        ``query`` is the content vector; ``style`` the style vector (needed for the style and fused spaces).
        """
        ranked = self._search(query, style, params)
        kept = apply_k_policy(ranked, params)
        sims = [sim for _, sim in kept]
        shares = neighbour_shares(sims, params.shares, params.temperature)
        neighbours = [
            Neighbour(
                rank=rank,
                work_id=str(hit.payload.get("work_id", hit.point_id)),
                catalogue=str(hit.payload.get("catalogue", "")),
                artist=str(hit.payload.get("artist", "")),
                similarity=sim,
                distance=1.0 - sim,
                share=share,
                canonical_artist=self._canonical_of(hit),
                work_version=hit.payload.get("version"),
            )
            for rank, ((hit, sim), share) in enumerate(zip(kept, shares, strict=True), start=1)
        ]
        candidates = [(self._canonical_of(hit), sim) for hit, sim in ranked]
        overlap, method, version = None, None, ""
        if self._random.random() < verify_rate(params.verify):
            exact_ids, version = self.exact_top(query, params, style)
            overlap = overlap_at_k([hit.point_id for hit, _ in kept], exact_ids[0])
            method = params.exact_method
        by_artist, top = top_artist([n.canonical_artist for n in neighbours], sims, shares)
        return Outcome(
            neighbours=neighbours,
            candidates=candidates,
            overlap_at_k=overlap,
            exact_method=method,
            catalogue_version=version or self.store.content_version(),
            # No neighbour within max_distance is no attribution: the least confident indicator values.
            features={
                "entropy": artist_entropy([n.canonical_artist for n in neighbours]) if neighbours else 1.0,
                "nn_distance": neighbours[0].distance if neighbours else None,
                "margin": artist_margin(candidates) if neighbours else None,
            },
            top_artist=top,
            top_artist_share=by_artist.get(top) if top else None,
            artist_shares=by_artist,
        )

    def _search(
        self, query: np.ndarray, style: np.ndarray | None, params: AttributionParams
    ) -> list[tuple[Hit, float]]:
        """Candidates with their exact similarity, best first (fused: in the engine's fused order)."""
        depth = params.k * params.oversampling
        if params.space != CONTENT and style is None:
            raise ValueError(f"the {params.space} space needs the query's style vector")
        if params.space == CONTENT:
            return rerank(query, self.store.search(query, depth, with_vectors=True))
        if params.space == STYLE:
            return rerank(style, self.store.search(style, depth, with_vectors=True, space=STYLE))  # type: ignore[arg-type]
        hits = self.store.search_fused(
            {CONTENT: query, STYLE: style},  # type: ignore[dict-item]
            depth,
            prefetch=depth,
            weights=params.weights,
            rrf_k=params.rrf_k,
            with_vectors=True,
        )
        return [(hit, fused_similarity(hit, query, style, params.weights)) for hit in hits]  # type: ignore[arg-type]

    def _canonical_of(self, hit: Hit) -> str:
        artist = str(hit.payload.get("artist", ""))
        return self.canonical.get(artist, artist)

    def attribute(self, image_path: str | Path, params: AttributionParams | None = None) -> Attribution:
        """Attribute one image file; returns only after its audit record is committed."""
        if self.embedder is None:
            raise ValueError("this Attributor was built without an embedder")
        params = params or AttributionParams()
        image = load_image(image_path, target_size=224)
        query, style = self.embed([image.image], params.space)
        outcome = self.compute(query[0], params, None if style is None else style[0])
        return self.record(
            printable_path(image.path.resolve()),
            image.sha256,
            query[0],
            params,
            outcome,
            style=None if style is None else style[0],
        )

    def embed(self, images: list[Any], space: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Content vectors, and style vectors when the space needs them (one forward pass for both)."""
        if self.embedder is None:
            raise ValueError("this Attributor was built without an embedder")
        if space == CONTENT:
            return self.embedder.embed(images), None
        if self.style_embedder is None:
            raise ValueError(f"the {space} space needs a style embedder")
        return self.style_embedder.embed_both(images)

    def record(
        self,
        image: str,
        image_sha256: str,
        query: np.ndarray,
        params: AttributionParams,
        outcome: Outcome,
        replay_of: str | None = None,
        evaluation: tuple[int, int] | None = None,
        style: np.ndarray | None = None,
    ) -> Attribution:
        """Append the request to the audit chain (one transaction) and return it as committed.

        ``evaluation`` = (evaluation run id, labelled query id) tags a request made by ``evaluate run``.
        """
        score, model_name = confidence(self.calibration, outcome.features)
        request_id = str(uuid.uuid4())
        with session_scope(self.engine) as session:  # a database that is down gives a one-line error
            work_pks = _work_pks(session, outcome.neighbours)
        request = AttributionRequest(
            id=request_id,
            created_at=utcnow(),
            requester=self.requester,
            image_path=image,
            image_sha256=image_sha256,
            query_vector=np.asarray(query, dtype="<f4").tobytes(),
            style_vector=None if style is None else np.asarray(style, dtype="<f4").tobytes(),
            embedder_name=self.embedder_name,
            embedder_fingerprint=self.embedder_fingerprint,
            store_kind=self.store.kind,
            collection=self.store.collection,
            catalogue_version=outcome.catalogue_version,
            index_params=self.store.index_info(),
            parameters=params.as_json(),
            k=params.k,
            replay_of=replay_of,
            evaluation_run_id=evaluation[0] if evaluation else None,
            labelled_query_id=evaluation[1] if evaluation else None,
        )
        request.neighbours = [
            AttributionNeighbour(
                rank=n.rank,
                work_pk=work_pks.get((n.catalogue, n.work_id)),
                catalogue=n.catalogue,
                work_id=n.work_id,
                work_version=n.work_version,
                artist=n.artist,
                canonical_artist=n.canonical_artist,
                similarity=n.similarity,
                distance=n.distance,
                share=n.share,
            )
            for n in outcome.neighbours
        ]
        request.artist_shares = [AttributionArtistShare(artist=a, share=s) for a, s in outcome.artist_shares.items()]
        request.metrics = AttributionMetrics(
            entropy=outcome.features["entropy"],
            nn_distance=outcome.features["nn_distance"],
            margin=outcome.features["margin"],
            top_artist=outcome.top_artist,
            top_artist_share=outcome.top_artist_share,
            overlap_at_k=outcome.overlap_at_k,
            exact_method=outcome.exact_method,
            confidence=score,
            confidence_model=model_name,
        )
        return Attribution.from_record(chain.append(self.engine, request))

    def replay(self, request_id: str) -> tuple[Attribution, Attribution]:
        """Re-run a past request (its recorded query vector and parameters) on today's index; logged as a replay."""
        original = load_request(self.engine, request_id)
        query = np.frombuffer(original.query_vector, dtype="<f4")
        style = None if original.style_vector is None else np.frombuffer(original.style_vector, dtype="<f4")
        params = AttributionParams(**original.parameters)
        outcome = self.compute(query, params, style)
        new = self.record(
            original.image_path, original.image_sha256, query, params, outcome, replay_of=original.id, style=style
        )
        return Attribution.from_record(original), new


def as_utc(moment: datetime) -> datetime:
    """Timestamps are stored in UTC; SQLite returns them without a zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def top_artist(
    artists: list[str], similarities: list[float], shares: list[float]
) -> tuple[dict[str, float], str | None]:
    """Per-artist shares and the top artist: the largest share, ties to the artist with the closest work."""
    by_artist = artist_shares(artists, shares)
    best: dict[str, float] = {}
    for artist, similarity in zip(artists, similarities, strict=True):
        best[artist] = max(similarity, best.get(artist, -2.0))
    return by_artist, max(by_artist, key=lambda a: (by_artist[a], best[a]), default=None)


def canonical_artists(engine: Engine) -> dict[str, str]:
    """Alias name -> canonical name, for every merged artist (merges can chain: A -> B -> C gives A -> C)."""
    with Session(engine) as session:
        rows = session.execute(select(Artist.id, Artist.name, Artist.canonical_id)).all()
    by_id = {row.id: row for row in rows}
    mapping = {}
    for row in rows:
        current, seen = row, set()
        while current.canonical_id is not None and current.id not in seen:
            seen.add(current.id)
            current = by_id[current.canonical_id]
        if current.id != row.id:
            mapping[row.name] = current.name
    return mapping


def _work_pks(session: Session, neighbours: list[Neighbour]) -> dict[tuple[str, str], int]:
    """Audit-DB primary keys of the neighbour works, keyed by (catalogue, work_id)."""
    if not neighbours:
        return {}
    rows = session.execute(
        select(Catalogue.name, Work.work_id, Work.id)
        .join(Catalogue, Work.catalogue_id == Catalogue.id)
        .where(Work.work_id.in_({n.work_id for n in neighbours}))
    )
    return {(cat, wid): pk for cat, wid, pk in rows}


def load_request(engine: Engine, request_id: str) -> AttributionRequest:
    """A request with its children; NotFoundError if absent."""
    with Session(engine) as session:
        request = session.scalar(chain.select_requests().where(AttributionRequest.id == request_id))
    if request is None:
        raise NotFoundError(
            f"no attribution request {request_id!r} in the audit log; `attribution-audit audit list` shows ids"
        )
    return request


def neighbour_point_ids(request: AttributionRequest) -> list[str]:
    return [point_id_for(n.catalogue, n.work_id) for n in sorted(request.neighbours, key=lambda n: n.rank)]


def diff_attributions(before: Attribution, after: Attribution) -> list[str]:
    """Human-readable differences between a recorded attribution and its replay (empty when identical)."""
    lines = []
    old = {(n.catalogue, n.work_id): n for n in before.neighbours}
    new = {(n.catalogue, n.work_id): n for n in after.neighbours}
    for key in sorted(old.keys() - new.keys(), key=lambda k: old[k].rank):
        lines.append(f"- removed {key[1]} ({old[key].artist}), was rank {old[key].rank}")
    for key in sorted(new.keys() - old.keys(), key=lambda k: new[k].rank):
        lines.append(f"+ added {key[1]} ({new[key].artist}) at rank {new[key].rank}")
    for key in sorted(old.keys() & new.keys(), key=lambda k: new[k].rank):
        if old[key].rank != new[key].rank:
            lines.append(f"~ {key[1]} moved from rank {old[key].rank} to {new[key].rank}")
    for name in ("entropy", "nn_distance", "margin", "confidence", "top_artist"):
        a, b = getattr(before, name), getattr(after, name)
        same = a == b if not isinstance(a, float) or not isinstance(b, float) else abs(a - b) < 1e-9
        if not same:
            lines.append(f"~ {name}: {a} -> {b}")
    if before.catalogue_version != after.catalogue_version:
        lines.append(f"~ catalogue version: {before.catalogue_version} -> {after.catalogue_version}")
    return lines
