"""The engine: a pool of worker threads taking jobs through the pipeline.

Policies sit around a small worker loop, each in its own module: the
scheduler (priorities, upload cap, waiting without a worker), leases in the
store (one engine per job), the retry policy (retry.py) and poll limits
(limits.py). Commands from the UI or CLI (submit, cancel, retry, remove)
only touch the store and the scheduler; workers make every state change.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from . import demo
from .config import Settings, estimate_cost
from .errors import KEY_REJECTED_MESSAGE, Cancelled, GeminiError, Kind, StepFailed
from .gemini import Gateway
from .intake import Candidate, inspect_path
from .jobs import PRIORITY_RANK, Job, State, TransitionError
from .limits import PollLimits
from .logs import register_secret, setup_logging
from .media import thumbnail
from .pipeline import UPLOAD_PHASE, Pipeline, phase_of
from .scheduler import Scheduler
from .store import JobNotFound, JobStore, make_owner_id

log = logging.getLogger(__name__)
STORE_ERROR_RETRY_S = 5.0


class Engine:
    def __init__(self, settings: Settings, *, stderr_log_level: int = logging.INFO) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # videos and stories: owner only
        self.log_file = setup_logging(settings.data_dir, stderr_log_level)
        self.store = JobStore(settings.data_dir / "jobs")
        self.owner = make_owner_id(uuid.uuid4().hex[:8])
        self.scheduler = Scheduler(settings.max_uploads)
        self.polls = PollLimits(settings.max_polls, settings.polls_per_second)
        self._stopping = threading.Event()
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self.halted: str | None = None
        self.pipeline = Pipeline(self.store, self._gateway_for(settings.api_key), settings, self.polls,
                                 should_stop=self._stopping.is_set)
        self._threads: list[threading.Thread] = []

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> Engine:
        self._sweep()
        for i in range(self.settings.max_jobs):
            self._spawn(self._worker, f"storyteller-worker-{i}")
        self._spawn(self._lease_keeper, "storyteller-leases")
        log.info("engine started", extra={"owner": self.owner, "demo": self.demo, "workers": self.settings.max_jobs,
                                          "max_uploads": self.settings.max_uploads})
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking work, interrupt uploads at their next chunk, release every lease."""
        self._stopping.set()
        self.scheduler.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._held_lock:
            held, self._held = set(self._held), set()
        for job_id in held:
            self.store.release(job_id, self.owner)
        log.info("engine stopped", extra={"owner": self.owner})

    @property
    def healthy(self) -> bool:
        """Every worker and the lease keeper still running."""
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    @property
    def demo(self) -> bool:
        return self.settings.demo

    def set_api_key(self, api_key: str | None) -> None:
        """Use another key from now on (None: demo mode); clears a rejected-key halt."""
        self.settings = replace(self.settings, api_key=api_key)
        self.pipeline.gateway = self._gateway_for(api_key)
        self.halted = None

    def available_models(self) -> list[str]:
        return self.pipeline.gateway.list_models()

    # -- commands -----------------------------------------------------------------------
    def submit(
        self, candidates: Iterable[Candidate], *, prompt: str, model: str | None = None,
        priority: str = "normal", batch_id: str | None = None,
    ) -> list[Job]:
        """Create (or find) a job per candidate and queue it; refused files become FAILED jobs."""
        if priority not in PRIORITY_RANK:
            raise ValueError(f"priority must be one of {', '.join(PRIORITY_RANK)}")
        batch_id = batch_id or new_batch_id()
        model = model or self.settings.model
        jobs = []
        for candidate in candidates:
            job = self._existing_run(candidate) or self._create(candidate, prompt, model, priority, batch_id)
            jobs.append(job)
        return jobs

    def submit_paths(self, paths: Iterable[Path], **kwargs: object) -> list[Job]:
        return self.submit([inspect_path(Path(p), self.settings) for p in paths], **kwargs)  # type: ignore[arg-type]

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once. Running (here or elsewhere): at the next step boundary."""
        job = self.store.require(job_id)
        if job.state.terminal:
            return job
        running = job_id in self.scheduler.running()
        queued_here = not running and self.scheduler.remove(job_id)
        if queued_here or (not running and self.store.claim(job_id, self.owner, self.settings.lease_ttl_s)):
            job = self._finish(job_id, State.CANCELLED)
            self._release(job_id)
            return job
        return self.store.update(job_id, cancel_requested=True)

    def retry(self, job_id: str) -> Job:
        """Start a FAILED or CANCELLED job again from its furthest durable state."""
        job = self.store.require(job_id)
        if job.state not in (State.FAILED, State.CANCELLED):
            return job
        if job.failed_step == "intake":
            candidate = inspect_path(Path(job.source_path), self.settings)
            if not candidate.ok:
                return self.store.update(job_id, error_code=candidate.error_code, error_message=candidate.error_message)
            self.store.update(job_id, **_candidate_fields(candidate))
        job = self.store.transition(
            job_id, _resume_state(job), error_code=None, error_message=None, failed_step=None,
            poll_attempts=0, upload_count=0, cancel_requested=False,
        )
        self._enqueue(job)
        return job

    def remove(self, job_id: str) -> None:
        """Forget a job; a running step stops at its next boundary."""
        job = self.store.get(job_id)
        if job and not job.state.terminal:
            self.cancel(job_id)
        self.scheduler.remove(job_id)
        self._release(job_id)
        self.store.delete(job_id)

    def wait(self, job_ids: list[str], timeout: float | None = None, poll_s: float = 0.2) -> list[Job]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            jobs = self.store.jobs(job_ids)
            if all(job.state.terminal for job in jobs) or (deadline and time.monotonic() > deadline):
                return jobs
            time.sleep(poll_s)

    def snapshot(self) -> dict[str, object]:
        """What the engine is doing now, for the Queue page."""
        return {
            "running": self.scheduler.running(),
            "queued": self.scheduler.queued(),
            "uploads_running": self.scheduler.uploads_running(),
            "max_uploads": self.settings.max_uploads,
            "workers": self.settings.max_jobs,
            "polls_per_second": self.settings.polls_per_second,
            "halted": self.halted,
            "healthy": self.healthy,
            "demo": self.demo,
        }

    # -- workers -------------------------------------------------------------------
    def _worker(self) -> None:
        while not self._stopping.is_set():
            entry = self.scheduler.take(timeout=0.5)
            if entry is None:
                continue
            try:
                delay = self._run(entry.job_id)
            except Exception:  # e.g. the store itself cannot be written (disk full): keep the worker alive
                log.exception("could not record the job's progress; trying it again later", extra={"job_id": entry.job_id})
                delay = None
            finally:
                self.scheduler.done(entry.job_id)
            try:
                self._after_phase(entry.job_id, delay, entry.seq)
            except Exception:  # the store cannot even be read: try the job again later, as it was queued
                log.exception("could not read the job back; trying it again later", extra={"job_id": entry.job_id})
                self.scheduler.put(entry.job_id, entry.rank, delay=STORE_ERROR_RETRY_S, uploads=entry.uploads, seq=entry.seq)

    def _after_phase(self, job_id: str, delay: float | None, seq: int) -> None:
        """Queue the job's next phase, or give up its lease when it has ended."""
        job = self.store.get(job_id)
        if job is None or job.state.terminal:
            self._release(job_id)
        elif not self._stopping.is_set():
            self.scheduler.put(job_id, PRIORITY_RANK[job.priority], delay=STORE_ERROR_RETRY_S if delay is None else delay,
                               uploads=job.state in UPLOAD_PHASE, seq=seq)

    def _run(self, job_id: str) -> float | None:
        """One phase of one job; returns the delay before its next phase, None when done."""
        job = self.store.get(job_id)
        if job is None or job.state.terminal:
            return None
        phase = phase_of(job.state)
        try:
            if job.cancel_requested:
                self._finish(job_id, State.CANCELLED)
                return None
            if self.halted:
                raise GeminiError(Kind.AUTH, self.halted)
            return self.pipeline.run_phase(job)
        except Cancelled:
            if self._stopping.is_set():
                return None  # left in its durable state for the next start
            self._finish(job_id, State.CANCELLED)
        except StepFailed as exc:
            self._fail(job_id, exc.code, exc.message, phase)
        except GeminiError as exc:
            if exc.kind is Kind.AUTH:
                self._halt(job_id, phase)
            else:
                self._fail(job_id, *describe_gemini_error(exc, phase))
        except (TransitionError, JobNotFound) as exc:
            current = self.store.get(job_id)
            if current is None or current.state.terminal:  # cancelled or removed meanwhile
                log.info("job changed elsewhere; dropping it", extra={"job_id": job_id, "reason": str(exc)})
                return None
            self._fail_internal(job_id, phase, "illegal transition")
        except sqlite3.Error:
            raise  # the store cannot be written (disk full): the worker retries the job later
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            self._fail_internal(job_id, phase, "unexpected error")
        except Exception:
            self._fail_internal(job_id, phase, "unexpected error")
        return None

    def _fail_internal(self, job_id: str, phase: str, what: str) -> None:
        """A bug of ours: the traceback goes to the log, a plain message to the person."""
        log.exception(what, extra={"job_id": job_id, "phase": phase})
        self._fail(job_id, "internal_error", f"Something went wrong inside Video Storyteller during {phase}. "
                   f"Retry the video; if it happens again, send the log ({self.log_file}).", phase)

    def _halt(self, job_id: str, phase: str) -> None:
        self.halted = KEY_REJECTED_MESSAGE
        log.error("api key rejected; failing queued jobs", extra={"job_id": job_id})
        self._fail(job_id, "api_key_rejected", KEY_REJECTED_MESSAGE, phase)
        for queued in self.scheduler.queued():
            if self.scheduler.remove(queued):
                queued_job = self.store.get(queued)
                if queued_job and not queued_job.state.terminal:
                    self._fail(queued, "api_key_rejected", KEY_REJECTED_MESSAGE, phase_of(queued_job.state))
                self._release(queued)

    def _fail(self, job_id: str, code: str, message: str, phase: str) -> None:
        log.warning("job failed", extra={"job_id": job_id, "error_code": code, "failed_step": phase})
        self._finish(job_id, State.FAILED, error_code=code, error_message=message, failed_step=phase)

    def _finish(self, job_id: str, state: State, **fields: object) -> Job:
        job = self.store.transition(job_id, state, **fields)
        log.info("job finished", extra={"job_id": job_id, "state": state.value, "poll_attempts": job.poll_attempts,
                                        "seconds": round((job.completed_at or 0) - job.created_at, 3)})
        return job

    # -- leases: which engine works which job -----------------------------------------
    def _enqueue(self, job: Job, delay: float = 0.0) -> bool:
        if job.id in self.scheduler or not self.store.claim(job.id, self.owner, self.settings.lease_ttl_s):
            return False
        with self._held_lock:
            self._held.add(job.id)
        self.scheduler.put(job.id, PRIORITY_RANK[job.priority], delay=delay, uploads=job.state in UPLOAD_PHASE,
                           seq=self.scheduler.next_seq())
        return True

    def _release(self, job_id: str) -> None:
        with self._held_lock:
            self._held.discard(job_id)
        self.store.release(job_id, self.owner)

    def _sweep(self) -> None:
        """Take every unfinished job that no live engine holds (resume after a crash)."""
        for job in sorted(self.store.unfinished(), key=lambda j: j.created_at):
            if self._enqueue(job):
                log.info("resuming job", extra={"job_id": job.id, "state": job.state.value})

    def _lease_keeper(self) -> None:
        ttl = self.settings.lease_ttl_s
        last_sweep = time.monotonic()
        while not self._stopping.wait(ttl / 4):
            try:
                self._renew_leases(ttl)
                if time.monotonic() - last_sweep > ttl / 2:
                    self._sweep()
                    last_sweep = time.monotonic()
            except Exception:  # e.g. disk full: keep renewing once the store can be written again
                log.exception("could not renew leases; trying again")

    def _renew_leases(self, ttl: float) -> None:
        with self._held_lock:
            held = list(self._held)
        for lost in self.store.renew(held, self.owner, ttl):
            log.warning("lease lost to another engine", extra={"job_id": lost})
            self.scheduler.remove(lost)
            with self._held_lock:
                self._held.discard(lost)

    # -- helpers ------------------------------------------------------------------------
    def _spawn(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _gateway_for(self, api_key: str | None) -> Gateway:
        register_secret(api_key)
        if api_key:
            return Gateway(api_key, self.settings.base_url, self.settings.request_timeout_s)
        return Gateway(demo.DEMO_KEY, demo.emulator().base_url, self.settings.request_timeout_s)

    def _existing_run(self, candidate: Candidate) -> Job | None:
        """The same file already running (same path and content) is not queued twice."""
        if not candidate.ok:
            return None
        for job in self.store.jobs_by_sha(candidate.sha256):
            if not job.state.terminal and job.source_path == str(candidate.path):
                self._enqueue(job)
                return job
        return None

    def _create(self, candidate: Candidate, prompt: str, model: str, priority: str, batch_id: str) -> Job:
        job = Job(
            display_name=candidate.display_name, source_path=str(candidate.path), model=model, prompt=prompt, batch_id=batch_id,
            priority=priority, demo=self.demo, **_candidate_fields(candidate),
        )
        if not candidate.ok:
            job.state, job.completed_at = State.FAILED, job.created_at
            job.error_code, job.error_message, job.failed_step = candidate.error_code, candidate.error_message, "intake"
            return self.store.create(job)
        job.estimated_cost_usd = estimate_cost(model, job.duration_s, prompt)
        thumb = thumbnail(candidate.path, self.settings.data_dir / "thumbs" / f"{candidate.sha256}.jpg")
        job.thumbnail_path = str(thumb) if thumb else None
        done = self._completed_twin(candidate.sha256, model, prompt)
        if done is not None:
            job.state, job.progress, job.completed_at, job.reused_from = State.COMPLETED, 100, job.created_at, done.id
            for name in ("story", "finish_reason", "model_version", "prompt_tokens", "output_tokens", "total_tokens"):
                setattr(job, name, getattr(done, name))
            job.cost_usd = 0.0
            return self.store.create(job)
        self.store.create(job)
        self._enqueue(job)
        return job

    def _completed_twin(self, sha256: str, model: str, prompt: str) -> Job | None:
        for job in self.store.jobs_by_sha(sha256):
            if job.state is State.COMPLETED and job.model == model and job.prompt == prompt and job.story:
                return job
        return None


def describe_gemini_error(exc: GeminiError, phase: str) -> tuple[str, str, str]:
    """(error code, message for a person, phase) for a Gemini error that ended a job."""
    if exc.kind is Kind.TRANSIENT:
        if exc.code == 429:
            return ("quota_exhausted", f"Gemini's quota is exhausted (429 RESOURCE_EXHAUSTED) and it did not "
                    f"recover within the {phase} time budget. Wait a few minutes or check your plan's limits, "
                    "then retry.", phase)
        if exc.code is None:
            return ("network", f"Could not reach Gemini during {phase} ({exc.message}). Check the network "
                    "connection, then retry.", phase)
        return (f"gemini_{exc.code}", f"Gemini was unavailable ({exc.label}) for longer than the {phase} time "
                "budget. Retry later.", phase)
    return (f"gemini_{exc.code or 'error'}", f"Gemini refused the {phase} ({exc.label}: {exc.message}).", phase)


def new_batch_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


def _candidate_fields(candidate: Candidate) -> dict[str, object]:
    fields: dict[str, object] = {"sha256": candidate.sha256, "size_bytes": candidate.size_bytes, "mime_type": "video/mp4"}
    if candidate.probe:
        p = candidate.probe
        fields.update(duration_s=p.duration_s, width=p.width, height=p.height, video_codec=p.video_codec,
                      audio_codec=p.audio_codec, mime_type=p.mime_type)
    return fields


def _resume_state(job: Job) -> State:
    if job.error_code == "file_failed" or not job.file_usable():
        return State.CREATED
    return State.FILE_ACTIVE if job.gemini_state == "ACTIVE" else State.UPLOADED
