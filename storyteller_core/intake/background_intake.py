"""Background intake: Start stores the batch at once; its files are checked afterwards.

Hashing, probing and thumbnailing 2,000 local videos takes minutes; Start must
give the page back in a moment. So Start stores the batch and one row per file
in one transaction (``Batch.intake``: the question; ``Item.intake``: what is
known of the file so far), and a thread here finishes the rows in order: each
row's file is checked, its video and analysis made, and its work queued, so rows
turn from "Checking the file" to their progress as the board watches.

Finishing a row is idempotent (records are got-or-created), a batch's intake is
leased so two engines on one data dir never both do it, and an engine that
starts finishes what a crashed one left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress

from storyteller_core.records.batch import Batch, Item
from storyteller_core.storage.disk_store import NotFound, Store
from storyteller_core.work.leases import Leases

log = logging.getLogger(__name__)

# Finishes one row: (batch, row) -> None. Commands supplies it (it knows how to check a file and ask).
Finish = Callable[[Batch, Item], None]


class BackgroundIntake:
    def __init__(self, store: Store, leases: Leases, finish: Finish) -> None:
        self.store = store
        self.leases = leases
        self.finish = finish
        self._queue: deque[str] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.idle = threading.Event()
        self.idle.set()

    def start(self, batch_id: str) -> None:
        """Finish the rows of this batch in the background (unless another engine does)."""
        if self._stopping.is_set() or not self.leases.claim(f"intake:{batch_id}"):
            return
        with self._lock:
            if batch_id in self._queue:
                return
            self._queue.append(batch_id)
            self.idle.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="storyteller-intake", daemon=True)
                self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop after the row being checked (the engine stops): the batch's lease is released and the rest of its
        rows are left for the next engine, which resumes them."""
        self._stopping.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def resume(self) -> None:
        """Finish the intake of every batch a stopped or crashed engine left unfinished (at start, and with every
        sweep of the lease keeper, so a crashed app's batch is finished by a CLI still running, and the reverse)."""
        for batch in self.store.many(Batch, self.store.batch_ids()):
            if batch.intake is not None:
                self.start(batch.id)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue or self._stopping.is_set():
                    for left in self._queue:  # stopping: whoever starts next checks them
                        self.leases.release(f"intake:{left}")
                    self._queue.clear()
                    self._thread = None
                    self.idle.set()
                    return
                batch_id = self._queue[0]
            try:
                self._finish_batch(batch_id)
            except Exception:  # e.g. the disk is full: the next sweep (every ttl/2) takes it up again
                log.exception("could not finish checking the files of a batch", extra={"batch_id": batch_id})
            finally:
                self.leases.release(f"intake:{batch_id}")
                with self._lock:
                    self._queue.popleft()

    def _finish_batch(self, batch_id: str) -> None:
        batch = self.store.get(Batch, batch_id)
        if batch is None or batch.intake is None:
            return
        todo = [item.id for item in self.store.items(batch_id) if item.intake is not None]
        log.info("checking the files of a batch", extra={"batch_id": batch_id, "files": len(todo)})
        task, renewed = f"intake:{batch_id}", time.monotonic()
        for item_id in todo:
            if self._stopping.is_set():
                return  # the batch keeps its intake: whoever starts next finishes it
            if time.monotonic() - renewed > self.leases.ttl_s / 4:  # a team client has no lease keeper: keep this one
                self.store.renew([task], self.leases.owner, self.leases.ttl_s)  # (only this one: the keeper's are its)
                renewed = time.monotonic()
            item = self.store.get(Item, item_id)  # read now: the person may have removed or cancelled it
            if item is None or item.intake is None:
                continue
            try:
                self.finish(batch, item)
            except Exception as exc:  # this row only: the others go on
                log.exception("could not check a file of a batch", extra={"batch_id": batch_id, "item_id": item_id})
                _fail_row(self.store, item_id, exc)
        _intake_done(self.store, batch_id)
        log.info("checked the files of a batch", extra={"batch_id": batch_id, "files": len(todo)})


def _fail_row(store: Store, item_id: str, exc: Exception) -> None:
    with suppress(Exception):  # the store itself may be what failed: the next sweep tries the row again
        store.update(
            Item,
            item_id,
            intake=None,
            error_code="intake_failed",
            error_message=f"This file could not be checked ({type(exc).__name__}). Remove it and add it again; "
            "if it happens again, the log in the data folder says more.",
        )


def _intake_done(store: Store, batch_id: str) -> None:
    with suppress(NotFound):  # every row was removed, and the batch with them
        store.update(Batch, batch_id, intake=None)
