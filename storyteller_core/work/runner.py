"""The runner: worker threads that take tasks from the scheduler, run one step, and record what came of it.

A task is a video's next step (upload, processing) or an analysis's. An
analysis whose video's file is not ready asks for the video's task and parks,
holding no worker and no lease; when the video's step ends (ACTIVE or FAILED)
the runner wakes every analysis of that video. Errors become states here:
every way a step can end maps to one record change, written to the store.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from storyteller_core.errors import KEY_REJECTED_MESSAGE, Cancelled, Code, GeminiError, Kind, QuotaPaused, StepFailed
from storyteller_core.gemini import askers
from storyteller_core.gemini.reach import working_on
from storyteller_core.intake.spool import release_spool
from storyteller_core.records.analysis import PRIORITY_RANK, Analysis, AnalysisState
from storyteller_core.records.record import TransitionError
from storyteller_core.records.video import Video, VideoState
from storyteller_core.sanitize import scrub
from storyteller_core.steps import Next, Outcome
from storyteller_core.steps.analysis_step import analyze
from storyteller_core.steps.batch_tier_submit import in_batch_job, left_batch_job
from storyteller_core.steps.processing_step import wait_for_processing
from storyteller_core.steps.step_context import StepContext
from storyteller_core.steps.upload_step import upload
from storyteller_core.storage.disk_store import NotFound
from storyteller_core.work.gate import Gate
from storyteller_core.work.leases import Leases
from storyteller_core.work.scheduler import Scheduler
from storyteller_core.work.status_watch import StatusWatch

log = logging.getLogger(__name__)
STORE_ERROR_RETRY_S = 5.0
STOP_CHECK_EVERY_S = 0.5
UPLOAD_STATES = (VideoState.CREATED, VideoState.UPLOADING)


class Runner:
    # An analysis asked of another Gemini is left (never failed) for the app or CLI that has its key, which share
    # this data folder. Team mode's workers are the only ones that work a team's rows: they fail it, saying why.
    LEAVES_OTHER_BACKENDS = True

    def __init__(self, ctx: StepContext, gate: Gate, scheduler: Scheduler, leases: Leases, log_file: Path) -> None:
        self.ctx = ctx
        self.gate = gate
        self.scheduler = scheduler
        self.leases = leases
        self.log_file = log_file
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.watch: StatusWatch | None = None  # learns processing files' states in bulk; None: each video polls alone
        self.on_sweep: Callable[[], None] | None = None  # also done with every sweep (the engine: unfinished intakes)

    # -- life cycle ---------------------------------------------------------------------
    def start(self, workers: int) -> None:
        askers.note(self.ctx.settings)  # which key this data folder's rows of this backend are asked with
        self.sweep()
        for i in range(workers):
            self._spawn(self._worker, f"storyteller-worker-{i}")
        self._spawn(self._keeper, "storyteller-leases")

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        self.scheduler.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.leases.release_all()

    @property
    def healthy(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    # -- queueing --------------------------------------------------------------------------
    def enqueue(self, task: str, delay: float = 0.0) -> bool:
        """Queue ``task`` here unless it is queued already or another engine holds it."""
        if task in self.scheduler:
            return True
        if self.leaves_other_backends and not self.can_do(task):
            return False  # asked of another Gemini: left, unclaimed, for the app or CLI that has its key
        if not self.leases.claim(task):
            return False
        rank, uploads = self._placement(task)
        self.scheduler.put(task, rank, delay=delay, uploads=uploads, seq=self.scheduler.next_seq())
        return True

    def dequeue(self, task: str) -> bool:
        """Take a queued (not running) task off this engine; True when it was here."""
        if not self.scheduler.remove(task):
            return False
        self.leases.release(task)
        return True

    def running(self, task: str) -> bool:
        return task in self.scheduler.running()

    @property
    def leaves_other_backends(self) -> bool:
        return self.LEAVES_OTHER_BACKENDS and not hasattr(self, "dispatcher")  # team/dispatch.py's TeamRunner has one

    def can_do(self, task: str) -> bool:
        """Whether this engine's Gemini (its backend) can do ``task``.

        An analysis asked of another backend (demo mode, another server) is never this engine's: its video's
        file lives there. It is left unclaimed and unfailed for the app or CLI that has that key, and its row
        says so (rows.waiting_for). A video's step is this engine's only while one of its own analyses needs it.
        """
        kind, record_id = task.split(":", 1)
        backend = self.ctx.settings.backend
        store = self.ctx.store
        if kind == "analysis":
            analysis = store.get(Analysis, record_id)
            return analysis is None or analysis.state.terminal or analysis.backend == backend
        unfinished = [a for a in store.analyses_of(record_id) if not a.state.terminal]
        return not unfinished or any(a.backend == backend for a in unfinished)

    def _needed_here(self, video_id: str) -> bool:
        """Some unfinished analysis of this engine's backend still needs the video's file."""
        backend = self.ctx.settings.backend
        return any(
            a.state in (AnalysisState.WAITING, AnalysisState.ANALYZING) and a.backend == backend
            for a in self.ctx.store.analyses_of(video_id)
        )

    def sweep(self) -> None:
        """Queue every unfinished analysis no engine works on (resume after a crash or a restart)."""
        if self.on_sweep is not None:
            self.on_sweep()
        backend = self.ctx.settings.backend
        askers.note(self.ctx.settings)
        for analysis in sorted(self.ctx.store.unfinished(), key=lambda a: a.created_at):
            if analysis.backend != backend and self.leaves_other_backends:
                continue  # another Gemini's: left for the app or CLI that has its key
            task = f"analysis:{analysis.id}"
            if task in self.scheduler or f"video:{analysis.video_id}" in self.scheduler:
                continue  # queued, or parked behind its video's step here
            if self.enqueue(task):
                log.info("resuming analysis", extra={"analysis_id": analysis.id, "state": analysis.state.value})

    def _placement(self, task: str) -> tuple[int, bool]:
        """(priority rank, needs an upload slot) of a task, from its record."""
        kind, record_id = task.split(":", 1)
        store = self.ctx.store
        if kind == "analysis":
            analysis = store.get(Analysis, record_id)
            return PRIORITY_RANK[analysis.priority if analysis else "normal"], False
        video = store.get(Video, record_id)
        ranks = [PRIORITY_RANK[a.priority] for a in store.analyses_of(record_id) if not a.state.terminal]
        return min(ranks, default=1), bool(video and video.state in UPLOAD_STATES)

    # -- workers -----------------------------------------------------------------------------
    def _worker(self) -> None:
        while not self.stopping.is_set():
            entry = self.scheduler.take(timeout=0.5)
            if entry is None:
                continue
            try:
                with working_on(entry.task):  # a retry's note is kept under this task while the step runs
                    outcome = self.run(entry.task)
            except Exception:  # e.g. the store cannot be written (disk full): keep the worker alive
                log.exception("could not record a step; trying it again later", extra={"task": entry.task})
                outcome = Outcome.later(STORE_ERROR_RETRY_S)
            finally:
                self.scheduler.done(entry.task)
            try:
                self._after(entry.task, outcome, entry.seq)
            except Exception:  # the store cannot even be read: try again later, as it was queued
                log.exception("could not queue the next step; trying again later", extra={"task": entry.task})
                self.scheduler.put(entry.task, entry.rank, delay=STORE_ERROR_RETRY_S, uploads=entry.uploads, seq=entry.seq)

    def _after(self, task: str, outcome: Outcome, seq: int) -> None:
        if outcome.next is Next.STOP or self.stopping.is_set():
            return
        kind, record_id = task.split(":", 1)
        if outcome.next in (Next.NOW, Next.LATER):
            rank, uploads = self._placement(task)
            self.scheduler.put(task, rank, delay=outcome.delay_s, uploads=uploads, seq=seq)
            return
        self.leases.release(task)
        if kind == "video":
            self.wake(record_id)
        elif outcome.next is Next.PARK:
            video = self.ctx.store.get(Video, self._video_of(record_id))
            if video and (video.state is VideoState.FAILED or video.file_usable(self.ctx.settings.backend)):
                self.enqueue(task)  # the video settled while this analysis was parking
        else:
            analysis = self.ctx.store.get(Analysis, record_id)
            if analysis:
                release_spool(self.ctx.store, analysis.video_id, self.ctx.settings.spool_dir)

    def wake(self, video_id: str) -> None:
        """The video's file is ready (or failed): run every analysis that waits for it."""
        for analysis in self.ctx.store.analyses_of(video_id):
            if not analysis.state.terminal:
                self.enqueue(f"analysis:{analysis.id}")

    def _video_of(self, analysis_id: str) -> str:
        analysis = self.ctx.store.get(Analysis, analysis_id)
        return analysis.video_id if analysis else ""

    # -- one step ---------------------------------------------------------------------------------
    def run(self, task: str) -> Outcome:
        kind, record_id = task.split(":", 1)
        step = self._step_name(kind, record_id)
        try:
            if kind == "video":
                return self._video_step(record_id)
            return self._analysis_step(record_id)
        except Cancelled:
            if self.stopping.is_set():
                return Outcome.stop()  # left in its durable state for the next start
            self._cancelled(kind, record_id)
        except QuotaPaused as exc:
            log.warning("quota exhausted; pausing", extra={"task": task, "resume_at": exc.resume_at})
            if kind == "analysis":  # not "Writing story" while nobody writes: it waits, and the banner says why
                analysis = self.ctx.store.get(Analysis, record_id)
                if analysis and analysis.state is AnalysisState.ANALYZING:
                    self.ctx.store.transition(Analysis, record_id, AnalysisState.WAITING)
            return Outcome.later(exc.resume_at - time.time())
        except StepFailed as exc:
            self._fail(kind, record_id, exc.code, exc.message, step)
        except GeminiError as exc:
            self._gemini_failed(kind, record_id, exc, step)
        except (TransitionError, NotFound) as exc:
            log.info("record changed elsewhere; dropping the step", extra={"task": task, "reason": str(exc)})
        except sqlite3.Error:
            raise  # the store cannot be written (disk full): the worker tries the task again later
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            self._fail_internal(kind, record_id, step)
        except Exception:
            self._fail_internal(kind, record_id, step)
        return Outcome.done()

    def _video_step(self, video_id: str) -> Outcome:
        store, backend = self.ctx.store, self.ctx.settings.backend
        video = store.get(Video, video_id)
        if video is None or video.state is VideoState.FAILED:
            return Outcome.done()
        if not (self._needed_here(video_id) if self.leaves_other_backends else store.needs_video(video_id)):
            if video.state is VideoState.UPLOADING:
                store.transition(Video, video_id, VideoState.CREATED)  # nobody here waits for it any more
            return Outcome.done()
        hold = self.gate.check()
        if hold:
            return Outcome.later(hold)
        if video.state is VideoState.FILE_ACTIVE and video.file_usable(backend):
            return Outcome.done()
        if video.state is not VideoState.CREATED and (video.state is VideoState.FILE_ACTIVE or video.backend != backend):
            video = store.transition(Video, video_id, VideoState.CREATED)  # expired, or on another backend
        should_stop = self._stop_check(
            lambda: not (self._needed_here(video_id) if self.leaves_other_backends else store.needs_video(video_id))
        )
        if video.state in UPLOAD_STATES:
            return upload(self.ctx, video, should_stop)
        return wait_for_processing(self.ctx, video, should_stop, self.watch)

    def _analysis_step(self, analysis_id: str) -> Outcome:
        store, backend = self.ctx.store, self.ctx.settings.backend
        analysis = store.get(Analysis, analysis_id)
        if analysis is None or analysis.state.terminal:
            return Outcome.done()
        items = store.items_of(analysis_id)
        if not any(not item.cancelled for item in items) and (analysis.cancel_requested or items):
            self._cancelled("analysis", analysis_id)  # nobody wants it (a row still being made has no item yet)
            return Outcome.done()
        if analysis.backend != backend:
            if not self.leaves_other_backends:  # a team worker: no other process on this store will do it
                raise StepFailed(
                    Code.GEMINI_REFUSED,
                    "This analysis was asked of another Gemini (demo mode, another "
                    "server or key) than the team's workers use. Press Retry to ask theirs.",
                )
            log.info("analysis asked of another gemini; leaving it", extra={"analysis_id": analysis_id})
            return Outcome.done()  # the key changed since it was queued: left for the app or CLI that has its key
        hold = self.gate.check(analysis.model)
        if hold:
            return Outcome.later(hold)
        video = store.require(Video, analysis.video_id)
        in_job = analysis.tier == "batch" and bool(analysis.batch_job)  # its answer comes from the job, not the file
        if video.state is VideoState.FAILED and not in_job:
            store.transition(
                Analysis,
                analysis_id,
                AnalysisState.FAILED,
                error_code=video.error_code,
                error_message=video.error_message,
                failed_step=video.failed_step,
            )
            return Outcome.done()
        if video.file_usable(backend) or in_job:
            should_stop = self._stop_check(lambda: store.require(Analysis, analysis_id).cancel_requested)
            if analysis.tier == "batch":  # asked through a Gemini batch job (steps/batch_tier_submit.py)
                return in_batch_job(self.ctx, analysis, video, should_stop)
            return analyze(self.ctx, analysis, video, should_stop)
        if analysis.state is AnalysisState.ANALYZING:
            store.transition(Analysis, analysis_id, AnalysisState.WAITING)
        self.enqueue(f"video:{video.id}")  # held elsewhere: that engine wakes this analysis when the file is ready
        return Outcome.park()

    def _stop_check(self, unwanted: Callable[[], bool]) -> Callable[[], bool]:
        """should_stop for a step: the engine is stopping, or (read at most every 0.5 s) nobody wants the work."""
        last = [time.monotonic(), False]

        def should_stop() -> bool:
            if self.stopping.is_set():
                return True
            if time.monotonic() - last[0] >= STOP_CHECK_EVERY_S:
                last[0], last[1] = time.monotonic(), unwanted()
            return bool(last[1])

        return should_stop

    # -- how a step ended ------------------------------------------------------------------------
    def _step_name(self, kind: str, record_id: str) -> str:
        if kind == "analysis":
            return "analysis"
        video = self.ctx.store.get(Video, record_id)
        return "upload" if video is None or video.state in UPLOAD_STATES else "processing"

    def _cancelled(self, kind: str, record_id: str) -> None:
        store = self.ctx.store
        if kind == "analysis":
            store.transition(Analysis, record_id, AnalysisState.CANCELLED)
            log.info("analysis cancelled", extra={"analysis_id": record_id})
            left_batch_job(self.ctx, record_id)  # and its Gemini batch job, when nobody else waits for it
            return
        video = store.get(Video, record_id)
        if video and video.state is VideoState.UPLOADING:
            store.transition(Video, record_id, VideoState.CREATED)

    def _gemini_failed(self, kind: str, record_id: str, exc: GeminiError, step: str) -> None:
        if exc.kind is Kind.AUTH:
            self.gate.reject_key()
            log.error("api key rejected; no more calls until a new key is set", extra={"task": f"{kind}:{record_id}"})
            self._fail(kind, record_id, Code.API_KEY_REJECTED, KEY_REJECTED_MESSAGE, step)
        elif exc.kind is Kind.MODEL and kind == "analysis":
            model = self.ctx.store.require(Analysis, record_id).model
            self._fail(kind, record_id, Code.MODEL_NOT_FOUND, self.gate.model_missing(model, exc.message), step)
        else:
            self._fail(kind, record_id, *describe_gemini_error(exc, step), step)

    def _fail_internal(self, kind: str, record_id: str, step: str) -> None:
        """A bug of ours: the traceback goes to the log, a plain message to the person."""
        log.exception("unexpected error", extra={"task": f"{kind}:{record_id}", "step": step})
        self._fail(
            kind,
            record_id,
            Code.INTERNAL,
            f"Something went wrong inside Video Storyteller during the {step}. "
            f"Retry the video; if it happens again, send the log ({self.log_file}).",
            step,
        )

    def _fail(self, kind: str, record_id: str, code: str, message: str, step: str) -> None:
        log.warning("step failed", extra={"task": f"{kind}:{record_id}", "error_code": str(code), "failed_step": step})
        cls: type[Video] | type[Analysis] = Video if kind == "video" else Analysis
        state = VideoState.FAILED if kind == "video" else AnalysisState.FAILED
        self.ctx.store.transition(
            cls, record_id, state, error_code=str(code), error_message=scrub(message), failed_step=step
        )  # a server may echo the key back: never store it

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _keeper(self) -> None:
        """Renew this engine's leases; now and then take over work no live engine holds."""
        ttl = self.leases.ttl_s
        last_sweep = time.monotonic()
        while not self.stopping.wait(ttl / 4):
            try:
                for lost in self.leases.renew():
                    log.warning("lease lost to another engine", extra={"task": lost})
                    self.scheduler.remove(lost)
                if time.monotonic() - last_sweep > ttl / 2:
                    self.sweep()
                    last_sweep = time.monotonic()
            except Exception:  # e.g. disk full: keep renewing once the store can be written again
                log.exception("could not renew leases; trying again")


def describe_gemini_error(exc: GeminiError, step: str) -> tuple[Code, str]:
    """(code, message for a person) for a Gemini error that ended a step."""
    if exc.kind is Kind.TRANSIENT:
        if exc.quota:
            return (
                Code.QUOTA_EXHAUSTED,
                f"Gemini's quota is exhausted (429 RESOURCE_EXHAUSTED) and it did not recover "
                f"within the {step} time budget. Wait a few minutes or check your plan's limits, then retry.",
            )
        if exc.code is None and exc.status != "BAD_RESPONSE":
            return (Code.NETWORK, f"Could not reach Gemini during the {step} ({exc.message}). Check the network connection, then retry.")
        return (Code.GEMINI_UNAVAILABLE, f"Gemini was unavailable ({exc.label}) for longer than the {step} time budget. Retry later.")
    return (Code.GEMINI_REFUSED, f"Gemini refused the {step} ({exc.label}: {exc.message}).")
