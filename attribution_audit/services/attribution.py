"""One attribution request: embed -> engine candidates -> exact re-rank -> K policy -> indicators -> shares ->
exact recall check -> committed, hash-chained audit record -> result."""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attribution_audit.config import COPY_LAYOUT_DEPTH, COPY_LAYOUT_FLOOR, DEFAULT_COPY_DEPTH
from attribution_audit.domain.confidence import STORED_MODEL_PREFIX, LogisticModel, confidence
from attribution_audit.domain.indicators import request_indicators
from attribution_audit.domain.params import CENTROID, DEFAULT_K, FUSED, AttributionParams, verify_rate
from attribution_audit.domain.points import CONTENT, LAYOUT, STYLE, Hit
from attribution_audit.domain.projection import Projection
from attribution_audit.domain.results import Attribution, Neighbour, Outcome, RequestDraft, parse_space_versions
from attribution_audit.domain.spaces import (
    LEARNED_BASES,
    SPACES,
    LearnedSpace,
    QueryVectors,
    SearchEngine,
    Space,
    fits_base,
    partial_spaces,
    space_named,
)
from attribution_audit.embedding.base import Embedder
from attribution_audit.embedding.crops import corner_crops
from attribution_audit.embedding.layout import layout_vector, one_colour
from attribution_audit.errors import DatabaseError, NotFoundError, OptionError, VectorStoreError
from attribution_audit.services.copy_check import CopyDetector, not_run
from attribution_audit.sources.images import LoadedImage, load_image, printable_path
from attribution_audit.store.audit_store import AuditStore
from attribution_audit.store.exact import ExactIndex, cache_folder, load_or_build, overlap_at_k
from attribution_audit.store.spaces import SpaceInfo
from attribution_audit.store.vectors import VectorStore

if TYPE_CHECKING:
    from attribution_audit.embedding.style import StyleEmbedder


def refit_command(space: str, base: str, k: int = DEFAULT_K) -> str:
    """The one spelling of the command that refits a learned space as it was fitted (its base, and ``spaces fit --k``
    when not the default), quoted; ``k``: the K its own confidence model is to be fitted at."""
    at = "" if k == DEFAULT_K else f" --k {k}"
    return f"`attribution-audit spaces fit {space} --from {base}{at}`"


def _refuse_relabelled(kept: Sequence[tuple[tuple[Hit, str], float]], neighbours: Sequence[Neighbour]) -> None:
    """VectorStoreError where a neighbour's payload names another work than its point's (point ids derive from the
    catalogue and work id): the payload was rewritten behind the catalogue, and the request would cite that work with
    another work's vectors and image. A payload naming no work is refused by the audit write."""
    for ((hit, _), _), neighbour in zip(kept, neighbours, strict=True):
        if "work_id" in hit.payload and not hit.is_point_of(neighbour.catalogue, neighbour.work_id):
            raise VectorStoreError(
                f"the vector store's point {hit.point_id} names work {neighbour.work_id!r} of catalogue "
                f"{neighbour.catalogue!r}, which is not that point's work: its payload was changed behind the "
                "catalogue; this request was not recorded: ingest the catalogue again into this collection (it "
                "rewrites such points) or remove the point with `attribution-audit catalogue check --repair`"
            )


def _work_version(payload: dict[str, Any]) -> int | None:
    """The version of a work as its point's payload holds it (None: a point ingested before versions); refused
    where it is not an integer: the audit log would otherwise name a version no record of the catalogue has."""
    version = payload.get("version")
    if version is None or type(version) is int:
        return version
    raise VectorStoreError(
        f"work {payload.get('catalogue', '')}/{payload.get('work_id', '')} holds version {version!r} in the vector "
        "store, not an integer (which `ingest` writes): the collection was written or edited by something else; "
        "restore that point's payload, or ingest the catalogue into a fresh collection; nothing was recorded"
    )


@dataclass(frozen=True)
class FlatImage:
    """An image of one colour throughout (every pixel alike, of the part attributed: the middle of an image longer
    than 2:1), such as a generator's blocked, all-black output or a blank placeholder: the works nearest it share
    that colour and nothing else, so its indicators and confidence say nothing of likeness. Shown with its result
    and wherever its record is shown (which keeps the flag: ``attribution_metrics.one_colour``)."""

    image: str

    def __str__(self) -> str:
        return (
            f"{self.image} is one colour throughout the part attributed: a blocked or blank output? The works nearest "
            "it share only that colour, and its confidence is no evidence of likeness"
        )


