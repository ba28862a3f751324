"""Process-wide limits around Gemini polls: how many at once, and how many per second.

Neither limit makes a worker sleep: a poll that cannot go now tells the caller
how long to wait, and the job goes back to the scheduler until then.
"""

from __future__ import annotations

import threading
import time


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


class PollLimits:
    def __init__(self, max_at_once: int, per_second: float) -> None:
        self._slots = threading.BoundedSemaphore(max_at_once)
        self._rate = RateLimiter(per_second)

    def try_start(self) -> float:
        """0 when a poll may start now (the caller must call ``finish``), else seconds to wait."""
        if not self._slots.acquire(blocking=False):
            return 0.05
        wait = self._rate.try_acquire()
        if wait:
            self._slots.release()
        return wait

    def finish(self) -> None:
        self._slots.release()
