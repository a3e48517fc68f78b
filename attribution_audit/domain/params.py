"""How to attribute: the parameters recorded with every request, validated on construction."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from attribution_audit.domain.points import CONTENT, STYLE
from attribution_audit.domain.shares import DEFAULT_TEMPERATURE, SHARE_MODES

EXACT_METHODS = ("brute", "kdtree")
CENTROID = "centroid"  # the top artist of maximum posterior among a learned space's artist centroids
TOP_RULES = ("share", "nearest", CENTROID)  # how the top artist is chosen: see :func:`ranking.top_artist`
DEFAULT_EXACT_METHOD = "brute"
DEFAULT_K = 10
DEFAULT_OVERSAMPLING = 4
MAX_K = 10_000
MAX_LISTED = 2**31 - 1  # requests one listing returns at most: a count every database binds (a larger one overflowed)
FUSED = "fused"
QUERY_SPACES = (CONTENT, STYLE, FUSED)
LEARNED_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")  # the name of a learned space (``spaces fit NAME``)


@dataclass(frozen=True)
class AttributionParams:
    """How to attribute; recorded with every request.

    ``k``: number of works; ``max_distance``: keep only works within this cosine distance (still at most k);
    ``oversampling``: HNSW returns k x oversampling candidates that are re-ranked exactly; ``verify``: ``always``,
    ``off`` or ``sample:RATE`` — compare with the exact top K over the whole catalogue (overlap@K);
    ``shares``: ``equal`` or ``similarity`` (softmax of similarity / temperature); ``top``: the top artist is the
    one with the largest ``share`` (ties to the closest work), the artist of the ``nearest`` work, or (a learned
    space only) the artist of maximum posterior among the artists' centroids (``centroid``: ``ArtistCentroids``);
    ``space``:
    ``content``, ``style`` or ``fused`` (the engine fuses both spaces by weighted reciprocal rank fusion,
    :func:`rrf_fuse`, with ``rrf_k`` and ``fusion_weights`` = (content, style); a fused neighbour's similarity is
    the weighted mean of its two cosines), or a learned space's name (``spaces fit``) with the ``space_version``
    used (recorded, so a replay uses the same version).
    """

    k: int = DEFAULT_K
    max_distance: float | None = None
    oversampling: int = DEFAULT_OVERSAMPLING
    verify: str = "always"
    exact_method: str = DEFAULT_EXACT_METHOD
    shares: str = "equal"
    temperature: float = DEFAULT_TEMPERATURE
    space: str = CONTENT
    space_version: int | None = None
    fusion_weights: tuple[float, float] = (1.0, 1.0)
    rrf_k: int = 60
    top: str = "share"

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
        if self.space not in QUERY_SPACES and not LEARNED_NAME.fullmatch(self.space):
            raise ValueError(
                f"space must be one of {', '.join(QUERY_SPACES)} or a learned space's name "
                "(lowercase letters, digits, - and _, at most 40)"
            )
        if self.space_version is not None and (self.space in QUERY_SPACES or self.space_version < 1):
            raise ValueError("a space version is a positive number, for a learned space only")
        if len(self.fusion_weights) != 2 or not all(w > 0 and math.isfinite(w) for w in self.fusion_weights):
            raise ValueError("fusion weights are two positive numbers (content, style); for one space use --space")
        if self.top not in TOP_RULES:
            raise ValueError(f"top must be one of {', '.join(TOP_RULES)}")
        if self.rrf_k < 1:
            raise ValueError("rrf_k must be at least 1")
        object.__setattr__(self, "fusion_weights", tuple(float(w) for w in self.fusion_weights))
        verify_rate(self.verify)

    @property
    def weights(self) -> dict[str, float]:
        return {CONTENT: self.fusion_weights[0], STYLE: self.fusion_weights[1]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttributionParams:
        """The parameters as recorded by :meth:`as_json` (keys added since take their defaults)."""
        return cls(**{**data, "fusion_weights": tuple(data.get("fusion_weights", (1.0, 1.0)))})

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
