"""The embedded engine: one store, one scheduler, worker threads, and the command API around them.

The pieces each live in their own module: the records and their states
(video.py, analysis.py, batch.py), the store, the steps (steps/), the
runner that maps a step's outcome to a state, leases, the scheduler, the
retry policy and the gate (key, model, quota). This module only builds them
and starts or stops them together.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from storyteller_core.commands import Commands
from storyteller_core.gemini import reach
from storyteller_core.gemini.catalog import Catalog
from storyteller_core.gemini.demo_mode import gateway_for
from storyteller_core.intake.spool import sweep as sweep_spool
from storyteller_core.logs import setup_logging
from storyteller_core.records.batch import Item
from storyteller_core.settings import Settings
from storyteller_core.steps.step_context import StepContext
from storyteller_core.storage.datadir import ensure_data_dir, store_dir
from storyteller_core.storage.disk_store import DiskStore, Store, make_owner_id
from storyteller_core.views.board import Row, rows_of
from storyteller_core.work.cooldown import Cooldown
from storyteller_core.work.gate import Gate
from storyteller_core.work.leases import Leases
from storyteller_core.work.poll_limits import PollLimits
from storyteller_core.work.runner import Runner
from storyteller_core.work.scheduler import LOOK_AHEAD_PER_WORKER, Scheduler
from storyteller_core.work.status_watch import StatusWatch

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, settings: Settings, *, stderr_log_level: int = logging.INFO) -> None:
        ensure_data_dir(settings.data_dir)  # owner-only, or refused with how to fix it
        self.log_file = setup_logging(settings.data_dir, stderr_log_level)
        self.store: Store = DiskStore(store_dir(settings.data_dir))
        self.owner = make_owner_id(uuid.uuid4().hex[:8])
        self.gate = Gate(Cooldown(pause_after_s=settings.quota_pause_after_s))
        self.ctx = StepContext(
            self.store, gateway_for(settings), settings, PollLimits(settings.max_polls, settings.polls_per_second), self.gate.cooldown
        )
        # uploads in a lane of their own, kept a look-ahead of files ahead of the max_workers analysis workers
        self.scheduler = Scheduler(
            settings.max_uploads, max_work=settings.max_workers, look_ahead=LOOK_AHEAD_PER_WORKER * settings.max_workers
        )
        self.runner = Runner(self.ctx, self.gate, self.scheduler, Leases(self.store, self.owner, settings.lease_ttl_s), self.log_file)
        self.commands = Commands(self.store, self.runner, lambda: self.ctx.settings)
        self.runner.on_sweep = self.commands.resume_intake  # a batch a crashed engine was checking is finished here
        self.catalog = Catalog(lambda: self.ctx.gateway.list_models(), lambda: self.ctx.settings, self.gate.reject_key)
        # files processing at Gemini: their states in bulk, on one thread, waking each video's task when it settles
        self.watch = StatusWatch(self.ctx, self.gate, lambda video_id: self.scheduler.wake(f"video:{video_id}"))
        self.runner.watch = self.watch

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def demo(self) -> bool:
        return self.settings.demo

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> Engine:
        sweep_spool(self.store, self.settings.spool_dir)
        self.catalog.offered  # noqa: B018 - starts the first models.list in the background
        if self.runner.watch is not None:
            self.runner.watch.start()
        self.runner.start(self.settings.max_workers + self.settings.max_uploads)  # one thread per lane slot (sweeps first)
        log.info(
            "engine started",
            extra={"owner": self.owner, "demo": self.demo, "workers": self.settings.max_workers, "max_uploads": self.settings.max_uploads},
        )
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking work, interrupt uploads at their next chunk, release every lease."""
        self.commands.intake.stop(timeout)  # first: a row it checks next would queue work for the stopped runner
        self.runner.stop(timeout)
        self.watch.stop()
        log.info("engine stopped", extra={"owner": self.owner})

    @property
    def healthy(self) -> bool:
        return self.runner.healthy

    def set_api_key(self, api_key: str | None) -> None:
        """Use another key from now on (None: demo mode); forgets what the old key was refused."""
        settings = replace(self.settings, api_key=api_key)
        self.ctx.gateway = gateway_for(settings)
        self.ctx.settings = settings
        self.gate.clear()
        self.catalog.forget()
        reach.REACH.clear()  # what the old key could not reach says nothing of the new one

    def available_models(self) -> list[str]:
        """The models the key is offered, asked now (raises GeminiError, e.g. for a rejected key)."""
        return self.catalog.refresh(quiet=False) or []

    def resume(self) -> None:
        """The Resume button after a quota pause: ask Gemini again now."""
        self.gate.cooldown.resume()
        self.scheduler.wake_all()

    # -- reading -------------------------------------------------------------------------
    def rows(self, items: Iterable[Item]) -> list[Row]:
        return rows_of(self.store, items)

    def wait(self, item_ids: list[str], timeout: float | None = None, poll_s: float = 0.2) -> list[Row]:
        """Block until every row has ended (or ``timeout``); the rows as they are then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rows = self.rows(self.store.many(Item, item_ids))
            if all(row.ended for row in rows) or (deadline and time.monotonic() > deadline):
                return rows
            time.sleep(poll_s)

    def snapshot(self) -> dict[str, Any]:
        """What the engine is doing now, for the Queue page."""
        return {
            "running": self.scheduler.running(),
            "queued": self.scheduler.queued(),
            "uploads_running": self.scheduler.uploads_running(),
            "max_uploads": self.settings.max_uploads,
            "workers": self.settings.max_workers,
            "polls_per_second": self.settings.polls_per_second,
            "halted": self.gate.message,
            "healthy": self.healthy,
            "demo": self.demo,
        }
