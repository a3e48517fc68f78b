"""Query spaces as objects: a query carries its vectors in one value, and each space knows how to search the engine
and how to compute the exact answer that checks it.

``content`` and ``style`` search one named vector of the collection; ``fused`` asks the engine for weighted reciprocal
rank fusion of both (:func:`~attribution_audit.domain.ranking.rrf_fuse` mirrors its formula). A new space (a learned
projection, say) is one more :class:`Space` registered in :data:`SPACES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from attribution_audit.domain.params import DEFAULT_K, FUSED, AttributionParams
from attribution_audit.domain.points import CONTENT, STYLE, Hit
from attribution_audit.domain.projection import ArtistCentroids, Projection, join_bases, unit_vectors
from attribution_audit.domain.ranking import apply_k_policy, by_score, fused_similarity, rrf_fuse


@dataclass(frozen=True)
class QueryVectors:
    """The vectors of one query, one per base space it was embedded in (``style`` only when asked for), its
    projected coordinates in the learned spaces (name, version) it was placed in (:meth:`Space.placed`), and the
    vectors of its corner crops (:func:`query_crop_boxes`; embedded for a request in a learned space)."""

    content: np.ndarray
    style: np.ndarray | None = None
    projected: Mapping[tuple[str, int], np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    crops: tuple[QueryVectors, ...] = field(default=(), compare=False, repr=False)

    def of(self, space: str) -> np.ndarray:
        """The vector of a base space; ValueError when the query was not embedded in it."""
        vector = self.content if space == CONTENT else self.style if space == STYLE else None
        if vector is None:
            raise ValueError(f"the query has no {space} vector; embed it for the {space} space")
        return vector

    def as_dict(self) -> dict[str, np.ndarray]:
        """{base space: vector} of the vectors the query has."""
        return {CONTENT: self.content} | ({STYLE: self.style} if self.style is not None else {})

    def crop_rows(self) -> np.ndarray | None:
        """The crops' vectors as rows (each crop's content vector, then its style vector when it has one), as the
        audit record keeps them; None without crops."""
        if not self.crops:
            return None
        return np.vstack([np.concatenate([c.content, *([] if c.style is None else [c.style])]) for c in self.crops])

    def with_crop_rows(self, values: np.ndarray) -> QueryVectors:
        """The query with the crops of :meth:`crop_rows`'s rows, given as their values in a row (split as the query's
        own vectors are sized); ValueError when they do not make whole rows."""
        split = len(self.content)
        width = split + (0 if self.style is None else len(self.style))
        if values.ndim != 1 or not values.size or values.size % width:
            raise ValueError(f"{values.size} values are not rows of {width}")
        rows = values.reshape(-1, width)
        return replace(self, crops=tuple(QueryVectors(r[:split], r[split:] if width > split else None) for r in rows))


class SearchEngine(Protocol):
    """What a space needs of a vector store."""

    def search(
        self, vector: np.ndarray, limit: int, *, exact: bool = False, with_vectors: bool = False, space: str = CONTENT
    ) -> list[Hit]: ...

    def search_fused(
        self,
        vectors: dict[str, np.ndarray],
        limit: int,
        *,
        prefetch: int,
        weights: dict[str, float],
        rrf_k: int = 60,
        with_vectors: bool = False,
    ) -> list[Hit]: ...


class ExactSearch(Protocol):
    """Exact nearest point ids of each query row in one base space, best first (depth per row)."""

    def __call__(self, space: str, queries: np.ndarray, depth: int, /) -> list[list[tuple[str, float]]]: ...


class Space(ABC):
    """One way of searching: which base vectors it needs, the engine's answer, and the exact answer."""

    name: str
    bases: tuple[str, ...]

    def placed(self, query: QueryVectors) -> QueryVectors:
        """The query with what this space computes of it before searching (a learned space's projected
        coordinates), so that the request's searches and measures in the space compute it once."""
        return query

    @abstractmethod
    def candidates(
        self, engine: SearchEngine, query: QueryVectors, params: AttributionParams
    ) -> list[tuple[Hit, float]]:
        """The engine's k x oversampling candidates with their exact similarity, best first."""

    @abstractmethod
    def engine_top(self, engine: SearchEngine, query: QueryVectors, params: AttributionParams) -> list[Hit]:
        """The engine's raw answer at depth k (what evaluations time against the exact search)."""

    @abstractmethod
    def exact_top(
        self, exact: ExactSearch, queries: Sequence[QueryVectors], params: AttributionParams
    ) -> list[list[str]]:
        """The exact top-K point ids of each query (K policy applied), computed in one batch."""

    def centroid_log_odds(self, query: QueryVectors, artist: str) -> float | None:
        """The log-odds of ``artist`` under the space's model of the artists' centroids (a learned space's; None
        in a space without one)."""
        return None

    def crop_log_odds(self, query: QueryVectors, artist: str) -> float | None:
        """The mean log-odds of ``artist`` over the query's crops (:attr:`QueryVectors.crops`) under the space's
        model of the artists' centroids (a learned space's; None in a space without one, or without crops)."""
        return None

    def most_likely_artist(self, query: QueryVectors) -> str | None:
        """The artist of maximum posterior under the space's model of the artists' centroids (the ``centroid``
        rule's top artist); None in a space without one."""
        return None

    @property
    def has_centroids(self) -> bool:
        """Whether the space has a model of the artists' centroids (the ``centroid`` rule needs one)."""
        return False


