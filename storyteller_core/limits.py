"""Process-wide limits around Gemini polls: how many at once, and how many per second.

Neither limit makes a worker sleep: a poll that cannot go now tells the caller
how long to wait, and the job waits in the scheduler's timer heap until then.
The status watch (status_watch.py) waits for its slots on its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class RateLimiter:
    """At most ``rate`` acquisitions per second, spaced evenly, shared by all threads."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """Take the slot and return 0, or return the seconds until the next free slot."""
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return self._next - now
            self._next = now + self.interval
            return 0.0


@dataclass(frozen=True)
class Slot:
    ok: bool  # a poll may start now; the slot is held until the ``with`` block ends
    wait_s: float = 0.0  # when not ok: seconds until one is likely to free


class PollLimits:
    def __init__(self, max_at_once: int, per_second: float) -> None:
        self._slots = threading.BoundedSemaphore(max_at_once)
        self._rate = RateLimiter(per_second)

    @property
    def interval(self) -> float:
        """Seconds between two status calls at the full rate."""
        return self._rate.interval

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        """``with polls.slot() as slot:`` poll only if ``slot.ok``; released on exit only if it was taken."""
        slot = self._take()
        try:
            yield slot
        finally:
            if slot.ok:
                self._slots.release()

    def _take(self) -> Slot:
        if not self._slots.acquire(blocking=False):
            return Slot(False, 0.05)
        wait = self._rate.try_acquire()
        if wait:
            self._slots.release()
            return Slot(False, wait)
        return Slot(True)
