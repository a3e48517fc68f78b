"""Attribution shares: each attributed work's part of a generation, and per-artist sums.

Shares are fixed-point: they are computed in millionths and rounded by the largest-remainder method, so the
neighbour shares of one request, and its artist shares, add up to exactly 1.000000.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

SHARE_MODES = ("equal", "similarity")
DEFAULT_TEMPERATURE = 0.05
UNITS = 1_000_000


def _largest_remainder(weights: np.ndarray) -> list[int]:
    """Integers proportional to ``weights`` that add up to exactly UNITS (ties go to the earlier rank)."""
    raw = weights / weights.sum() * UNITS
    floors = np.floor(raw).astype(np.int64)
    missing = UNITS - int(floors.sum())
    order = np.argsort(-(raw - floors), kind="stable")
    floors[order[:missing]] += 1
    return [int(v) for v in floors]


def neighbour_shares(
    similarities: Sequence[float], mode: str = "equal", temperature: float = DEFAULT_TEMPERATURE
) -> list[float]:
    """Share of each ranked neighbour: ``equal`` (1/K each) or ``similarity`` (softmax of similarity / T)."""
    if mode not in SHARE_MODES:
        raise ValueError(f"unknown share mode {mode!r}: choose equal or similarity")
    if not similarities:
        return []
    sims = np.asarray(similarities, dtype=np.float64)
    if mode == "equal":
        weights = np.ones_like(sims)
    else:
        if not (temperature > 0 and np.isfinite(temperature)):
            raise ValueError("the softmax temperature must be positive")
        weights = np.exp((sims - sims.max()) / temperature)
    return [units / UNITS for units in _largest_remainder(weights)]


def artist_shares(artists: Sequence[str], shares: Sequence[float]) -> dict[str, float]:
    """Per-artist sums of neighbour shares (exact: summed in millionths), largest first."""
    units: dict[str, int] = defaultdict(int)
    for artist, share in zip(artists, shares, strict=True):
        units[artist] += round(share * UNITS)
    return {a: u / UNITS for a, u in sorted(units.items(), key=lambda item: (-item[1], item[0]))}
