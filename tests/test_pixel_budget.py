"""The service's budget of decoded pixels, in-process: a request that could never fit is refused at once, one that
finds no room waits its turn and is refused (busy) after its wait, a reservation is given back once only; the
settings."""

from __future__ import annotations

import threading
import time

import pytest

from attribution_audit.config import DEFAULT_MAX_REQUEST_PIXELS, load_settings
from attribution_audit.errors import AttributionAuditError, BusyError, TooLargeError
from attribution_audit.services.pixel_budget import MAX_WAITING, RETRY_AFTER_S, PixelBudget


def test_a_request_over_either_limit_is_refused_at_once_naming_the_setting() -> None:
    budget = PixelBudget(limit=1_000, per_request=600)
    with pytest.raises(TooLargeError) as refused:
        budget.reserve(700, 2, wait_s=0)
    assert str(refused.value) == (
        "2 images of 700 pixels in all (from their headers) are over the service's limit of 600 decoded pixels a "
        "request (ATTRIBUTION_AUDIT_MAX_REQUEST_PIXELS); send fewer images a request, or scale them down"
    )
    with pytest.raises(TooLargeError, match=r"^1 image of 1,001 pixels .* limit of 1,000 .*MAX_INFLIGHT_PIXELS\)"):
        PixelBudget(limit=1_000, per_request=5_000).reserve(1_001, 1, wait_s=0)
    assert budget.in_use == 0


def test_no_room_is_busy_after_the_wait_and_a_release_lets_the_next_in() -> None:
    budget = PixelBudget(limit=1_000, per_request=1_000)
    first = budget.reserve(800, 1, wait_s=0)
    with pytest.raises(BusyError) as busy:
        budget.reserve(300, 1, wait_s=0.05)
    assert busy.value.retry_after == RETRY_AFTER_S and "\n" not in str(busy.value)
    assert "waited 0.05 s for room among the 800 of 1,000 decoded pixels" in str(busy.value)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(budget.reserve(300, 1, wait_s=60).release() or budget.in_use))
    waiter.start()
    first.release()
    first.release()  # a second release gives nothing back twice
    waiter.join()
    assert got == [0] and budget.in_use == 0


def test_a_full_queue_is_busy_at_once_without_waiting() -> None:
    """Each waiting request holds a server thread: beyond MAX_WAITING of them the next one is told at once."""
    budget = PixelBudget(limit=1_000, per_request=1_000)
    held = budget.reserve(1_000, 1, wait_s=0)
    waiters = [threading.Thread(target=_try, args=(budget,)) for _ in range(MAX_WAITING)]
    for waiter in waiters:
        waiter.start()
    while len(budget._waiting) < MAX_WAITING:
        time.sleep(0.01)
    with pytest.raises(BusyError, match=f"^1 image of 10 pixels: {MAX_WAITING} requests are already waiting"):
        budget.reserve(10, 1, wait_s=60)
    held.release()
    for waiter in waiters:
        waiter.join()
    assert budget.in_use == 0 and not budget._waiting


def _try(budget: PixelBudget) -> None:
    budget.reserve(10, 1, wait_s=60).release()


def test_the_budget_settings_come_from_the_environment_and_zero_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTRIBUTION_AUDIT_MAX_INFLIGHT_PIXELS", "5000000")
    settings = load_settings()
    assert (settings.max_inflight_pixels, settings.max_request_pixels) == (5_000_000, DEFAULT_MAX_REQUEST_PIXELS)
    monkeypatch.setenv("ATTRIBUTION_AUDIT_MAX_REQUEST_PIXELS", "0")  # would refuse every image
    with pytest.raises(AttributionAuditError) as refused:
        load_settings()
    assert str(refused.value) == (
        "ATTRIBUTION_AUDIT_MAX_REQUEST_PIXELS='0' is not a whole number of at least 1; set a count of decoded pixels"
    )
