"""Bring a data dir written by an older release up to this one's layout (SCHEMA in store.py), one record at a time.

- Release 1 kept one pickled dict per job ("job:<id>") with the video's facts, its Gemini file, the prompt and
  the story mixed together. Each job becomes an item in its batch, pointing at a video (by sha256) and an
  analysis (by key); stories, tokens and costs are kept, unfinished work resumes.
- Release 2 kept each index as one JSON list (rewritten whole on every row). Each list becomes one small
  record per member (disk_index.py), and every row gets its status index and its batch's kept sums.

Every step is one transaction per record (or per list) that writes the new form and deletes the old one,
so a kill at any instant leaves each old record either still old or fully migrated, and the next start goes
on from there. An old record that cannot be read is set aside (kept as it was), never dropped.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from storyteller_core.records.analysis import Analysis, AnalysisState, analysis_key
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.video import Video, VideoState
from storyteller_core.settings import DEMO_BACKEND, GOOGLE_BACKEND
from storyteller_core.storage import disk_index as ix

if TYPE_CHECKING:
    import diskcache

    from storyteller_core.storage.disk_store import DiskStore

log = logging.getLogger(__name__)
_DONE = {"COMPLETED": AnalysisState.COMPLETED, "FAILED": AnalysisState.FAILED, "CANCELLED": AnalysisState.CANCELLED}
_FROM = "meta:migrating-from"  # the release a migration under way started from
_REINDEX_CHUNK = 500  # items re-indexed per transaction


def migrate(store: DiskStore) -> None:
    from storyteller_core.storage.disk_store import SCHEMA

    cache = store.cache
    with cache.transact():
        if cache.get("meta:schema") == SCHEMA:
            return  # another process migrated it meanwhile
        start = cache.get(_FROM) or cache.get("meta:schema") or 1
        cache.set(_FROM, start)
    if start == 1:
        jobs = _migrate_jobs(store)
        for key in _keys(cache, "index:"):  # release 1's lists of job ids: rebuilt from the jobs themselves
            cache.delete(key)
        if jobs:
            log.info("migrated the job store to videos and analyses", extra={"jobs": jobs})
    else:
        _migrate_lists(store)
    _reindex_rows(store)
    with cache.transact():
        cache.set("meta:schema", SCHEMA)
        cache.delete(_FROM)


def _keys(cache: diskcache.Cache, prefix: str) -> list[str]:
    rows = cache._sql(
        "SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND key < ? ORDER BY key", (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))
    ).fetchall()
    return [str(key) for (key,) in rows]


def _migrate_jobs(store: DiskStore) -> int:
    """Release 1 -> now: each job in its own transaction, which also deletes it (so a restart skips it)."""
    from storyteller_core.storage.disk_store import set_aside_key

    cache, migrated = store.cache, 0
    for key in _keys(cache, "job:"):
        with cache.transact():
            job = _read(cache, key)
            if not isinstance(job, dict):
                if _exists(cache, key):
                    set_aside_key(cache, key, "not a job record of the old store (not plain data, or not a dict)")
                continue
            job.setdefault("id", key.removeprefix("job:"))
            try:
                _migrate_job(store, job)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                set_aside_key(cache, key, f"could not be migrated ({type(exc).__name__}: {str(exc)[:200]})")
                continue
            cache.delete(key)
            cache.delete(f"lease:{job.get('id')}")
            migrated += 1
    return migrated


def _exists(cache: diskcache.Cache, key: str) -> bool:
    return cache._sql("SELECT 1 FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchone() is not None


def _migrate_lists(store: DiskStore) -> None:
    """Release 2 -> now: each JSON list becomes one record per member, in one transaction with its deletion."""
    cache = store.cache
    for key in _keys(cache, "index:"):
        with cache.transact():
            ids = _read(cache, key)
            if isinstance(ids, str):
                ids = json.loads(ids)
            ix.extend(cache, key.removeprefix("index:"), [str(i) for i in ids or [] if i])
            cache.delete(key)
    with cache.transact():
        text = cache.get("pending")
        if isinstance(text, str):
            store.add_pending(entry for entry in json.loads(text) if isinstance(entry, dict))
        cache.delete("pending")


def _reindex_rows(store: DiskStore) -> None:
    """Give every row its status index and its batch its kept sums (idempotent: a restart redoes it at no harm)."""
    item_ids = store.item_ids()
    for start in range(0, len(item_ids), _REINDEX_CHUNK):
        with store.cache.transact():
            for item in store.many(Item, item_ids[start : start + _REINDEX_CHUNK]):
                store._reindex(item)


def _read(cache: Any, key: str) -> Any:
    """A value of the old store, or None when it is not plain data (see safe_disk.py)."""
    try:
        return cache.get(key)
    except pickle.UnpicklingError as exc:
        log.warning("skipped a value of the old job store that is not plain data", extra={"key": key, "error": str(exc)})
        return None


def _migrate_job(store: DiskStore, job: dict[str, Any]) -> None:
    job["created_at"] = _seconds(job.get("created_at"))
    job["completed_at"] = _seconds(job.get("completed_at")) if job.get("completed_at") is not None else None
    for name in ("display_name", "source_path", "sha256", "model", "prompt"):
        if job.get(name) is not None and not isinstance(job[name], str):
            job[name] = str(job[name])
    batch_id = str(job.get("batch_id") or "migrated")
    store.add_batch(Batch(id=batch_id, name=_batch_name(batch_id, job.get("display_name")), created_at=job["created_at"]))
    item = Item(
        id=str(job["id"]),
        batch_id=batch_id,
        display_name=job.get("display_name") or "video",
        source_path=job.get("source_path") or "",
        reused=bool(job.get("reused_from")),
        created_at=job["created_at"],
    )
    if job.get("failed_step") == "intake" or not job.get("sha256"):
        item.error_code, item.error_message = job.get("error_code"), job.get("error_message")
        store.add_item(item)
        return
    backend = DEMO_BACKEND if job.get("demo") else (os.environ.get("GOOGLE_GEMINI_BASE_URL") or GOOGLE_BACKEND)
    video = store.add_video(_video(job, backend))
    item.video_id = video.id
    analysis, created = store.add_analysis(_analysis(job, video.id, backend))
    if not created and analysis.state is not AnalysisState.COMPLETED and job.get("state") == "COMPLETED":
        store.delete_analysis(analysis.id)  # a duplicate job that did finish wins
        analysis, _ = store.add_analysis(_analysis(job, video.id, backend))
    item.analysis_id = analysis.id
    store.add_item(item)


def _video(job: dict[str, Any], backend: str) -> Video:
    fields = {
        k: job.get(k)
        for k in (
            "size_bytes",
            "mime_type",
            "duration_s",
            "width",
            "height",
            "video_codec",
            "audio_codec",
            "thumbnail_path",
            "gemini_name",
            "gemini_uri",
            "gemini_state",
            "gemini_expires_at",
        )
    }
    state = VideoState.CREATED
    if job.get("gemini_name") and job.get("gemini_uri"):
        state = VideoState.FILE_ACTIVE if job.get("gemini_state") == "ACTIVE" else VideoState.UPLOADED
    return Video(
        id=job["sha256"],
        sha256=job["sha256"],
        display_name=job.get("display_name", "video"),
        sources=[job["source_path"]] if job.get("source_path") else [],
        state=state,
        backend=backend if state is not VideoState.CREATED else None,
        **{k: v for k, v in fields.items() if v is not None},
    )


def _analysis(job: dict[str, Any], video_id: str, backend: str) -> Analysis:
    model, prompt = job.get("model", ""), job.get("prompt", "")
    state = _DONE.get(str(job.get("state")), AnalysisState.WAITING)
    kept: dict[str, Any] = {
        k: job.get(k)
        for k in (
            "story",
            "finish_reason",
            "model_version",
            "prompt_tokens",
            "output_tokens",
            "total_tokens",
            "estimated_cost_usd",
            "cost_usd",
            "error_code",
            "error_message",
            "failed_step",
            "completed_at",
        )
    }
    for name in ("prompt_tokens", "output_tokens", "total_tokens"):
        kept[name] = _number(kept[name], int)
    for name in ("estimated_cost_usd", "cost_usd"):
        kept[name] = _number(kept[name], float)
    if state is not AnalysisState.COMPLETED:
        kept.update(story=None, cost_usd=None)
    return Analysis(
        id=analysis_key(video_id, model, prompt, {}, backend),
        video_id=video_id,
        model=model,
        prompt=prompt,
        backend=backend,
        priority=job.get("priority", "normal"),
        state=state,
        created_at=job.get("created_at", time.time()),
        **kept,
    )


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    """``value`` as ``kind`` when it reads as a number (also from text), else None."""
    try:
        return None if value is None or isinstance(value, bool) else kind(float(value))
    except (TypeError, ValueError):
        return None


def _seconds(value: Any) -> float:
    """A time of the old store as seconds since the epoch: a number, a number as text, or an ISO date; now if none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                pass
    return time.time()


def _batch_name(batch_id: str, first_file: str | None) -> str:
    try:
        stamp = datetime.strptime(batch_id[:15], "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return batch_id
    return f"{stamp} · {first_file}" if first_file else stamp
