"""Live events over SSE: GET /api/v1/batches/{id}/events and /api/v1/jobs/{id}/events.

One Hub per watched batch looks at its rows every quarter second or so (one store read for every client of
the batch) and appends an event to a bounded log for each change of a job's status or progress; states a
look missed (UPLOADED lasts milliseconds) are told too, in order, from the records' own times (status.passed).
A client holds only its place in that log, so its memory is the same however slow it reads; one that falls
behind the log, or comes back with an id of an earlier server, gets the current state of every job first.

    event: status   id: <hub>-<n>   data: {"job_id", "status", "progress", "updated_at"}
    event: end      id: <hub>-<n>   data: {"batch_id", "counts"}   (every job ended; the stream closes)
    : keep-alive                    (every STORYTELLER_SSE_KEEPALIVE_S seconds, 15 by default, when nothing moved)

``Last-Event-ID`` (header, or ``?last_event_id=``) resumes right after that event: nothing is missed or repeated.
A job's stream is its batch's, filtered, and ends when the job has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from storyteller_core.records.batch import Batch, Item
from storyteller_core.views.board import batch_rows
from storyteller_core.views.rows import Row
from storyteller_ui.api.common import ApiError, engine, prefix
from storyteller_ui.api.models import EndEvent, JobStatus
from storyteller_ui.api.status import event_of, job_status, passed, progress, since

if TYPE_CHECKING:
    from storyteller_core import Engine

KEEPALIVE_ENV = "STORYTELLER_SSE_KEEPALIVE_S"
LOOK_S = 0.25  # between looks at a batch with work in flight (plus a little per thousand rows)
ENDED_LOOK_S = 2.0  # a batch whose jobs all ended is still looked at, slowly: a retry starts it again
IDLE_HUB_S = 60.0  # a hub with no client for this long stops (a client that comes back later gets a snapshot)
LOG_PER_JOB = 16
MIN_LOG, MAX_LOG = 256, 200_000
RETRY_MS = 2000
ERROR_LOOK_S = 1.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    seq: int
    name: str  # status | end
    job_id: str | None
    data: str  # JSON
    ended: bool = False  # a status event of a job that has ended


def server_exiting() -> bool:
    """The server was asked to stop (SIGTERM, Ctrl+C). uvicorn waits for every open response before it stops and
    lets no request know, so a stream that never ends would hold the server forever: its signal handler is the
    uvicorn Server's own method, whose ``should_exit`` says it. False when that cannot be told."""
    with contextlib.suppress(Exception):
        handler = signal.getsignal(signal.SIGTERM)
        return bool(getattr(getattr(handler, "__self__", None), "should_exit", False))
    return False


def keepalive_s() -> float:
    with contextlib.suppress(ValueError):
        return max(0.05, float(os.environ.get(KEEPALIVE_ENV, "") or 15))
    return 15.0


class Hub:
    def __init__(self, eng: Engine, batch_id: str) -> None:
        self.eng, self.batch_id = eng, batch_id
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self.log: deque[Event] = deque(maxlen=MIN_LOG)
        self.told: dict[str, tuple[JobStatus, int, float]] = {}  # job id -> status, progress, since: last told
        self.all_ended = False
        self.end_seq = 0  # of the latest end event
        self.closing = False  # the server stops: every stream ends
        self.changed = asyncio.Condition()
        self.clients = 0
        self.idle_since = time.monotonic()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # -- the one reader of the batch --------------------------------------------------------
    async def run(self) -> None:
        try:
            while not server_exiting():
                try:
                    rows = await asyncio.to_thread(batch_rows, self.eng.store, self.batch_id)
                except Exception:  # the store could not be read this time: the clients wait, the next look tries again
                    log.exception("an event stream could not read its batch", extra={"batch_id": self.batch_id})
                    rows = None
                if rows is not None:
                    async with self.changed:
                        if self._take(rows):
                            self.changed.notify_all()
                self.ready.set()
                if self.clients == 0 and time.monotonic() - self.idle_since > IDLE_HUB_S:
                    return
                await asyncio.sleep(ERROR_LOOK_S if rows is None else ENDED_LOOK_S if self.all_ended else LOOK_S + len(rows) / 4000)
        finally:
            _hubs.pop(self.batch_id, None)
            self.closing = True
            async with self.changed:
                self.changed.notify_all()
            self.ready.set()

    def _take(self, rows: list[Row]) -> bool:
        size = min(MAX_LOG, max(MIN_LOG, LOG_PER_JOB * len(rows)))
        if size != self.log.maxlen:
            self.log = deque(self.log, maxlen=size)
        before = self.seq
        for row in rows:
            now, pct, began = job_status(row), progress(row), since(row)
            last = self.told.get(row.item.id)
            if last is not None and last[0] is now and last[1] == pct:
                continue
            missed = passed(row, last[2] if last else 0.0, last[0] if last else None) if (last is None or last[0] is not now) else []
            for status in missed:
                self._add("status", row.item.id, event_of(row, status).model_dump_json())
            self._add("status", row.item.id, event_of(row).model_dump_json(), ended=now.ended)
            self.told[row.item.id] = (now, pct, began)
        ended = bool(rows) and all(self.told[r.item.id][0].ended for r in rows)
        if ended and not self.all_ended:
            self._add("end", None, self._end_data(rows))
            self.end_seq = self.seq
        self.all_ended = ended
        return self.seq != before

    def _end_data(self, rows: list[Row], job_id: str | None = None) -> str:
        counts: dict[str, int] = {}
        for row in rows:
            if job_id is None or row.item.id == job_id:
                status = self.told[row.item.id][0].value
                counts[status] = counts.get(status, 0) + 1
        return EndEvent(batch_id=self.batch_id, counts=counts).model_dump_json()

    def _add(self, name: str, job_id: str | None, data: str, ended: bool = False) -> None:
        self.seq += 1
        self.log.append(Event(self.seq, name, job_id, data, ended))

    # -- what a client reads ----------------------------------------------------------------
    def after(self, cursor: int | None) -> list[Event] | None:
        """Events after ``cursor`` (None: from the start), or None when the log no longer holds them all."""
        first = self.log[0].seq if self.log else self.seq + 1
        if cursor is None:
            return list(self.log) if first == 1 else None
        if cursor >= self.seq:
            return []
        if cursor + 1 < first:
            return None
        return [e for e in self.log if e.seq > cursor]

    def snapshot(self) -> list[Event]:
        """The current state of every job, numbered as the latest event (a resume goes on from there)."""
        events = []
        for job_id, (status, pct, began) in self.told.items():
            from storyteller_ui.api.models import JobEvent
            from storyteller_ui.api.status import iso

            data = JobEvent(job_id=job_id, status=status, progress=pct, updated_at=iso(began)).model_dump_json()
            events.append(Event(self.seq, "status", job_id, data, status.ended))
        if self.all_ended:
            counts: dict[str, int] = {}
            for status, _, _ in self.told.values():
                counts[status.value] = counts.get(status.value, 0) + 1
            events.append(Event(self.end_seq, "end", None, EndEvent(batch_id=self.batch_id, counts=counts).model_dump_json()))
        return events


