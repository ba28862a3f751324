"""The dispatcher of team mode: Dramatiq messages on Redis, each meaning "advance this task by one step".

A task is ``video:<id>`` or ``analysis:<id>``, as in the embedded engine. One
actor, registered on three queues (high, normal, low; actor priority 0/1/2 so a
worker's threads take high first), runs one step with the existing Runner and
sends the next message itself: a returned delay becomes ``delay=``; DONE and
PARK send nothing (a settled video wakes its analyses). ``max_retries=0``
(tenacity and the state tables already retry); ``time_limit`` covers the
upload budget.

Fencing. ``<prefix>:fence:<task>`` names the one message token that may
advance the task; a message carries (task, its token, its parent's token).
- begin (Lua): the message may run when the fence names it, when the fence
  names its parent (the parent sent it but died before moving the fence), or,
  for a root message (no parent), when there is no fence; it then holds the
  task's lease (owner token, TTL on Redis's clock, renewed while it runs).
  Any other message for the task is dropped.
- after the step, the next message is sent first and the fence is then moved
  to it (compare-and-set in Lua). A crash between the two leaves the old
  message unacknowledged: Dramatiq redelivers it after the heartbeat timeout
  and exactly one of the two goes on. A fence has a TTL (the delay plus a
  grace), renewed while its message runs, so a line whose message is lost
  (e.g. a Redis restore) is found by the sweep, which sends a root message.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from storyteller_core.records.analysis import PRIORITY_RANK, Analysis
from storyteller_core.settings import Settings
from storyteller_core.steps.step_context import StepContext
from storyteller_core.storage.redis_store import RedisStore
from storyteller_core.team import DEFAULT_PREFIX, broker_url, key_prefix
from storyteller_core.work.gate import Gate
from storyteller_core.work.leases import Leases
from storyteller_core.work.runner import Runner
from storyteller_core.work.scheduler import Scheduler

log = logging.getLogger(__name__)
QUEUES = ("high", "normal", "low")  # by PRIORITY_RANK

_BEGIN = """
local f = redis.call('GET', KEYS[1])
local via = 'own'
if f ~= ARGV[1] then
  if f then
    if f ~= ARGV[2] then return {'drop', ''} end
    via = 'parent'
  elseif ARGV[2] ~= '' then return {'drop', ''} end
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[3] then return {'busy-' .. via, holder} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[5])
return {'go', ''}
"""
_FINISH = """
local ok = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4]) end
  ok = 1
end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return ok
"""
_VOID = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('DEL', KEYS[1])
"""
_TAKE_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# KEYS: lease and fence keys of the tasks held, in pairs. ARGV: lease values, then lease ttl ms, fence ttl ms.
_KEEP = """
local n = #KEYS / 2
local lost = {}
for i = 1, n do
  if redis.call('GET', KEYS[2 * i - 1]) == ARGV[i] then
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[n + 1])
    redis.call('PEXPIRE', KEYS[2 * i], ARGV[n + 2])
  else
    table.insert(lost, i)
  end
end
return lost
"""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass(frozen=True)
class TeamConfig:
    """How the team's processes meet in Redis; every process of one deployment must agree."""

    url: str
    prefix: str = DEFAULT_PREFIX
    heartbeat_timeout_s: float = 10.0  # a worker silent this long is dead: its messages go to others
    maintenance_chance: int = 100_000  # per million broker calls: how soon a dead worker's messages are found
    lease_ttl_s: float = 10.0  # a running step's lease; renewed every ttl/4
    upload_slot_ttl_s: float = 120.0  # an upload slot not renewed by progress for this long is free again
    idle_poll_ms: int = 100  # how long an idle consumer waits before asking Redis again (also delayed messages' lateness)
    sweep_every_s: float = 20.0  # one worker looks for unfinished work with no live message
    generate_per_minute: float = 0.0  # generate requests a minute across the team (GCRA reservations); 0: no cap
    storage_bytes: int = 20_000_000_000  # the File API's storage per project: uploads wait for room
    keep_files: bool = False  # False: a Gemini file is deleted after its last analysis; True: kept until it expires (48 h)
    status_watch: bool = True  # one worker lists processing files in bulk for the team; False: each polls files.get

    @property
    def namespace(self) -> str:
        return f"{self.prefix}-dramatiq"

    @property
    def fence_grace_s(self) -> float:
        """How long past its due time a message may arrive (a dead holder of a delayed message: redelivery)."""
        return 60.0 + 3 * self.heartbeat_timeout_s

    @classmethod
    def from_env(cls, url: str | None = None) -> TeamConfig:
        found = url or broker_url()
        if not found:
            raise RuntimeError("team mode needs STORYTELLER_BROKER_URL (redis://host:port/db)")
        return cls(
            url=found,
            prefix=key_prefix(),
            heartbeat_timeout_s=_env_float("STORYTELLER_TEAM_HEARTBEAT_S", 10.0),
            maintenance_chance=int(_env_float("STORYTELLER_TEAM_MAINTENANCE_CHANCE", 100_000)),
            lease_ttl_s=_env_float("STORYTELLER_TEAM_LEASE_TTL_S", 10.0),
            upload_slot_ttl_s=_env_float("STORYTELLER_TEAM_UPLOAD_SLOT_TTL_S", 120.0),
            idle_poll_ms=int(_env_float("STORYTELLER_TEAM_IDLE_POLL_MS", 100)),
            sweep_every_s=_env_float("STORYTELLER_TEAM_SWEEP_S", 20.0),
            generate_per_minute=_env_float("STORYTELLER_TEAM_GENERATE_RPM", 0.0),
            storage_bytes=int(_env_float("STORYTELLER_TEAM_STORAGE_GB", 20.0) * 1e9),
            keep_files=os.environ.get("STORYTELLER_TEAM_KEEP_FILES", "").strip().lower() in ("1", "true", "yes"),
            status_watch=os.environ.get("STORYTELLER_TEAM_STATUS_WATCH", "1").strip().lower() not in ("0", "false", "no"),
        )