class SingleSpace(Space):
    """One named vector of the collection, ranked by the engine's exact cosine similarity (see ranking.by_score)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bases = (name,)

    def candidates(
        self, engine: SearchEngine, query: QueryVectors, params: AttributionParams
    ) -> list[tuple[Hit, float]]:
        vector = query.of(self.name)
        depth = params.k * params.oversampling
        return by_score(engine.search(vector, depth, space=self.name))

    def engine_top(self, engine: SearchEngine, query: QueryVectors, params: AttributionParams) -> list[Hit]:
        return engine.search(query.of(self.name), params.k, space=self.name)

    def exact_top(
        self, exact: ExactSearch, queries: Sequence[QueryVectors], params: AttributionParams
    ) -> list[list[str]]:
        rows = exact(self.name, _stack(queries, self.name), params.k)
        return [[point for point, _ in apply_k_policy(row, params)] for row in rows]


class FusedSpace(Space):
    """Both base spaces, fused by the engine with weighted RRF; a neighbour's similarity is the weighted mean of its
    two exact cosines."""

    name = FUSED
    bases = (CONTENT, STYLE)

    def candidates(
        self, engine: SearchEngine, query: QueryVectors, params: AttributionParams
    ) -> list[tuple[Hit, float]]:
        depth = params.k * params.oversampling
        vectors = {base: query.of(base) for base in self.bases}
        hits = engine.search_fused(
            vectors, depth, prefetch=depth, weights=params.weights, rrf_k=params.rrf_k, with_vectors=True
        )
        return [
            (hit, fused_similarity(hit, vectors[CONTENT], vectors[STYLE], params.weights)) for hit in _ties_by_id(hits)
        ]

    def engine_top(self, engine: SearchEngine, query: QueryVectors, params: AttributionParams) -> list[Hit]:
        vectors = {base: query.of(base) for base in self.bases}
        depth = params.k * params.oversampling
        hits = engine.search_fused(vectors, depth, prefetch=depth, weights=params.weights, rrf_k=params.rrf_k)
        return _ties_by_id(hits)[: params.k]

    def exact_top(
        self, exact: ExactSearch, queries: Sequence[QueryVectors], params: AttributionParams
    ) -> list[list[str]]:
        depth = params.k * params.oversampling
        rankings = {base: exact(base, _stack(queries, base), depth) for base in self.bases}
        return [
            rrf_fuse({base: [p for p, _ in rankings[base][i]] for base in self.bases}, params.weights, params.rrf_k)[
                : params.k
            ]
            for i in range(len(queries))
        ]


def _ties_by_id(hits: list[Hit]) -> list[Hit]:
    """Fused hits by their fusion score, equal scores by point id, as :func:`rrf_fuse` (the exact side) orders them:
    the engine returns equal scores in any order (two works swapping ranks between the spaces tie), which made the
    same request keep either work and report a miss of the search when it kept the other."""
    return sorted(hits, key=lambda hit: (-hit.similarity, hit.point_id))


SPACES: dict[str, Space] = {CONTENT: SingleSpace(CONTENT), STYLE: SingleSpace(STYLE), FUSED: FusedSpace()}


def partial_spaces(coverage: Mapping[str, int], spaces: Iterable[str] | None = None) -> list[str]:
    """The spaces (of ``spaces``, by default every space counted) that hold fewer works than the content space:
    the works missing there could never be found in them. ``coverage`` maps a space to the works embedded in it."""
    works = coverage.get(CONTENT, 0)
    return [space for space in (coverage if spaces is None else spaces) if coverage.get(space, 0) < works]


def space_named(name: str) -> Space:
    """The space called ``name``; ValueError naming the known ones otherwise."""
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError(f"space must be one of {', '.join(SPACES)}") from None


def _stack(queries: Sequence[QueryVectors], space: str) -> np.ndarray:
    return np.vstack([np.asarray(q.of(space), dtype=np.float32) for q in queries])


# The base spaces a learned space can be fitted from (``spaces fit --from``) and the query vectors each needs.
LEARNED_BASES: dict[str, tuple[str, ...]] = {
    CONTENT: (CONTENT,),
    STYLE: (STYLE,),
    f"{CONTENT}+{STYLE}": (CONTENT, STYLE),
}


def fits_base(base: str, input_dim: int, sizes: Mapping[str, int]) -> bool:
    """Whether a projection taking ``input_dim`` values fits ``base`` over vectors of these ``sizes`` (base space ->
    size): its base spaces' sizes add up to it. False for an unknown base; True when the vectors lack one of its base
    spaces (a coverage check says so)."""
    bases = LEARNED_BASES.get(base)
    if bases is None:
        return False
    return any(b not in sizes for b in bases) or sum(sizes[b] for b in bases) == input_dim


@dataclass(frozen=True)
class ProjectedCatalogue:
    """The catalogue's works in a learned space: point ids, payloads and unit vectors (one row per work)."""

    ids: list[str]
    payloads: list[dict[str, Any]]
    vectors: np.ndarray


