"""Process-wide limits around Gemini polls: how many at once, and how many per second.

Neither limit makes a worker sleep: a poll that cannot go now tells the caller
how long to wait, and the job waits in the scheduler's timer heap until then.
A caller that names itself (``slot(key)``) is given a time of its own: the
rate's next free slot is reserved for it, so many waiting jobs wake one at a
time, each when its slot comes, instead of all waking at the next slot and
all but one going back to wait. The status watch (status_watch.py) waits for
its slots on its own thread.
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

    def reserve(self) -> float:
        """Take the next free slot, now or later; the seconds until it comes (0: now)."""
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
            return at - now


@dataclass(frozen=True)
class Slot:
    ok: bool  # a poll may start now; the slot is held until the ``with`` block ends
    wait_s: float = 0.0  # when not ok: seconds until one is likely to free


class PollLimits:
    def __init__(self, max_at_once: int, per_second: float) -> None:
        self._slots = threading.BoundedSemaphore(max_at_once)
        self._rate = RateLimiter(per_second)
        self._reserved: dict[str, float] = {}  # key -> monotonic time of its reserved rate slot
        self._lock = threading.Lock()

    @property
    def interval(self) -> float:
        """Seconds between two status calls at the full rate."""
        return self._rate.interval

    @contextmanager
    def slot(self, key: str | None = None) -> Iterator[Slot]:
        """``with polls.slot(key) as slot:`` poll only if ``slot.ok``; released on exit only if it was taken.

        With a ``key`` (e.g. the video's id), a slot that is not free now is reserved for that key:
        come back after ``slot.wait_s`` with the same key and it is yours.
        """
        slot = self._take(key)
        try:
            yield slot
        finally:
            if slot.ok:
                self._slots.release()

    def _take(self, key: str | None) -> Slot:
        if key is None:
            wait = 0.0
        else:
            wait = self._reservation(key)
            if wait:
                return Slot(False, wait)
        if not self._slots.acquire(blocking=False):
            return Slot(False, 0.05)
        if key is None:
            wait = self._rate.try_acquire()
            if wait:
                self._slots.release()
                return Slot(False, wait)
        return Slot(True)

    def _reservation(self, key: str) -> float:
        """0 when ``key`` may call now (its reserved slot came, or one was free); else the seconds until its slot."""
        now = time.monotonic()
        with self._lock:
            at = self._reserved.pop(key, None)
            if at is not None and at > now:
                self._reserved[key] = at
                return at - now
            if at is not None:
                return 0.0
            wait = self._rate.reserve()
            if wait:
                self._reserved[key] = now + wait
                if len(self._reserved) > 1000:  # forget reservations nobody came back for
                    for stale in [k for k, t in self._reserved.items() if t < now - 60]:
                        del self._reserved[stale]
            return wait
