"""Which task a free worker takes next: priority, then FIFO, under the upload cap and a look-ahead.

A task is "video:<id>" (its upload or processing step) or "analysis:<id>".
A task that waits (a status check later, a rate slot, an upload slot) holds
no worker and costs nothing while it waits: it sits in a timer heap until its
due time, or in a ready heap until a worker (and, for an upload, an upload
slot) is free. Nothing is ever requeued to find out whether it may run yet.
``wake`` makes a waiting task due at once (the status watch does this when a
file settles). Thread-safe; workers block in ``take`` until something is due.

With ``max_work`` set, uploads and the other steps run in separate lanes:
at most ``max_work`` analyses (and other short steps) and at most
``max_uploads`` uploads at once, each lane taking its best task by priority
then FIFO, so an upload never holds a worker an analysis could use. Uploads
then run only while fewer than ``look_ahead`` files are ahead of the analysis
workers (uploading, processing, or ACTIVE and waiting for a worker): enough
that the workers never wait for a file at the end of a batch, not so many
that the whole batch sits on Gemini at once. How many is learnt from the
batch: the workers need ``max_work x (processing + upload) / analysis`` files
ahead to stay busy, doubled for safety, and never fewer than ``look_ahead``;
until a file has been both processed and analyzed nothing is known, and
uploads are not held back. A high-priority upload does not wait for it. Without ``max_work`` (one shared lane, the previous
behaviour) every worker takes whatever is best, uploads included.

Heaps are cleaned lazily: each put gives the entry a new stamp, and a heap
item whose stamp is not the entry's current one is skipped when it surfaces.
"""

from __future__ import annotations

import heapq
import itertools
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass

_MAX_WOKEN = 10_000  # wakes remembered for tasks not queued here (running, or between two steps)
_MAX_SEEN = 100_000  # tasks remembered as taken before (to tell a woken analysis from a new one)
HIGH = 0
LOOK_AHEAD_PER_WORKER = 8  # files kept ahead of each analysis worker at least (split lanes)
_SAMPLES = 20  # recent durations kept per kind of step


@dataclass
class _Entry:
    task: str
    rank: int  # 0 high, 1 normal, 2 low
    seq: int  # submission order, kept across phases so FIFO holds
    due: float
    uploads: bool  # needs one of the upload slots
    stamp: int = 0  # which heap items are this entry's current ones
    returning: bool = False  # taken before: an analysis back from waiting for its file, a video back from its upload
    since: float = 0.0  # monotonic time it began waiting for Gemini's processing (a video's task that is not an upload)


@dataclass
class SchedulerStats:
    """What the scheduler did, for tests and benches: a waiting task must cost no takes and no wakeups."""

    taken: int = 0  # tasks handed to a worker
    wakeups: int = 0  # times a worker's wait ended (due time, a put, a done, a timeout)
    woken: int = 0  # ``wake`` calls that found a waiting task