class LearnedSpace(Space):
    """A projection learned from the catalogue's artist labels (``spaces fit``), one stored version of it; the
    catalogue's projected vectors are searched exactly (cosine), so its answer is its own exact answer."""

    def __init__(self, name: str, version: int, base: str, projection: Projection, works: ProjectedCatalogue) -> None:
        self.name, self.version, self.base = name, version, base
        self.bases = LEARNED_BASES[base]
        self.projection, self.works = projection, works
        self.centroids: ArtistCentroids | None = None  # the works' artists' model (:meth:`over`, given the artists)
        self.since_fit: tuple[str, ...] = ()  # the works' artists the version was not fitted on (no centroid)
        self.fitted_k = DEFAULT_K  # the K its own confidence model was fitted at (``spaces fit --k``)

    @classmethod
    def over(
        cls,
        name: str,
        version: int,
        base: str,
        projection: Projection,
        works: Sequence[tuple[str, dict[str, Any], QueryVectors]],
        artists: Sequence[str] = (),
        fitted: Collection[str] | None = None,
        fitted_k: int = DEFAULT_K,
    ) -> LearnedSpace:
        """The space over a catalogue's works, given as (point id, payload, base vectors), with the model of their
        artists' centroids when ``artists`` names each work's (canonical) artist: of the ``fitted`` artists only
        (those the version was fitted on; every artist when None), since the projection has no direction that
        tells the others apart, so an artist ingested since the fit has no centroid (:attr:`since_fit`); ``fitted_k``:
        the K the version was fitted at (:attr:`fitted_k`)."""
        space = cls(name, version, base, projection, ProjectedCatalogue([], [], np.empty((0, projection.dim))))
        space.fitted_k = fitted_k
        if works:
            coordinates = space.coordinates([vectors for _, _, vectors in works])
            space.works = ProjectedCatalogue([w[0] for w in works], [w[1] for w in works], unit_vectors(coordinates))
            if artists:
                known = np.array([fitted is None or a in fitted for a in artists], dtype=bool)
                space.since_fit = tuple(sorted({a for a, k in zip(artists, known, strict=True) if not k}))
                kept = [a for a, k in zip(artists, known, strict=True) if k]
                space.centroids = ArtistCentroids.fit(coordinates[known], kept)
        return space

    def coordinates(self, queries: Sequence[QueryVectors]) -> np.ndarray:
        """The queries' projected coordinates in this space (before they are made unit): those they carry when each
        was :meth:`placed` here, else projected now."""
        key = (self.name, self.version)
        if queries and all(key in q.projected for q in queries):
            return np.vstack([q.projected[key] for q in queries])
        parts = [np.vstack([q.of(base) for q in queries]) for base in self.bases]
        return self.projection.coordinates(join_bases(parts))

    def placed(self, query: QueryVectors) -> QueryVectors:
        """The query carrying its projected coordinates in this space (its base vectors are the same objects)."""
        key = (self.name, self.version)
        if key in query.projected:
            return query
        return replace(query, projected={**query.projected, key: self.coordinates([query])[0]})

    def project(self, queries: Sequence[QueryVectors]) -> np.ndarray:
        """The queries' unit vectors in this space."""
        return unit_vectors(self.coordinates(queries))

    def centroid_log_odds(self, query: QueryVectors, artist: str) -> float | None:
        """The log-odds of ``artist`` under LDA's Gaussian model of the catalogue's artists in this space
        (:class:`ArtistCentroids`); None without the model (a space built without its works' artists, or whose
        catalogue has no within-artist spread) or for an artist without works in it."""
        if self.centroids is None:
            return None
        return self.centroids.log_odds(self.coordinates([query])[0], artist)

    def crop_log_odds(self, query: QueryVectors, artist: str) -> float | None:
        """The mean of ``artist``'s log-odds (:meth:`centroid_log_odds`) over the query's crops: how far the artist
        holds across the image; None without crops, without the model or for an artist without works in it."""
        if self.centroids is None or not query.crops:
            return None
        centroids = self.centroids
        found = [v for row in self.coordinates(query.crops) if (v := centroids.log_odds(row, artist)) is not None]
        return sum(found) / len(found) if found else None

    @property
    def has_centroids(self) -> bool:
        return self.centroids is not None

    def most_likely_artist(self, query: QueryVectors) -> str | None:
        """The artist of maximum posterior under :class:`ArtistCentroids` (equal priors); None without the model."""
        return None if self.centroids is None else self.centroids.most_likely(self.coordinates([query])[0])

    def _nearest(self, queries: Sequence[QueryVectors], depth: int) -> list[list[tuple[Hit, float]]]:
        sims = self.project(queries) @ self.works.vectors.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :depth]
        return [
            [
                (Hit(self.works.ids[j], float(row[j]), self.works.payloads[j], self.works.vectors[j]), float(row[j]))
                for j in columns
            ]
            for row, columns in zip(sims, order, strict=True)
        ]

    def candidates(
        self, engine: SearchEngine, query: QueryVectors, params: AttributionParams
    ) -> list[tuple[Hit, float]]:
        return self._nearest([query], params.k * params.oversampling)[0]

    def engine_top(self, engine: SearchEngine, query: QueryVectors, params: AttributionParams) -> list[Hit]:
        return [hit for hit, _ in self._nearest([query], params.k)[0]]

    def exact_top(
        self, exact: ExactSearch, queries: Sequence[QueryVectors], params: AttributionParams
    ) -> list[list[str]]:
        return [[hit.point_id for hit, _ in apply_k_policy(row, params)] for row in self._nearest(queries, params.k)]
