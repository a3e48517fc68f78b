"""The note's Figure 8: is a generated image closer in *content* to the works it was attributed than to the works
that really inspired it? Two distributions of cosine similarity and a two-sided Mann-Whitney U test between them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attribution_audit.evaluation.metrics import finite


@dataclass(frozen=True)
class ContentPairs:
    """One generated image's content similarity to each attributed work and to each true inspiration work."""

    subset: str | None
    attributed: list[float]
    inspiration: list[float]


def compare_distributions(attributed: Sequence[float], inspiration: Sequence[float]) -> dict[str, Any]:
    """Both distributions (values, size, mean, median) and the Mann-Whitney U test between them (p is None when a
    side is empty or every value is the same)."""
    from scipy.stats import mannwhitneyu

    result: dict[str, Any] = {"u": None, "p_value": None}
    for name, values in (("attributed", attributed), ("inspiration", inspiration)):
        array = np.asarray(values, dtype=float)
        result[name] = {
            "n": len(array),
            "mean": float(array.mean()) if len(array) else None,
            "median": float(np.median(array)) if len(array) else None,
            "values": [float(v) for v in array],
        }
    if attributed and inspiration and len(set(attributed) | set(inspiration)) > 1:
        test = mannwhitneyu(attributed, inspiration, alternative="two-sided")
        result["u"], result["p_value"] = float(test.statistic), float(test.pvalue)
    return result


def content_bias(pairs: Sequence[ContentPairs]) -> dict[str, Any]:
    """The comparison overall and per subset."""

    def block(group: Sequence[ContentPairs]) -> dict[str, Any]:
        attributed = [v for p in group for v in p.attributed]
        inspiration = [v for p in group for v in p.inspiration]
        return {"queries": len(group), **compare_distributions(attributed, inspiration)}

    subsets = sorted({p.subset for p in pairs if p.subset})
    result: dict[str, Any] = finite(
        {"overall": block(pairs), "subsets": {s: block([p for p in pairs if p.subset == s]) for s in subsets}}
    )
    return result
