"""Open a data dir written by the release before Video and Analysis records: its jobs become both.

The old store kept one pickled dict per job ("job:<id>") with the video's
facts, its Gemini file, the prompt and the story mixed together. Each job
becomes an item in its batch, pointing at a video (by sha256) and an analysis
(by key); stories, tokens and costs are kept, unfinished work resumes.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .analysis import Analysis, AnalysisState, analysis_key
from .batch import Batch, Item
from .config import DEMO_BACKEND, GOOGLE_BACKEND
from .video import Video, VideoState

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)
_DONE = {"COMPLETED": AnalysisState.COMPLETED, "FAILED": AnalysisState.FAILED, "CANCELLED": AnalysisState.CANCELLED}


def migrate(store: Store) -> None:
    from .store import SCHEMA

    cache = store.cache
    with cache.transact():
        if cache.get("meta:schema") == SCHEMA:
            return  # another process migrated it meanwhile
        job_ids = [str(i) for i in _read(cache, "index:all") or []]
        jobs = [job for job in (_read(cache, f"job:{i}") for i in job_ids) if isinstance(job, dict) and "id" in job]
        batches = {str(job.get("batch_id")) for job in jobs} | set(map(str, _read(cache, "index:batches") or []))
        old_keys = ["index:all", "index:batches", "index:unfinished", *(f"index:batch:{b}" for b in batches)]
        old_keys += [key for i in job_ids for key in (f"job:{i}", f"lease:{i}")]
        old_keys += [f"index:sha:{job.get('sha256')}" for job in jobs]
        for key in old_keys:
            cache.delete(key)
        for job in sorted(jobs, key=lambda j: j.get("created_at", 0)):
            _migrate_job(store, job)
        cache.set("meta:schema", SCHEMA)
    if jobs:
        log.info("migrated the job store to videos and analyses", extra={"jobs": len(jobs)})


def _read(cache: Any, key: str) -> Any:
    """A value of the old store, or None when it is not plain data (see safe_disk.py)."""
    try:
        return cache.get(key)
    except pickle.UnpicklingError as exc:
        log.warning("skipped a value of the old job store that is not plain data", extra={"key": key, "error": str(exc)})
        return None


def _migrate_job(store: Store, job: dict[str, Any]) -> None:
    batch_id = str(job.get("batch_id") or "migrated")
    store.add_batch(Batch(id=batch_id, name=_batch_name(batch_id, job.get("display_name")),
                          created_at=job.get("created_at", time.time())))
    item = Item(id=str(job["id"]), batch_id=batch_id, display_name=job.get("display_name", "video"),
                source_path=job.get("source_path", ""), reused=bool(job.get("reused_from")),
                created_at=job.get("created_at", time.time()))
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
    fields = {k: job.get(k) for k in ("size_bytes", "mime_type", "duration_s", "width", "height", "video_codec",
                                       "audio_codec", "thumbnail_path", "gemini_name", "gemini_uri",
                                       "gemini_state", "gemini_expires_at")}
    state = VideoState.CREATED
    if job.get("gemini_name") and job.get("gemini_uri"):
        state = VideoState.FILE_ACTIVE if job.get("gemini_state") == "ACTIVE" else VideoState.UPLOADED
    return Video(id=job["sha256"], sha256=job["sha256"], display_name=job.get("display_name", "video"),
                 sources=[job["source_path"]] if job.get("source_path") else [], state=state,
                 backend=backend if state is not VideoState.CREATED else None,
                 **{k: v for k, v in fields.items() if v is not None})


def _analysis(job: dict[str, Any], video_id: str, backend: str) -> Analysis:
    model, prompt = job.get("model", ""), job.get("prompt", "")
    state = _DONE.get(str(job.get("state")), AnalysisState.WAITING)
    kept: dict[str, Any] = {k: job.get(k) for k in ("story", "finish_reason", "model_version", "prompt_tokens", "output_tokens",
                                     "total_tokens", "estimated_cost_usd", "cost_usd", "error_code",
                                     "error_message", "failed_step", "completed_at")}
    if state is not AnalysisState.COMPLETED:
        kept.update(story=None, cost_usd=None)
    return Analysis(id=analysis_key(video_id, model, prompt, {}, backend), video_id=video_id, model=model,
                    prompt=prompt, backend=backend, priority=job.get("priority", "normal"), state=state,
                    created_at=job.get("created_at", time.time()), **kept)


def _batch_name(batch_id: str, first_file: str | None) -> str:
    try:
        stamp = datetime.strptime(batch_id[:15], "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return batch_id
    return f"{stamp} · {first_file}" if first_file else stamp

