"""One quota cooldown shared by every worker thread.

When Gemini answers 429, every caller waits out the same cooldown instead of
each retrying on its own clock; after ``pause_after_s`` of unbroken 429s the
batch pauses (retry.py raises QuotaPaused) until ``paused_until`` or a Resume.

>>> now = [100.0]
>>> cooldown = Cooldown(pause_after_s=120, clock=lambda: now[0])
>>> cooldown.note_exhausted(retry_after_s=None)  # the first 429: a 1 s backoff for everyone
>>> cooldown.remaining()
1.0
>>> now[0] = 130.0
>>> cooldown.exhausted_for(), cooldown.remaining()
(30.0, 0.0)
>>> cooldown.note_ok(); cooldown.exhausted_for()
0.0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_BACKOFF_S = 60.0
PAUSE_S = 5 * 60.0


class Cooldown:
    """Thread-safe. Times are wall clock (``clock``), so ``paused_until`` can be shown to a person."""

    def __init__(self, pause_after_s: float = 120.0, floor_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.pause_after_s = pause_after_s
        self.floor_s = floor_s
        self.paused_until: float | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._streak = 0
        self._streak_start: float | None = None

    def note_exhausted(self, retry_after_s: float | None) -> None:
        """A 429: push the shared next-allowed time out (never earlier than it already is)."""
        with self._lock:
            now = self._clock()
            if self._streak_start is None:
                self._streak_start = now
            self._streak += 1
            # a RetryInfo of "0s" is no advice at all: back off as if none was sent
            delay = retry_after_s or min(MAX_BACKOFF_S, self.floor_s * 2 ** (self._streak - 1))
            self._next_at = max(self._next_at, now + max(self.floor_s, delay))

    def note_ok(self) -> None:
        """A call went through: the quota is back."""
        self.resume()

    def resume(self) -> None:
        """Forget the streak, the wait and any pause (the Resume button)."""
        with self._lock:
            self._next_at = 0.0
            self._streak = 0
            self._streak_start = None
            self.paused_until = None

    def remaining(self) -> float:
        """Seconds every caller must still wait before its next request."""
        with self._lock:
            return max(0.0, self._next_at - self._clock())

    def exhausted_for(self) -> float:
        """Seconds since the first 429 of the current streak; 0 when there is none."""
        with self._lock:
            return 0.0 if self._streak_start is None else max(0.0, self._clock() - self._streak_start)

    def pause(self) -> float:
        """Pause every caller for ``PAUSE_S`` (or the server's longer delay); returns the wall-clock resume time."""
        with self._lock:
            until = max(self._clock() + PAUSE_S, self._next_at, self.paused_until or 0.0)
            self.paused_until = until
            return until

    def active_pause(self) -> float | None:
        """``paused_until`` while it lies ahead, else None (a pause that ran out lets one probe through)."""
        with self._lock:
            until = self.paused_until
            return until if until is not None and until > self._clock() else None
