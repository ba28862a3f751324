"""The job store on Redis: store_protocol.Store's contract, for many processes on many machines.

Records are JSON text under ``<prefix>:<kind>:<id>``. Indexes are sorted sets
(scored by a Redis counter, so they keep insertion order):
items by batch, analyses by video, items by analysis, every item, and the
unfinished analyses (scored by creation time). Every read-modify-write is a
WATCH/MULTI transaction retried on conflict, so ``transition`` checks the
record's transition table against the value it replaces, atomically with
its index changes. Leases are keys with an owner token and a TTL on Redis's
clock (``SET PX``), compared and set in Lua.

A record that cannot be read is renamed to ``<prefix>:aside:<key>`` (kept as
it was) and named by ``set_aside``. A batch's page and figures are worked out
from its rows here (O(rows) per board read); the disk store keeps them.
The checked list is a hash of entries in a sorted set's order.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis

from storyteller_core.intake.shared_root import SharedPaths
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.record import Record
from storyteller_core.records.video import Video
from storyteller_core.storage.disk_store import (
    STALE_NOTE_S,
    NotFound,
    _assign,
    _decode,
    _pending_id,
    apply_transition,
    busy_from_rows,
    owner_process_gone,
    pending_source,
    sums_of,
)
from storyteller_core.team.broker_trust import require_credentials
from storyteller_core.views.rows import LIFE_ORDER, Row, Status

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)
MGET_CHUNK = 500
DECODED_MAX = 60_000  # records kept decoded per store, as DiskStore does

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur and cur ~= ARGV[1] then table.insert(lost, i) else redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
end
return lost
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def connect(url: str) -> redis.Redis:
    """A client that answers text (records are JSON text); a URL without a password is refused (trust.py)."""
    require_credentials(url)
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


class RedisStore:
    """The job store on Redis (a team); a sibling of store.DiskStore under store_protocol.Store's contract."""

    def __init__(self, client: redis.Redis, prefix: str = "storyteller", shared: SharedPaths | None = None) -> None:
        self.r: Any = client  # redis-py types replies as bytes | str; this client decodes them to str
        self.prefix = prefix
        self.shared = shared or SharedPaths(None)
        self._decoded: dict[str, tuple[tuple[int, int], Record]] = {}  # key -> (len and hash of its text, record)
        self._claim = client.register_script(_CLAIM)
        self._take_over = client.register_script(_TAKE_OVER)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def close(self) -> None:
        self.r.close()

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- records -----------------------------------------------------------------------
    def get(self, cls: type[R], record_id: str | None) -> R | None:
        if not record_id:
            return None
        key = self._rkey(cls, record_id)
        return self._load(cls, self.r.get(key), key)

    def require(self, cls: type[R], record_id: str) -> R:
        record = self.get(cls, record_id)
        if record is None:
            raise NotFound(f"{cls.KIND} {record_id}")
        return record

    def many(self, cls: type[R], ids: Iterable[str]) -> list[R]:
        """The records of these ids that exist, in the order asked (MGET, 500 keys a call)."""
        ids = list(ids)
        found = self.by_id(cls, ids)
        return [found[i] for i in ids if i in found]

    def by_id(self, cls: type[R], ids: Iterable[str]) -> dict[str, R]:
        """{id: record} for the ids that exist, in the order asked, each read once.

        As in Store.by_id, a record whose stored text has not changed since it
        was last read here is not decoded again (most of a board read), so the
        records returned may be shared with other readers: never change them.
        """
        wanted = [i for i in dict.fromkeys(ids) if i]
        decoded = self._decoded
        if len(decoded) + len(wanted) > DECODED_MAX:
            decoded.clear()  # bounded: a batch larger than this decodes every read
        out: dict[str, R] = {}
        for start in range(0, len(wanted), MGET_CHUNK):
            chunk = wanted[start : start + MGET_CHUNK]
            keys = [self._rkey(cls, i) for i in chunk]
            for record_id, key, text in zip(chunk, keys, self.r.mget(keys), strict=True):
                if not text:
                    continue
                stamp = (len(text), hash(text))
                held = decoded.get(key)
                if held is not None and held[0] == stamp and type(held[1]) is cls:
                    out[record_id] = held[1]
                    continue
                record = self._load(cls, text, key)
                if record is not None:
                    decoded[key] = (stamp, record)
                    out[record_id] = record
        return out

    def _texts(self, keys: list[str]) -> dict[str, str]:
        """{key: stored text} for Store's unprefixed keys ("video:<id>") that exist: for Store methods built on it."""
        out: dict[str, str] = {}
        for start in range(0, len(keys), MGET_CHUNK):
            chunk = keys[start : start + MGET_CHUNK]
            out.update((k, t) for k, t in zip(chunk, self.r.mget([self.key(k) for k in chunk]), strict=True) if t)
        return out

    def put(self, record: Record) -> None:
        self.r.set(self._rkey(type(record), record.id), self._dump(record))

    def mutate(self, cls: type[R], record_id: str, change: Callable[[R], None]) -> R:
        return self._mutate(cls, record_id, change, None)

    def update(self, cls: type[R], record_id: str, **fields: Any) -> R:
        return self.mutate(cls, record_id, lambda record: _assign(record, fields))

    def transition(self, cls: type[R], record_id: str, new: Any, **fields: Any) -> R:
        """The one place a video or an analysis changes state; raises TransitionError if not allowed."""

        def change(record: Any) -> None:
            apply_transition(record, new, fields)  # checked against the value this transaction replaces

        def index(pipe: Any, record: Any) -> None:
            if isinstance(record, Analysis):
                if new.terminal:
                    pipe.zrem(self.key("idx", "unfinished"), record_id)
                else:
                    pipe.zadd(self.key("idx", "unfinished"), {record_id: record.created_at})

        return self._mutate(cls, record_id, change, index)

    def _mutate(self, cls: type[R], record_id: str, change: Callable[[R], None], index: Callable[[Any, R], None] | None) -> R:
        key = self._rkey(cls, record_id)

        def txn(pipe: Any) -> R:
            record = self._load(cls, pipe.get(key))
            if record is None:
                raise NotFound(f"{cls.KIND} {record_id}")
            change(record)
            if hasattr(record, "updated_at"):
                record.updated_at = time.time()
            pipe.multi()
            pipe.set(key, self._dump(record))
            if index is not None:
                index(pipe, record)
            return record

        return self.r.transaction(txn, key, value_from_callable=True)

    # -- creating ------------------------------------------------------------------------
    def add_video(self, video: Video) -> Video:
        """Store ``video``, or merge its sources into the stored record of the same content."""
        key = self._rkey(Video, video.id)

        def txn(pipe: Any) -> Video:
            stored = self._load(Video, pipe.get(key))
            if stored is None:
                video.state_entered_at.setdefault(video.state.value, video.created_at)
                pipe.multi()
                pipe.set(key, self._dump(video))
                return video
            new_sources = [s for s in video.sources if s not in stored.sources]
            if new_sources:
                stored.sources = [*new_sources, *stored.sources]  # the newest path is tried first
                pipe.multi()
                pipe.set(key, self._dump(stored))
            return stored

        return self.r.transaction(txn, key, value_from_callable=True)

    def add_analysis(self, analysis: Analysis) -> tuple[Analysis, bool]:
        """Store ``analysis`` unless one of the same key exists; (the stored one, created?)."""
        key = self._rkey(Analysis, analysis.id)
        seq = self._seq()

        def txn(pipe: Any) -> tuple[Analysis, bool]:
            stored = self._load(Analysis, pipe.get(key))
            if stored is not None:
                return stored, False
            analysis.state_entered_at.setdefault(analysis.state.value, analysis.created_at)
            pipe.multi()
            pipe.set(key, self._dump(analysis))
            pipe.zadd(self.key("idx", "video-analyses", analysis.video_id), {analysis.id: seq}, nx=True)
            if not analysis.state.terminal:
                pipe.zadd(self.key("idx", "unfinished"), {analysis.id: analysis.created_at})
            return analysis, True

        return self.r.transaction(txn, key, value_from_callable=True)

    def add_batch(self, batch: Batch) -> Batch:
        if self.r.set(self._rkey(Batch, batch.id), self._dump(batch), nx=True):
            self.r.sadd(self.key("idx", "batches"), batch.id)
        return batch

    def add_item(self, item: Item) -> Item:
        seq = self._seq()
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self._rkey(Item, item.id), self._dump(item))
            pipe.zadd(self.key("idx", "items"), {item.id: seq}, nx=True)
            pipe.zadd(self.key("idx", "batch", item.batch_id), {item.id: seq}, nx=True)
            if item.analysis_id:
                pipe.zadd(self.key("idx", "analysis-items", item.analysis_id), {item.id: seq}, nx=True)
            pipe.execute()
        return item

    def start_batch(self, batch: Batch, items: list[Item]) -> list[Item]:
        order = self.key("pending", "order")
        first = int(self.r.incrby(self.key("seq"), max(1, len(items)))) - len(items) + 1

        def txn(pipe: Any) -> list[Item]:
            kept = [item for item in items if pipe.zscore(order, _pending_id(item.source_path)) is not None]
            pipe.multi()
            if not kept:
                return []
            pipe.set(self._rkey(Batch, batch.id), self._dump(batch))
            pipe.sadd(self.key("idx", "batches"), batch.id)
            for seq, item in enumerate(kept, start=first):
                pipe.set(self._rkey(Item, item.id), self._dump(item))
                pipe.zadd(self.key("idx", "items"), {item.id: seq}, nx=True)
                pipe.zadd(self.key("idx", "batch", batch.id), {item.id: seq}, nx=True)
            for source in dict.fromkeys(item.source_path for item in kept):
                pipe.zrem(order, _pending_id(source))
                pipe.hdel(self.key("pending", "entries"), _pending_id(source))
            return kept

        return self.r.transaction(txn, order, value_from_callable=True)

    def delete_item(self, item_id: str) -> Item | None:
        key = self._rkey(Item, item_id)
        probe = self.get(Item, item_id)
        if probe is None:
            return None
        batch_index = self.key("idx", "batch", probe.batch_id)

        def txn(pipe: Any) -> Item | None:
            item = self._load(Item, pipe.get(key))
            if item is None:
                return None
            others = [i for i in pipe.zrange(batch_index, 0, 1) if i != item_id]
            pipe.multi()
            pipe.delete(key)
            pipe.zrem(self.key("idx", "items"), item_id)
            pipe.zrem(batch_index, item_id)
            if item.analysis_id:
                pipe.zrem(self.key("idx", "analysis-items", item.analysis_id), item_id)
            if not others:
                pipe.delete(self._rkey(Batch, item.batch_id))
                pipe.srem(self.key("idx", "batches"), item.batch_id)
            return item

        return self.r.transaction(txn, key, batch_index, value_from_callable=True)

    def delete_analysis(self, analysis_id: str) -> None:
        key = self._rkey(Analysis, analysis_id)

        def txn(pipe: Any) -> None:
            analysis = self._load(Analysis, pipe.get(key))
            if analysis is None:
                return
            pipe.multi()
            pipe.delete(key)
            pipe.zrem(self.key("idx", "unfinished"), analysis_id)
            pipe.zrem(self.key("idx", "video-analyses", analysis.video_id), analysis_id)

        self.r.transaction(txn, key)

    def move_item(self, item_id: str, analysis_id: str) -> Item:
        """Point an item at another analysis (retry under the current backend)."""
        key = self._rkey(Item, item_id)
        seq = self._seq()

        def txn(pipe: Any) -> Item:
            item = self._load(Item, pipe.get(key))
            if item is None:
                raise NotFound(f"item {item_id}")
            old = item.analysis_id
            item.analysis_id = analysis_id
            pipe.multi()
            if old:
                pipe.zrem(self.key("idx", "analysis-items", old), item_id)
            pipe.set(key, self._dump(item))
            pipe.zadd(self.key("idx", "analysis-items", analysis_id), {item_id: seq})
            return item

        return self.r.transaction(txn, key, value_from_callable=True)

    # -- look-ups ----------------------------------------------------------------------------
    def batch_ids(self) -> list[str]:
        """Batch ids, newest first (ids start with their creation time)."""
        return sorted(self.r.smembers(self.key("idx", "batches")), reverse=True)

    def item_ids(self, batch_id: str | None = None) -> list[str]:
        return list(self.r.zrange(self.key("idx", "batch", batch_id) if batch_id else self.key("idx", "items"), 0, -1))

    def items(self, batch_id: str | None = None) -> list[Item]:
        return self.many(Item, self.item_ids(batch_id))

    def needs_video(self, video_id: str) -> bool:
        return any(a.state in (AnalysisState.WAITING, AnalysisState.ANALYZING) for a in self.analyses_of(video_id))

    def items_of(self, analysis_id: str) -> list[Item]:
        return self.many(Item, self.r.zrange(self.key("idx", "analysis-items", analysis_id), 0, -1))

    def analyses_of(self, video_id: str) -> list[Analysis]:
        return self.many(Analysis, self.r.zrange(self.key("idx", "video-analyses", video_id), 0, -1))

    def unfinished(self) -> list[Analysis]:
        return [a for a in self.many(Analysis, self.unfinished_order()) if not a.state.terminal]

    def unfinished_ids(self) -> set[str]:
        return set(self.unfinished_order())

    def unfinished_order(self) -> list[str]:
        """Unfinished analysis ids, oldest first."""
        return list(self.r.zrange(self.key("idx", "unfinished"), 0, -1))

    # -- a batch's rows a page at a time, and its figures: computed from the batch's rows here -------------
    def row_count(self, batch_id: str) -> int:
        return int(self.r.zcard(self.key("idx", "batch", batch_id)))

    def status_counts(self, batch_id: str) -> dict[Status, int]:
        found = Counter(row.status for row in self._rows(batch_id))
        return {status: found[status] for status in LIFE_ORDER}

    def item_page(
        self, batch_id: str, statuses: Iterable[Status] | None = None, *, by_status: bool = False, offset: int = 0, limit: int | None = None
    ) -> list[str]:
        if statuses is None and not by_status:
            return list(self.r.zrange(self.key("idx", "batch", batch_id), offset, -1 if limit is None else offset + limit - 1))
        wanted = set(LIFE_ORDER if statuses is None else statuses)
        rows = [row for row in self._rows(batch_id) if row.status in wanted]
        if by_status:
            rows.sort(key=lambda row: LIFE_ORDER.index(row.status))
        return [row.item.id for row in rows[offset : None if limit is None else offset + limit]]

    def batch_sums(self, batch_id: str) -> dict[str, Any]:
        rows = self._rows(batch_id)
        sums = sums_of(rows)
        busy = self._busy(batch_id, rows, sums)
        return {**sums, "busy_s": busy["busy_s"], "busy_since": busy["busy_since"]} if busy else sums

    def _busy(self, batch_id: str, rows: list[Row], sums: dict[str, Any]) -> dict[str, Any] | None:
        """The batch's busy time, worked out from its rows and the small record the last read left (written only
        when it changes: a batch coming into flight or leaving it; readers that race write the same)."""
        key = self.key("busy", batch_id)

        def txn(pipe: Any) -> dict[str, Any] | None:
            text = pipe.get(key)
            kept = json.loads(text) if text else None
            busy = busy_from_rows(kept, rows, sums)
            if busy is not None and busy != kept:
                pipe.multi()
                pipe.set(key, json.dumps(busy))
            return busy

        try:
            return self.r.transaction(txn, key, value_from_callable=True)
        except redis.WatchError:  # another reader wrote it meanwhile: read what it kept
            text = self.r.get(key)
            return json.loads(text) if text else None

    def _rows(self, batch_id: str) -> list[Row]:
        from storyteller_core.views.board import rows_of  # the board reads stores; only this fallback reads the board

        return rows_of(self, self.items(batch_id))

    # -- records that cannot be read: renamed aside, kept as they are -----------------------------
    def set_aside(self, limit: int = 20) -> tuple[int, list[dict[str, str]]]:
        keys = self.r.zrange(self.key("aside"), 0, limit - 1)
        reasons = self.r.hmget(self.key("aside", "why"), keys) if keys else []
        return int(self.r.zcard(self.key("aside"))), [{"key": k, "reason": why or ""} for k, why in zip(keys, reasons, strict=True)]

    def _set_aside(self, key: str, exc: Exception) -> None:
        short = key.removeprefix(self.prefix + ":")
        try:
            self.r.rename(key, self.key("aside", short))
        except redis.ResponseError:
            return  # gone meanwhile
        self.r.hset(self.key("aside", "why"), short, f"{type(exc).__name__}: {str(exc)[:200]}")
        self.r.zadd(self.key("aside"), {short: time.time()})
        log.warning("a record could not be read and was set aside", extra={"key": short, "reason": str(exc)[:200]})

    # -- why a step waits to call Gemini again (reach.py): one hash field per task --------------------------
    def retry_notes(self) -> dict[str, dict[str, Any]]:
        return {task: json.loads(text) for task, text in self.r.hgetall(self.key("retry-notes")).items()}

    def put_retry_notes(self, notes: dict[str, dict[str, Any] | None]) -> None:
        key = self.key("retry-notes")
        kept = {task: json.dumps(note) for task, note in notes.items() if note is not None}
        gone = [task for task, note in notes.items() if note is None]
        pipe = self.r.pipeline()
        if kept:
            pipe.hset(key, mapping=kept)
        if gone:
            pipe.hdel(key, *gone)
        pipe.expire(key, int(STALE_NOTE_S))  # a team whose every worker stopped leaves no notes behind for long
        pipe.execute()

    # -- the checked list before Start: one hash field per source, in a sorted set's order -----------------
    def pending(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        ids = self.r.zrange(self.key("pending", "order"), offset, -1 if limit is None else offset + limit - 1)
        texts = self.r.hmget(self.key("pending", "entries"), ids) if ids else []
        return [json.loads(text) for text in texts if text]

    def pending_count(self) -> int:
        return int(self.r.zcard(self.key("pending", "order")))

    def add_pending(self, entries: Iterable[dict[str, Any]]) -> None:
        for entry in entries:
            entry_id, text = _pending_id(pending_source(entry)), json.dumps(entry, ensure_ascii=False)
            with self.r.pipeline(transaction=True) as pipe:
                if entry.get("error_code") is None:
                    pipe.hsetnx(self.key("pending", "entries"), entry_id, text)
                else:
                    pipe.hset(self.key("pending", "entries"), entry_id, text)
                pipe.zadd(self.key("pending", "order"), {entry_id: self._seq()}, nx=True)
                pipe.execute()

    def remove_pending(self, source: str) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zrem(self.key("pending", "order"), _pending_id(source))
            pipe.hdel(self.key("pending", "entries"), _pending_id(source))
            pipe.execute()

    def clear_pending(self) -> list[dict[str, Any]]:
        entries = self.pending()
        for entry in entries:
            self.remove_pending(pending_source(entry))
        return entries

    # -- leases: TTL on Redis's clock; a dead process on this host loses its lease at once ----------
    def claim(self, task: str, owner: str, ttl: float) -> bool:
        key, ms = self.lease_key(task), _ms(ttl)
        current = self._claim(keys=[key], args=[owner, ms])
        if current == 1:
            return True
        if owner_process_gone(current):
            return bool(self._take_over(keys=[key], args=[current, owner, ms]))
        return False

    def heartbeat(self, owner: str, ttl: float) -> bool:
        return False  # a lease here is a key with its own TTL on Redis's clock: renew() extends each

    def renew(self, tasks: Iterable[str], owner: str, ttl: float) -> list[str]:
        """Extend the leases this owner still holds; return the tasks it lost."""
        tasks = list(tasks)
        if not tasks:
            return []
        lost = self._renew(keys=[self.lease_key(t) for t in tasks], args=[owner, _ms(ttl)])
        return [tasks[int(i) - 1] for i in lost]

    def release(self, task: str, owner: str) -> None:
        self._release(keys=[self.lease_key(task)], args=[owner])

    def lease_owner(self, task: str) -> str | None:
        return self.r.get(self.lease_key(task))

    def lease_key(self, task: str) -> str:
        return self.key("lease", task)

    # -- JSON in and out ------------------------------------------------------------------------------
    def _rkey(self, cls: type[Record], record_id: str) -> str:
        return self.key(cls.KIND, record_id)

    def _seq(self) -> int:
        return int(self.r.incr(self.key("seq")))

    def _dump(self, record: Record) -> str:
        if isinstance(record, Video) and self.shared.root is not None:
            data = json.loads(record.to_json())
            data["sources"] = [self.shared.encode(s) for s in record.sources]
            data["thumbnail_path"] = self.shared.encode(record.thumbnail_path)
            return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return record.to_json()

    def _load(self, cls: type[R], text: str | bytes | None, key: str | None = None) -> R | None:
        if not text:
            return None
        try:
            record = _decode(cls, text)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            if key is not None:
                self._set_aside(key, exc)
            return None
        if isinstance(record, Video) and self.shared.root is not None:
            record.sources = [s for s in (self.shared.decode(s) for s in record.sources) if s]
            record.thumbnail_path = self.shared.decode(record.thumbnail_path)
        return record


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


__all__ = ["RedisStore", "connect", "NotFound"]
