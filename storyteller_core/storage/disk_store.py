"""Durable state on diskcache: videos, analyses, batches and items, their indexes, transitions and leases.

Every value is JSON text kept inside SQLite's own rows (never a file beside it: see ``open_cache``), so a
transaction that rolls back, or a process killed mid-way, leaves every record and index as it was before or
as it is after. Nothing is ever unpickled from the data dir (see safe_disk.py). Every read-modify-write runs
inside ``cache.transact()``, which is atomic across threads and processes, and ``transition`` is the one place
a record changes state.

Layout (SCHEMA 3):

    <kind>:<id>                 a record's JSON (video, analysis, batch, item)
    ix:/im:/in:<index>...       indexes, one small record per member (disk_index.py): batches, items,
                                batch:<id>, unfinished, video-analyses:<id>, analysis-items:<id>,
                                pending, and bst:<batch>:<STATUS> (a batch's rows by their status)
    rs:<item id>                the status the row is indexed under ("<batch>|<STATUS>")
    bt:<batch>|<analysis>       what one analysis adds to its batch's tokens and costs (counted once)
    btot:<batch>                the batch's kept totals: tokens, costs, first added, last finished
    pend:<id>                   one entry of the checked list before Start
    aside:<key>                 a record that could not be read, kept as it was (``set_aside``)
    lease:<task>, alive:<owner> leases and their owners' heartbeats
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import diskcache
import psutil
from diskcache.core import MODE_RAW

from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.record import Record
from storyteller_core.records.video import VIDEO_PROGRESS, Video
from storyteller_core.storage import disk_index as ix
from storyteller_core.storage.safe_disk import SafeDisk, check_not_damaged, disk_full_error, is_disk_full
from storyteller_core.storage.store_protocol import Store as Store  # re-exported: the contract both stores keep
from storyteller_core.views.rows import LIFE_ORDER, Row, Status, row_of

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)
SCHEMA = 3
_BATCHES = "batches"
_ITEMS = "items"
_UNFINISHED = "unfinished"  # analyses not COMPLETED, FAILED or CANCELLED
_PENDING = "pending"  # the checked list before Start, one entry each
_ASIDE = "aside"  # records that could not be read
# diskcache keeps a value of this many bytes or more in a file of its own, and deletes the old file of a
# value overwritten inside a nested transaction before the outer one commits: a rollback then loses it.
# No value of ours comes near this, so every value lives in SQLite, inside its transactions.
NEVER_A_FILE = 2**40


class NotFound(KeyError):
    pass


def open_cache(directory: Path) -> diskcache.Cache:
    return diskcache.Cache(
        str(directory), eviction_policy="none", size_limit=2**62, timeout=60, disk=SafeDisk, disk_min_file_size=NEVER_A_FILE
    )


class DiskStore:
    """The job store on diskcache (one machine); see store_protocol.Store for the contract."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        check_not_damaged(directory / "cache.db")
        try:
            self.cache = open_cache(directory)
            for db_file in directory.glob("cache.db*"):  # the database, its WAL and shared memory
                db_file.chmod(0o600)
            self._decoded: dict[str, tuple[tuple[int, int], Record]] = {}  # key -> (len and hash of its text, record)
            inline_large_values(self.cache)
            if self.cache.get("meta:schema") != SCHEMA:
                from storyteller_core.storage.migrate import migrate

                migrate(self)
        except (sqlite3.OperationalError, OSError) as exc:
            if is_disk_full(exc):
                raise disk_full_error(directory) from exc
            raise

    def close(self) -> None:
        self.cache.close()

    # -- records -----------------------------------------------------------------------
    def get(self, cls: type[R], record_id: str | None) -> R | None:
        if not record_id:
            return None
        key = _key(cls, record_id)
        text = self.cache.get(key)
        return self._load(cls, key, text) if text else None

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
                record: R | None = held[1]
            else:
                record = self._load(cls, key, text)
                if record is None:
                    continue
                decoded[key] = (stamp, record)
            out[key[prefix:]] = record  # type: ignore[assignment]
        return out

    def _load(self, cls: type[R], key: str, text: str | bytes) -> R | None:
        """The record in ``text``, or None when it cannot be read: then it is set aside, never fatal."""
        try:
            return _decode(cls, text)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._set_aside(key, text, exc)
            return None

    def _set_aside(self, key: str, text: str | bytes, exc: Exception) -> None:
        with self.cache.transact():
            if self.cache.get(key) != text:
                return  # changed meanwhile: whatever is there now is read on its own merits
            set_aside_key(self.cache, key, f"{type(exc).__name__}: {str(exc)[:200]}")

    def set_aside(self, limit: int = 20) -> tuple[int, list[dict[str, str]]]:
        """(how many records were set aside, the first ``limit`` of them as {key, reason}): kept, never deleted."""
        keys = ix.members(self.cache, _ASIDE, 0, limit)
        found = self._texts(["asidewhy:" + key for key in keys])
        return ix.count(self.cache, _ASIDE), [json.loads(text) for text in found.values()]

    def put(self, record: Record) -> None:
        """Write a record as it is, indexes untouched: for the store's own methods, which keep them."""
        self.cache.set(_key(type(record), record.id), record.to_json())

    def mutate(self, cls: type[R], record_id: str, change: Callable[[R], None]) -> R:
        """Apply ``change`` to the stored record atomically and write it back (with the rows it shows in)."""
        with self.cache.transact():
            record = self.require(cls, record_id)
            before = record.analysis_id if isinstance(record, Item) else None
            change(record)
            if hasattr(record, "updated_at"):
                record.updated_at = time.time()
            self.put(record)
            self._reindex(record, before)
        return record

    def update(self, cls: type[R], record_id: str, **fields: Any) -> R:
        return self.mutate(cls, record_id, lambda record: _assign(record, fields))

    def transition(self, cls: type[R], record_id: str, new: Any, **fields: Any) -> R:
        """The one place a video or an analysis changes state; raises TransitionError if not allowed."""
        with self.cache.transact():
            record = self.mutate(cls, record_id, lambda r: apply_transition(r, new, fields))
            if isinstance(record, Analysis):
                (ix.remove if new.terminal else ix.add)(self.cache, _UNFINISHED, record_id)
        return record

    # -- creating ------------------------------------------------------------------------
    def add_video(self, video: Video) -> Video:
        """Store ``video``, or merge its sources into the stored record of the same content."""
        with self.cache.transact():
            stored = self.get(Video, video.id)
            if stored is None:
                video.state_entered_at.setdefault(video.state.value, video.created_at)
                self.put(video)
                self._reindex(video)
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
            ix.add(self.cache, f"video-analyses:{analysis.video_id}", analysis.id)
            if not analysis.state.terminal:
                ix.add(self.cache, _UNFINISHED, analysis.id)
            self._reindex(analysis)
            return analysis, True

    def add_batch(self, batch: Batch) -> Batch:
        with self.cache.transact():
            if self.get(Batch, batch.id) is None:
                self.put(batch)
                ix.add(self.cache, _BATCHES, batch.id)
        return batch

    def add_item(self, item: Item) -> Item:
        with self.cache.transact():
            self._store_item(item)
        return item

    def _store_item(self, item: Item) -> None:
        before = self.get(Item, item.id)
        self.put(item)
        ix.add(self.cache, _ITEMS, item.id)
        ix.add(self.cache, f"batch:{item.batch_id}", item.id)
        if item.analysis_id:
            ix.add(self.cache, f"analysis-items:{item.analysis_id}", item.id)
        self._reindex(item, before.analysis_id if before else None)

    def start_batch(self, batch: Batch, items: list[Item]) -> list[Item]:
        """Store a new batch with the rows whose source is still on the checked list, and take those off it,
        in one transaction (two tabs pressing Start at once make one batch; a file added meanwhile stays listed).
        The rows stored; none (and no batch) if another Start took them all. A few statements per kind of key,
        not per row: a folder of 50,000 files starts in seconds."""
        with self.cache.transact():
            listed = ix.positions(self.cache, _PENDING, list({_pending_id(item.source_path) for item in items}))
            items = [item for item in items if _pending_id(item.source_path) in listed]
            if not items:
                return []
            self.put(batch)
            ix.add(self.cache, _BATCHES, batch.id)
            if self.by_id(Item, [item.id for item in items]):  # ids already stored (never, for new rows): one by one
                for item in items:
                    self._store_item(item)
            else:
                self._store_new_items(batch.id, items)
            gone = {entry_id: listed[entry_id] for entry_id in {_pending_id(item.source_path) for item in items}}
            ix.remove_many(self.cache, _PENDING, gone)
            ix.delete_many(self.cache, [f"pend:{entry_id}" for entry_id in gone])
        return items

    def _store_new_items(self, batch_id: str, items: list[Item]) -> None:
        """``_store_item`` for many rows not stored yet, in bulk (inside the caller's transaction)."""
        ids = [item.id for item in items]
        last = self.cache.incr(ix.SEQ, len(items))
        seqs = list(range(last - len(items) + 1, last + 1))
        ix.put_many(self.cache, [(_key(Item, item.id), item.to_json()) for item in items])
        ix.add_many(self.cache, _ITEMS, ids, seqs)
        ix.add_many(self.cache, f"batch:{batch_id}", ids, seqs)
        analyses = self.by_id(Analysis, (item.analysis_id for item in items if item.analysis_id))
        videos = self.by_id(Video, (item.video_id for item in items if item.video_id))
        by_status: dict[Status, tuple[list[str], list[int]]] = {}
        for item, seq in zip(items, seqs, strict=True):
            if item.analysis_id:
                ix.add(self.cache, f"analysis-items:{item.analysis_id}", item.id)
            row = row_of(item, analyses.get(item.analysis_id or ""), videos.get(item.video_id or ""))
            members, places = by_status.setdefault(row.status, ([], []))
            members.append(item.id)
            places.append(seq)
            if row.ended:
                self._stretch(batch_id, item.created_at, row.finished_at)
        for status, (members, places) in by_status.items():
            ix.add_many(self.cache, f"bst:{batch_id}:{status.name}", members, places)
        ix.put_many(
            self.cache,
            [(f"rs:{item_id}", f"{batch_id}|{status.name}") for status, (members, _) in by_status.items() for item_id in members],
        )
        self._stretch(batch_id, min(item.created_at for item in items), None)
        for analysis_id in {item.analysis_id for item in items if item.analysis_id}:
            self._recount(batch_id, analysis_id)

    def delete_item(self, item_id: str) -> Item | None:
        with self.cache.transact():
            item = self.get(Item, item_id)
            if item is None:
                return None
            self.cache.delete(_key(Item, item_id))
            ix.remove(self.cache, _ITEMS, item_id)
            ix.remove(self.cache, f"batch:{item.batch_id}", item_id)
            if item.analysis_id:
                ix.remove(self.cache, f"analysis-items:{item.analysis_id}", item_id)
            self._restatus([item_id])
            self._recount(item.batch_id, item.analysis_id)
            if not ix.count(self.cache, f"batch:{item.batch_id}"):
                self.cache.delete(_key(Batch, item.batch_id))
                self.cache.delete(f"btot:{item.batch_id}")
                ix.remove(self.cache, _BATCHES, item.batch_id)
        return item

    def delete_analysis(self, analysis_id: str) -> None:
        with self.cache.transact():
            analysis = self.get(Analysis, analysis_id)
            if analysis is None:
                return
            self.cache.delete(_key(Analysis, analysis_id))
            ix.remove(self.cache, _UNFINISHED, analysis_id)
            ix.remove(self.cache, f"video-analyses:{analysis.video_id}", analysis_id)
            self._reindex(analysis)

    def move_item(self, item_id: str, analysis_id: str) -> Item:
        """Point an item at another analysis (retry under the current backend)."""
        with self.cache.transact():
            item = self.require(Item, item_id)
            before = item.analysis_id
            if item.analysis_id:
                ix.remove(self.cache, f"analysis-items:{item.analysis_id}", item_id)
            item.analysis_id = analysis_id
            self.put(item)
            ix.add(self.cache, f"analysis-items:{analysis_id}", item_id)
            self._reindex(item, before)
        return item

    # -- look-ups ----------------------------------------------------------------------------
    def batch_ids(self) -> list[str]:
        """Batch ids, newest first (ids start with their creation time)."""
        return sorted(ix.members(self.cache, _BATCHES), reverse=True)

    def item_ids(self, batch_id: str | None = None) -> list[str]:
        return ix.members(self.cache, f"batch:{batch_id}" if batch_id else _ITEMS)

    def items(self, batch_id: str | None = None) -> list[Item]:
        return self.many(Item, self.item_ids(batch_id))

    def items_of(self, analysis_id: str) -> list[Item]:
        return self.many(Item, ix.members(self.cache, f"analysis-items:{analysis_id}"))

    def analyses_of(self, video_id: str) -> list[Analysis]:
        return self.many(Analysis, ix.members(self.cache, f"video-analyses:{video_id}"))

    def unfinished(self) -> list[Analysis]:
        return [a for a in self.many(Analysis, ix.members(self.cache, _UNFINISHED)) if not a.state.terminal]

    def unfinished_ids(self) -> set[str]:
        return set(ix.members(self.cache, _UNFINISHED))

    def needs_video(self, video_id: str) -> bool:
        """Some unfinished analysis still needs this video's file."""
        return any(a.state in (AnalysisState.WAITING, AnalysisState.ANALYZING) for a in self.analyses_of(video_id))

    # -- a batch's rows a page at a time, and its kept figures --------------------------------------
    def row_count(self, batch_id: str) -> int:
        return ix.count(self.cache, f"batch:{batch_id}")

    def status_counts(self, batch_id: str) -> dict[Status, int]:
        """{status: rows} of a batch, from the kept counts (no row is read)."""
        return {status: ix.count(self.cache, f"bst:{batch_id}:{status.name}") for status in LIFE_ORDER}

    def item_page(
        self, batch_id: str, statuses: Iterable[Status] | None = None, *, by_status: bool = False, offset: int = 0, limit: int | None = None
    ) -> list[str]:
        """Item ids of a batch in the order added, only those of ``statuses`` if given, a page of them; with
        ``by_status`` in the order of a video's life first. Reads the page's index entries only."""
        if statuses is None and not by_status:
            return ix.members(self.cache, f"batch:{batch_id}", offset, limit)
        wanted = [s for s in LIFE_ORDER if statuses is None or s in set(statuses)]
        if not by_status:
            return ix.merged(self.cache, [f"bst:{batch_id}:{s.name}" for s in wanted], offset, limit)
        out: list[str] = []
        for status in wanted:  # one index after another, skipping whole indexes by their kept counts
            name = f"bst:{batch_id}:{status.name}"
            size = ix.count(self.cache, name)
            if offset >= size:
                offset -= size
                continue
            out += ix.members(self.cache, name, offset, None if limit is None else limit - len(out))
            offset = 0
            if limit is not None and len(out) >= limit:
                break
        return out

    def batch_sums(self, batch_id: str) -> dict[str, Any]:
        """A batch's kept sums: tokens, cost, estimates (each with how many analyses have one), first added and
        last finished; an analysis shared by several rows counted once, a reused one not at all."""
        text = self.cache.get(f"btot:{batch_id}")
        return {**_EMPTY_SUMS, **(json.loads(text) if text else {})}

    # -- keeping the row indexes and sums in step, inside the writer's transaction ---------------------
    def _reindex(self, record: Record, analysis_before: str | None = None) -> None:
        """After ``record`` was written: move the rows it shows in to their new status and recount their sums."""
        if isinstance(record, Item):
            self._restatus([record.id])
            self._recount(record.batch_id, analysis_before)
            self._recount(record.batch_id, record.analysis_id)
            return
        analysis_ids = (
            [record.id]
            if isinstance(record, Analysis)
            else ix.members(self.cache, f"video-analyses:{record.id}")
            if isinstance(record, Video)
            else []
        )
        for analysis_id in analysis_ids:
            item_ids = ix.members(self.cache, f"analysis-items:{analysis_id}")
            self._restatus(item_ids)
            for batch_id in {item.batch_id for item in self.many(Item, item_ids)}:
                self._recount(batch_id, analysis_id)

    def _restatus(self, item_ids: Iterable[str]) -> None:
        for item_id in item_ids:
            item = self.get(Item, item_id)
            old = self.cache.get(f"rs:{item_id}")
            row = row_of(item, self.get(Analysis, item.analysis_id), self.get(Video, item.video_id)) if item else None
            new = f"{item.batch_id}|{row.status.name}" if item and row else None
            if item and row and row.ended:
                self._stretch(item.batch_id, item.created_at, row.finished_at)
            elif item:
                self._stretch(item.batch_id, item.created_at, None)
            if old == new:
                continue
            if old:
                batch_id, _, status = str(old).partition("|")
                ix.remove(self.cache, f"bst:{batch_id}:{status}", item_id)
            if item and row and new:
                seq = ix.position(self.cache, f"batch:{item.batch_id}", item_id)
                ix.add(self.cache, f"bst:{item.batch_id}:{row.status.name}", item_id, seq)
                self.cache.set(f"rs:{item_id}", new)
            else:
                self.cache.delete(f"rs:{item_id}")
            for batch_id, delta in _flipped(old, new):  # the row came into flight or left it: maybe the batch did
                self._busy(batch_id, delta)

    def _stretch(self, batch_id: str, added_at: float, finished_at: float | None) -> None:
        sums = self.batch_sums(batch_id)
        first = added_at if sums["first_added"] is None else min(sums["first_added"], added_at)
        last = sums["last_finished"] if finished_at is None else max(sums["last_finished"] or 0.0, finished_at)
        if (first, last) != (sums["first_added"], sums["last_finished"]):
            self._write_sums(batch_id, {**sums, "first_added": first, "last_finished": last})

    def _busy(self, batch_id: str, delta: int) -> None:
        """Open the batch's busy interval when it goes from nothing in flight to something, close it on the way back.

        O(1): the in-flight indexes' kept counts, read only when a row came into flight (``delta`` 1) or left it (-1)."""
        in_flight = sum(ix.count(self.cache, f"bst:{batch_id}:{s.name}") for s in LIFE_ORDER if not s.ended)
        sums = self.batch_sums(batch_id)
        busy = next_busy(sums, in_flight - delta > 0, in_flight > 0, time.time())
        if busy is not None:
            self._write_sums(batch_id, {**sums, **busy})

    def _recount(self, batch_id: str, analysis_id: str | None) -> None:
        """Keep what ``analysis_id`` adds to ``batch_id``'s sums in step with the analysis and the batch's rows."""
        if not analysis_id:
            return
        key = f"bt:{batch_id}|{analysis_id}"
        analysis = self.get(Analysis, analysis_id)
        counted = analysis is not None and any(item.batch_id == batch_id and not item.reused for item in self.items_of(analysis_id))
        new = _contribution(analysis) if analysis is not None and counted else {}
        text = self.cache.get(key)
        old = json.loads(text) if text else {}
        if new == old:
            return
        sums = self.batch_sums(batch_id)
        for name in _SUMMED:
            sums[name] = sums[name] + new.get(name, 0) - old.get(name, 0)
        self._write_sums(batch_id, sums)
        if new:
            self.cache.set(key, json.dumps(new))
        else:
            self.cache.delete(key)

    def _write_sums(self, batch_id: str, sums: dict[str, Any]) -> None:
        self.cache.set(f"btot:{batch_id}", json.dumps(sums))

    # -- the checked list before Start: one entry per source ------------------------------------------
    def pending(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """The checked list in the order added, a page of it where asked."""
        ids = ix.members(self.cache, _PENDING, offset, limit)
        found = self._texts([f"pend:{i}" for i in ids])
        return [json.loads(text) for text in found.values()]

    def pending_count(self) -> int:
        return ix.count(self.cache, _PENDING)

    # -- why a step waits to call Gemini again (reach.py), for every process that shows the row ---------
    def retry_notes(self) -> dict[str, dict[str, Any]]:
        """{task ("video:<id>" / "analysis:<id>"): its retry note's fields}: the steps waiting now, one read."""
        text = self.cache.get(_NOTES)
        return json.loads(text) if text else {}

    def put_retry_notes(self, notes: dict[str, dict[str, Any] | None]) -> None:
        """Keep these tasks' notes (None: removed), in one transaction; notes long past their next attempt (their
        process is gone) are dropped meanwhile."""
        with self.cache.transact():
            kept = self.retry_notes()
            for task, note in notes.items():
                if note is None:
                    kept.pop(task, None)
                else:
                    kept[task] = note
            stale = time.time() - STALE_NOTE_S
            kept = {task: note for task, note in kept.items() if float(note.get("next_at", 0)) >= stale}
            if kept:
                self.cache.set(_NOTES, json.dumps(kept))
            else:
                self.cache.delete(_NOTES)

    def add_pending(self, entries: Iterable[dict[str, Any]]) -> None:
        """Add entries to the checked list; a source already listed keeps its entry unless the new one is a refusal
        (the latest news of that file). Atomic: two tabs adding at once lose nothing. In bulk: a folder of 50,000
        files is listed in a few statements."""
        entries = list(entries)
        with self.cache.transact():
            ids = [_pending_id(pending_source(entry)) for entry in entries]
            present = ix.positions(self.cache, _PENDING, list(set(ids)))
            texts: dict[str, str] = {}
            new: list[str] = []
            for entry, entry_id in zip(entries, ids, strict=True):
                known = entry_id in present or entry_id in texts
                if known and entry.get("error_code") is None:
                    continue
                if not known:
                    new.append(entry_id)
                texts[entry_id] = json.dumps(entry, ensure_ascii=False)
            ix.put_many(self.cache, [(f"pend:{entry_id}", text) for entry_id, text in texts.items()])
            ix.add_many(self.cache, _PENDING, new)

    def remove_pending(self, source: str) -> None:
        with self.cache.transact():
            self._pending_remove(source)

    def clear_pending(self) -> list[dict[str, Any]]:
        """Empty the checked list; the entries it held."""
        with self.cache.transact():
            entries = self.pending()
            for entry in entries:
                self._pending_remove(pending_source(entry))
        return entries

    def _pending_remove(self, source: str) -> None:
        entry_id = _pending_id(source)
        self.cache.delete(f"pend:{entry_id}")
        ix.remove(self.cache, _PENDING, entry_id)

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
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = (
                f"SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN ({marks})"
                " AND (expire_time IS NULL OR expire_time > ?)"
            )
            for key, mode, filename, value in self.cache._sql(query, (*chunk, now)).fetchall():
                if mode == MODE_RAW and filename is None and type(value) is str:
                    text = value  # a record's JSON kept inline, as nearly all are
                else:
                    try:
                        text = disk.fetch(mode, filename, value, False)
                    except OSError:  # an older release's value file deleted after the query: gone, as get() says
                        continue
                if text:
                    yield key, text


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


_NOTES = "retry-notes"
STALE_NOTE_S = 600.0  # a note this long past its next attempt was left by a process that is gone
_SUMMED = ("tokens", "cost_usd", "costed", "estimated_cost_usd", "estimated", "estimated_done_usd", "estimated_done")
# busy_s: the seconds the batch had something in flight, in closed intervals; busy_since: the start of the open one.
# Sums kept before these were (busy_s None) read as before: Elapsed from the first row added to the last finished.
_EMPTY_SUMS: dict[str, Any] = {
    **dict.fromkeys(_SUMMED, 0),
    "first_added": None,
    "last_finished": None,
    "busy_s": None,
    "busy_since": None,
}


def _flipped(old: str | None, new: str | None) -> list[tuple[str, int]]:
    """(batch, +1 or -1) for each batch whose rows in flight a row's move from ``old`` to ``new`` ("batch|STATUS"
    or None) changed: +1 when the row came into flight there, -1 when it left."""

    def moving(text: str | None) -> str | None:
        if not text:
            return None
        batch_id, _, status = text.partition("|")
        return None if Status[status].ended else batch_id

    before, after = moving(old), moving(new)
    if before == after:
        return []
    return [(b, d) for b, d in ((before, -1), (after, 1)) if b is not None]


def next_busy(sums: dict[str, Any], was_busy: bool, busy: bool, at: float) -> dict[str, Any] | None:
    """The batch's ``busy_s`` / ``busy_since`` once it goes from ``was_busy`` to ``busy`` (something in flight or
    not) at ``at``; None when they stay as stored. Sums kept before busy time was start from what Elapsed said."""
    busy_s, since = sums.get("busy_s"), sums.get("busy_since")
    if busy_s is None:  # never kept: what Elapsed said so far
        first, last = sums.get("first_added"), sums.get("last_finished")
        if was_busy:  # in flight since its first row
            busy_s, since = 0.0, first if first is not None else at
        else:
            busy_s, since = (max(0.0, last - first) if first is not None and last is not None else 0.0), None
    if busy and since is None:
        since = at
    elif not busy and since is not None:
        busy_s, since = busy_s + max(0.0, at - since), None
    new = {"busy_s": busy_s, "busy_since": since}
    return None if new == {"busy_s": sums.get("busy_s"), "busy_since": sums.get("busy_since")} else new


def busy_elapsed(sums: dict[str, Any], at: float) -> float | None:
    """Seconds the batch has had something in flight up to ``at``; None for sums kept before busy time was."""
    if sums.get("busy_s") is None:
        return None
    since = sums.get("busy_since")
    return float(sums["busy_s"]) + (max(0.0, at - since) if since is not None else 0.0)


def _contribution(analysis: Analysis) -> dict[str, float]:
    """What one analysis adds to its batch's sums (see Store.batch_sums); only the non-zero parts."""
    parts: dict[str, float] = {"tokens": analysis.total_tokens or 0}
    if analysis.cost_usd is not None:
        parts.update(cost_usd=analysis.cost_usd, costed=1)
    if analysis.estimated_cost_usd is not None:
        parts.update(estimated_cost_usd=analysis.estimated_cost_usd, estimated=1)
        if analysis.cost_usd is not None:
            parts.update(estimated_done_usd=analysis.estimated_cost_usd, estimated_done=1)
    return {k: v for k, v in parts.items() if v}


def sums_of(rows: Iterable[Row]) -> dict[str, Any]:
    """``Store.batch_sums`` worked out from a batch's rows (what the kept sums must always equal)."""
    rows = list(rows)
    sums = dict(_EMPTY_SUMS)
    counted = {row.analysis.id: row.analysis for row in rows if row.analysis and not row.item.reused}
    for analysis in counted.values():
        for name, value in _contribution(analysis).items():
            sums[name] += value
    if rows:
        sums["first_added"] = min(row.item.created_at for row in rows)
        finished = [row.finished_at for row in rows if row.ended and row.finished_at is not None]
        sums["last_finished"] = max(finished) if finished else None
    return sums


def _run_start(row: Row) -> float:
    """When the row's present run began: it was added, or its analysis was asked again (a retry)."""
    asked = row.analysis.state_entered_at.get(AnalysisState.WAITING.value, 0.0) if row.analysis else 0.0
    return max(row.item.created_at, asked)


def busy_from_rows(kept: dict[str, Any] | None, rows: list[Row], sums: dict[str, Any]) -> dict[str, Any] | None:
    """A batch's busy time ({busy_s, busy_since, closed_at}) brought up to what its ``rows`` say now, from the record
    ``kept`` at the last read (None: never kept; the first read starts from what Elapsed said until then). For a
    store that works its figures out from the rows (Redis): a run that began and ended between two reads counts
    from its rows' start (added, or asked again) to the last finish."""
    if not rows:
        return kept
    live = [row for row in rows if not row.ended]
    last = sums["last_finished"]
    if kept is None:
        first = sums["first_added"]
        if live:
            return {"busy_s": 0.0, "busy_since": first, "closed_at": None}
        return {"busy_s": max(0.0, (last or first) - first), "busy_since": None, "closed_at": last}
    busy_s, since, closed = float(kept["busy_s"]), kept.get("busy_since"), kept.get("closed_at")
    floor = closed if closed is not None else float("-inf")
    since_closed = [row for row in rows if row.ended and row.finished_at is not None and row.finished_at > floor]
    if live and since is None:
        since = max(floor, min(_run_start(row) for row in live + since_closed))
    elif not live and since is not None:
        busy_s, since, closed = busy_s + max(0.0, (last if last is not None else since) - since), None, last
    elif not live and since_closed and last is not None:  # a retry began and ended unseen
        busy_s, closed = busy_s + max(0.0, last - max(floor, min(_run_start(row) for row in since_closed))), last
    return {"busy_s": busy_s, "busy_since": since, "closed_at": closed}


def _pending_id(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def set_aside_key(cache: diskcache.Cache, key: str, reason: str) -> None:
    """Move the value of ``key`` aside as it is stored (renamed to ``aside:<key>``, its bytes untouched, never
    decoded) and note why; run inside the caller's transaction."""
    cache.delete("aside:" + key)  # set aside before: the newer value is the one worth keeping
    cache._sql("UPDATE Cache SET key = ? WHERE key = ? AND raw = 1", ("aside:" + key, key))
    cache.set("asidewhy:" + key, json.dumps({"key": key, "reason": reason}, ensure_ascii=False))
    ix.add(cache, _ASIDE, key)
    log.warning("a record could not be read and was set aside", extra={"key": key, "reason": reason})


def inline_large_values(cache: diskcache.Cache) -> int:
    """Move every value that an older release let diskcache keep in a file into SQLite, one commit each; how many.

    Each is rewritten outside any outer transaction, so diskcache deletes the old file only after the new value
    is committed (a kill in between leaves an orphan file, never a missing value)."""
    rows = cache._sql("SELECT key, expire_time FROM Cache WHERE filename IS NOT NULL AND raw = 1").fetchall()
    moved = 0
    for key, expire_time in rows:
        try:
            value = cache.get(key)
        except pickle.UnpicklingError:
            continue  # not plain data: left as it is, for the migration to set aside
        if value is None:
            continue  # its file is already gone: nothing left to keep
        expire = None if expire_time is None else max(1.0, expire_time - time.time())
        cache.set(key, value, expire=expire)
        moved += 1
    if moved:
        log.info("moved values kept in files into the database", extra={"values": moved})
    return moved
