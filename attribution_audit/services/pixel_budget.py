"""The service's budget of decoded pixels: a request reserves its images' pixel count (read from their headers) before
they are decoded, and gives it back once they are embedded, so that small uploads of huge images cannot decode
gigabytes at once. Requests wait their turn in arrival order, for a bounded time."""

from __future__ import annotations

import threading
from collections import deque

from attribution_audit.errors import BusyError, TooLargeError

RETRY_AFTER_S = 5  # what a request that waited in vain is told
MAX_WAITING = 8  # requests waiting for room at once; more are refused at once (each waiting one holds a server thread)


class Reservation:
    """Pixels held from a :class:`PixelBudget`; :meth:`release` gives them back (once, however often called)."""

    def __init__(self, budget: PixelBudget, pixels: int) -> None:
        self._budget = budget
        self._pixels = pixels

    def release(self) -> None:
        with self._budget._room:
            pixels, self._pixels = self._pixels, 0
            self._budget.in_use -= pixels
            self._budget._room.notify_all()


class PixelBudget:
    """At most ``limit`` decoded pixels in flight, and at most ``per_request`` of them for one request."""

    def __init__(self, limit: int, per_request: int) -> None:
        self.limit = limit
        self.per_request = per_request
        self.in_use = 0  # pixels reserved now
        self._room = threading.Condition()
        self._waiting: deque[object] = deque()  # the requests waiting for room, first come first served

    def reserve(self, pixels: int, images: int, wait_s: float) -> Reservation:
        """Hold ``pixels`` for a request of ``images`` images, waiting up to ``wait_s`` seconds for room behind the
        requests that came first. TooLargeError when the request could never fit; BusyError when no room came."""
        most, setting = min(
            (self.per_request, "ATTRIBUTION_AUDIT_MAX_REQUEST_PIXELS"),
            (self.limit, "ATTRIBUTION_AUDIT_MAX_INFLIGHT_PIXELS"),
        )
        if pixels > most:
            raise TooLargeError(
                f"{_images(images)} of {pixels:,} pixels in all (from their headers) are over the service's limit of "
                f"{most:,} decoded pixels a request ({setting}); send fewer images a request, or scale them down"
            )
        turn = object()
        with self._room:
            if len(self._waiting) >= MAX_WAITING:
                raise BusyError(
                    f"{_images(images)} of {pixels:,} pixels: {len(self._waiting)} requests are already waiting for "
                    f"room among the {self.limit:,} decoded pixels; send it again after {RETRY_AFTER_S} s",
                    RETRY_AFTER_S,
                )
            self._waiting.append(turn)
            try:
                fits = self._room.wait_for(
                    lambda: self._waiting[0] is turn and self.in_use + pixels <= self.limit, wait_s
                )
                if fits:
                    self.in_use += pixels
            finally:
                self._waiting.remove(turn)
                self._room.notify_all()  # the next in line may fit now
            if not fits:
                raise BusyError(
                    f"{_images(images)} of {pixels:,} pixels waited {wait_s:g} s for room among the "
                    f"{self.in_use:,} of {self.limit:,} decoded pixels other requests hold; "
                    f"send it again after {RETRY_AFTER_S} s",
                    RETRY_AFTER_S,
                )
        return Reservation(self, pixels)


def _images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"
