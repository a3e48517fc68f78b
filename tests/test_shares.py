"""Attribution shares: fixed-point (millionths) neighbour shares that add up to exactly 1, and per-artist sums."""

from __future__ import annotations

import math
import random

import pytest

from attribution_audit.domain.params import AttributionParams
from attribution_audit.domain.ranking import top_artist
from attribution_audit.domain.shares import artist_shares, neighbour_shares

MILLION = 1_000_000


def units(shares: list[float] | dict[str, float]) -> list[int]:
    values = list(shares.values()) if isinstance(shares, dict) else shares
    return [round(s * MILLION) for s in values]


def assert_exactly_one(shares: list[float] | dict[str, float]) -> None:
    values = list(shares.values()) if isinstance(shares, dict) else shares
    assert sum(units(values)) == MILLION
    assert math.fsum(values) == pytest.approx(1.0, abs=1e-12)
    # Every share is a whole number of millionths, as printed with 6 decimals.
    assert all(s == round(s, 6) for s in values)


@pytest.mark.parametrize("k", [1, 3, 7, 1000])
def test_equal_shares_sum_to_exactly_one(k: int) -> None:
    sims = [1.0 - i / (k + 1) for i in range(k)]
    shares = neighbour_shares(sims, "equal")
    assert len(shares) == k
    assert_exactly_one(shares)
    # Equal up to the one millionth handed out by the largest-remainder rounding.
    assert max(units(shares)) - min(units(shares)) <= 1


def test_equal_k3_largest_remainder_ties_go_to_the_earlier_rank() -> None:
    assert neighbour_shares([0.9, 0.8, 0.7], "equal") == [0.333334, 0.333333, 0.333333]
    # Ranks only matter through their order: equal similarities give the same split.
    assert neighbour_shares([0.5, 0.5, 0.5], "equal") == [0.333334, 0.333333, 0.333333]


def test_equal_k7_gives_the_extra_millionth_to_rank_one() -> None:
    assert neighbour_shares([0.9] * 7, "equal") == [0.142858] + [0.142857] * 6


def test_similarity_shares_are_the_softmax_of_similarity_over_temperature() -> None:
    sims, temperature = [0.9, 0.8, 0.5], 0.1
    weights = [math.exp(s / temperature) for s in sims]
    expected = [w / sum(weights) for w in weights]  # 0.72140, 0.26539, 0.01321
    shares = neighbour_shares(sims, "similarity", temperature)
    assert shares == [round(p, 6) for p in expected] == [0.721399, 0.265388, 0.013213]
    assert_exactly_one(shares)


def test_similarity_shares_follow_the_temperature() -> None:
    sims = [0.9, 0.85, 0.8]
    sharp = neighbour_shares(sims, "similarity", 0.01)
    soft = neighbour_shares(sims, "similarity", 10.0)
    assert sharp[0] > 0.99
    assert max(soft) - min(soft) < 0.01
    # Large similarity / T values do not overflow (the softmax is shifted by the maximum).
    assert_exactly_one(neighbour_shares([0.99, 0.98, -1.0], "similarity", 1e-4))


@pytest.mark.parametrize("mode", ["equal", "similarity"])
def test_higher_similarity_never_gets_a_smaller_share(mode: str) -> None:
    rng = random.Random(7)
    for _ in range(300):
        k = rng.randint(1, 25)
        # Best first, as neighbours are ranked; rounding to 2 decimals produces ties.
        sims = sorted((round(rng.uniform(-1, 1), 2) for _ in range(k)), reverse=True)
        shares = neighbour_shares(sims, mode, rng.choice([0.01, 0.05, 0.3, 2.0]))
        assert_exactly_one(shares)
        for i in range(k - 1):
            assert shares[i] >= shares[i + 1], (sims, shares)
            if sims[i] == sims[i + 1]:
                assert shares[i] - shares[i + 1] <= 1e-6 + 1e-12