def time_limit_ms(settings: Settings) -> int:
    """Long enough for the longest step (an upload of 2 GB takes its whole budget), never Dramatiq's 10 min default."""
    longest = max(settings.upload_budget_s, settings.analysis_budget_s, settings.processing_budget_s)
    return int((longest + 2 * settings.request_timeout_s + 120) * 1000)


def make_broker(config: TeamConfig, settings: Settings, run: Callable[[str, str, str], None]) -> tuple[RedisBroker, dict[int, Any]]:
    """The Redis broker and the actor on each priority queue; ``run(task, fence, parent)`` does the work (workers only)."""
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=time_limit_ms(settings)),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=0),
    ]
    broker = RedisBroker(
        url=config.url,
        namespace=config.namespace,
        middleware=middleware,
        heartbeat_timeout=int(config.heartbeat_timeout_s * 1000),
        maintenance_chance=config.maintenance_chance,
    )

    def advance(task: str, fence: str, parent: str = "") -> None:
        run(task, fence, parent)

    actors = {
        rank: dramatiq.actor(
            broker=broker, actor_name=f"advance_{queue}", queue_name=queue, priority=rank, max_retries=0, time_limit=time_limit_ms(settings)
        )(advance)
        for rank, queue in enumerate(QUEUES)
    }
    return broker, actors


def new_token() -> str:
    return uuid.uuid4().hex[:16]


