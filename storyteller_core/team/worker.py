"""A team-mode worker process: Dramatiq's worker threads running one step per message on the shared Redis.

    STORYTELLER_BROKER_URL=redis://127.0.0.1:6379/0 GEMINI_API_KEY=... python -m storyteller_core.team.worker
    python -m storyteller_core.team.worker --resume [--force]   # re-send unfinished work, then exit

Per message: begin (fence + lease, see dispatch.py), take an upload slot if
the step may upload (none free: the message comes back later), run the
embedded Runner's step, send the next message and move the fence. A keeper
thread renews the leases of running steps; a sweeper (one worker at a time)
re-sends unfinished work that no live message advances. SIGTERM stops taking
messages, interrupts uploads at their next chunk and hands their tasks on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any, cast

import dramatiq
import redis

from storyteller_core.errors import Cancelled, Code, QuotaPaused, StepFailed
from storyteller_core.gemini.demo_mode import gateway_for
from storyteller_core.gemini.gateway import Gateway, file_name_for
from storyteller_core.intake.shared_root import OutsideSharedRoot, SharedPaths
from storyteller_core.intake.spool import release_spool
from storyteller_core.logs import setup_logging
from storyteller_core.records.analysis import Analysis
from storyteller_core.records.record import TransitionError
from storyteller_core.records.video import Video, VideoState
from storyteller_core.settings import Settings
from storyteller_core.steps import Next, Outcome
from storyteller_core.steps.step_context import StepContext
from storyteller_core.storage.datadir import ensure_data_dir
from storyteller_core.storage.disk_store import make_owner_id, owner_process_gone
from storyteller_core.storage.redis_store import RedisStore, connect
from storyteller_core.team.broker_trust import InsecureBroker, record_problem, require_credentials
from storyteller_core.work.redis_dispatch import Dispatcher, TeamConfig, TeamRunner, make_broker, new_token
from storyteller_core.work.redis_limits import CallRate, RedisCooldown, RedisGate, RedisPollLimits, StorageBudget, UploadSlots, WorkerBeats
from storyteller_core.work.redis_status_watch import TeamStatusWatch
from storyteller_core.work.runner import STORE_ERROR_RETRY_S, UPLOAD_STATES

log = logging.getLogger(__name__)
BUSY_WAIT_S = 2.0  # a message whose task is still held waits this long in place before coming back later
AFTER_RETRY_FOR_S = 120.0  # Redis unreachable after a step: keep trying to hand the task on this long
SETTINGS_ENV = "STORYTELLER_SETTINGS_JSON"  # Settings overrides as JSON (tests and benchmarks)
RATE_SLEEP_S = 2.0  # a generate slot this close is waited for in the step; a later one sends the message then


class RateWait(QuotaPaused):
    """This call's generate slot is later: the analysis waits (not "Writing story") and its message comes back then."""

    def __init__(self, resume_at: float) -> None:
        Exception.__init__(self, "waiting for a generate slot (requests per minute across the team)")
        self.resume_at = resume_at


def settings_from_env() -> Settings:
    overrides: dict[str, Any] = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise SystemExit(f"{SETTINGS_ENV} names unknown settings: {', '.join(sorted(unknown))}")
    if "data_dir" in overrides:
        overrides["data_dir"] = Path(overrides["data_dir"])
    return Settings.from_env(**overrides)


