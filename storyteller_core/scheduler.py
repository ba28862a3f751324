"""Which task a free worker takes next: priority, then FIFO, under the upload cap.

A task is "video:<id>" (its upload or processing step) or "analysis:<id>".
A task that waits (a status check later) sits here with a due time and holds
no worker. Thread-safe; workers block in ``take`` until something is due.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass


@dataclass
class _Entry:
    task: str
    rank: int  # 0 high, 1 normal, 2 low
    seq: int  # submission order, kept across phases so FIFO holds
    due: float
    uploads: bool  # needs one of the upload slots


class Scheduler:
    def __init__(self, max_uploads: int) -> None:
        self.max_uploads = max_uploads
        self._entries: dict[str, _Entry] = {}
        self._running: dict[str, bool] = {}  # task -> holds an upload slot
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, task: str, rank: int, *, delay: float = 0.0, uploads: bool = False, seq: int | None = None) -> None:
        with self._cond:
            old = self._entries.get(task)
            order = seq if seq is not None else (old.seq if old else next(self._seq))
            self._entries[task] = _Entry(task, rank, order, time.monotonic() + delay, uploads)
            self._cond.notify_all()

    def next_seq(self) -> int:
        return next(self._seq)

    def remove(self, task: str) -> bool:
        with self._cond:
            return self._entries.pop(task, None) is not None

    def take(self, timeout: float = 1.0) -> _Entry | None:
        """The best due job a worker may start now, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                entry = self._best(now)
                if entry is not None:
                    del self._entries[entry.task]
                    self._running[entry.task] = entry.uploads
                    return entry
                next_due = min((e.due for e in self._entries.values()), default=deadline)
                wait = min(deadline, next_due) - now
                if now >= deadline:
                    return None
                self._cond.wait(max(0.005, wait))
            return None

    def done(self, task: str) -> None:
        with self._cond:
            self._running.pop(task, None)
            self._cond.notify_all()

    def wake_all(self) -> None:
        """Make every waiting task due now (after a quota pause is lifted)."""
        with self._cond:
            now = time.monotonic()
            for entry in self._entries.values():
                entry.due = min(entry.due, now)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def queued(self) -> list[str]:
        with self._cond:
            return [e.task for e in sorted(self._entries.values(), key=lambda e: (e.rank, e.seq))]

    def running(self) -> list[str]:
        with self._cond:
            return list(self._running)

    def uploads_running(self) -> int:
        with self._cond:
            return sum(self._running.values())

    def __contains__(self, task: str) -> bool:
        with self._cond:
            return task in self._entries or task in self._running

    def _best(self, now: float) -> _Entry | None:
        uploads_free = sum(self._running.values()) < self.max_uploads
        best = None
        for entry in self._entries.values():
            if entry.due > now or (entry.uploads and not uploads_free):
                continue
            if best is None or (entry.rank, entry.seq) < (best.rank, best.seq):
                best = entry
        return best
