"""The global limits of team mode, kept in Redis and timed by Redis's clock (``TIME`` inside Lua), never a worker's.

- ``UploadSlots``: at most N uploads at once across every worker. A slot is a
  lease (token -> expiry) renewed by the upload's progress; a killed holder's
  slot frees itself when the lease runs out, never later (Dramatiq's
  ConcurrentRateLimiter was measured to lose a slot for 15 minutes). Waiters
  are served by priority, then first come first served.
- ``RedisPollLimits``: PollLimits' interface (``slot()``, ``interval``): status
  calls at once (leases again) and per second (GCRA, evenly spaced), checked
  in one script at the moment of the call.
- ``RedisRate``: a GCRA reservation for any other per-second or per-minute cap.
- ``CallRate``: generate requests per minute across the team: a caller (a
  task) reserves its own time slot (GCRA) and calls only once that time has
  come, checked at the moment of the call (delayed messages arrive late, and
  a late crowd would otherwise burst).
- ``StorageBudget``: the File API's 20 GB per project as a byte counter: an
  upload reserves its file's bytes under the file's name before it starts;
  deleting the file (after its last analysis) or its expiry gives them back.
- ``RedisCooldown``: quota.Cooldown's interface on one Redis hash, so a 429
  seen by one worker holds every worker back.
- ``RedisGate``: gate.Gate's interface; a rejected key (by fingerprint) and
  missing models are known to every worker.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from storyteller_core.work.cooldown import MAX_BACKOFF_S, PAUSE_S, Cooldown
from storyteller_core.work.gate import Gate
from storyteller_core.work.poll_limits import PollLimits, Slot

log = logging.getLogger(__name__)

_NOW_MS = "local _t = redis.call('TIME'); local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)\n"
_NOW_S = "local _t = redis.call('TIME'); local now = tonumber(_t[1]) + tonumber(_t[2]) / 1000000\n"

# KEYS: holders (token -> expiry ms), waiters (task -> order), seen (task -> last try ms)
# ARGV: task, token, cap, ttl_ms, rank, stale_ms.  Returns 0 (held) or the task's place in line (1 = next).
_UPLOAD_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
for _, w in ipairs(stale) do redis.call('ZREM', KEYS[2], w); redis.call('ZREM', KEYS[3], w) end
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1]); redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[2], 'NX', tonumber(ARGV[5]) * 1e13 + now, ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
local free = tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1])
local place = redis.call('ZRANK', KEYS[2], ARGV[1])
if place < free then
  redis.call('ZREM', KEYS[2], ARGV[1]); redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
  return 0
end
return place - math.max(free, 0) + 1
"""
)
_SLOT_RENEW = (
    _NOW_MS
    + """
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if held and tonumber(held) > now then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]); return 1
end
return 0
"""
)
_SLOT_COUNT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)
# GCRA: KEYS[1] holds the theoretical arrival time (ms). ARGV: interval_ms, burst (extra calls allowed at once).
# Returns '0' (taken) or the ms to wait, as text.
_GCRA = (
    _NOW_MS
    + """
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - interval * tonumber(ARGV[2])
if allow_at > now then return tostring(allow_at - now) end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(interval * (tonumber(ARGV[2]) + 1)) + 1000)
return '0'
"""
)
# Poll slot: a lease among max_at_once (KEYS[1]) and the GCRA rate (KEYS[2]), both or neither.
# KEYS[3]: this caller's reserved rate slot, when it names itself (ARGV[5] == '1'): a slot not free now is
# reserved for it, so waiting callers come back one at a time. ARGV: token, max_at_once, ttl_ms, interval_ms, keyed.
# Returns '0' (taken) or the ms to wait, as text.
_POLL_TAKE = (
    _NOW_MS
    + """
local interval = tonumber(ARGV[4])
if ARGV[5] == '1' then
  local at = redis.call('GET', KEYS[3])
  if at then
    if tonumber(at) > now then return tostring(tonumber(at) - now) end
    redis.call('DEL', KEYS[3])
  else
    local slot_at = math.max(now, tonumber(redis.call('GET', KEYS[2]) or '0'))
    redis.call('SET', KEYS[2], tostring(slot_at + interval), 'PX', math.ceil(slot_at - now + interval) + 1000)
    if slot_at > now then
      redis.call('SET', KEYS[3], tostring(slot_at), 'PX', math.ceil(slot_at - now) + 60000)
      return tostring(slot_at - now)
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return '50' end
if ARGV[5] ~= '1' then
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tat > now then return tostring(tat - now) end
  redis.call('SET', KEYS[2], tostring(now + interval), 'PX', math.ceil(interval) + 1000)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return '0'
"""
)
# Call rate with reservations: KEYS[1] the next free time (ms), KEYS[2] this caller's reserved time (ms).
# ARGV: interval_ms, grace_ms. Returns '0' (call now; a due reservation is used up) or the ms until the caller's
# reserved slot (taken now if it had none), as text.
_CALL_TAKE = (
    _NOW_MS
    + """
local at = redis.call('GET', KEYS[2])
if at then
  if tonumber(at) > now then return tostring(tonumber(at) - now) end
  redis.call('DEL', KEYS[2])
  return '0'
end
local interval = tonumber(ARGV[1])
local slot_at = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], tostring(slot_at + interval), 'PX', math.ceil(slot_at - now + interval) + 1000)
if slot_at > now then
  redis.call('SET', KEYS[2], tostring(slot_at), 'PX', math.ceil(slot_at - now) + tonumber(ARGV[2]))
  return tostring(slot_at - now)
end
return '0'
"""
)
# Storage: KEYS: files (name -> bytes), expiry (name -> ms), total bytes. Entries whose time has passed are dropped
# first (the file expired at Gemini). reserve ARGV: name, bytes, cap, ttl_ms -> 1 (reserved, or already held) | 0.
_STORAGE_PRUNE = """
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local b = redis.call('HGET', KEYS[1], n)
  if b then redis.call('DECRBY', KEYS[3], b); redis.call('HDEL', KEYS[1], n) end
  redis.call('ZREM', KEYS[2], n)
end
"""
_STORAGE_RESERVE = (
    _NOW_MS
    + _STORAGE_PRUNE
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
  return 1
end
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if used > 0 and used + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[2])
return 1
"""
)
_STORAGE_RELEASE = """
local b = redis.call('HGET', KEYS[1], ARGV[1])
if not b then return 0 end
redis.call('DECRBY', KEYS[3], b); redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('ZREM', KEYS[2], ARGV[1])
return tonumber(b)
"""
_STORAGE_USED = (
    _NOW_MS
    + _STORAGE_PRUNE
    + """