@dataclass(frozen=True)
class SpaceSinceFit:
    """A learned space version was fitted before ``artists`` (of its collection's works) were ingested: they have no
    centroid there (their centroid log-odds are None, and the ``centroid`` rule never reports them) until the space is
    refitted. The one spelling of that note: ``attribute``, the service's answers, request pages and the centroid
    rule's refusal show it."""

    space: str
    version: int
    base: str
    artists: tuple[str, ...]
    k: int = DEFAULT_K  # the K the version was fitted at, which the refit keeps

    @classmethod
    def of(cls, space: Space) -> SpaceSinceFit | None:
        """The note of a space as a request measures in it (:attr:`LearnedSpace.since_fit`); None when it has none."""
        if isinstance(space, LearnedSpace) and space.since_fit:
            return cls(space.name, space.version, space.base, space.since_fit, space.fitted_k)
        return None

    def __str__(self) -> str:
        shown = ", ".join(self.artists[:5]) + (", ..." if len(self.artists) > 5 else "")
        return (
            f"space {self.space} (version {self.version}) was fitted before {len(self.artists)} artist(s) were "
            f"ingested ({shown}): they have no centroid; refit it with "
            f"{refit_command(self.space, self.base, self.k)} to include them"
        )


def space_since_fit(audit: AuditStore, info: SpaceInfo, as_of: datetime | None = None) -> SpaceSinceFit | None:
    """The note of a stored learned space version as of the audit log's catalogue now, or at ``as_of`` (a request's
    time: only the artists it could have met) (its collection's artists it was not fitted on, canonical names); None
    when there are none, or for a version stored without its artists."""
    canonical = audit.catalogue.canonical_artists()
    fitted = info.fitted_artists(canonical)
    if fitted is None:
        return None
    now = {canonical.get(a, a) for a in audit.catalogue.artists_in(info.collection, as_of)}
    artists = tuple(sorted(now - fitted))
    return SpaceSinceFit(info.name, info.version, info.base, artists, info.fitted_k) if artists else None


EXACT_PROJECTED = "exact-projected"  # what answers a learned space's search: the projected catalogue, exactly


def index_params(info: dict[str, Any], space: Space) -> dict[str, Any]:
    """What a request records of the index it searched: the store's ``info``; in a learned space, whose neighbours
    are the projected catalogue searched exactly, its ``index`` is ``exact-projected`` and ``engine_index`` what
    answers the engine's searches the request still makes (the agreement between spaces, the copy check), at the
    HNSW parameters recorded beside it (records made before keep the store's index there)."""
    if isinstance(space, LearnedSpace):
        return {**info, "index": EXACT_PROJECTED, "engine_index": info["index"]}
    return info


