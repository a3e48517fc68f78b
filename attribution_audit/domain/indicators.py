"""The research note's confidence indicators for one attribution."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.ranking import apply_k_policy, top_artist
from attribution_audit.domain.shares import neighbour_shares

T = TypeVar("T")


def artist_entropy(artists: Sequence[str]) -> float:
    """Shannon entropy of the artists among the K neighbours divided by log(K), in [0, 1].

    0 means every neighbour is by one artist, 1 means every neighbour is by a different artist; K <= 1 gives 0.
    """
    k = len(artists)
    if k <= 1:
        return 0.0
    entropy = -sum((n / k) * math.log(n / k) for n in Counter(artists).values())
    return min(1.0, max(0.0, entropy / math.log(k)))


def confidence_score(entropy: float, nn_distance: float | None) -> float:
    """Default confidence in [0, 1]: ``(1 - entropy) * (1 - min(nn_distance, 1))``.

    Both indicators of the note must be good for a high score: the neighbours agree on one artist (low entropy)
    and the nearest work is close (cosine distance near 0). No neighbour gives 0.
    """
    return (1.0 - entropy) * closeness(nn_distance)


def centroid_confidence_score(top_share: float | None, top_distance: float | None) -> float:
    """Default confidence of the ``centroid`` rule in [0, 1]: ``top_share * (1 - min(top_distance, 1))``, the
    reported artist's share of the K neighbours times the closeness of its nearest work among them: how far the
    neighbours back the artist the centroids chose (the entropy of the default formula measures agreement on any
    artist, maybe another one). 0 when none of the K is the artist's."""
    return (top_share or 0.0) * closeness(top_distance)


def closeness(distance: float | None) -> float:
    """``1 - distance`` clipped to [0, 1]; 0 without a distance (no work)."""
    return 0.0 if distance is None else 1.0 - min(max(distance, 0.0), 1.0)


def artist_margin(ranked: Sequence[tuple[str, float]]) -> float | None:
    """Similarity margin between the best and the second-best artist among ranked (artist, similarity) pairs.

    Each artist scores its best similarity. With a single artist among the candidates the margin is taken against
    the last candidate (a lower bound on the true margin); with fewer than two candidates there is none.
    """
    if len(ranked) < 2:
        return None
    best: dict[str, float] = {}
    for artist, similarity in ranked:
        best[artist] = max(similarity, best.get(artist, -2.0))
    scores = sorted(best.values(), reverse=True)
    second = scores[1] if len(scores) > 1 else ranked[-1][1]
    return scores[0] - second


def request_indicators(
    ranked: Sequence[tuple[T, float]],
    artist_of: Callable[[T], str],
    params: AttributionParams,
    centroid: str | None = None,
) -> tuple[list[tuple[T, float]], list[float], dict[str, float | None], dict[str, float], str | None]:
    """What a request measures from its ranked candidates (item, similarity), whose artist ``artist_of`` names: the
    kept items (K policy), their shares, the indicators known before the agreement between spaces (entropy, NN
    distance, margin, top share), the per-artist shares and the top artist; no kept item gives the least confident
    values; ``centroid`` is the top artist by the ``centroid`` rule (the space's most likely artist), whose top share
    is 0 when none of the kept works is the artist's; ``top_distance``, the distance to the top artist's nearest kept
    work (None when none is its), feeds :func:`centroid_confidence_score` and is not recorded. The request path and a
    learned space's validation (its default confidence) measure alike."""
    kept = apply_k_policy(list(ranked), params)
    artists, sims = [artist_of(item) for item, _ in kept], [sim for _, sim in kept]
    shares = neighbour_shares(sims, params.shares, params.temperature)
    by_artist, top = top_artist(artists, sims, shares, params.top, centroid)
    features = {
        "entropy": artist_entropy(artists) if kept else 1.0,
        "nn_distance": 1.0 - sims[0] if kept else None,
        "margin": artist_margin([(artist_of(item), sim) for item, sim in ranked]) if kept else None,
        "top_share": by_artist.get(top, 0.0) if top else None,
        "top_distance": min((1.0 - s for a, s in zip(artists, sims, strict=True) if a == top), default=None),
    }
    return kept, shares, features, by_artist, top
