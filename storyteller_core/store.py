"""Durable state on diskcache: videos, analyses, batches and items, their indexes, transitions and leases.

Every value is JSON text; nothing is ever unpickled from the data dir (see
safe_disk.py). Every read-modify-write runs inside ``cache.transact()``, which
is atomic across threads and processes, and ``transition`` is the one place
a record changes state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import diskcache
import psutil
from diskcache.core import MODE_RAW

from .analysis import Analysis, AnalysisState
from .batch import Batch, Item
from .records import Record
from .safe_disk import SafeDisk, check_not_damaged
from .video import VIDEO_PROGRESS, Video

R = TypeVar("R", bound=Record)
SCHEMA = 2
_BATCHES = "index:batches"
_ITEMS = "index:items"
_UNFINISHED = "index:unfinished"  # analyses not COMPLETED, FAILED or CANCELLED
_PENDING = "pending"  # the checked list before Start, as JSON


class NotFound(KeyError):
    pass


class Store:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        check_not_damaged(directory / "cache.db")
        self.cache = diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**62, timeout=60, disk=SafeDisk)
        self._decoded: dict[str, tuple[tuple[int, int], Record]] = {}  # key -> (len and hash of its text, record)
        for db_file in directory.glob("cache.db*"):  # the database, its WAL and shared memory
            db_file.chmod(0o600)
        if self.cache.get("meta:schema") != SCHEMA:
            from .migrate import migrate

            migrate(self)

    def close(self) -> None:
        self.cache.close()

    # -- records -----------------------------------------------------------------------
    def get(self, cls: type[R], record_id: str | None) -> R | None:
        if not record_id:
            return None
        text = self.cache.get(_key(cls, record_id))
        return _decode(cls, text) if text else None

    def require(self, cls: type[R], record_id: str) -> R:
        record = self.get(cls, record_id)
        if record is None:
            raise NotFound(f"{cls.KIND} {record_id}")
        return record

    def many(self, cls: type[R], ids: Iterable[str]) -> list[R]:
        """The records of these ids that exist, in the order asked (read in one query per 900 ids)."""
        ids = list(ids)
        found = self.by_id(cls, ids)
        return [found[i] for i in ids if i in found]

    def by_id(self, cls: type[R], ids: Iterable[str]) -> dict[str, R]:
        """{id: record} for the ids that exist, each read once (in no particular order).

        Records read here (and by ``many``) may be shared with other readers: a record whose stored text
        has not changed since it was last read is not decoded again. Never change them; ``update``,
        ``transition`` and ``mutate`` read their record afresh.
        """
        wanted = [_key(cls, i) for i in dict.fromkeys(ids) if i]
        decoded = self._decoded
        if len(decoded) + len(wanted) > _DECODED_MAX:
            decoded.clear()  # bounded: a batch larger than this decodes every read, as before
        prefix = len(cls.KIND) + 1
        out: dict[str, R] = {}
        for key, text in self._iter_texts(wanted):
            stamp = (len(text), hash(text))
            held = decoded.get(key)
            if held is not None and held[0] == stamp and type(held[1]) is cls:
                record = held[1]
            else:
                record = _decode(cls, text)
                decoded[key] = (stamp, record)
            out[key[prefix:]] = record
        return out

    def put(self, record: Record) -> None:
        self.cache.set(_key(type(record), record.id), record.to_json())

    def mutate(self, cls: type[R], record_id: str, change: Callable[[R], None]) -> R:
        """Apply ``change`` to the stored record atomically and write it back."""
        with self.cache.transact():
            record = self.require(cls, record_id)
            change(record)
            if hasattr(record, "updated_at"):
                record.updated_at = time.time()
            self.put(record)
        return record

    def update(self, cls: type[R], record_id: str, **fields: Any) -> R:
        return self.mutate(cls, record_id, lambda record: _assign(record, fields))

    def transition(self, cls: type[R], record_id: str, new: Any, **fields: Any) -> R:
        """The one place a video or an analysis changes state; raises TransitionError if not allowed."""
        with self.cache.transact():
            record = self.mutate(cls, record_id, lambda r: apply_transition(r, new, fields))
            if isinstance(record, Analysis):
                (self._index_remove if new.terminal else self._index_add)(_UNFINISHED, record_id)
        return record

    # -- creating ------------------------------------------------------------------------
    def add_video(self, video: Video) -> Video:
        """Store ``video``, or merge its sources into the stored record of the same content."""
        with self.cache.transact():
            stored = self.get(Video, video.id)
            if stored is None:
                video.state_entered_at.setdefault(video.state.value, video.created_at)
                self.put(video)
                return video
            new_sources = [s for s in video.sources if s not in stored.sources]
            if new_sources:
                stored.sources = [*new_sources, *stored.sources]  # the newest path is tried first
                self.put(stored)
            return stored

    def add_analysis(self, analysis: Analysis) -> tuple[Analysis, bool]:
        """Store ``analysis`` unless one of the same key exists; (the stored one, created?)."""
        with self.cache.transact():
            stored = self.get(Analysis, analysis.id)
            if stored is not None:
                return stored, False
            analysis.state_entered_at.setdefault(analysis.state.value, analysis.created_at)
            self.put(analysis)
            self._index_add(f"index:video-analyses:{analysis.video_id}", analysis.id)
            if not analysis.state.terminal:
                self._index_add(_UNFINISHED, analysis.id)
            return analysis, True

    def add_batch(self, batch: Batch) -> Batch:
        with self.cache.transact():
            if self.get(Batch, batch.id) is None:
                self.put(batch)
                self._index_add(_BATCHES, batch.id)
        return batch

    def add_item(self, item: Item) -> Item:
        with self.cache.transact():
            self.put(item)
            self._index_add(_ITEMS, item.id)
            self._index_add(f"index:batch:{item.batch_id}", item.id)
            if item.analysis_id:
                self._index_add(f"index:analysis-items:{item.analysis_id}", item.id)
        return item

    def start_batch(self, batch: Batch, items: list[Item]) -> list[Item]:
        """Store a new batch with the rows whose source is still on the checked list, and take those off it,
        in one transaction (two tabs pressing Start at once make one batch; a file added meanwhile stays listed).
        The rows stored; none (and no batch) if another Start took them all."""
        with self.cache.transact():
            entries = self.pending()
            listed = {pending_source(entry) for entry in entries}
            items = [item for item in items if item.source_path in listed]
            if not items:
                return []
            self.put(batch)
            self._index_add(_BATCHES, batch.id)
            for item in items:
                self.put(item)
            self._index_extend(_ITEMS, [item.id for item in items])
            self._index_extend(f"index:batch:{batch.id}", [item.id for item in items])
            started = {item.source_path for item in items}
            self.set_pending([entry for entry in entries if pending_source(entry) not in started])
        return items

    def delete_item(self, item_id: str) -> Item | None:
        with self.cache.transact():
            item = self.get(Item, item_id)
            if item is None:
                return None
            self.cache.delete(_key(Item, item_id))
            self._index_remove(_ITEMS, item_id)
            self._index_remove(f"index:batch:{item.batch_id}", item_id)
            if item.analysis_id:
                self._index_remove(f"index:analysis-items:{item.analysis_id}", item_id)
            if not self._ids(f"index:batch:{item.batch_id}"):
                self.cache.delete(_key(Batch, item.batch_id))
                self._index_remove(_BATCHES, item.batch_id)
        return item

    def delete_analysis(self, analysis_id: str) -> None:
        with self.cache.transact():
            analysis = self.get(Analysis, analysis_id)
            if analysis is None:
                return
            self.cache.delete(_key(Analysis, analysis_id))
            self._index_remove(_UNFINISHED, analysis_id)
            self._index_remove(f"index:video-analyses:{analysis.video_id}", analysis_id)

    def move_item(self, item_id: str, analysis_id: str) -> Item:
        """Point an item at another analysis (retry under the current backend)."""
        with self.cache.transact():
            item = self.require(Item, item_id)
            if item.analysis_id:
                self._index_remove(f"index:analysis-items:{item.analysis_id}", item_id)
            item.analysis_id = analysis_id
            self.put(item)
            self._index_add(f"index:analysis-items:{analysis_id}", item_id)
        return item

    # -- look-ups ----------------------------------------------------------------------------
    def batch_ids(self) -> list[str]:
        """Batch ids, newest first (ids start with their creation time)."""
        return sorted(self._ids(_BATCHES), reverse=True)

    def item_ids(self, batch_id: str | None = None) -> list[str]:
        return self._ids(f"index:batch:{batch_id}" if batch_id else _ITEMS)

    def items(self, batch_id: str | None = None) -> list[Item]:
        return self.many(Item, self.item_ids(batch_id))

    def items_of(self, analysis_id: str) -> list[Item]:
        return self.many(Item, self._ids(f"index:analysis-items:{analysis_id}"))

    def analyses_of(self, video_id: str) -> list[Analysis]:
        return self.many(Analysis, self._ids(f"index:video-analyses:{video_id}"))

    def unfinished(self) -> list[Analysis]:
        return [a for a in self.many(Analysis, self._ids(_UNFINISHED)) if not a.state.terminal]

    def unfinished_ids(self) -> set[str]:
        return set(self._ids(_UNFINISHED))

    def needs_video(self, video_id: str) -> bool:
        """Some unfinished analysis still needs this video's file."""
        return any(a.state in (AnalysisState.WAITING, AnalysisState.ANALYZING) for a in self.analyses_of(video_id))

    # -- the checked list before Start -------------------------------------------------------
    def pending(self) -> list[dict[str, Any]]:
        return json.loads(self.cache.get(_PENDING) or "[]")

    def set_pending(self, entries: list[dict[str, Any]]) -> None:
        self.cache.set(_PENDING, json.dumps(entries, ensure_ascii=False))

    def edit_pending(self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Replace the checked list with ``change(list)`` atomically (two tabs adding at once lose nothing); the old list."""
        with self.cache.transact():
            entries = self.pending()
            self.set_pending(change(list(entries)))
        return entries

    # -- leases: one engine works a video or an analysis at a time --------------------------------
    # A lease names its owner; the owner keeps all its leases alive with one heartbeat, so waiting on a
    # thousand videos costs one write per beat instead of a thousand. A lease is taken over once both its
    # own expiry (the grace before the first beat) and its owner's heartbeat have run out.
    def heartbeat(self, owner: str, ttl: float) -> bool:
        """Keep every lease of ``owner`` alive for ``ttl``; True: the leases need no renewing one by one."""
        self.cache.set("alive:" + owner, json.dumps({"expires": time.time() + ttl}), expire=max(600.0, 10 * ttl))
        return True

    def claim(self, task: str, owner: str, ttl: float) -> bool:
        with self.cache.transact():
            lease = self._lease(task)
            if lease and lease["owner"] != owner and not self._lease_stale(lease):
                return False
            self._set_lease(task, owner, ttl)
            return True

    def renew(self, tasks: Iterable[str], owner: str, ttl: float) -> list[str]:
        """Extend the leases this owner still holds; return the tasks it lost."""
        lost = []
        with self.cache.transact():
            for task in tasks:
                lease = self._lease(task)
                if lease and lease["owner"] != owner:
                    lost.append(task)
                    continue
                self._set_lease(task, owner, ttl)
        return lost

    def release(self, task: str, owner: str) -> None:
        with self.cache.transact():
            lease = self._lease(task)
            if lease and lease["owner"] == owner:
                self.cache.delete("lease:" + task)

    def _lease_stale(self, lease: dict[str, Any]) -> bool:
        beat = self.cache.get("alive:" + lease["owner"])
        expires = max(lease["expires"], json.loads(beat)["expires"] if beat else 0.0)
        return expires < time.time() or owner_process_gone(lease["owner"])

    def _lease(self, task: str) -> dict[str, Any] | None:
        text = self.cache.get("lease:" + task)
        return json.loads(text) if text else None

    def _set_lease(self, task: str, owner: str, ttl: float) -> None:
        self.cache.set("lease:" + task, json.dumps({"owner": owner, "expires": time.time() + ttl}))

    # -- reading many values at once -------------------------------------------------------------------
    def _texts(self, keys: list[str]) -> dict[str, str]:
        """{key: stored text} for the keys that exist, in the order of ``keys``."""
        found = dict(self._iter_texts(keys))
        return {key: found[key] for key in keys if key in found}

    def _iter_texts(self, keys: list[str]) -> Iterator[tuple[str, str]]:
        """(key, stored text) for the keys that exist: what ``cache.get`` reads, in one SQL query per
        ``_CHUNK`` keys instead of one per key (the same rows, through the same Disk)."""
        now = time.time()
        disk = self.cache.disk
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = (f"SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN ({marks})"
                     " AND (expire_time IS NULL OR expire_time > ?)")
            for key, mode, filename, value in self.cache._sql(query, (*chunk, now)).fetchall():
                if mode == MODE_RAW and filename is None and type(value) is str:
                    text = value  # a record's JSON kept inline, as nearly all are
                else:
                    try:
                        text = disk.fetch(mode, filename, value, False)
                    except OSError:  # a large value's file was deleted after the query: gone, as get() says
                        continue
                if text:
                    yield key, text

    # -- indexes: JSON lists of ids -----------------------------------------------------------------
    def _ids(self, key: str) -> list[str]:
        text = self.cache.get(key)
        return json.loads(text) if text else []

    def _index_add(self, key: str, record_id: str) -> None:
        ids = self._ids(key)
        if record_id not in ids:
            ids.append(record_id)
            self.cache.set(key, json.dumps(ids))

    def _index_extend(self, key: str, record_ids: list[str]) -> None:
        ids = self._ids(key)
        known = set(ids)
        self.cache.set(key, json.dumps([*ids, *(i for i in record_ids if i not in known)]))

    def _index_remove(self, key: str, record_id: str) -> None:
        ids = self._ids(key)
        if record_id in ids:
            ids.remove(record_id)
            if ids:
                self.cache.set(key, json.dumps(ids))
            else:
                self.cache.delete(key)


def _key(cls: type[Record], record_id: str) -> str:
    return f"{cls.KIND}:{record_id}"


_CHUNK = 900  # keys per query: under SQLite's oldest limit of 999 bound variables
_DECODED_MAX = 60_000  # records kept decoded per store (about 4 MB per 1,000 board rows)
_FIELDS: dict[type, frozenset[str]] = {}


def _decode(cls: type[R], text: str | bytes) -> R:
    """``cls.from_json(text)``, without looking up the dataclass's fields for every record (a third of a board read)."""
    if getattr(cls.from_dict, "__func__", None) is not Record.from_dict.__func__:  # type: ignore[attr-defined]
        return cls.from_json(text)  # a record type that reads itself its own way
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    data = json.loads(text)
    values = data if data.keys() <= known else {k: v for k, v in data.items() if k in known}
    if cls.STATE is not None and "state" in values:
        values["state"] = cls.STATE(values["state"])
    return cls(**values)


def _assign(record: Record, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if not hasattr(record, name):
            raise AttributeError(f"{record.KIND} has no field {name!r}")
        setattr(record, name, value)


def make_owner_id(tag: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{tag}"


def apply_transition(record: Any, new: Any, fields: dict[str, Any]) -> None:
    """A state change on a record read in the store's transaction (both stores): checked against the record's
    table, stamped, with what goes with it (a video's progress; an analysis's end time), then ``fields``."""
    record.check_transition(new)
    at = time.time()
    record.state = new
    record.state_entered_at[new.value] = at
    if isinstance(record, Video) and new in VIDEO_PROGRESS:
        record.progress = VIDEO_PROGRESS[new]
    if isinstance(record, Analysis):
        record.completed_at = at if new.terminal else None
        if new.terminal:
            record.cancel_requested = False
    _assign(record, fields)


def pending_source(entry: dict[str, Any]) -> str:
    """What the person added, for an entry of the checked list: the URL or the local path."""
    return str(entry.get("url") or entry["path"])


def owner_process_gone(owner: str) -> bool:
    """The process an owner id ("host:pid:...") names ran on this host and is dead."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    # psutil, not os.kill(pid, 0): on Windows that call terminates the process it names.
    return not psutil.pid_exists(int(pid))