class Attributor:
    """Attributes query vectors against one vector store and writes every request to the hash-chained audit log."""

    def __init__(
        self,
        audit: AuditStore,
        store: VectorStore,
        *,
        embedder_name: str,
        embedder_fingerprint: str,
        requester: str,
        exact_cache_dir: Path,
        embedder: Embedder | None = None,
        style_embedder: StyleEmbedder | None = None,
        seed: int | None = None,
        copy_depth: int = DEFAULT_COPY_DEPTH,
        query_crops: bool = True,
    ) -> None:
        self.audit = audit
        self.store = store
        self.embedder = embedder
        self.style_embedder = style_embedder
        self.embedder_name = embedder_name
        self.embedder_fingerprint = embedder_fingerprint
        self.requester = requester
        self.exact_cache_dir = Path(exact_cache_dir)
        self._exact: dict[tuple[str, str, str], ExactIndex] = {}
        self._learned: dict[tuple[str, int, str], LearnedSpace] = {}
        self._fitted: dict[tuple[str, int], tuple[SpaceInfo, Projection]] = {}  # a version never changes
        self._newest: dict[str, int] = {}  # the newest version of each learned space, as of ``_marker``
        self.copies: CopyDetector | None = None  # made on first use
        self.copy_depth = copy_depth  # candidates of copy detection from each base space (0: the check is off)
        self.query_crops = query_crops  # whether :meth:`embed` may embed a learned-space query's corner crops
        self._random = random.Random(seed)
        self._calibrations: dict[tuple[str, int | None, str, int], LogisticModel | None] = {}
        self._space_names: list[str] | None = None
        self._marker: tuple[int | None, ...] | None = None  # of the stored spaces and models read (:meth:`refresh`)
        self.canonical = audit.catalogue.canonical_artists()
        self.coverage = audit.catalogue.space_coverage(store.collection)

    def with_store(self, store: VectorStore) -> Attributor:
        """The same attributor over another store (a scratch copy, say); exact indexes are not shared."""
        clone = copy.copy(self)
        clone.store, clone._exact, clone._learned, clone.copies = store, {}, {}, None
        clone._newest, clone._calibrations = dict(self._newest), dict(self._calibrations)  # its own, as read so far
        return clone

    def refresh(self) -> None:
        """Forget what was read of the stored learned spaces (their names, newest versions) and calibration models
        when another process stored one since (one query of their change marker): a long-running service answers
        with the newest, as a new process would. Fitted versions themselves never change and stay cached. The caches
        are replaced, not cleared: a read that began before lands in the discarded ones.

        Called once per request (:meth:`attribute`, :meth:`replay`, the service's jobs) or once per run (``evaluate``,
        ``calibrate``), never by :meth:`compute`: what a request or a run reads stays the same throughout it."""
        marker = self.audit.spaces.marker()
        if marker != self._marker:
            self._marker, self._space_names = marker, None
            self._newest, self._calibrations = {}, {}

    def calibration_for(self, params: AttributionParams) -> LogisticModel | None:
        """The newest calibration model fitted in the params' space (and learned space version) under their
        top-artist rule, if any: a model fitted in one space does not score distances measured in another, nor one
        fitted to tell right from wrong artists chosen by one rule those chosen by the other. A learned space
        version's own model (``spaces fit``) scores only requests at the K it was fitted at (:meth:`own_fit`):
        the indicators it weighs are measured over the K works."""
        key = (params.space, params.space_version, params.top, params.k)
        cache = self._calibrations  # (a refresh meanwhile replaces it)
        if key not in cache:
            cache[key] = self.audit.evaluations.latest_calibration(self.embedder_fingerprint, *key)
        return cache[key]

    def own_fit(self, params: AttributionParams) -> tuple[str, int, str] | None:
        """The name of the params' learned space version's own confidence model, the K and the top-artist rule it
        was fitted at (``spaces fit``); None in a base space or a version stored without one."""
        info = self.fitted_info(params)
        if info is None:
            return None
        own = info.validation.get("confidence", {})
        if "model" not in own:
            return None
        return own["model"], info.fitted_k, own.get("parameters", {}).get("top", "share")

    def fitted_info(self, params: AttributionParams) -> SpaceInfo | None:
        """The stored version of the params' learned space (its version read as :meth:`space_of` reads it); None in a
        base space."""
        params = self.space_of(params)[1]
        if params.space_version is None:
            return None
        return self._fitted[(params.space, params.space_version)][0]

    # -- exact ground truth ------------------------------------------------------------------------------------
    def exact_index(self, method: str, space: str = CONTENT) -> ExactIndex:
        """The exact index of one base space of the collection's current content (cached on disk by version)."""
        version = self.store.content_version()
        key = (method, space, version)
        if key not in self._exact:
            folder = cache_folder(self.exact_cache_dir, self.store.collection, method, space)
            self._exact[key] = load_or_build(method, folder, version, lambda: self.store.fetch_all(space))
        return self._exact[key]

    def exact_top(self, queries: Sequence[QueryVectors], params: AttributionParams) -> list[list[str]]:
        """Exact top-K point ids (K policy applied) of each query in the params' space, in one batch."""

        def search(space: str, rows: np.ndarray, depth: int) -> list[list[tuple[str, float]]]:
            index = self.exact_index(params.exact_method, space)
            found, sims = index.search(rows, depth)
            ids = index.ids.__getitem__
            return [
                list(zip(map(ids, row), sim, strict=True))
                for row, sim in zip(found.tolist(), sims.tolist(), strict=True)
            ]

        return self.space_of(params)[0].exact_top(search, queries, params)

    # -- spaces --------------------------------------------------------------------------------------------------
    def space_of(self, params: AttributionParams) -> tuple[Space, AttributionParams]:
        """The space of the params, and the params with a learned space's version filled in (the newest when
        none is given); NotFoundError for an unknown learned space or version."""
        if params.space in SPACES:
            return space_named(params.space), params
        newest = self._newest  # (a refresh meanwhile replaces it: the version read here lands in the discarded one)
        info, projection = self._fitted_version(params.space, params.space_version or newest.get(params.space))
        if params.space_version is None:
            newest[info.name] = info.version
        if info.collection != self.store.collection:
            raise VectorStoreError(
                f"space {info.name} was fitted on collection '{info.collection}', not '{self.store.collection}'; "
                "use the embedder it was fitted with"
            )
        key = (info.name, info.version, self.store.content_version())
        if key not in self._learned:
            self.check_coverage(LEARNED_BASES[info.base])
            points = list(self.store.iter_points())
            works = [(p.point_id, p.payload, QueryVectors(p.vector, p.style)) for p in points]
            artists = [self._canonical_artist(p.payload) for p in points]
            self._learned[key] = LearnedSpace.over(
                info.name,
                info.version,
                info.base,
                projection,
                works,
                artists,
                info.fitted_artists(self.canonical),
                info.fitted_k,
            )
        return self._learned[key], replace(params, space_version=info.version)

    def _fitted_version(self, name: str, version: int | None) -> tuple[SpaceInfo, Projection]:
        """A stored version of a learned space (the newest without ``version``), cached: a version never changes;
        NotFoundError for an unknown learned space or version."""
        found = self._fitted.get((name, version or 0))
        if found is None and (found := self.audit.spaces.load(name, version)) is not None:
            self._check_base(*found)
            self._fitted[(found[0].name, found[0].version)] = found
        if found is None:
            which = f"{name} version {version}" if version else name
            fitted = [fit for fit, _ in self.audit.spaces.names(self.embedder_fingerprint, self.store.collection)]
            here = f" (fitted here: {', '.join(fitted)})" if fitted else ""  # a typo is then plain to see
            raise NotFoundError(
                f"no learned space {which}{here}; fit one with `attribution-audit spaces fit {name} --from "
                f"{STYLE if self.has_both_spaces() else CONTENT}` (see `attribution-audit spaces list`)"
            )
        return found

    def _check_base(self, info: SpaceInfo, projection: Projection) -> None:
        """Refuse a stored version whose projection does not fit its base spaces' vectors here (its ``base`` was
        changed in the database: the fingerprint covers the projection, not the base)."""
        takes = int(projection.matrix.shape[0])
        if info.collection == self.store.collection and not fits_base(info.base, takes, self.store.sizes()):
            raise DatabaseError(
                f"learned space {info.name} version {info.version} does not fit its base {info.base!r} (its "
                f"projection takes {takes} values, not the joined vectors of {info.base!r}): it was changed outside "
                "attribution-audit; restore it from a backup or refit it"
            )

    # -- one request -------------------------------------------------------------------------------------------
    def compute(
        self,
        query: QueryVectors,
        params: AttributionParams,
        *,
        copies: bool = False,
        others: dict[str, int] | None = None,
    ) -> Outcome:
        """Search, re-rank, apply K, measure, share, and verify against the exact search when asked. Each base space
        is searched once at most (the space's candidates, the agreement and, with ``copies`` — the copy check of
        :meth:`check_copy` follows — its copy candidates read one search, as deep as the deepest of them), and the
        query is projected once into each learned space it is measured in (:meth:`Space.placed`). The learned spaces
        are those read since the last :meth:`refresh` (the caller's: once per request or run); the other learned
        spaces the cross-space indicators read are the newest versions, or ``others`` (a replayed record's), and the
        outcome names them and the version of the params' own learned space it searched (:meth:`record` records
        that one)."""
        # read before searching: a write that ends meanwhile makes the record's version older than what was searched,
        # never newer (verify-recall then leaves it unchecked, as changed, instead of counting misses of the index)
        catalogue_version = self.store.content_version()
        space, params = self.space_of(params)
        self.check_coverage(space.bases)
        query = space.placed(query)
        copy_spaces = self._copy_spaces(query) if copies and self.copy_depth > 0 else ()
        searches = _Searches(self.store, query, dict.fromkeys(copy_spaces, self.copy_depth))
        centroid = self.centroid_artist(space, query, params)
        # each candidate with its canonical artist, named once: the indicators read it of every candidate
        canonical = self.canonical
        ranked = [
            ((hit, canonical.get(artist := str(hit.payload.get("artist", "")), artist)), sim)
            for hit, sim in space.candidates(searches, query, params)
        ]
        kept, shares, features, by_artist, top = request_indicators(ranked, _ARTIST, params, centroid)
        neighbours = [
            Neighbour(
                rank,
                str(payload["work_id"] if "work_id" in (payload := hit.payload) else hit.point_id),
                str(payload.get("catalogue", "")),
                str(payload.get("artist", "")),
                sim,
                1.0 - sim,
                share,
                artist,
                _work_version(payload),
                hit.image_sha256,
            )
            for rank, (((hit, artist), sim), share) in enumerate(zip(kept, shares, strict=True), start=1)
        ]
        _refuse_relabelled(kept, neighbours)
        candidates = [(artist, sim) for (_, artist), sim in ranked]
        overlap, method = None, None
        if self._random.random() < verify_rate(params.verify):
            exact_ids = self.exact_top([query], params)[0]
            overlap = overlap_at_k([hit.point_id for (hit, _), _ in kept], exact_ids)
            method = params.exact_method
        read = self.other_spaces(space, query, params, others)
        for other, _ in read:
            query = other.placed(query)  # once per space: the agreement of spaces and the log-odds there read it
        # the other spaces' candidates (as deep as this request's) first: the agreement reads the first of them
        spaces_agree = self.agreement_of_spaces(searches, read, query, top, params)
        agreement = self.agreement(searches, space, query, top, params.k)
        return Outcome(
            neighbours=neighbours,
            candidates=candidates,
            overlap_at_k=overlap,
            exact_method=method,
            catalogue_version=catalogue_version,
            features={
                **features,
                "agreement_spaces": spaces_agree,
                "agreement": agreement,
                "centroid_log_odds": space.centroid_log_odds(query, top) if top is not None else None,
                "crop_log_odds": space.crop_log_odds(query, top) if top is not None else None,
                "centroid_log_odds_others": self.centroid_log_odds_others(read, query, top),
            },
            top_artist=top,
            top_artist_share=features["top_share"],
            artist_shares=by_artist,
            copy_pool={space: searches.top(space, self.copy_depth) for space in copy_spaces},
            other_versions={o.name: o.version for o, _ in read if isinstance(o, LearnedSpace)},
            space_version=params.space_version,
        )

    def centroid_artist(self, space: Space, query: QueryVectors, params: AttributionParams) -> str | None:
        """The top artist by the ``centroid`` rule when the params ask for it, else None; raises where the space has
        no artist centroids (:meth:`require_centroids`)."""
        if params.top != CENTROID:
            return None
        self.require_centroids(space)
        return space.most_likely_artist(query)

    def require_centroids(self, space: Space) -> None:
        """For the ``centroid`` rule: VectorStoreError in a learned space whose current catalogue is too small for the
        model (say after withdrawals); OptionError in a space without artist centroids (a base space), naming the
        learned spaces to use instead."""
        if space.has_centroids:
            return
        if isinstance(space, LearnedSpace):
            every = (self._canonical_artist(payload) for payload in space.works.payloads)
            works = Counter(a for a in every if a not in space.since_fit)  # only the fitted artists get a centroid
            artists = f"{len(works)} artist{'' if len(works) == 1 else 's'}"
            note = SpaceSinceFit.of(space)
            held = f"the {artists} it was fitted on; {note}" if note else f"{artists}: ingest more artists' works"
            raise VectorStoreError(
                f"top rule centroid in space {space.name} needs the centroids of two artists or more, one with two "
                f"works or more, and collection '{self.store.collection}' now holds {sum(works.values())} works of "
                f"{held} (a new request can use the top rule share or nearest)"
            )
        learned = [name for name in self.space_names() if name not in SPACES and name != space.name]
        use = f"use a learned space ({', '.join(learned)})" if learned else "fit a learned space (`spaces fit`)"
        raise OptionError(
            f"top rule centroid needs a learned space's artist centroids and space {space.name} has none: "
            f"{use}, or the top rule share or nearest"
        )

    def agreement(
        self, engine: SearchEngine, space: Space, query: QueryVectors, top: str | None, k: int
    ) -> float | None:
        """The share of the other base space's ``k`` nearest works (one engine search) that are ``top``'s: the
        style space's for a space that reads only content, else the content space's. None without a top artist,
        when the shard does not hold both base spaces in full, or when the query lacks the other space's vector."""
        other = STYLE if space.bases == (CONTENT,) else CONTENT
        if top is None or not self.has_both_spaces() or (other == STYLE and query.style is None):
            return None
        hits = engine.search(query.of(other), k, space=other)
        return sum(self._canonical_of(hit) == top for hit in hits) / len(hits) if hits else None

    def agreement_of_spaces(
        self,
        engine: SearchEngine,
        others: Sequence[tuple[Space, AttributionParams]],
        query: QueryVectors,
        top: str | None,
        params: AttributionParams,
    ) -> float | None:
        """The share of the shard's other spaces (:meth:`other_spaces`) whose top artist, at the request's
        parameters, is ``top``: one search in each. None without a top artist or another space. Under the
        ``centroid`` rule a space without artist centroids (a base space) names its top artist by the share rule."""
        if top is None:
            return None
        tops = []
        for other, other_params in others:
            there = other.placed(query)
            centroid = other.most_likely_artist(there) if params.top == CENTROID else None
            if params.top == CENTROID and centroid is None:
                other_params = replace(other_params, top="share")
            ranked = other.candidates(engine, there, other_params)
            tops.append(request_indicators(ranked, self._canonical_of, other_params, centroid)[4])
        return sum(t == top for t in tops) / len(tops) if tops else None

    def other_spaces(
        self, space: Space, query: QueryVectors, params: AttributionParams, versions: dict[str, int] | None = None
    ) -> list[tuple[Space, AttributionParams]]:
        """The shard's spaces other than ``space`` that the query has vectors for, each with the request's parameters
        there (exact check off): content; style and fused when the shard holds both base spaces; every learned space
        fitted on its collection, in its newest version, or with ``versions`` (a replayed record's) the learned spaces
        and versions it names."""
        bases = [name for name in self.space_names() if name in SPACES]
        names = self.space_names() if versions is None else [*bases, *versions]
        found = []
        for name in names:
            if name == space.name:
                continue
            version = None if versions is None else versions.get(name)
            other, other_params = self.space_of(replace(params, space=name, space_version=version, verify="off"))
            if STYLE not in other.bases or query.style is not None:
                found.append((other, other_params))
        return found

    def centroid_log_odds_others(
        self, others: Sequence[tuple[Space, AttributionParams]], query: QueryVectors, top: str | None
    ) -> float | None:
        """The mean log-odds of ``top`` among the artists' centroids of the other learned spaces (``others``, of
        :meth:`other_spaces`) that hold a centroid of it; None without a top artist or such a space."""
        if top is None:
            return None
        found = [odds for other, _ in others if (odds := other.centroid_log_odds(other.placed(query), top)) is not None]
        return sum(found) / len(found) if found else None

    def space_names(self) -> list[str]:
        """The spaces the shard can be searched in: content; style and fused when it holds both base spaces; the
        learned spaces fitted on its collection with this embedder whose base spaces it holds in full (read again
        once another process stored a learned space: :meth:`refresh`)."""
        if self._space_names is None:
            learned = [
                name
                for name, base in self.audit.spaces.names(self.embedder_fingerprint, self.store.collection)
                if not partial_spaces(self.coverage, LEARNED_BASES[base])
            ]
            self._space_names = [CONTENT, *((STYLE, FUSED) if self.has_both_spaces() else ()), *learned]
        return self._space_names

    def has_both_spaces(self) -> bool:
        """Whether every work of the shard has a content and a style vector."""
        return self.coverage.get(STYLE, 0) > 0 and not partial_spaces(self.coverage, (STYLE,))

    def check_coverage(self, bases: tuple[str, ...]) -> None:
        """Refuse a space that some works of the collection lack: they could never be found in it."""
        missing = partial_spaces(self.coverage, bases)
        if missing:
            raise VectorStoreError(
                f"the {missing[0]} space of collection '{self.store.collection}' covers "
                f"{self.coverage.get(missing[0], 0)} of its {self.coverage.get(CONTENT, 0)} works; ingest every "
                f"catalogue again with --spaces content,{missing[0]} first"
            )

    def _canonical_of(self, hit: Hit) -> str:
        return self._canonical_artist(hit.payload)

    def _canonical_artist(self, payload: dict[str, Any]) -> str:
        """The canonical name of the artist a point's payload names (after merges)."""
        artist = str(payload.get("artist", ""))
        return self.canonical.get(artist, artist)

    def attribute(self, image_path: str | Path, params: AttributionParams | None = None) -> Attribution:
        """Attribute one image file (in the newest stored spaces and models: one :meth:`refresh`); returns only after
        its audit record is committed."""
        self.refresh()
        params = self.space_of(params or AttributionParams())[1]  # its learned space's version, once
        image = load_image(image_path, target_size=224)
        layout = layout_vector(image.image)
        flat = one_colour(image.image, layout)
        query = self.embed([image.image], params.space, crops=True)[0]
        return self.record_image(printable_path(image.path.resolve()), image, query, params, layout, flat)

    def record_image(
        self,
        path: str,
        image: LoadedImage,
        query: QueryVectors,
        params: AttributionParams,
        layout: np.ndarray | None,
        flat: bool,
        requester: str | None = None,
    ) -> Attribution:
        """Find the works nearest an embedded image (its ``query`` vectors), check it for copies and append the
        request to the chain, recorded as ``path``: ``layout`` is the image's (:func:`layout_vector`), ``flat``
        whether it is one colour throughout (:func:`one_colour`, of the decoded image), which the record keeps."""
        outcome = self.check_copy(image, self.compute(query, params, copies=True), query, layout)
        return self.record(path, image.sha256, query, params, replace(outcome, one_colour=flat), requester=requester)

    def check_copy(
        self, image: LoadedImage, outcome: Outcome, query: QueryVectors, layout: np.ndarray | None
    ) -> Outcome:
        """The outcome with copy detection's verdict (local features of the image files) over the works of the
        outcome, the first ``copy_depth`` works of each base space the query has vectors of and the first
        COPY_LAYOUT_DEPTH works by the image's ``layout`` (:func:`layout_vector`; :meth:`copy_candidates`)."""
        if self.copy_depth == 0:
            verdict = not_run("copy detection is off (ATTRIBUTION_AUDIT_COPY_DEPTH=0)")
        else:
            if self.copies is None:
                self.copies = CopyDetector(self.audit, self.store.collection)
            candidates = self.copy_candidates(outcome, query, layout)
            verdict = self.copies.check(image.image, candidates, image.sha256)
        return replace(
            outcome,
            copy_of=verdict.copy_of,
            copy_score=verdict.copy_score,
            copy_status=verdict.status,
            copy_method=verdict.method,
        )

    def copy_candidates(
        self, outcome: Outcome, query: QueryVectors, layout: np.ndarray | None = None
    ) -> list[tuple[str, str]]:
        """(catalogue, work id) of the outcome's works, then of the first ``copy_depth`` works of each base space
        the query has a vector of and the collection holds vectors in (read from the outcome's own searches where
        :meth:`compute` was told of the copy check), then of the first COPY_LAYOUT_DEPTH works nearest the query
        image's ``layout`` (embedding.layout) where the collection holds layouts, those that correlate with it at
        COPY_LAYOUT_FLOOR or more, without repeats."""
        found = [(n.catalogue, n.work_id) for n in outcome.neighbours]
        pools = [
            self.store.search(query.of(space), self.copy_depth, space=space) if hits is None else hits
            for space in self._copy_spaces(query)
            for hits in [outcome.copy_pool.get(space)]
        ]
        if layout is not None and LAYOUT in self.store.sizes():
            hits = self.store.search(layout, COPY_LAYOUT_DEPTH, space=LAYOUT)
            pools.append([hit for hit in hits if hit.similarity >= COPY_LAYOUT_FLOOR])
        found += [(str(h.payload.get("catalogue", "")), str(h.payload.get("work_id"))) for hits in pools for h in hits]
        return list(dict.fromkeys(found))

    def _copy_spaces(self, query: QueryVectors) -> tuple[str, ...]:
        """The base spaces copy detection draws candidates from: those the query has a vector of and the collection
        holds vectors in."""
        return tuple(space for space in query.as_dict() if self.coverage.get(space, 0) > 0)

    def embed(self, images: Sequence[Any], space: str, crops: bool = False) -> list[QueryVectors]:
        """The query vectors a space needs of each image (content and style from one forward pass); both, whatever
        the space, when the shard holds style vectors and copy detection or the agreement between spaces uses them;
        with ``crops`` in a learned space, those of each image's corner crops too (:func:`corner_crops`, in the
        same forward passes: the ``crop_log_odds`` of the requests that record or calibrate), unless the settings
        turned them off (``ATTRIBUTION_AUDIT_QUERY_CROPS=0``). Only the space's base
        spaces are read (of a learned space's newest version read): nothing is cached for the requests, which read
        their version themselves (the service embeds in another thread)."""
        if self.embedder is None:
            raise ValueError("this Attributor was built without an embedder")
        if space in SPACES:
            bases = space_named(space).bases
        else:
            bases = LEARNED_BASES[self._fitted_version(space, self._newest.get(space))[0].base]
        wants_crops = crops and self.query_crops and space not in SPACES
        cut = [crop for image in images for crop in corner_crops(image)] if wants_crops else []
        wanted = STYLE in bases
        style_helps = self.copy_depth > 0 or self.has_both_spaces()
        if not wanted and (self.style_embedder is None or self.coverage.get(STYLE, 0) == 0 or not style_helps):
            found = [QueryVectors(v) for v in self.embedder.embed([*images, *cut])]
        elif self.style_embedder is None:
            raise ValueError(f"the {space} space needs a style embedder")
        else:
            contents, styles = self.style_embedder.embed_both([*images, *cut])
            found = [QueryVectors(c, s) for c, s in zip(contents, styles, strict=True)]
        whole, parts = found[: len(images)], found[len(images) :]
        if not parts:
            return whole
        each = len(parts) // len(whole)
        return [replace(q, crops=tuple(parts[i * each : (i + 1) * each])) for i, q in enumerate(whole)]

    def record(
        self,
        image: str,
        image_sha256: str,
        query: QueryVectors,
        params: AttributionParams,
        outcome: Outcome,
        replay_of: str | None = None,
        evaluation: tuple[int, int] | None = None,
        requester: str | None = None,
        scored_by: str | None = None,
    ) -> Attribution:
        """Append the request to the audit chain (one transaction) and return it as committed.

        ``evaluation`` = (evaluation run id, labelled query id) tags a request made by ``evaluate run``;
        ``requester`` overrides the attributor's (the service records each API key's name); ``scored_by`` names the
        confidence model to score with (a replay's: the record's own) instead of the one the params choose today.
        """
        # the learned space version the outcome's neighbours were found in is the one recorded (and scored in)
        space, params = self.space_of(replace(params, space_version=outcome.space_version or params.space_version))
        model = self.calibration_for(params) if scored_by is None else self._stored_model(scored_by)
        score, model_name = confidence(model, outcome.features, params.top)
        draft = RequestDraft(
            image=image,
            image_sha256=image_sha256,
            content_vector=query.content,
            style_vector=query.style,
            crop_vectors=query.crop_rows(),
            requester=requester or self.requester,
            embedder_name=self.embedder_name,
            embedder_fingerprint=self.embedder_fingerprint,
            store_kind=self.store.kind,
            collection=self.store.collection,
            index_params=index_params(self.store.index_info(), space),
            parameters=params.as_json(),
            k=params.k,
            outcome=outcome,
            confidence=score,
            confidence_model=model_name,
            replay_of=replay_of,
            evaluation=evaluation,
            confidence_model_sha256=None if model is None else model.fingerprint(),
        )
        return self.audit.requests.record(draft)

    def replay(self, request_id: str) -> tuple[Attribution, Attribution]:
        """Re-run a past request (its recorded query vectors and parameters) on today's index, its confidence scored
        by the model it recorded and its cross-space indicators measured in the other learned space versions it
        recorded (a record made before revision 0018: the newest, read again: :meth:`refresh`), so that only the
        index can differ; logged as a replay."""
        original = self.audit.requests.get_with_vectors(request_id)
        before = original.attribution
        params = AttributionParams.from_json(before.parameters)
        recorded = before.other_space_versions
        try:
            others = None if recorded is None else parse_space_versions(recorded)
        except (ValueError, TypeError, AttributeError):  # a hand-edited value, of the wrong type too (a BLOB)
            raise DatabaseError(
                f"request {before.request_id} records other learned spaces {recorded!r}, which no request writes: "
                "the record was changed by hand; run `attribution-audit audit verify`"
            ) from None
        self.refresh()
        outcome = replace(self.compute(original.vectors, params, others=others), one_colour=before.one_colour)
        new = self.record(
            before.image,
            before.image_sha256,
            original.vectors,
            params,
            outcome,
            replay_of=before.request_id,
            scored_by=before.confidence_model,
        )
        return before, new

    def _stored_model(self, name: str) -> LogisticModel | None:
        """The confidence model a record names: a stored ``logistic-v<N>``, else (a default formula) None."""
        return self.audit.evaluations.calibration(name) if name.startswith(STORED_MODEL_PREFIX) else None