class _SlotGateway:
    """The Gateway under the team's limits: an upload holds an upload slot (renewed by its progress) and its bytes
    in the storage budget; a generate call waits for its slot of the requests-per-minute rate."""

    def __init__(self, inner: Gateway, runtime: WorkerRuntime) -> None:
        self.inner = inner
        self.runtime = runtime

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upload(self, path: Path, *, name: str, display_name: str, mime_type: str, on_progress: Any) -> Any:
        shared = self.runtime.store.shared
        try:  # right before the file is opened: symlinks resolved, whatever the record in Redis said
            path = shared.check(path) if shared.root is not None else path
        except OutsideSharedRoot as exc:
            raise StepFailed(Code.UNREADABLE, f"{display_name} was not uploaded: {exc}") from None
        uploads = self.runtime.uploads
        stopping = self.runtime.runner.stopping
        task, token = getattr(self.runtime.local, "slot", None) or ("video:?", None)
        own = token is None
        if own:  # an upload the step did not announce (a file that expired): wait for a slot here
            token = f"{new_token()}/{self.runtime.owner}"
            while not uploads.acquire(task, token):
                if stopping.is_set():
                    raise Cancelled("upload stopped")
                time.sleep(uploads.wait_hint())
        last = [time.monotonic()]

        def progress(sent: int) -> None:
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                uploads.renew(cast(str, token))
            on_progress(sent)

        try:
            # the step reserved the bytes before it took the slot; an unannounced upload (or one tried again after
            # its reservation was given back) waits for room here, keeping its slot
            while not self.runtime.storage.reserve(name, path.stat().st_size):
                if stopping.is_set():
                    raise Cancelled("upload stopped")
                uploads.renew(cast(str, token))
                time.sleep(self.runtime.storage.wait_hint())
            try:
                return self.inner.upload(path, name=name, display_name=display_name, mime_type=mime_type, on_progress=progress)
            except BaseException:
                self.runtime.storage.release(name)  # no file was made (a 409 is not an error): its bytes are free
                raise
        finally:
            if own:
                uploads.release(cast(str, token))

    def generate(self, **kwargs: Any) -> Any:
        self.runtime.wait_for_generate_slot()
        return self.inner.generate(**kwargs)