return tonumber(redis.call('GET', KEYS[3]) or '0')
"""
)
# Live worker processes: KEYS[1] a sorted set owner -> last beat (ms, Redis's clock).
_BEAT = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return 1
"""
)
_ALIVE = (
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""
)
# The quota cool-down: one hash with next_at, streak, streak_start, paused_until (seconds, Redis's clock).
_COOL_EXHAUSTED = (
    _NOW_S
    + """
local h = KEYS[1]
if not redis.call('HGET', h, 'streak_start') then redis.call('HSET', h, 'streak_start', tostring(now)) end
local streak = redis.call('HINCRBY', h, 'streak', 1)
local delay = tonumber(ARGV[1])
if not delay or delay <= 0 then delay = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ (streak - 1)) end
local next_at = math.max(tonumber(redis.call('HGET', h, 'next_at') or '0'), now + math.max(tonumber(ARGV[2]), delay))
redis.call('HSET', h, 'next_at', tostring(next_at))
return tostring(next_at)
"""
)
_COOL_READ = (
    _NOW_S
    + """
local v = redis.call('HMGET', KEYS[1], 'next_at', 'streak_start', 'paused_until')
return {tostring(now), v[1] or '', v[2] or '', v[3] or ''}
"""
)
_COOL_PAUSE = (
    _NOW_S
    + """
local h = KEYS[1]
local until_ = math.max(now + tonumber(ARGV[1]), tonumber(redis.call('HGET', h, 'next_at') or '0'),
                        tonumber(redis.call('HGET', h, 'paused_until') or '0'))
redis.call('HSET', h, 'paused_until', tostring(until_))
return tostring(until_)
"""
)


