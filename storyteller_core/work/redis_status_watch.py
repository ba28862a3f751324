"""The bulk status watch of team mode: one ``files.list`` for many processing files, for the whole team.

The embedded StatusWatch keeps its files in memory and wakes tasks in its own
scheduler. Here the processing step of any worker registers its file in Redis
(``<prefix>:watch:files``, video id -> file name) and its message comes back
only when the processing budget runs out. One worker at a time (a lock key on
Redis's clock, renewed while it leads) runs StatusWatch's loop over the
registered files: listing pages under the team's status-call limits, falling
back to ``files.get`` when that costs fewer calls. What it sees of a settled
file is written to ``<prefix>:watch:seen`` and the video's task is woken by a
message that takes over its waiting line (a child of the fence, as a parent
that died before moving the fence would send); the delayed message is then
dropped when it arrives. A task whose step is running at that moment is woken
once the step has ended (the step may also find the result itself: a step
that runs after the result was written takes it).

A leader that dies leaves everything in Redis: the next leader (after the
lock's TTL) reads the registered files and wakes every task whose result is
waiting. Without a leader the steps' long delays still end: a file whose
budget ran out is asked for with ``files.get`` by its own step, as before.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from storyteller_core.gemini.gateway import RemoteFile
from storyteller_core.work.redis_dispatch import Dispatcher, new_token
from storyteller_core.work.status_watch import Seen, StatusWatch, _Watched

if TYPE_CHECKING:
    from storyteller_core.steps.step_context import StepContext
    from storyteller_core.work.gate import Gate

log = logging.getLogger(__name__)
SYNC_S = 0.5  # the leader reads the registered files this often
LEAD_TTL_S = 5.0  # a leader silent this long (dead) is replaced
FOLLOW_S = 2.0  # how often a worker that does not lead asks for the lock
SEEN_KEEP_S = 3600.0  # a result no step came to take (its video was cancelled) is dropped after this

# KEYS[1] the lock. ARGV: owner, ttl_ms. 1 when this owner leads (taken or renewed).
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS: fence, lease of the task. 'busy' while a step runs it; else its fence ('' when no line waits).
_WAKE_READ = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 'busy' end
return redis.call('GET', KEYS[1]) or ''
"""


class TeamStatusWatch(StatusWatch):
    """StatusWatch with its files in Redis, one leader per team, waking tasks with Dramatiq messages."""

    def __init__(self, ctx: StepContext, gate: Gate, dispatcher: Dispatcher, owner: str) -> None:
        super().__init__(ctx, gate, self._settle)
        self.dispatcher = dispatcher
        self.r: Any = dispatcher.r
        self.owner = owner
        prefix = dispatcher.config.prefix
        self.keys = {"files": f"{prefix}:watch:files", "seen": f"{prefix}:watch:seen", "lock": f"{prefix}:watch:lock"}
        self._lead_script = self.r.register_script(_LEAD)
        self._wake_read = self.r.register_script(_WAKE_READ)
        self._leading = False
        self._to_wake: set[str] = set()
        self._last_prune = 0.0

    # -- the steps' side (any worker) ------------------------------------------------------------
    def check(self, video_id: str, name: str) -> Seen | None:
        raw = self.r.hget(self.keys["seen"], video_id)
        if raw:
            seen = _decode(raw)
            if seen.name == name:
                self.r.hdel(self.keys["seen"], video_id)
                return seen
        if self.r.hget(self.keys["files"], video_id) != name:
            self.r.hset(self.keys["files"], video_id, name)
        return None

    def forget(self, video_id: str) -> None:
        self.r.pipeline(transaction=False).hdel(self.keys["files"], video_id).hdel(self.keys["seen"], video_id).execute()

    def watching(self) -> int:
        return int(self.r.hlen(self.keys["files"]))

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._leading:
            try:
                self.r.eval(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                    1,
                    self.keys["lock"],
                    self.owner,
                )
            except Exception:  # noqa: BLE001 - Redis gone: the lock runs out by itself
                log.debug("could not release the status watch lock", exc_info=True)

    # -- the leader's loop -------------------------------------------------------------------------
    def _wait_until_due(self) -> bool:
        while not self._stopping.is_set():
            if not self._lead():
                self._stopping.wait(FOLLOW_S)
                continue
            self._sync()
            self._wake_pending()
            with self._cond:
                wait = SYNC_S
                if self._watched:
                    now = time.monotonic()
                    start = max(min(w.due for w in self._watched.values()), self._not_before)
                    if start <= now:
                        return True
                    wait = min(wait, start - now)
            self._stopping.wait(wait)
        return False

    def _lead(self) -> bool:
        leading = bool(self._lead_script(keys=[self.keys["lock"]], args=[self.owner, int(LEAD_TTL_S * 1000)]))
        if leading and not self._leading:
            log.info("leading the team's status watch", extra={"owner": self.owner})
            self._to_wake = set(self.r.hkeys(self.keys["seen"]))  # a dead leader's results: wake their tasks
        if not leading and self._leading:
            with self._cond:
                self._watched.clear()
        self._leading = leading
        return leading

    def _sync(self) -> None:
        """The registered files, as the steps of every worker left them."""
        files: dict[str, str] = self.r.hgetall(self.keys["files"])
        now = time.monotonic()
        with self._cond:
            for video_id in [v for v in self._watched if v not in files]:
                del self._watched[video_id]
            for video_id, name in files.items():
                watched = self._watched.get(video_id)
                if watched is None or watched.name != name:
                    self._watched[video_id] = _Watched(video_id, name, now, now + self._interval(0))
        if now - self._last_prune > 60:
            self._last_prune = now
            self._prune_seen()

    def _settle(self, video_id: str) -> None:
        """StatusWatch saw the file settle (or hands it back): write what it saw for the step, then wake the task."""
        with self._cond:
            held = self._settled.pop(video_id, None)
        if held is None:
            return
        seen = held[0]
        body = json.dumps({**asdict(seen), "at": time.time()})
        script = (
            "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end "
            "redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) return 1"
        )
        self.r.eval(script, 2, self.keys["files"], self.keys["seen"], video_id, seen.name, body)
        self._to_wake.add(video_id)
        self._wake_pending()

    def _wake_pending(self) -> None:
        for video_id in list(self._to_wake):
            task = f"video:{video_id}"
            if not self.r.hexists(self.keys["seen"], video_id):
                self._to_wake.discard(video_id)  # a step took it already
                continue
            fence = str(self._wake_read(keys=[self.dispatcher.fence_key(task), self.dispatcher.store.lease_key(task)]))
            if fence == "busy":
                continue  # its step is running: woken at the next look, once it has ended
            self.dispatcher.send(task, new_token(), parent=fence)  # takes over the waiting line ('' : a root message)
            self._to_wake.discard(video_id)

    def _prune_seen(self) -> None:
        cutoff = time.time() - SEEN_KEEP_S
        for video_id, raw in self.r.hgetall(self.keys["seen"]).items():
            if json.loads(raw).get("at", 0) < cutoff:
                self.r.hdel(self.keys["seen"], video_id)


def _decode(raw: str) -> Seen:
    data = json.loads(raw)
    remote = data.get("remote")
    return Seen(
        name=data["name"],
        remote=RemoteFile(**remote) if remote else None,
        checks=int(data.get("checks", 0)),
        ask_alone=bool(data.get("ask_alone", False)),
    )
