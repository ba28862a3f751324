"""Leases: which engine works which video or analysis, so two engines on one data dir never do the same work.

A lease in the store names its holder; the holder's one heartbeat keeps all
its leases alive. A lease whose holder process is gone (same host) or whose
heartbeat ran out is taken over, which is how a crashed engine's work resumes
elsewhere. Only a holder whose beat came late can have lost leases, so only
then are they all read back.
"""

from __future__ import annotations

import threading
import time

from storyteller_core.storage.disk_store import Store


class Leases:
    def __init__(self, store: Store, owner: str, ttl_s: float) -> None:
        self.store = store
        self.owner = owner
        self.ttl_s = ttl_s
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._last_beat: float | None = None

    def claim(self, task: str) -> bool:
        if not self.store.claim(task, self.owner, self.ttl_s):
            return False
        with self._lock:
            self._held.add(task)
        return True

    def release(self, task: str) -> None:
        with self._lock:
            self._held.discard(task)
        self.store.release(task, self.owner)

    def holds(self, task: str) -> bool:
        with self._lock:
            return task in self._held

    def renew(self) -> list[str]:
        """Keep every lease held alive; return (and forget) the ones another engine took while the beat was late."""
        now = time.monotonic()
        late = self._last_beat is None or now - self._last_beat > self.ttl_s / 2
        kept_by_beat = self.store.heartbeat(self.owner, self.ttl_s)
        self._last_beat = now
        if kept_by_beat and not late:
            return []
        with self._lock:
            held = list(self._held)
        lost = self.store.renew(held, self.owner, self.ttl_s)
        with self._lock:
            self._held.difference_update(lost)
        return lost

    def release_all(self) -> None:
        with self._lock:
            held, self._held = set(self._held), set()
        for task in held:
            self.store.release(task, self.owner)