_hubs: dict[str, Hub] = {}


async def hub_for(eng: Engine, batch_id: str) -> Hub:
    hub = _hubs.get(batch_id)
    if hub is None or hub.task is None or hub.task.done():
        hub = _hubs[batch_id] = Hub(eng, batch_id)
        hub.task = asyncio.get_running_loop().create_task(hub.run(), name=f"sse-hub-{batch_id}")
    await hub.ready.wait()
    return hub


def _cursor(hub: Hub, last_id: str | None) -> tuple[int | None, bool]:
    """(the seq to go on after, whether a snapshot must come first)."""
    if not last_id:
        return None, False
    epoch, _, seq = last_id.strip().partition("-")
    if epoch != hub.epoch or not seq.isdigit() or int(seq) > hub.seq:
        return hub.seq, True  # an id of another hub (a restart) or of nothing told: the state now, then on
    return int(seq), False


def _current(hub: Hub, job_id: str) -> str | None:
    """The data of the latest status event of this job still in the log (None: none there)."""
    return next((e.data for e in reversed(hub.log) if e.job_id == job_id), None)


def _frame(hub: Hub, event: Event) -> str:
    return f"id: {hub.epoch}-{event.seq}\nevent: {event.name}\ndata: {event.data}\n\n"


async def stream(hub: Hub, job_id: str | None, last_id: str | None) -> AsyncIterator[str]:
    hub.clients += 1
    try:
        yield f"retry: {RETRY_MS}\n\n"
        cursor, fresh = _cursor(hub, last_id)
        quiet = keepalive_s()
        pending = hub.snapshot() if fresh else []
        while True:
            if not pending:
                events = hub.after(cursor)
                if events is None:  # fallen behind the log: the state now
                    events, cursor = hub.snapshot(), hub.seq
                pending = events
            for event in pending:
                if event.seq > (cursor or 0):
                    cursor = event.seq
                if event.name == "end" and job_id is None:
                    if hub.all_ended and event.seq == hub.end_seq:  # not an end a retry has since undone
                        yield _frame(hub, event)
                        return
                    continue
                if job_id is not None and event.job_id == job_id:
                    yield _frame(hub, event)
                    told = hub.told.get(job_id)
                    if event.ended and told is not None and told[0].ended and _current(hub, job_id) in (None, event.data):
                        end = EndEvent(batch_id=hub.batch_id, counts={json.loads(event.data)["status"]: 1})
                        yield f"id: {hub.epoch}-{event.seq}\nevent: end\ndata: {end.model_dump_json()}\n\n"
                        return
                elif job_id is None and event.name == "status":
                    yield _frame(hub, event)
            pending = []
            if cursor is None:
                cursor = hub.seq
            async with hub.changed:
                if hub.seq <= cursor:
                    try:
                        await asyncio.wait_for(hub.changed.wait(), quiet)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
            if hub.closing:
                return  # the server stops, or the hub could not go on: a client reconnects with Last-Event-ID
    finally:
        hub.clients -= 1
        if hub.clients == 0:
            hub.idle_since = time.monotonic()


def routes() -> list[Route]:
    root = prefix()
    return [
        Route(f"{root}/batches/{{batch_id}}/events", _batch_events, methods=["GET"]),
        Route(f"{root}/jobs/{{job_id}}/events", _job_events, methods=["GET"]),
    ]


def _last_id(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query_params.get("last_event_id")


def _respond(hub: Hub, job_id: str | None, request: Request) -> Response:
    return StreamingResponse(
        stream(hub, job_id, _last_id(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _batch_events(request: Request) -> Response:
    batch_id = request.path_params["batch_id"]
    try:
        eng = await engine()
        if await asyncio.to_thread(eng.store.get, Batch, batch_id) is None:
            raise ApiError(404, "unknown_batch", f"There is no batch {batch_id!r} here.")
        return _respond(await hub_for(eng, batch_id), None, request)
    except ApiError as exc:
        return exc.response()


async def _job_events(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    try:
        eng = await engine()
        item = await asyncio.to_thread(eng.store.get, Item, job_id)
        if item is None:
            raise ApiError(404, "unknown_job", f"There is no job {job_id!r} here.")
        return _respond(await hub_for(eng, item.batch_id), job_id, request)
    except ApiError as exc:
        return exc.response()