class UploadSlots:
    """At most ``cap`` uploads at once across every worker; a slot is a lease renewed by upload progress."""

    def __init__(self, client: redis.Redis, prefix: str, cap: int, ttl_s: float = 120.0) -> None:
        self.r: Any = client
        self.cap = cap
        self.ttl_s = ttl_s
        self.keys = [f"{prefix}:uploads:holders", f"{prefix}:uploads:waiters", f"{prefix}:uploads:seen"]
        self._acquire = client.register_script(_UPLOAD_ACQUIRE)
        self._renew = client.register_script(_SLOT_RENEW)
        self._count = client.register_script(_SLOT_COUNT)

    def acquire(self, task: str, token: str, rank: int = 1, retry_s: float = 1.0) -> bool:
        """Take a slot for ``token`` (or renew the one it holds); when none is free, ``task`` waits its turn.

        ``retry_s`` is how often the task will ask again: a waiter not seen for
        five times that long has given up and loses its place.
        """
        return self.try_acquire(task, token, rank, retry_s) == 0

    def try_acquire(self, task: str, token: str, rank: int = 1, retry_s: float = 1.0) -> int:
        """0 when the slot is held, else the task's place in line (1: next when a slot frees)."""
        stale_ms = int(max(5.0, 5 * retry_s) * 1000)
        return int(self._acquire(keys=self.keys, args=[task, token, self.cap, _ms(self.ttl_s), rank, stale_ms]))

    def renew(self, token: str) -> bool:
        """Progress: keep the slot another ``ttl_s``; False when it was lost (ran out)."""
        return bool(self._renew(keys=self.keys[:1], args=[token, _ms(self.ttl_s)]))

    def release(self, token: str) -> None:
        self.r.zrem(self.keys[0], token)

    def in_use(self) -> int:
        return int(self._count(keys=self.keys[:1]))

    def wait_hint(self, place: int = 1) -> float:
        """Seconds before asking again: the next in line soon, the others later; jittered so they don't ask in step."""
        base = 0.2 if place <= self.cap else min(3.0, 0.2 + 0.4 * (place - self.cap) / self.cap)
        return base * (1.0 + random.random() * 0.5)


class RedisRate:
    """At most ``rate`` acquisitions per second across every process (GCRA; ``burst`` more at once)."""

    def __init__(self, client: redis.Redis, key: str, rate: float, burst: int = 0) -> None:
        self.key = key
        self.interval_ms = 1000.0 / rate
        self.burst = burst
        self._gcra = client.register_script(_GCRA)

    def try_acquire(self) -> float:
        """Take a slot and return 0, or return the seconds until the next free one."""
        return float(self._gcra(keys=[self.key], args=[self.interval_ms, self.burst])) / 1000.0


class CallRate:
    """At most ``per_minute`` calls a minute across every process; each caller (a task) reserves its own slot.

    ``take(key)`` answers 0 (call now) or the seconds until ``key``'s reserved
    slot, which is kept for it: asking again with the same key once that time
    has come answers 0. So a task whose turn is later sends its message with
    that delay and calls when it arrives (late is fine, early is refused), and
    callers are served in the order they first asked. An unused reservation
    lapses ``grace_s`` after its time.
    """

    def __init__(self, client: redis.Redis, key: str, per_minute: float, grace_s: float = 120.0) -> None:
        self.key = key
        self.per_minute = per_minute
        self.interval_ms = 60_000.0 / per_minute
        self.grace_ms = int(grace_s * 1000)
        self._take = client.register_script(_CALL_TAKE)

    def take(self, caller: str) -> float:
        wait_ms = float(self._take(keys=[self.key, f"{self.key}:reserved:{caller}"], args=[self.interval_ms, self.grace_ms]))
        return max(0.0, wait_ms / 1000.0)


