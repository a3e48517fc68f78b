"""Attribution parameters refuse values that would give meaningless shares or unbounded work: a temperature that is
not a finite positive number, and a K beyond the upper bound."""

from __future__ import annotations

import pytest

from attribution_audit.domain.params import AttributionParams


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), 0.0, -1.0])
def test_non_finite_temperature_is_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        AttributionParams(shares="similarity", temperature=temperature)


def test_k_has_an_upper_bound() -> None:
    with pytest.raises(ValueError, match="k must be between"):
        AttributionParams(k=10**9)