class WorkerRuntime:
    """Everything one worker process needs; ``advance`` is what the actor runs."""

    def __init__(self, settings: Settings, config: TeamConfig, log_file: Path) -> None:
        self.settings = settings
        self.config = config
        require_credentials(config.url)
        self.client: Any = connect(config.url)
        self.store = RedisStore(self.client, config.prefix, SharedPaths.from_env())
        cooldown = RedisCooldown(self.client, config.prefix, pause_after_s=settings.quota_pause_after_s)
        self.gate = RedisGate(self.client, config.prefix, cooldown, settings.api_key)
        polls = RedisPollLimits(
            self.client, config.prefix, settings.max_polls, settings.polls_per_second, slot_ttl_s=settings.request_timeout_s + 10
        )
        self.uploads = UploadSlots(self.client, config.prefix, settings.max_uploads, config.upload_slot_ttl_s)
        self.storage = StorageBudget(self.client, config.prefix, config.storage_bytes, ttl_s=settings.file_ttl_s + settings.upload_budget_s)
        self.generates = (
            CallRate(self.client, f"{config.prefix}:generate-rate", config.generate_per_minute) if config.generate_per_minute > 0 else None
        )
        self.local = threading.local()
        self.owner = make_owner_id("w" + uuid.uuid4().hex[:8])
        self.beats = WorkerBeats(self.client, config.prefix, max(config.heartbeat_timeout_s, config.lease_ttl_s))
        gateway = cast(Gateway, _SlotGateway(gateway_for(settings), self))
        self.ctx = StepContext(self.store, gateway, settings, polls, cooldown)
        self.broker, actors = make_broker(config, settings, self.advance)
        self.dispatcher = Dispatcher(self.store, config, actors)
        self.runner = TeamRunner(self.ctx, self.gate, self.dispatcher, log_file, self.owner)
        self.watch = TeamStatusWatch(self.ctx, self.gate, self.dispatcher, self.owner) if config.status_watch else None
        self.runner.watch = self.watch  # processing files are looked at in bulk by one worker for the team
        self.stats: Counter[str] = Counter()
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- one message ------------------------------------------------------------------------------
    def advance(self, task: str, fence: str, parent: str = "") -> None:
        lease_value = f"{self.owner}/{fence}"
        if not self._begin(task, fence, parent, lease_value):
            return
        with self._lock:
            self._held[task] = lease_value
        try:
            outcome = self._step(task, fence)
        except BaseException:  # noqa: BLE001 - Redis unreachable, a time limit: the task goes on later, never lost
            log.exception("step could not run; trying again later", extra={"task": task})
            outcome = Outcome.later(STORE_ERROR_RETRY_S)
        finally:
            with self._lock:
                self._held.pop(task, None)
        self.stats["steps"] += 1
        self._after(task, fence, lease_value, outcome)

    def _begin(self, task: str, fence: str, parent: str, lease_value: str) -> bool:
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            status, holder = self.dispatcher.begin(task, fence, parent, lease_value)
            if status == "go":
                return True
            if status == "drop":
                self.stats["dropped"] += 1
                return False
            if owner_process_gone(holder) and self.dispatcher.take_lease(task, holder, lease_value):
                log.info("took over the task of a dead worker", extra={"task": task, "holder": holder})
                continue
            if time.monotonic() > deadline or self.runner.stopping.is_set():
                # still held (its holder may be alive, or dead on another machine until its lease runs out)
                self.dispatcher.send(task, new_token(), parent=fence if status == "busy-own" else parent, delay_s=1.0)
                self.stats["busy"] += 1
                return False
            time.sleep(0.05)

    def _step(self, task: str, fence: str) -> Outcome:
        if self.runner.stopping.is_set():
            return Outcome.stop()
        kind, record_id = task.split(":", 1)
        problem = self._malformed(kind, record_id)
        if problem:
            log.error("refused a malformed record: not acting on it", extra={"task": task[:200], "problem": problem})
            self.stats["malformed"] += 1
            return Outcome.stop()
        token = None
        generate_ok = False
        if kind == "video":
            video = self.store.get(Video, record_id)
            if video and not video.url and video.state in UPLOAD_STATES and self.store.needs_video(record_id):
                if not self.storage.reserve(file_name_for(video.sha256), video.size_bytes):
                    self.stats["storage_waits"] += 1  # the project's File API storage is full: wait for a deletion
                    return Outcome.later(self.storage.wait_hint())
                token = f"{fence}/{self.owner}"
                place = self.uploads.try_acquire(task, token, self.dispatcher.rank(task), retry_s=3.0)
                if place:
                    self.stats["slot_waits"] += 1
                    return Outcome.later(self.uploads.wait_hint(place))
        elif self.generates is not None and self._will_ask(record_id):
            wait = self.generates.take(task)  # reserves this task's slot; due when the delayed message arrives
            if wait > 0:
                self.stats["rate_waits"] += 1
                return Outcome.later(wait)
            generate_ok = True
        self.local.slot = (task, token)
        self.local.task = task
        self.local.generate_ok = generate_ok
        try:
            return self.runner.run(task)
        finally:
            self.local.slot = None
            self.local.task = None
            self.local.generate_ok = False
            if token:
                self.uploads.release(token)
            if kind == "video":
                self._release_unless_uploaded(record_id)

    def _malformed(self, kind: str, record_id: str) -> str | None:
        """Why the records this task acts on are not well-formed (anyone who reaches Redis can write them), or None."""
        cls: type[Video] | type[Analysis] | None = {"video": Video, "analysis": Analysis}.get(kind)
        if cls is None:
            return f"unknown task kind {kind[:40]!r}"
        problem = record_problem(cls, record_id, self.client.get(self.store.key(cls.KIND, record_id)), self.store.shared)
        if problem or cls is not Analysis:
            return problem
        analysis = self.store.get(Analysis, record_id)
        if analysis is None or not analysis.video_id:
            return None
        return record_problem(Video, analysis.video_id, self.client.get(self.store.key(Video.KIND, analysis.video_id)), self.store.shared)

    def _release_unless_uploaded(self, video_id: str) -> None:
        """A video left with no file (failed, cancelled, nobody needs it any more, content changed) holds no bytes.

        Covers a reservation made by an earlier step that then waited for an
        upload slot while the person cancelled; releasing twice is harmless.
        """
        video = self.store.get(Video, video_id)
        if video is not None and not video.url and video.state in (VideoState.CREATED, VideoState.FAILED):
            self.storage.release(file_name_for(video.sha256))

    def _will_ask(self, analysis_id: str) -> bool:
        """The analysis's step will call generate (its file is ready): it needs a slot of the requests-per-minute rate."""
        analysis = self.store.get(Analysis, analysis_id)
        if analysis is None or analysis.state.terminal or analysis.cancel_requested:
            return False
        video = self.store.get(Video, analysis.video_id)
        return video is not None and video.file_usable(self.settings.backend)

    def wait_for_generate_slot(self) -> None:
        """At the moment of a generate call: go when this task's slot has come (the step took it just before, or its
        reservation is due); a slot a moment away is waited for here, a later one makes the analysis wait for it."""
        if self.generates is None:
            return
        if getattr(self.local, "generate_ok", False):
            self.local.generate_ok = False  # the step took the slot an instant ago; a retry of the call takes another
            return
        caller = getattr(self.local, "task", None) or f"call:{new_token()}"
        while (wait := self.generates.take(caller)) > 0:
            if wait > RATE_SLEEP_S:
                raise RateWait(time.time() + wait)
            if self.runner.stopping.wait(wait):
                raise Cancelled("worker stopping")

    def _after(self, task: str, fence: str, lease_value: str, outcome: Outcome) -> None:
        deadline = time.monotonic() + AFTER_RETRY_FOR_S
        while True:
            try:
                self._hand_on(task, fence, lease_value, outcome)
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise  # the message is not acknowledged: redelivered once Redis and a worker are back
                log.warning("redis unreachable after a step; trying again", extra={"task": task})
                time.sleep(1.0)

    def _hand_on(self, task: str, fence: str, lease_value: str, outcome: Outcome) -> None:
        if outcome.next in (Next.NOW, Next.LATER, Next.STOP):
            delay = outcome.delay_s if outcome.next is Next.LATER else (0.5 if outcome.next is Next.STOP else 0.0)
            child = new_token()
            self.dispatcher.send(task, child, parent=fence, delay_s=delay)  # first the message, then the fence
            self.dispatcher.finish(task, fence, child, lease_value, delay)
            return
        if not self.dispatcher.finish(task, fence, "", lease_value):
            return  # the line was taken over (resume --force): the other line goes on
        kind, record_id = task.split(":", 1)
        if kind == "video":
            self.runner.wake(record_id)  # its file is ready (or failed): every analysis waiting for it goes on
            return
        analysis = self.store.get(Analysis, record_id)
        if analysis is None:
            return
        if outcome.next is Next.PARK:
            video = self.store.get(Video, analysis.video_id)
            if video and (video.state is VideoState.FAILED or video.file_usable(self.settings.backend)):
                self.runner.enqueue(task)  # the video settled while this analysis was parking
        else:
            release_spool(self.store, analysis.video_id, self.settings.spool_dir)
            if not self.config.keep_files:
                self._delete_file_if_unneeded(analysis.video_id)

    def _delete_file_if_unneeded(self, video_id: str) -> None:
        """After a video's last analysis: delete its Gemini file and give its bytes back to the storage budget.

        The video's task is taken like a step (a root message's fence and a
        lease), so no upload or processing of the same video runs meanwhile;
        the video goes back to CREATED before the file is deleted, so a question
        asked later uploads it again (a step that read it a moment before finds
        the file gone and does the same). Work that arrived meanwhile is woken.
        """
        video = self.store.get(Video, video_id)
        if (
            video is None
            or video.url
            or not video.gemini_name
            or video.state is not VideoState.FILE_ACTIVE
            or self.store.needs_video(video_id)
        ):
            return
        task, token = f"video:{video_id}", new_token()
        lease_value = f"{self.owner}/{token}"
        if self.dispatcher.begin(task, token, "", lease_value)[0] != "go":
            return  # a live message line has the video: it is wanted again
        try:
            video = self.store.get(Video, video_id)
            if video is None or not video.gemini_name or video.state is not VideoState.FILE_ACTIVE or self.store.needs_video(video_id):
                return
            name = video.gemini_name
            try:
                # upload_count guards against a file that keeps vanishing; this one was deleted on purpose
                self.store.transition(
                    Video,
                    video_id,
                    VideoState.CREATED,
                    gemini_name=None,
                    gemini_uri=None,
                    gemini_state=None,
                    gemini_expires_at=None,
                    progress=0,
                    upload_count=0,
                )
            except TransitionError:
                return  # moved meanwhile (another step found it expired): that step deals with the file
            try:
                self.ctx.call(lambda: self.ctx.gateway.delete_file(name), self.settings.request_timeout_s * 3, lambda: False)
            except Exception:  # noqa: BLE001 - it expires by itself within 48 h, and its bytes with it
                log.warning("could not delete a gemini file after its last analysis", extra={"video_id": video_id}, exc_info=True)
                return
            self.storage.release(file_name_for(video.sha256))
            self.stats["files_deleted"] += 1
        finally:
            self.dispatcher.finish(task, token, "", lease_value)
            if self.store.needs_video(video_id):
                self.runner.wake(video_id)  # asked again meanwhile: its analyses go on (and upload it again)

    # -- background -----------------------------------------------------------------------------------
    def start_background(self) -> None:
        self.beats.beat(self.owner)  # counted as a live worker from now on (the keeper beats again)
        if self.watch is not None:
            self.watch.start()
        for target, name in ((self._keeper, "team-leases"), (self._sweeper, "team-sweep")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _keeper(self) -> None:
        while not self.runner.stopping.wait(self.config.lease_ttl_s / 4):
            try:
                self.beats.beat(self.owner)
                with self._lock:
                    held = dict(self._held)
                for lost in self.dispatcher.keep(held):
                    log.warning("lease lost while the step ran", extra={"task": lost})
            except Exception:  # noqa: BLE001 - Redis unreachable: keep trying
                log.exception("could not renew leases; trying again")

    def _sweeper(self) -> None:
        wait = min(2.0, self.config.sweep_every_s)
        while not self.runner.stopping.wait(wait):
            wait = self.config.sweep_every_s
            try:
                lock = f"{self.config.prefix}:sweep-lock"
                if self.client.set(lock, self.owner, nx=True, px=int(self.config.sweep_every_s * 900)):
                    self.stats["resumed"] += self.dispatcher.resume()
            except Exception:  # noqa: BLE001
                log.exception("sweep failed; trying again later")

    def close(self) -> None:
        self.runner.stopping.set()
        if self.watch is not None:
            self.watch.stop()
        for thread in self._threads:
            thread.join(5)
        try:
            self.beats.gone(self.owner)
        except redis.RedisError:
            log.warning("could not say this worker stopped; it drops out of the list by itself")
        self.broker.close()
        self.client.close()


def run_worker(settings: Settings, config: TeamConfig, threads: int, stop: threading.Event | None = None) -> int:
    """Run one worker until SIGTERM/SIGINT (or ``stop``); 0 on a clean stop."""
    ensure_data_dir(settings.data_dir)
    log_file = setup_logging(settings.data_dir, logging.WARNING)
    logging.getLogger("dramatiq").setLevel(logging.WARNING)
    runtime = WorkerRuntime(settings, config, log_file)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    worker = dramatiq.Worker(runtime.broker, worker_threads=threads, worker_timeout=config.idle_poll_ms)
    worker.queue_prefetch = threads  # no message waits in this process while its threads are busy
    worker.start()
    runtime.start_background()
    log.info("team worker started", extra={"owner": runtime.owner, "threads": threads, "max_uploads": settings.max_uploads})
    print(f"worker {runtime.owner} ready: {threads} threads, prefix {config.prefix}", flush=True)
    stop.wait()
    runtime.runner.stopping.set()  # running uploads stop at their next chunk; their tasks are handed on
    worker.stop(timeout=30_000)
    runtime.close()
    print(f"worker {runtime.owner} stopped: {dict(runtime.stats)}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storyteller_core.team.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="steps at once in this process (default STORYTELLER_MAX_WORKERS)")
    parser.add_argument("--resume", action="store_true", help="re-send a step for unfinished work, then exit")
    parser.add_argument("--force", action="store_true", help="with --resume: every unfinished task (after a Redis restore)")
    args = parser.parse_args(argv)
    settings = settings_from_env()
    config = TeamConfig.from_env()
    try:
        require_credentials(config.url)
    except InsecureBroker as exc:
        print(exc.message, file=sys.stderr)
        return 2
    if args.resume:
        from storyteller_core.team.client import TeamClient

        client = TeamClient(settings, config)
        print(f"{client.resume(force=args.force)} messages sent")
        client.close()
        return 0
    if settings.demo:
        print("Team mode needs a Gemini API key (GEMINI_API_KEY): demo mode stays on one machine.", file=sys.stderr)
        return 2
    return run_worker(settings, config, args.threads or settings.max_workers)


if __name__ == "__main__":
    sys.exit(main())