class StorageBudget:
    """The File API's storage per project (20 GB) across every worker: bytes reserved per Gemini file name.

    An upload reserves its file's size before it starts (the same name again
    is the same file: nothing more is counted); the bytes come back when the
    file is deleted (``release``) or when the reservation's time runs out (the
    file expired at Gemini: ``ttl_s`` is the 48 h life plus the upload budget).
    One file alone is always allowed, however large, so nothing waits forever.
    """

    def __init__(self, client: redis.Redis, prefix: str, cap_bytes: int, ttl_s: float) -> None:
        self.cap_bytes = cap_bytes
        self.ttl_s = ttl_s
        self.keys = [f"{prefix}:storage:files", f"{prefix}:storage:expiry", f"{prefix}:storage:bytes"]
        self._reserve = client.register_script(_STORAGE_RESERVE)
        self._release = client.register_script(_STORAGE_RELEASE)
        self._used = client.register_script(_STORAGE_USED)

    def reserve(self, name: str, size_bytes: int) -> bool:
        """Count ``name``'s bytes (or renew the reservation it has); False when they do not fit yet."""
        return bool(self._reserve(keys=self.keys, args=[name, max(0, int(size_bytes)), self.cap_bytes, _ms(self.ttl_s)]))

    def release(self, name: str) -> int:
        """The file is gone: its bytes are free again; the bytes released (0 when it held none)."""
        return int(self._release(keys=self.keys, args=[name]))

    def in_use(self) -> int:
        return int(self._used(keys=self.keys))

    def wait_hint(self) -> float:
        """Seconds before asking again: room comes back when an analysis ends and its file is deleted."""
        return 2.0 * (1.0 + random.random() * 0.5)


class WorkerBeats:
    """Which worker processes are alive: each beats every few seconds; silent for ``timeout_s``, it is gone.

    Dramatiq's own heartbeats also list every process that sent a message
    (an app, the CLI), so they cannot tell workers apart.
    """

    def __init__(self, client: redis.Redis, prefix: str, timeout_s: float) -> None:
        self.r: Any = client
        self.key = f"{prefix}:workers"
        self.timeout_ms = _ms(timeout_s)
        self._beat = client.register_script(_BEAT)
        self._alive = client.register_script(_ALIVE)

    def beat(self, owner: str) -> None:
        self._beat(keys=[self.key], args=[owner, self.timeout_ms])

    def gone(self, owner: str) -> None:
        self.r.zrem(self.key, owner)

    def alive(self) -> list[str]:
        return [str(owner) for owner in self._alive(keys=[self.key], args=[self.timeout_ms])]


class RedisPollLimits(PollLimits):
    """PollLimits across every worker: status calls at once (leases) and per second (evenly spaced)."""

    def __init__(self, client: redis.Redis, prefix: str, max_at_once: int, per_second: float, slot_ttl_s: float = 70.0) -> None:
        # PollLimits.__init__ builds thread-local limits: not called on purpose
        self.r: Any = client
        self.max_at_once = max_at_once
        self._interval = 1.0 / per_second
        self.slot_ttl_s = slot_ttl_s
        self.keys = [f"{prefix}:polls:slots", f"{prefix}:polls:rate"]
        self._take_script = client.register_script(_POLL_TAKE)
        self._token = f"{time.time_ns()}-{random.getrandbits(32)}"
        self._n = 0

    @property
    def interval(self) -> float:
        return self._interval

    @contextmanager
    def slot(self, key: str | None = None) -> Iterator[Slot]:
        """``with polls.slot(key) as slot:`` poll only if ``slot.ok``; with a ``key``, a slot not free now is reserved."""
        self._n += 1
        token = f"{self._token}-{self._n}"
        reservation = f"{self.keys[0]}:reserved:{key}" if key else f"{self.keys[0]}:reserved:-"
        wait_ms = float(
            self._take_script(
                keys=[*self.keys, reservation],
                args=[token, self.max_at_once, _ms(self.slot_ttl_s), self._interval * 1000.0, "1" if key else "0"],
            )
        )
        slot = Slot(True) if wait_ms <= 0 else Slot(False, wait_ms / 1000.0)
        try:
            yield slot
        finally:
            if slot.ok:
                self.r.zrem(self.keys[0], token)