class Scheduler:
    def __init__(self, max_uploads: int, max_work: int | None = None, look_ahead: int | None = None) -> None:
        """``max_work``: split lanes (see the module doc), with that many workers for everything but uploads;
        the runner then needs ``max_work + max_uploads`` threads. ``look_ahead``: files kept ahead of them at least."""
        self.max_uploads = max_uploads
        self.max_work = max_work
        self.look_ahead = look_ahead
        self.stats = SchedulerStats()
        self._entries: dict[str, _Entry] = {}
        self._timers: list[tuple[float, int, str]] = []  # (due, stamp, task): not due yet
        self._ready: list[tuple[int, int, int, str]] = []  # (rank, seq, stamp, task): due, no upload slot needed
        self._ready_uploads: list[tuple[int, int, int, str]] = []  # due, needs an upload slot
        self._running: dict[str, bool] = {}  # task -> holds an upload slot
        self._woken: set[str] = set()  # woken while not queued: due at once when put back
        self._seen: set[str] = set()  # tasks taken at least once
        self._started: dict[str, tuple[float, bool]] = {}  # running task -> (when it was taken, returning)
        self._took: dict[str, deque[float]] = {k: deque(maxlen=_SAMPLES) for k in ("upload", "processing", "analysis")}
        self._seq = itertools.count()
        self._stamps = itertools.count(1)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, task: str, rank: int, *, delay: float = 0.0, uploads: bool = False, seq: int | None = None) -> None:
        with self._cond:
            old = self._entries.get(task)
            order = seq if seq is not None else (old.seq if old else next(self._seq))
            now = time.monotonic()
            due = now + max(0.0, delay)
            if task in self._woken:  # its file settled while the step was still running: no waiting
                self._woken.discard(task)
                due = now
            since = old.since if old is not None and old.since and not uploads else 0.0
            if not since and not uploads and delay > 0 and task.startswith("video:"):
                since = now  # its file is at Gemini: it waits for the processing from here
            self._place(_Entry(task, rank, order, due, uploads, returning=task in self._seen, since=since), now)
            self._cond.notify()

    def next_seq(self) -> int:
        return next(self._seq)

    def remove(self, task: str) -> bool:
        with self._cond:
            self._woken.discard(task)
            return self._entries.pop(task, None) is not None  # its heap items go stale

    def take(self, timeout: float = 1.0) -> _Entry | None:
        """The best due job a worker may start now, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                self._promote(now)
                entry = self._pop_ready()
                if entry is not None:
                    self._running[entry.task] = entry.uploads
                    self._started[entry.task] = (now, entry.returning)
                    if len(self._seen) >= _MAX_SEEN:
                        self._seen.clear()  # forgetting costs at most a little more look-ahead for a while
                    self._seen.add(entry.task)
                    self.stats.taken += 1
                    if not entry.uploads and entry.returning and self._ready_uploads and self.look_ahead is not None:
                        self._cond.notify()  # a file left the look-ahead for a worker: an upload may go
                    return entry
                if now >= deadline:
                    return None
                self._cond.wait(min(deadline, self._next_due(deadline)) - now)
                self.stats.wakeups += 1
            return None

    def done(self, task: str) -> None:
        with self._cond:
            uploaded = self._running.pop(task, None)
            if uploaded is None:
                return
            started, returning = self._started.pop(task, (None, False))
            if started is not None and (uploaded or (returning and task.startswith("analysis:"))):
                took = time.monotonic() - started
                if uploaded or took > 0.05:  # an analysis that only parked again says nothing
                    self._took["upload" if uploaded else "analysis"].append(took)
            if (uploaded and self._ready_uploads) or (self.max_work is not None and self._ready):
                self._cond.notify()  # a slot of a capped lane is free and a task waits for one
            if not uploaded and self.look_ahead is not None and self._ready_uploads:
                self._cond.notify()  # a file may have left the look-ahead: an upload may go

    def wake(self, task: str) -> bool:
        """Make a waiting task due now; True when it was waiting here. A running task is due at once when put back."""
        with self._cond:
            entry = self._entries.get(task)
            if entry is None:
                if len(self._woken) >= _MAX_WOKEN:
                    self._woken.clear()  # a lost wake costs one wait until the task's own due time
                self._woken.add(task)
                return False
            self.stats.woken += 1
            now = time.monotonic()
            if entry.since and entry.task.startswith("video:"):
                self._took["processing"].append(now - entry.since)
            if entry.due > now:
                self._place(_Entry(entry.task, entry.rank, entry.seq, now, entry.uploads, returning=entry.returning), now)
                self._cond.notify()
            return True

    def wake_all(self) -> None:
        """Make every waiting task due now (after a quota pause is lifted)."""
        with self._cond:
            now = time.monotonic()
            for entry in list(self._entries.values()):
                if entry.due > now:
                    self._place(_Entry(entry.task, entry.rank, entry.seq, now, entry.uploads, returning=entry.returning), now)
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

    def waiting(self) -> int:
        """Tasks queued here that are not due yet."""
        with self._cond:
            now = time.monotonic()
            return sum(1 for e in self._entries.values() if e.due > now)

    def __contains__(self, task: str) -> bool:
        with self._cond:
            return task in self._entries or task in self._running

    # -- heaps (call with the lock held) -------------------------------------------------------
    def _place(self, entry: _Entry, now: float) -> None:
        entry.stamp = next(self._stamps)
        self._entries[entry.task] = entry
        if entry.due > now:
            heapq.heappush(self._timers, (entry.due, entry.stamp, entry.task))
        else:
            self._push_ready(entry)

    def _push_ready(self, entry: _Entry) -> None:
        heapq.heappush(self._ready_uploads if entry.uploads else self._ready, (entry.rank, entry.seq, entry.stamp, entry.task))

    def _current(self, stamp: int, task: str) -> _Entry | None:
        entry = self._entries.get(task)
        return entry if entry is not None and entry.stamp == stamp else None

    def _promote(self, now: float) -> None:
        """Move every timer that is due into its ready heap."""
        while self._timers and self._timers[0][0] <= now:
            _, stamp, task = heapq.heappop(self._timers)
            entry = self._current(stamp, task)
            if entry is not None:
                self._push_ready(entry)

    def _next_due(self, default: float) -> float:
        while self._timers and self._current(self._timers[0][1], self._timers[0][2]) is None:
            heapq.heappop(self._timers)  # stale
        return self._timers[0][0] if self._timers else default

    def _top(self, heap: list[tuple[int, int, int, str]]) -> tuple[int, int, int, str] | None:
        while heap and self._current(heap[0][2], heap[0][3]) is None:
            heapq.heappop(heap)  # stale
        return heap[0] if heap else None

    def _pop_ready(self) -> _Entry | None:
        uploads_running = sum(self._running.values())
        best_heap = None
        top = None
        if self.max_work is None or len(self._running) - uploads_running < self.max_work:
            top = self._top(self._ready)
            if top is not None:
                best_heap = self._ready
        if uploads_running < self.max_uploads:
            upload_top = self._top(self._ready_uploads)
            if upload_top is not None and (top is None or upload_top[:2] < top[:2]) and self._may_upload(upload_top[0]):
                best_heap, top = self._ready_uploads, upload_top
        if best_heap is None or top is None:
            return None
        heapq.heappop(best_heap)
        return self._entries.pop(top[3])

    def _may_upload(self, rank: int) -> bool:
        if self.max_work is None or self.look_ahead is None or rank <= HIGH:
            return True
        window = self.window()
        return window is None or self.ahead() < window

    def window(self) -> int | None:
        """Files to keep ahead of the analysis workers, from the batch's own times; None: not known yet (no limit).

        The workers finish a file every analysis / max_work seconds; a file uploaded now is ready after its
        upload and processing. So they need max_work x (upload + processing) / analysis files ahead, plus
        one each in hand; doubled, because processing times vary with the video. Call with the lock held.
        """
        took = self._took
        if self.max_work is None or not took["analysis"] or not took["processing"]:
            return None
        now = time.monotonic()
        oldest = max((now - e.since for e in self._entries.values() if e.since), default=0.0)
        processing = max(max(took["processing"]), oldest)  # files still processing set a floor too
        upload = statistics.median(took["upload"]) if took["upload"] else 0.0
        analysis = max(0.05, statistics.median(took["analysis"]))
        needed = self.max_work * (math.ceil(2 * (upload + processing) / analysis) + 1)
        return max(self.look_ahead or 0, needed)

    def ahead(self) -> int:
        """Files ahead of the analysis workers: uploading, processing (a video's task that is not an upload),
        or ACTIVE with an analysis queued again after waiting for it. Call with the lock held."""
        count = 0
        for task, uploads in self._running.items():
            count += uploads or task.startswith("video:")
        for entry in self._entries.values():
            if entry.task.startswith("video:"):
                count += not entry.uploads
            else:
                count += entry.returning
        return count
