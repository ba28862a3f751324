"""Whether Gemini answers this process, and which step is waiting to try a call again.

The one retry policy (retry.py) tells this module before each wait: why the call
failed, when it tries again and which attempt that will be. The runner names the
task a worker thread runs (``working_on``), so each note is kept under the video
or analysis the row shows; it is dropped when a call goes through or the step
ends. The catalog (catalog.py) reports its models.list too, so a page knows
Gemini is out of reach before any row has tried.

Kept in memory, and through the store: a step's call (StepContext.call, ``noting``) and the processing wait hand
their store to each note, which is written there when a wait starts and removed when the call answers or the
step ends (``put_retry_notes``: a write per change of a note, never per poll), so a row worked on by another
process (the CLI, a team worker) says why it waits on the app's page too (views.board.rows_of reads them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from storyteller_core.errors import GeminiError

_local = threading.local()
log = logging.getLogger(__name__)
STALE_S = 120.0  # a stored note this long past its next attempt is not shown: the process that wrote it is gone


class NoteSink(Protocol):
    """Where notes travel to other processes: the store (both stores keep them)."""

    def put_retry_notes(self, notes: dict[str, dict[str, Any] | None]) -> None: ...


@dataclass(frozen=True)
class RetryNote:
    """A step waiting to call Gemini again: what a row shows instead of its status word."""

    reason: str  # "Can't reach Gemini", "Gemini is unavailable (503 UNAVAILABLE)", ...
    next_at: float  # wall clock of the next attempt
    attempt: int  # the number of the next attempt (the first call is attempt 1)
    since: float  # wall clock of the first failure of this streak

    @classmethod
    def stored(cls, fields: dict[str, Any], now: float | None = None) -> RetryNote | None:
        """A note as a store keeps it, or None when it cannot be read or is stale (see STALE_S)."""
        try:
            note = cls(str(fields["reason"]), float(fields["next_at"]), int(fields["attempt"]), float(fields["since"]))
        except (KeyError, TypeError, ValueError):
            return None
        return None if note.next_at < (time.time() if now is None else now) - STALE_S else note

    def words(self, now: float | None = None) -> str:
        """e.g. "Can't reach Gemini, retrying in 35 s (attempt 4)"."""
        left = max(0, round(self.next_at - (time.time() if now is None else now)))
        when = f"retrying in {left} s" if left else "retrying now"
        return f"{self.reason}, {when} (attempt {self.attempt})"


def reason_of(exc: BaseException) -> str:
    """A person's words for a transient failure (no internal names such as NETWORK)."""
    if isinstance(exc, GeminiError):
        if exc.quota:
            return "Gemini's quota is exhausted"
        if exc.code is None and exc.status != "BAD_RESPONSE":
            return "Can't reach Gemini"
        if exc.code is None:
            return "Gemini sent an answer that could not be read"
        return f"Gemini is unavailable ({exc.label})"
    return "Can't reach Gemini"


def unreachable(exc: BaseException) -> bool:
    """The call never got an answer (a connection error or a timeout), as opposed to an answer saying no."""
    return not isinstance(exc, GeminiError) or (exc.code is None and exc.status != "BAD_RESPONSE")