class Dispatcher:
    """Sends, fences and finds messages; used by the app and the CLI (clients) and by the workers."""

    def __init__(self, store: RedisStore, config: TeamConfig, actors: dict[int, Any]) -> None:
        self.store = store
        self.r: Any = store.r
        self.config = config
        self.actors = actors
        self._begin = store.r.register_script(_BEGIN)
        self._finish = store.r.register_script(_FINISH)
        self._void = store.r.register_script(_VOID)
        self._take_lease = store.r.register_script(_TAKE_LEASE)
        self._keep = store.r.register_script(_KEEP)

    def fence_key(self, task: str) -> str:
        return self.store.key("fence", task)

    # -- sending ----------------------------------------------------------------------------------
    def send(self, task: str, fence: str, parent: str = "", delay_s: float = 0.0) -> None:
        actor = self.actors[self.rank(task)]
        delay = int(delay_s * 1000) if delay_s > 0 else None
        actor.send_with_options(args=(task, fence, parent), delay=delay)

    def ensure(self, task: str, delay_s: float = 0.0) -> bool:
        """Make sure a message line advances ``task``: send a root message unless a live line has it."""
        if not self.r.exists(self.fence_key(task)):
            self.send(task, new_token(), "", delay_s)
        return True

    def void(self, task: str) -> bool:
        """Drop the task's pending message line (its next message will be dropped) unless a step is running."""
        return bool(self._void(keys=[self.fence_key(task), self.store.lease_key(task)]))

    def running(self, task: str) -> bool:
        return bool(self.r.exists(self.store.lease_key(task)))

    def rank(self, task: str) -> int:
        kind, record_id = task.split(":", 1)
        if kind == "analysis":
            analysis = self.store.get(Analysis, record_id)
            return PRIORITY_RANK[analysis.priority if analysis else "normal"]
        ranks = [PRIORITY_RANK[a.priority] for a in self.store.analyses_of(record_id) if not a.state.terminal]
        return min(ranks, default=1)

    # -- fencing (workers) --------------------------------------------------------------------------
    def begin(self, task: str, fence: str, parent: str, lease_value: str) -> tuple[str, str]:
        """('go' | 'drop' | 'busy-own' | 'busy-parent', the lease holder when busy)."""
        status, holder = self._begin(
            keys=[self.fence_key(task), self.store.lease_key(task)],
            args=[fence, parent, lease_value, _ms(self._fence_ttl(0.0)), _ms(self.config.lease_ttl_s)],
        )
        return str(status), str(holder)

    def take_lease(self, task: str, holder: str, lease_value: str) -> bool:
        return bool(self._take_lease(keys=[self.store.lease_key(task)], args=[holder, lease_value, _ms(self.config.lease_ttl_s)]))

    def finish(self, task: str, fence: str, next_fence: str, lease_value: str, delay_s: float = 0.0) -> bool:
        """Move the fence to ``next_fence`` (or end the line with ''), release the lease; False when the fence moved."""
        return bool(
            self._finish(
                keys=[self.fence_key(task), self.store.lease_key(task)],
                args=[fence, next_fence, lease_value, _ms(self._fence_ttl(delay_s))],
            )
        )

    def keep(self, held: dict[str, str]) -> list[str]:
        """Renew the leases (and fences) of the steps running here; the tasks whose lease was lost."""
        if not held:
            return []
        tasks = list(held)
        keys = [k for t in tasks for k in (self.store.lease_key(t), self.fence_key(t))]
        lost = self._keep(keys=keys, args=[*(held[t] for t in tasks), _ms(self.config.lease_ttl_s), _ms(self._fence_ttl(0.0))])
        return [tasks[int(i) - 1] for i in lost]

    def _fence_ttl(self, delay_s: float) -> float:
        return delay_s + max(self.config.fence_grace_s, self.config.lease_ttl_s * 3)

    # -- finding lost work --------------------------------------------------------------------------
    def resume(self, force: bool = False) -> int:
        """Send a step for every unfinished analysis that no live message line advances; the number sent.

        With ``force`` (after a Redis restore), every unfinished analysis and the
        video it needs gets a message that takes over from whatever line the
        fence names: if that line is alive, one of the two goes on.
        """
        analyses = [a for a in self.store.many(Analysis, self.store.unfinished_order()) if not a.state.terminal]
        if not analyses:
            return 0
        tasks = [f"analysis:{a.id}" for a in analyses]
        video_tasks = [f"video:{v}" for v in dict.fromkeys(a.video_id for a in analyses)]
        fences = dict(zip(tasks + video_tasks, self.r.mget([self.fence_key(t) for t in tasks + video_tasks]), strict=False))
        sent = 0
        for analysis, task in zip(analyses, tasks, strict=True):
            fence, video_fence = fences.get(task), fences.get(f"video:{analysis.video_id}")
            if fence is None and (force or video_fence is None):
                self.send(task, new_token())
                sent += 1
            elif fence is not None and force:
                self.send(task, new_token(), parent=fence)
                sent += 1
        if force:
            for task in video_tasks:
                if fences.get(task) is not None:
                    self.send(task, new_token(), parent=fences[task])
                    sent += 1
        if sent:
            log.info("resumed unfinished work", extra={"messages": sent, "force": force})
        return sent


class TeamRunner(Runner):
    """The Runner with a Dramatiq dispatcher instead of the in-process scheduler.

    Commands (the app, the CLI) and the steps call it as they call the
    embedded Runner: ``enqueue`` sends a message unless a live line has the
    task, ``dequeue`` voids a pending line, ``running`` asks the task's lease.
    ``run`` (one step, used by the workers) is the embedded Runner's.
    """

    def __init__(self, ctx: StepContext, gate: Gate, dispatcher: Dispatcher, log_file: Path, owner: str) -> None:
        super().__init__(ctx, gate, Scheduler(ctx.settings.max_uploads), Leases(ctx.store, owner, dispatcher.config.lease_ttl_s), log_file)
        self.dispatcher = dispatcher

    def start(self, workers: int) -> None:
        """Nothing to start: the workers are other processes (``python -m storyteller_core.team.worker``)."""

    def stop(self, timeout: float) -> None:
        self.stopping.set()

    @property
    def healthy(self) -> bool:
        try:
            return bool(self.dispatcher.r.ping())
        except redis.RedisError:
            return False

    def enqueue(self, task: str, delay: float = 0.0) -> bool:
        return self.dispatcher.ensure(task, delay)

    def dequeue(self, task: str) -> bool:
        return self.dispatcher.void(task)

    def running(self, task: str) -> bool:
        return self.dispatcher.running(task)

    def sweep(self) -> None:
        self.dispatcher.resume()

    def _fail_internal(self, kind: str, record_id: str, step: str) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, redis.RedisError):
            raise exc  # Redis unreachable is not the job's fault: the step is tried again, not failed
        super()._fail_internal(kind, record_id, step)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
