"""What an engine shares between the tasks of the Batch tier: who submits, and the last look at each job.

A job holds many analyses, and each has a task; without sharing, each task
would ask Gemini about the same job. Here the first task due asks (one
batches.get per job per look, per engine) and the others use what it saw.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storyteller_core.storage.disk_store import make_owner_id

if TYPE_CHECKING:
    from storyteller_core.gemini.gateway import BatchJob

FORGET_AFTER_S = 3600.0
SCAN_VERDICT_S = 2.0  # an ended job's last look is kept this long (its members' tasks may still come by)


@dataclass
class Look:
    job: BatchJob | None  # None: Gemini no longer knows the job
    next_at: float  # time.monotonic() of the next look


class BatchLooks:
    def __init__(self) -> None:
        self.owner = make_owner_id(f"batch-{uuid.uuid4().hex[:8]}")  # holds the submit lease in the store
        self.submitting = threading.Lock()  # one submission at a time in this engine
        self._looks: dict[str, Look] = {}
        self._busy: set[str] = set()  # jobs a task of this engine is looking at right now
        self._collect: dict[str, tuple[float, float]] = {}  # model key -> (seen at, collect until): a scan's verdict
        self._scanned: set[str] = set()  # analyses that have scanned for others of their model
        self._lock = threading.Lock()

    def last(self, job_name: str) -> Look | None:
        with self._lock:
            return self._looks.get(job_name)

    def remember(self, job_name: str, look: Look) -> None:
        with self._lock:
            self._looks[job_name] = look
            now = time.monotonic()
            for name in [n for n, seen in self._looks.items() if seen.next_at < now - FORGET_AFTER_S]:
                del self._looks[name]

    def collecting(self, model_key: str, until: float) -> None:
        """A scan found analyses of this model on their way: the job waits for them until ``until`` (time.time())."""
        with self._lock:
            self._collect[model_key] = (time.monotonic(), until)

    def collecting_until(self, model_key: str, analysis_id: str) -> float | None:
        """For an analysis looking again, the last scan's verdict while it is fresh: one scan per model every
        SCAN_VERDICT_S, not one per waiting task. An analysis that has just become ready always scans."""
        with self._lock:
            seen = self._collect.get(model_key)
            again = analysis_id in self._scanned
            if len(self._scanned) > 100_000:
                self._scanned.clear()
            self._scanned.add(analysis_id)
        if not again or seen is None or time.monotonic() - seen[0] > SCAN_VERDICT_S or seen[1] <= time.time():
            return None
        return seen[1]

    @contextmanager
    def looking(self, job_name: str) -> Iterator[bool]:
        """True for the one task of this engine that may look at the job now; False while another does."""
        with self._lock:
            mine = job_name not in self._busy
            self._busy.add(job_name)
        try:
            yield mine
        finally:
            if mine:
                with self._lock:
                    self._busy.discard(job_name)