class Reach:
    """Thread-safe. Notes by record id ("video:<id>" or "analysis:<id>"), and since when Gemini is out of reach."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notes: dict[str, RetryNote] = {}
        self._since: float | None = None  # first unanswered call since the last answer
        self._last_error: str | None = None
        self._published: dict[str, NoteSink] = {}  # the notes written to a store, by task: removed there too
        self._lasting: set[str] = set()  # notes the end of a step keeps (see ``retrying``)

    # -- told by the retry policy, the runner and the catalog ---------------------------------------
    def retrying(
        self,
        task: str | None,
        exc: BaseException,
        attempt: int,
        wait_s: float,
        sink: NoteSink | None = None,
        *,
        lasting: bool = False,
    ) -> None:
        """A call failed and is tried again in ``wait_s`` seconds as attempt ``attempt``; the note goes to ``sink``
        (else the store this thread's step named with ``noting``). ``lasting``: the wait outlives the step (the
        processing wait sleeps in the scheduler between looks): only an answer removes the note."""
        self.retrying_all([task] if task else [], exc, wait_s, sink, attempt=attempt, lasting=lasting)

    def retrying_all(
        self,
        tasks: Iterable[str],
        exc: BaseException,
        wait_s: float,
        sink: NoteSink | None = None,
        *,
        attempt: int | None = None,
        lasting: bool = False,
    ) -> None:
        """Like ``retrying`` for several tasks waiting on one call (the processing watch's sweep), in one store
        write; each task's attempt counts on from its note (None: the next after the last)."""
        now = time.time()
        sink = sink if sink is not None else getattr(_local, "sink", None)
        written: dict[str, dict[str, Any] | None] = {}
        with self._lock:
            if unreachable(exc):
                if self._since is None:
                    self._since = now
                self._last_error = reason_of(exc)
            else:  # an answer, if a refusal: Gemini is within reach
                self._since, self._last_error = None, None
            for task in tasks:
                old = self._notes.get(task)
                number = attempt if attempt is not None else (old.attempt + 1 if old else 2)
                note = RetryNote(reason_of(exc), now + wait_s, number, old.since if old else now)
                self._notes[task] = note
                if lasting:
                    self._lasting.add(task)
                if sink is not None:
                    self._published[task] = sink
                    written[task] = asdict(note)
        if written and sink is not None:
            _publish(sink, written)

    def _drop(self, tasks: Iterable[str], *, step_end: bool = False) -> None:
        """Forget these tasks' notes, here and in the store they were written to (one write per store)."""
        by_sink: dict[int, tuple[NoteSink, dict[str, dict[str, Any] | None]]] = {}
        with self._lock:
            for task in tasks:
                if step_end and task in self._lasting:
                    continue
                self._lasting.discard(task)
                self._notes.pop(task, None)
                sink = self._published.pop(task, None)
                if sink is not None:
                    by_sink.setdefault(id(sink), (sink, {}))[1][task] = None
        for sink, gone in by_sink.values():
            _publish(sink, gone)

    def failed(self, exc: BaseException) -> None:
        """A call failed and is not retried here (the catalog's models.list)."""
        if unreachable(exc):
            with self._lock:
                if self._since is None:
                    self._since = time.time()
                self._last_error = reason_of(exc)

    def answered(self, task: str | None = None) -> None:
        """A call went through: Gemini answers again, and ``task`` waits no more."""
        self.answered_all([task] if task else [])

    def answered_all(self, tasks: Iterable[str]) -> None:
        """A call went through for these tasks: Gemini answers, and none of them waits any more."""
        with self._lock:
            self._since = None
            self._last_error = None
        self._drop(tasks)

    def step_ended(self, task: str) -> None:
        self._drop([task], step_end=True)

    # -- read by rows and pages ----------------------------------------------------------------------
    def note(self, task: str) -> RetryNote | None:
        with self._lock:
            return self._notes.get(task)

    def note_for(self, analysis_id: str | None, video_id: str | None) -> RetryNote | None:
        """The note of a row: its analysis's step, else its video's (an upload or processing wait)."""
        with self._lock:
            return (self._notes.get(f"analysis:{analysis_id}") if analysis_id else None) or (
                self._notes.get(f"video:{video_id}") if video_id else None
            )

    @property
    def since(self) -> float | None:
        """Wall clock since when no call has been answered (None: Gemini answers, or nothing was tried)."""
        with self._lock:
            return self._since

    def banner(self) -> str | None:
        """One line for a page or the CLI, e.g. "Can't reach Gemini since 13:02; retrying"; None when it answers."""
        with self._lock:
            since = self._since
        if since is None:
            return None
        at = datetime.fromtimestamp(since).strftime("%H:%M")
        return (
            f"Can't reach Gemini since {at}; retrying. Check the network connection (or GOOGLE_GEMINI_BASE_URL); nothing is lost meanwhile."
        )

    def clear(self) -> None:
        """Forget everything (a new key or server: what the old one did says nothing)."""
        with self._lock:
            tasks = list(self._notes)
        self._drop(tasks)
        with self._lock:
            self._notes.clear()
            self._since = None
            self._last_error = None


REACH = Reach()  # the process's: the runner, the retry policy and the catalog all tell this one


def banner() -> str | None:
    """The pages' one-line banner about reaching Gemini (see Reach.banner)."""
    return REACH.banner()


def _publish(sink: NoteSink, notes: dict[str, dict[str, Any] | None]) -> None:
    """Write notes to the store; a store that cannot be written costs the note there, never the call."""
    try:
        sink.put_retry_notes(notes)
    except Exception:
        log.warning("could not keep a retry note in the store", exc_info=True)


@contextmanager
def noting(sink: NoteSink) -> Iterator[None]:
    """While the block runs, this thread's retry notes also go to ``sink`` (the step's store)."""
    before = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = before


def current_task() -> str | None:
    """The task this worker thread runs (set by the runner), or None outside a step."""
    return getattr(_local, "task", None)


@contextmanager
def working_on(task: str) -> Iterator[None]:
    """Name the task this thread runs while the block runs; its retry note is dropped when the block ends."""
    before = getattr(_local, "task", None)
    _local.task = task
    try:
        yield
    finally:
        _local.task = before
        REACH.step_ended(task)