@pytest.mark.parametrize("mode", ["softmax", "", "EQUAL"])
def test_unknown_mode_raises(mode: str) -> None:
    with pytest.raises(ValueError, match="share mode"):
        neighbour_shares([0.9, 0.8], mode)


@pytest.mark.parametrize("temperature", [0.0, -0.05])
def test_non_positive_temperature_raises(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        neighbour_shares([0.9, 0.8], "similarity", temperature)
    with pytest.raises(ValueError, match="temperature"):
        AttributionParams(shares="similarity", temperature=temperature)


def test_nan_temperature_is_rejected() -> None:
    # NaN passes a `temperature <= 0` check; it would make every share NaN (cast to int64 garbage).
    with pytest.raises(ValueError, match="temperature"):
        neighbour_shares([0.9, 0.8], "similarity", float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        AttributionParams(shares="similarity", temperature=float("nan"))


@pytest.mark.parametrize("mode", ["equal", "similarity"])
def test_no_neighbours_give_no_shares(mode: str) -> None:
    assert neighbour_shares([], mode) == []
    assert artist_shares([], []) == {}


def test_artist_shares_sum_neighbour_shares_exactly_largest_first() -> None:
    shares = neighbour_shares([0.9, 0.8, 0.7], "equal")
    by_artist = artist_shares(["a", "b", "a"], shares)
    assert list(by_artist.items()) == [("a", 0.666667), ("b", 0.333333)]
    assert_exactly_one(by_artist)


def test_artist_shares_order_ties_by_name() -> None:
    by_artist = artist_shares(["z", "m", "a", "m", "z", "a"], [1 / 6] * 6)
    assert list(by_artist) == ["a", "m", "z"]


def test_artist_shares_always_sum_to_exactly_one() -> None:
    rng = random.Random(11)
    for _ in range(200):
        k = rng.randint(1, 30)
        sims = sorted((rng.uniform(0, 1) for _ in range(k)), reverse=True)
        artists = [rng.choice("abcdefg") for _ in range(k)]
        shares = neighbour_shares(sims, rng.choice(["equal", "similarity"]), 0.05)
        by_artist = artist_shares(artists, shares)
        assert_exactly_one(by_artist)
        for artist, share in by_artist.items():
            own = sum(u for a, u in zip(artists, units(shares), strict=True) if a == artist)
            assert round(share * MILLION) == own
        assert list(by_artist.values()) == sorted(by_artist.values(), reverse=True)


def test_artist_shares_need_one_artist_per_share() -> None:
    with pytest.raises(ValueError):
        artist_shares(["a", "b"], [1.0])


def test_the_top_artist_rule_share_favours_many_works_nearest_the_closest_work() -> None:
    # One close work of A against three farther works of B among K = 4: an artist with fewer works than K loses
    # by equal shares, not by the nearest work.
    artists, sims = ["A", "B", "B", "B"], [0.95, 0.60, 0.58, 0.55]
    shares = neighbour_shares(sims, "equal", 0.05)
    assert top_artist(artists, sims, shares, "share")[1] == "B"
    assert top_artist(artists, sims, shares, "nearest")[1] == "A"
    # Ties of the largest share still go to the closest work, and both rules agree when one artist leads both ways.
    assert top_artist(["B", "A"], [0.9, 0.8], neighbour_shares([0.9, 0.8], "equal", 0.05), "share")[1] == "B"
    assert top_artist(["A", "A", "B"], [0.9, 0.8, 0.7], [0.4, 0.3, 0.3], "nearest")[1] == "A"
    assert top_artist([], [], [], "nearest") == ({}, None)


def test_a_request_recorded_before_the_top_rule_replays_with_the_share_rule() -> None:
    recorded = {k: v for k, v in AttributionParams(k=5).as_json().items() if k != "top"}
    assert AttributionParams.from_json(recorded).top == "share"
    assert AttributionParams.from_json(AttributionParams(top="nearest").as_json()).top == "nearest"
    with pytest.raises(ValueError, match="top must be one of share, nearest"):
        AttributionParams(top="most")
