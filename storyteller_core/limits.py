"""Process-wide limits around Gemini calls: polls at once and poll rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RateLimiter:
    """At most ``rate`` acquisitions per second, spaced evenly, shared by all threads."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class PollLimits:
    def __init__(self, max_at_once: int, per_second: float) -> None:
        self._slots = threading.BoundedSemaphore(max_at_once)
        self._rate = RateLimiter(per_second)

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._slots:
            self._rate.acquire()
            yield