class RedisCooldown(Cooldown):
    """Cooldown shared by every worker: one Redis hash, on Redis's clock (wall clock, so it can be shown)."""

    def __init__(self, client: redis.Redis, prefix: str, pause_after_s: float = 120.0, floor_s: float = 1.0) -> None:
        # Cooldown.__init__ keeps the state in memory: not called on purpose
        self.r: Any = client
        self.key = f"{prefix}:quota"
        self.pause_after_s = pause_after_s
        self.floor_s = floor_s
        self._exhausted = client.register_script(_COOL_EXHAUSTED)
        self._read_script = client.register_script(_COOL_READ)
        self._pause = client.register_script(_COOL_PAUSE)

    def note_exhausted(self, retry_after_s: float | None) -> None:
        self._exhausted(keys=[self.key], args=[retry_after_s or 0, self.floor_s, MAX_BACKOFF_S])

    def note_ok(self) -> None:
        self.resume()

    def resume(self) -> None:
        self.r.delete(self.key)

    def _read(self) -> tuple[float, float | None, float | None, float | None]:
        now, next_at, start, paused = self._read_script(keys=[self.key])
        return float(now), _float(next_at), _float(start), _float(paused)

    def remaining(self) -> float:
        now, next_at, _, _ = self._read()
        return max(0.0, (next_at or 0.0) - now)

    def exhausted_for(self) -> float:
        now, _, start, _ = self._read()
        return 0.0 if start is None else max(0.0, now - start)

    def pause(self) -> float:
        return float(self._pause(keys=[self.key], args=[PAUSE_S]))

    def active_pause(self) -> float | None:
        now, _, _, paused = self._read()
        return paused if paused is not None and paused > now else None

    @property
    def paused_until(self) -> float | None:
        return _float(self.r.hget(self.key, "paused_until"))

    @paused_until.setter
    def paused_until(self, value: float | None) -> None:
        if value is None:
            self.r.hdel(self.key, "paused_until")
        else:
            self.r.hset(self.key, "paused_until", repr(value))


class RedisGate(Gate):
    """The gate shared by every worker: a rejected key (named by a fingerprint, never stored) and missing models."""

    def __init__(self, client: redis.Redis, prefix: str, cooldown: Cooldown, api_key: str | None) -> None:
        # Gate.__init__ keeps the state in memory: not called on purpose
        self.r: Any = client
        self.cooldown = cooldown
        self.keys = (f"{prefix}:gate:rejected-key", f"{prefix}:gate:missing-models")
        self.fingerprint = hashlib.sha256((api_key or "").encode()).hexdigest()[:16]
        self._missing_models: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def key_rejected(self) -> bool:
        return bool(self.r.get(self.keys[0]) == self.fingerprint)

    @key_rejected.setter
    def key_rejected(self, value: bool) -> None:
        if value:
            self.r.set(self.keys[0], self.fingerprint)
        else:
            self.r.delete(self.keys[0])

    def check(self, model: str | None = None) -> float:
        from storyteller_core.errors import KEY_REJECTED_MESSAGE, Code, StepFailed

        rejected, missing = self.r.pipeline(transaction=False).get(self.keys[0]).hget(self.keys[1], model or "").execute()
        if rejected == self.fingerprint:
            raise StepFailed(Code.API_KEY_REJECTED, KEY_REJECTED_MESSAGE)
        if missing:
            raise StepFailed(Code.MODEL_NOT_FOUND, missing)
        paused = self.cooldown.active_pause()
        return max(0.0, paused - time.time()) if paused else 0.0

    def model_missing(self, model: str, gemini_says: str) -> str:
        message = super().model_missing(model, gemini_says)
        self.r.hset(self.keys[1], model, message)
        return message

    def clear(self) -> None:
        self.r.delete(*self.keys)
        self.cooldown.resume()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _float(text: Any) -> float | None:
    return float(text) if text not in (None, "") else None
