"""Confidence indicators: normalised artist entropy and the default confidence score, against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest

from attribution_audit.domain.indicators import artist_entropy, confidence_score

# ["a","a","a","b"]: p = (3/4, 1/4); H = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335..., divided by ln K = ln 4
THREE_ONE = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4)


@pytest.mark.parametrize(
    ("artists", "expected"),
    [
        ([], 0.0),
        (["a"], 0.0),
        (["a", "a", "a"], 0.0),
        (["a", "b"], 1.0),
        (["a", "b", "c", "d"], 1.0),
        (["a", "a", "b", "b"], 0.5),  # ln 2 / ln 4
        (["a", "a", "a", "b"], THREE_ONE),
        (["b", "a", "a", "a"], THREE_ONE),  # order does not matter
    ],
)
def test_artist_entropy_hand_computed(artists: list[str], expected: float) -> None:
    assert artist_entropy(artists) == pytest.approx(expected, abs=1e-12)


def test_three_one_value() -> None:
    assert math.isclose(THREE_ONE, 0.5623351446188083 / 1.3862943611198906, abs_tol=1e-15)
    assert math.isclose(artist_entropy(["a", "a", "a", "b"]), 0.40563906222956, abs_tol=1e-12)


def test_artist_entropy_is_within_unit_interval() -> None:
    for k in range(1, 7):
        for artists in itertools.product("abc", repeat=k):
            value = artist_entropy(list(artists))
            assert 0.0 <= value <= 1.0
            assert (value == 0.0) == (len(set(artists)) == 1)


def test_artist_entropy_grows_with_disagreement() -> None:
    values = [artist_entropy(list(a)) for a in ("aaaaaa", "aaaaab", "aaaabb", "aaabbb", "aabbcc", "abcdef")]
    assert values == sorted(values)
    assert values[0] == 0.0 and values[-1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("entropy", "distance", "expected"),
    [
        (0.0, 0.0, 1.0),
        (1.0, 0.0, 0.0),
        (1.0, 0.3, 0.0),
        (0.5, 0.2, 0.4),
        (0.0, 0.25, 0.75),
        (0.0, None, 0.0),
        (0.5, None, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 1.7, 0.0),  # cosine distance up to 2: clipped to zero closeness
        (0.0, -0.01, 1.0),  # float error below 0: clipped to full closeness
        (0.25, -0.5, 0.75),
    ],
)
def test_confidence_score(entropy: float, distance: float | None, expected: float) -> None:
    assert confidence_score(entropy, distance) == pytest.approx(expected, abs=1e-12)


def test_confidence_score_is_within_unit_interval() -> None:
    for entropy in (0.0, 0.1, 0.5, 0.9, 1.0):
        for distance in (-0.2, 0.0, 0.05, 0.5, 0.99, 1.0, 1.5, 2.0):
            assert 0.0 <= confidence_score(entropy, distance) <= 1.0
