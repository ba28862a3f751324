"""What the app and the CLI build in team mode: the command API over Redis, sending messages instead of running steps.

``TeamClient`` has the parts Engine has in embedded mode (store, gate, ctx,
runner, commands), built on Redis, and starts no worker thread: the workers
are other processes. The pages and the CLI call ``client.commands`` and read
``client.store`` exactly as they do with the embedded engine.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from storyteller_core.commands import Ask, Commands
from storyteller_core.errors import Code
from storyteller_core.gemini.gateway import Gateway
from storyteller_core.intake.candidates import Candidate
from storyteller_core.intake.shared_root import OutsideSharedRoot, SharedPaths
from storyteller_core.records.batch import Batch, Item
from storyteller_core.settings import Settings
from storyteller_core.steps.step_context import StepContext
from storyteller_core.storage.disk_store import make_owner_id
from storyteller_core.storage.redis_store import RedisStore, connect
from storyteller_core.team.broker_trust import require_credentials
from storyteller_core.work.redis_dispatch import Dispatcher, TeamConfig, TeamRunner, make_broker
from storyteller_core.work.redis_limits import RedisCooldown, RedisGate, RedisPollLimits, StorageBudget, UploadSlots, WorkerBeats


class TeamCommands(Commands):
    """The command API with team mode's intake rule: a file outside the shared folder is refused with the reason.

    No worker on another machine could read it, and a worker must never be sent to read a file
    only this machine's user chose (the worker checks again right before it opens the file).
    """

    def __init__(self, store: RedisStore, runner: TeamRunner, settings: Any) -> None:
        super().__init__(store, runner, settings)
        self.shared = store.shared

    def _refused_outside(self, candidate: Candidate) -> Candidate:
        if candidate.url or not candidate.ok or self.shared.root is None:  # no shared root: one machine, one set of files
            return candidate
        try:
            self.shared.check(candidate.path)
        except OutsideSharedRoot as exc:
            return dataclasses.replace(candidate, error_code=Code.UNREADABLE.value, error_message=str(exc))
        return candidate

    def submit(self, candidates: Iterable[Candidate], ask: Ask, **kwargs: Any) -> list[Item]:
        return super().submit([self._refused_outside(c) for c in candidates], ask, **kwargs)

    def add_pending(self, candidates: Iterable[Candidate]) -> None:
        super().add_pending([self._refused_outside(c) for c in candidates])

    def _finish_row(self, batch: Batch, item: Item) -> None:
        candidate = Candidate.from_dict(item.intake or {})
        refused = self._refused_outside(candidate)
        if not refused.ok and candidate.ok:
            self.store.update(Item, item.id, error_code=refused.error_code, error_message=refused.error_message, intake=None)
            return
        super()._finish_row(batch, item)


def _no_step(task: str, fence: str, parent: str) -> None:
    raise RuntimeError("a team-mode client runs no steps: start a worker (python -m storyteller_core.team.worker)")


class TeamClient:
    def __init__(
        self,
        settings: Settings,
        config: TeamConfig,
        *,
        log_file: Path | None = None,
        gateway: Gateway | None = None,
        shared: SharedPaths | None = None,
    ) -> None:
        self.config = config
        require_credentials(config.url)
        self.client: Any = connect(config.url)
        self.store = RedisStore(self.client, config.prefix, shared or SharedPaths.from_env())
        self.cooldown = RedisCooldown(self.client, config.prefix, pause_after_s=settings.quota_pause_after_s)
        self.gate = RedisGate(self.client, config.prefix, self.cooldown, settings.api_key)
        self.polls = RedisPollLimits(self.client, config.prefix, settings.max_polls, settings.polls_per_second)
        self.uploads = UploadSlots(self.client, config.prefix, settings.max_uploads, config.upload_slot_ttl_s)
        self.storage = StorageBudget(self.client, config.prefix, config.storage_bytes, ttl_s=settings.file_ttl_s + settings.upload_budget_s)
        self.beats = WorkerBeats(self.client, config.prefix, max(config.heartbeat_timeout_s, config.lease_ttl_s))
        # the client never calls Gemini for a step; a gateway is only needed for models.list (the catalog)
        self.ctx = StepContext(self.store, gateway or cast(Gateway, None), settings, self.polls, self.cooldown)
        self.broker, actors = make_broker(config, settings, _no_step)
        self.dispatcher = Dispatcher(self.store, config, actors)
        self.owner = make_owner_id("c" + uuid.uuid4().hex[:8])
        self.runner = TeamRunner(self.ctx, self.gate, self.dispatcher, log_file or settings.data_dir / "logs", self.owner)
        self.commands = TeamCommands(self.store, self.runner, lambda: self.ctx.settings)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    def resume(self, force: bool = False) -> int:
        """Send a step for every unfinished analysis no live message advances (``force``: every one)."""
        return self.dispatcher.resume(force)

    def snapshot(self) -> dict[str, Any]:
        """What the team is doing now, for the Queue page (the same keys as Engine.snapshot)."""
        running = [key.split(":lease:", 1)[1] for key in self.client.scan_iter(f"{self.config.prefix}:lease:*", count=1000)]
        return {
            "running": running,
            "queued": [],  # messages live in Redis lists; counted by queue_sizes()
            "uploads_running": self.uploads.in_use(),
            "max_uploads": self.settings.max_uploads,
            "storage_bytes": self.storage.in_use(),  # File API bytes the team's files hold (of config.storage_bytes)
            "workers": len(self.workers()),
            "polls_per_second": self.settings.polls_per_second,
            "halted": self.gate.message,
            "healthy": self.runner.healthy,
            "demo": self.settings.demo,
        }

    def workers(self) -> list[str]:
        """The worker processes that beat within the heartbeat timeout (owner ids: host:pid:tag)."""
        return self.beats.alive()

    def queue_sizes(self) -> dict[str, int]:
        """Messages waiting per queue (ready, and delayed)."""
        ns = self.config.namespace
        pipe = self.client.pipeline(transaction=False)
        for queue in ("high", "normal", "low"):
            pipe.llen(f"{ns}:{queue}")
            pipe.hlen(f"{ns}:{queue}.DQ.msgs")
        sizes = pipe.execute()
        return {queue: int(sizes[2 * n]) + int(sizes[2 * n + 1]) for n, queue in enumerate(("high", "normal", "low"))}

    def close(self) -> None:
        self.broker.close()
        self.client.close()
