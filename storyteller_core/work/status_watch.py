"""Learn the states of the files Gemini is processing in bulk, on one thread.

A video whose file is processing registers here and goes to sleep in the
scheduler; it holds no worker and costs nothing while it waits. One thread
asks Gemini for the states of every registered file: ``files.list`` pages
(up to 100 files per call, newest first on Gemini) cover many files per call,
and stop as soon as every registered file has been seen; ``files.get`` is used
instead when it costs fewer calls (one file, or a project with more pages than
files to look for). Each file is looked at on its own schedule (by default 1 s
after it was handed over, then every 1.5 s), and a look at one file is a look
at all of them. Every call takes a slot of the process's status-call limits
(PollLimits: 5 per second by default); bulk listing uses at most half of that
rate, so uploads' existence checks still get through, and when a listing takes
several pages it reads about one page a second (the SDK takes ~12 ms to read a
page of 100 files): 1,000 processing files are looked at every ~10 s for under
1 % of a core, 100 or fewer every 1-1.5 s.

A file that settles (ACTIVE, FAILED, or gone) wakes its video's task, which
takes what was seen with ``check`` and records it. When the watch cannot tell
(an error it does not handle), it hands the file back to its step, which asks
``files.get`` itself under the one retry policy, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from storyteller_core.errors import GeminiError, Kind, StepFailed
from storyteller_core.gemini.reach import REACH

if TYPE_CHECKING:
    from storyteller_core.gemini.gateway import RemoteFile
    from storyteller_core.steps.step_context import StepContext
    from storyteller_core.work.gate import Gate

T = TypeVar("T")
log = logging.getLogger(__name__)
PAGE_SIZE = 100  # files.list's largest page
CAP_FACTOR = 1.5  # a file is looked at least every poll_initial_s x this (1.5 s by default)
BULK_SHARE = 0.5  # bulk listing uses at most this share of the status-call rate
SECONDS_PER_PAGE = 1.5  # and at most one page per 1.5 s when there are many: the SDK takes ~12 ms to read a page
# of 100 files, so 1,000 files processing cost 1.3 % of a core, each looked at every 15 s (the analysis workers are far
# behind such a queue anyway: the look-ahead keeps files ready for them)
SETTLED = ("ACTIVE", "FAILED")
ERROR_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Seen:
    """What the watch learnt about a file, for its video's step."""

    name: str
    remote: RemoteFile | None  # None: the file is gone (expired or deleted)
    checks: int  # status calls that covered this file
    ask_alone: bool = False  # the watch could not tell: the step asks files.get for this file itself


@dataclass
class _Watched:
    video_id: str
    name: str
    since: float  # monotonic time it was registered
    due: float  # when it should be looked at next
    checks: int = 0


