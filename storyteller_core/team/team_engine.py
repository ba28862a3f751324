"""The engine the app and the CLI get in team mode: the same command API and reads, with the work done by workers.

It builds no scheduler and starts no worker thread: commands send Dramatiq
messages (through TeamClient) and the rows are read from Redis, so the pages
and the CLI do not know which mode they run in.
"""

from __future__ import annotations

import logging
from typing import Any

from storyteller_core.engine import Engine
from storyteller_core.gemini.catalog import Catalog
from storyteller_core.gemini.demo_mode import gateway_for
from storyteller_core.logs import setup_logging
from storyteller_core.settings import Settings
from storyteller_core.storage.datadir import ensure_data_dir
from storyteller_core.team.client import TeamClient
from storyteller_core.work.redis_dispatch import TeamConfig

log = logging.getLogger(__name__)
KEY_ON_WORKERS = "In team mode the Gemini key is set on the workers (GEMINI_API_KEY in their environment), not here."


class TeamEngine(Engine):
    def __init__(self, settings: Settings, *, stderr_log_level: int = logging.INFO) -> None:  # noqa: D107
        ensure_data_dir(settings.data_dir)  # this machine's logs and thumbnails
        self.log_file = setup_logging(settings.data_dir, stderr_log_level)
        self.team = TeamClient(settings, TeamConfig.from_env(), log_file=self.log_file, gateway=gateway_for(settings))
        self.store, self.gate, self.ctx, self.runner = self.team.store, self.team.gate, self.team.ctx, self.team.runner
        self.commands = self.team.commands
        self.owner = self.team.owner
        self.catalog = Catalog(lambda: self.ctx.gateway.list_models(), lambda: self.ctx.settings, self.gate.reject_key)

    def start(self) -> TeamEngine:
        self.catalog.offered  # noqa: B018 - starts the first models.list in the background
        self.commands.resume_intake()
        log.info("team client started", extra={"owner": self.owner, "workers": len(self.team.workers())})
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        self.commands.intake.stop(timeout)
        self.team.close()

    @property
    def healthy(self) -> bool:
        return bool(self.team.workers())  # at least one worker process is alive

    def set_api_key(self, api_key: str | None) -> None:
        raise ValueError(KEY_ON_WORKERS)

    def resume(self) -> None:
        self.gate.cooldown.resume()
        self.team.resume(force=True)

    def snapshot(self) -> dict[str, Any]:
        return {**self.team.snapshot(), "queued_by_priority": self.team.queue_sizes()}