_ARTIST = itemgetter(1)  # of a (hit, canonical artist) candidate


class _Searches:
    """One request's plain searches of the base spaces, standing in for the store as the engine of its space: each
    space searched once, as deep as the most the request asks of it (``depths``, known up front, or the first ask),
    a shallower ask reading the first hits. Other searches (exact, with vectors, fused) go to the store."""

    def __init__(self, store: VectorStore, query: QueryVectors, depths: dict[str, int]) -> None:
        self.store, self.query, self.depths = store, query, depths
        self.hits: dict[str, tuple[int, list[Hit]]] = {}  # space -> (depth searched, hits)

    def top(self, space: str, depth: int) -> list[Hit]:
        """The ``depth`` nearest works of the query in ``space``."""
        searched, hits = self.hits.get(space, (0, []))
        if depth > searched:
            searched = max(depth, self.depths.get(space, 0))
            hits = self.store.search(self.query.of(space), searched, space=space)
            self.hits[space] = searched, hits
        return hits[:depth]

    def search(
        self, vector: np.ndarray, limit: int, *, exact: bool = False, with_vectors: bool = False, space: str = CONTENT
    ) -> list[Hit]:
        if exact or with_vectors or vector is not self.query.as_dict().get(space):
            return self.store.search(vector, limit, exact=exact, with_vectors=with_vectors, space=space)
        return self.top(space, limit)

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
        return self.store.search_fused(
            vectors, limit, prefetch=prefetch, weights=weights, rrf_k=rrf_k, with_vectors=with_vectors
        )