class StatusWatch:
    def __init__(self, ctx: StepContext, gate: Gate, wake: Callable[[str], object]) -> None:
        """``wake(video_id)`` makes the video's task due now (Scheduler.wake)."""
        self._ctx = ctx
        self._gate = gate
        self._wake = wake
        self._watched: dict[str, _Watched] = {}  # by video id
        self._settled: dict[str, tuple[Seen, float]] = {}  # by video id, until its step takes it
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._not_before = 0.0  # no call before this (monotonic): rate share, errors, cooldown
        self._gateway_id = 0
        self._bulk = True  # files.list works on this server
        self._pages = 1  # pages the last full listing took
        self.stats: Counter[str] = Counter()  # "list" pages and "get" calls made, "sweeps", "settled"

    # -- the steps' side -------------------------------------------------------------------
    def check(self, video_id: str, name: str) -> Seen | None:
        """What was seen of ``name`` once it settled, or None: then it is (or stays) registered and its task is woken later."""
        with self._cond:
            held = self._settled.pop(video_id, None)
            if held is not None and held[0].name == name:
                return held[0]
            watched = self._watched.get(video_id)
            if watched is None or watched.name != name:
                now = time.monotonic()
                self._watched[video_id] = _Watched(video_id, name, now, now + self._interval(0))
                self._cond.notify()
            return None

    def forget(self, video_id: str) -> None:
        with self._cond:
            self._watched.pop(video_id, None)
            self._settled.pop(video_id, None)

    def watching(self) -> int:
        with self._cond:
            return len(self._watched)

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> StatusWatch:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="storyteller-status", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._wait_until_due():
                    self._sweep()
            except _Stopping:
                return
            except Exception:  # a bug or a full disk must not end the thread: try again shortly
                log.exception("status watch failed; trying again")
                self._stopping.wait(ERROR_BACKOFF_S)

    def _wait_until_due(self) -> bool:
        with self._cond:
            while not self._stopping.is_set():
                if not self._watched:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                start = max(min(w.due for w in self._watched.values()), self._not_before)
                if start <= now:
                    return True
                self._cond.wait(start - now)
        return False

    def _sweep(self) -> None:
        try:
            hold = self._gate.check()
        except StepFailed:  # the key was refused: every waiting step fails with that message, asking nothing
            self._hand_back_all()
            return
        hold = max(hold, self._ctx.cooldown.remaining())
        if hold:
            self._not_before = time.monotonic() + min(hold, 5.0)
            return
        gateway = self._ctx.gateway
        if id(gateway) != self._gateway_id:  # a new key or server: learn its listing again
            self._gateway_id, self._bulk, self._pages = id(gateway), True, 1
        started = time.monotonic()
        with self._cond:
            entries = list(self._watched.values())
        due = [w for w in entries if w.due <= started]
        self.stats["sweeps"] += 1
        try:
            if self._bulk and len(entries) > self._pages:  # a listing answers for every file, due or not
                self._sweep_list(entries, due, started)
            else:
                for watched in due:
                    self._observe(watched, self._get(watched.name))
        except GeminiError as exc:
            self._failed(exc, due, entries)
            return
        self._ctx.cooldown.note_ok()
        REACH.answered_all(f"video:{w.video_id}" for w in entries)  # the waits it noted end (a write only if any)
        self._prune()

    def _sweep_list(self, entries: list[_Watched], due: list[_Watched], started: float) -> None:
        wanted = {w.name: w for w in entries}
        found: dict[str, RemoteFile] = {}
        token: str | None = None
        pages = 0
        complete = False
        try:
            while True:
                files, token = self._limited(partial(self._ctx.gateway.list_files, page_size=PAGE_SIZE, page_token=token))
                pages += 1
                self.stats["list"] += 1
                found.update((f.name, f) for f in files if f.name in wanted)
                if not token:
                    complete = True
                    break
                missing = len(wanted) - len(found)
                if missing == 0 or missing <= pages:  # all seen, or asking the rest one by one costs less
                    break
        except GeminiError as exc:
            if exc.kind is Kind.TRANSIENT or exc.kind is Kind.AUTH:
                raise
            log.warning("files.list refused; asking files.get for each file", extra={"error": exc.label})
            self._bulk = False
            for watched in due:
                self._observe(watched, self._get(watched.name))
            return
        if complete:
            self._pages = pages
        else:
            self._pages = max(self._pages, pages)
        # pace the next listing: at most BULK_SHARE of the status-call rate, and a page a second when there are many
        pause = pages * self._ctx.polls.interval / BULK_SHARE
        if pages > 1:
            pause = max(pause, pages * SECONDS_PER_PAGE)
        self._not_before = time.monotonic() + pause
        for name, watched in wanted.items():
            if name in found:
                self._observe(watched, found[name])
            elif watched.due <= started or complete:  # not listed: ask for it alone (gone, or on a later page)
                self._observe(watched, self._get(name))

    def _get(self, name: str) -> RemoteFile | None:
        self.stats["get"] += 1
        return self._limited(lambda: self._ctx.gateway.get_file(name))

    def _limited(self, call: Callable[[], T]) -> T:
        """Make one call under the process's status-call limits, waiting (in this thread) for a slot."""
        while True:
            with self._ctx.polls.slot() as slot:
                if slot.ok:
                    return call()
            if self._stopping.wait(slot.wait_s):
                raise _Stopping()

    def _observe(self, watched: _Watched, remote: RemoteFile | None) -> None:
        now = time.monotonic()
        with self._cond:
            current = self._watched.get(watched.video_id)
            if current is not watched:
                return  # forgotten, or registered again under another name, meanwhile
            watched.checks += 1
            if remote is not None and remote.state not in SETTLED:
                watched.due = now + self._interval(watched.checks)
                return
            del self._watched[watched.video_id]
            self._settled[watched.video_id] = (Seen(watched.name, remote, watched.checks), now)
        self.stats["settled"] += 1
        self._wake(watched.video_id)

    def _failed(self, exc: GeminiError, due: list[_Watched], entries: list[_Watched]) -> None:
        if exc.kind is Kind.AUTH:
            self._gate.reject_key()
            log.error("api key rejected while checking files; no more calls until a new key is set")
            self._hand_back_all()
            return
        if exc.kind is Kind.TRANSIENT:
            if exc.quota:
                self._ctx.cooldown.note_exhausted(exc.retry_after_s)
            log.info("status check failed; trying again", extra={"error": exc.label})
            wait = max(ERROR_BACKOFF_S, self._ctx.cooldown.remaining())
            self._not_before = time.monotonic() + wait
            # each waiting row says why and when the next look is, as the other steps' waits do (one store write)
            REACH.retrying_all([f"video:{w.video_id}" for w in entries], exc, wait, self._ctx.store, lasting=True)
            return
        for watched in due:  # something only the file's own step can report: hand it back
            self._hand_back(watched)

    def _hand_back_all(self) -> None:
        with self._cond:
            entries = list(self._watched.values())
        for watched in entries:
            self._hand_back(watched)

    def _hand_back(self, watched: _Watched) -> None:
        with self._cond:
            if self._watched.get(watched.video_id) is not watched:
                return
            del self._watched[watched.video_id]
            self._settled[watched.video_id] = (Seen(watched.name, None, watched.checks, ask_alone=True), time.monotonic())
        self._wake(watched.video_id)

    def _prune(self, older_than_s: float = 3600.0) -> None:
        """Forget what no step came to take (its video was cancelled or taken over)."""
        cutoff = time.monotonic() - older_than_s
        with self._cond:
            for video_id in [v for v, (_, at) in self._settled.items() if at < cutoff]:
                del self._settled[video_id]

    def _interval(self, checks: int) -> float:
        settings = self._ctx.settings
        cap = min(settings.poll_max_s, settings.poll_initial_s * CAP_FACTOR)
        return min(cap, settings.poll_initial_s * settings.poll_factor**checks)


class _Stopping(Exception):
    pass
