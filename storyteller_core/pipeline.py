"""The steps of one video's life: upload, wait for processing, analyze.

Each phase reads the job from the store, does one piece of work, and records
the result with ``store.transition`` before returning. Every phase can run
again after a crash without harm: the upload first asks Gemini whether the
file (named by its sha256) already exists, and a poll or an analysis simply
runs once more.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from .config import Settings, cost_usd
from .errors import Cancelled, GeminiError, Kind, StepFailed
from .gemini import Gateway, RemoteFile, file_name_for
from .jobs import UPLOAD_PROGRESS_SPAN, Job, State
from .limits import PollLimits
from .retry import call_with_retry
from .store import JobStore

log = logging.getLogger(__name__)

UPLOAD_PHASE = frozenset({State.CREATED, State.UPLOADING})
POLL_PHASE = frozenset({State.UPLOADED, State.FILE_PROCESSING})
ANALYZE_PHASE = frozenset({State.FILE_ACTIVE, State.ANALYZING})
MAX_UPLOADS_PER_JOB = 3


def phase_of(state: State) -> str:
    if state in UPLOAD_PHASE:
        return "upload"
    if state in POLL_PHASE:
        return "processing"
    if state in ANALYZE_PHASE:
        return "analysis"
    return "done"


def poll_delay(attempt: int, settings: Settings) -> float:
    """1 s, x1.5 per attempt, capped at 10 s, with +-20 % jitter (by default)."""
    base = min(settings.poll_max_s, settings.poll_initial_s * settings.poll_factor ** max(0, attempt - 1))
    return base * random.uniform(1 - settings.poll_jitter, 1 + settings.poll_jitter)


@dataclass
class Pipeline:
    store: JobStore
    gateway: Gateway
    settings: Settings
    polls: PollLimits
    should_stop: Callable[[], bool] = lambda: False

    def __post_init__(self) -> None:
        self._uploading: set[str] = set()
        self._uploading_lock = threading.Lock()

    def run_phase(self, job: Job) -> float | None:
        """Do the job's next phase; return seconds until the next one, or None when terminal."""
        if job.state in UPLOAD_PHASE:
            return self.upload(job)
        if job.state in POLL_PHASE:
            return self.poll(job)
        if job.state in ANALYZE_PHASE:
            return self.analyze(job)
        return None

    # -- upload ------------------------------------------------------------------
    def upload(self, job: Job) -> float | None:
        with self._uploading_lock:
            if job.sha256 in self._uploading:
                return 1.0  # the same content is uploading for another job: reuse its file
            self._uploading.add(job.sha256)
        try:
            return self._upload(job)
        finally:
            with self._uploading_lock:
                self._uploading.discard(job.sha256)

    def _upload(self, job: Job) -> float:
        name = file_name_for(job.sha256)
        budget = self.settings.upload_budget_s
        existing = None
        if self._may_exist(job):
            wait = self.polls.try_start()  # files.get counts against the same rate as polls
            if wait:
                return wait
            try:
                existing = call_with_retry(lambda: self.gateway.get_file(name), budget)
            finally:
                self.polls.finish()
        if existing and existing.state != "FAILED" and self._fresh(existing):
            log.info("gemini file already exists; not uploading", extra={"job_id": job.id, "gemini_name": name})
            self._record_file(job, existing)
            return 0.0
        if existing:  # FAILED or about to expire: start clean
            call_with_retry(lambda: self.gateway.delete_file(name), budget)
        if job.upload_count >= MAX_UPLOADS_PER_JOB:
            raise StepFailed("too_many_uploads", f"{job.display_name} was uploaded {job.upload_count} times "
                             "and the file kept disappearing from Gemini. Retry later.")
        source = Path(job.source_path)
        if not source.is_file():
            raise StepFailed("source_missing", f"{job.display_name} is no longer at {source}. "
                             "Add the file again.")
        self.store.transition(job.id, State.UPLOADING, upload_count=job.upload_count + 1)
        started = time.monotonic()
        log.info("upload start", extra={"job_id": job.id, "file_size": job.size_bytes, "chunk_size": 8 * 1024**2,
                                         "gemini_name": name, "rss_mb": _rss_mb()})
        remote = call_with_retry(
            lambda: self.gateway.upload(source, name=name, display_name=job.display_name,
                                        mime_type=job.mime_type, on_progress=self._progress_writer(job)),
            budget,
        )
        log.info("upload end", extra={"job_id": job.id, "gemini_name": remote.name, "rss_mb": _rss_mb(),
                                       "seconds": round(time.monotonic() - started, 3)})
        self._record_file(job, remote)
        return 0.0

    def _may_exist(self, job: Job) -> bool:
        """Could Gemini already hold this content? (A fresh file that does answers 409 on create.)"""
        if job.state is State.UPLOADING or job.gemini_name:  # a crash mid-upload, or a file from before
            return True
        return any(other.gemini_name for other in self.store.jobs_by_sha(job.sha256) if other.id != job.id)

    def _progress_writer(self, job: Job) -> Callable[[int], None]:
        low, high = UPLOAD_PROGRESS_SPAN
        total = max(1, job.size_bytes)
        last_write = [0.0]

        def on_progress(sent: int) -> None:
            if self.should_stop():
                raise Cancelled("engine stopping")
            now = time.monotonic()
            if now - last_write[0] < 0.5 and sent < total:
                return
            last_write[0] = now
            current = self.store.update(job.id, progress=low + (high - low) * min(sent, total) // total)
            if current.cancel_requested:
                raise Cancelled("cancel requested")

        return on_progress

    def _record_file(self, job: Job, remote: RemoteFile) -> None:
        self.store.transition(
            job.id, State.UPLOADED, gemini_name=remote.name, gemini_uri=remote.uri,
            gemini_state=remote.state, gemini_expires_at=remote.expires_at or time.time() + self.settings.file_ttl_s,
        )

    def _fresh(self, remote: RemoteFile) -> bool:
        return remote.expires_at is None or remote.expires_at > time.time() + 15 * 60

    # -- processing -------------------------------------------------------------------
    def poll(self, job: Job) -> float:
        if job.state is State.UPLOADED:
            job = self.store.transition(job.id, State.FILE_PROCESSING, poll_attempts=0)
        started = job.state_entered_at.get(State.FILE_PROCESSING.value, time.time())
        if time.time() - started > self.settings.processing_budget_s:
            raise StepFailed("processing_timeout", f"Gemini was still processing {job.display_name} after "
                             f"{self.settings.processing_budget_s / 60:.0f} min. Retry later.")
        assert job.gemini_name
        wait = self.polls.try_start()
        if wait:
            return wait  # over the poll rate: give the worker back until a slot frees
        try:
            remote = self.gateway.get_file(job.gemini_name)
        except GeminiError as exc:
            if exc.kind is not Kind.TRANSIENT:
                raise
            job = self.store.update(job.id, poll_attempts=job.poll_attempts + 1)
            return poll_delay(job.poll_attempts, self.settings)
        finally:
            self.polls.finish()
        job = self.store.update(job.id, poll_attempts=job.poll_attempts + 1,
                                gemini_state=remote.state if remote else "GONE")
        if remote is None:
            log.warning("gemini file gone while processing; uploading again", extra={"job_id": job.id})
            self.store.transition(job.id, State.CREATED)
            return 0.0
        if remote.state == "ACTIVE":
            self.store.transition(job.id, State.FILE_ACTIVE, gemini_expires_at=remote.expires_at or job.gemini_expires_at)
            log.info("file active", extra={"job_id": job.id, "poll_attempts": job.poll_attempts,
                                           "processing_s": round(time.time() - started, 3)})
            return 0.0
        if remote.state == "FAILED":
            raise StepFailed("file_failed", f"Gemini could not process {job.display_name}: "
                             f"{remote.error or 'no reason given'}. Check that the video plays, then retry.")
        return poll_delay(job.poll_attempts, self.settings)

    # -- analysis -----------------------------------------------------------------------
    def analyze(self, job: Job) -> float | None:
        if not job.file_usable():
            self.store.transition(job.id, State.CREATED)
            return 0.0
        job = self.store.transition(job.id, State.ANALYZING)
        assert job.gemini_uri
        try:
            result = call_with_retry(
                lambda: self.gateway.generate(model=job.model, file_uri=job.gemini_uri or "", mime_type=job.mime_type,
                                              prompt=job.prompt, timeout_s=self.settings.analysis_budget_s),
                self.settings.analysis_budget_s,
            )
        except GeminiError as exc:
            if exc.kind in (Kind.GONE, Kind.NOT_READY):
                log.warning("gemini file not usable for analysis; uploading again",
                            extra={"job_id": job.id, "error": exc.label})
                self.store.transition(job.id, State.CREATED)
                return 0.0
            raise
        if not result.text:
            reason = result.block_reason or result.finish_reason or "no reason given"
            raise StepFailed("empty_answer", f"Gemini returned no story for {job.display_name} ({reason}). "
                             "Try another prompt or model, then retry.")
        prompt_tokens, output_tokens = result.prompt_tokens or 0, result.output_tokens or 0
        self.store.transition(
            job.id, State.COMPLETED, story=result.text, finish_reason=result.finish_reason,
            model_version=result.model_version, prompt_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens, total_tokens=result.total_tokens,
            cost_usd=cost_usd(job.model, prompt_tokens, output_tokens),
        )
        return None


def _rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 1024**2, 1)
