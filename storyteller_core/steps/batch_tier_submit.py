"""The Batch tier: analyses asked through Gemini's Batch API, about half price, results within hours.

An analysis on this tier whose video's file is ready does not ask Gemini
itself. Under its model's submit lease it gathers the ready analyses of the
same model (waiting up to ``batch_collect_s`` for others of that model whose
files are still on their way, or that are still being added), writes a token on each, creates ONE job of
inlined requests whose display name carries the token, and writes the job's
name on each before anything waits. Creation is not idempotent, so a retried
or resumed submission first looks the token up among Gemini's jobs: a SIGKILL
anywhere resumes by polling the same job, never by submitting again. When no
job was created, members whose file expired during the stop are left out (they
are uploaded again and join a later job) instead of being sent expired.

Each member's task then looks at the job, every age/10 seconds (at least
``batch_poll_initial_s``, at most ``batch_poll_max_s``); an engine asks once per
look and its other members use what it saw. The first look that sees the job
ended records every member (batch_results.py). A cancelled member leaves its
job; the job is cancelled at Gemini once nobody waits for it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from storyteller_core.errors import GeminiError, Kind
from storyteller_core.gemini.gateway import BatchJob, BatchRequest
from storyteller_core.records.analysis import PRIORITY_RANK, Analysis, AnalysisState
from storyteller_core.records.record import TransitionError
from storyteller_core.records.story_answer import STORY_SCHEMA
from storyteller_core.records.video import Video, VideoState
from storyteller_core.steps import Outcome
from storyteller_core.steps.analysis_step import video_part
from storyteller_core.steps.batch_tier_looks import Look
from storyteller_core.steps.batch_tier_results import analyzing, settle
from storyteller_core.steps.step_context import StepContext
from storyteller_core.storage.disk_store import NotFound

if TYPE_CHECKING:
    from storyteller_core.settings import Settings

log = logging.getLogger(__name__)
MAX_REQUESTS_PER_JOB = 500  # inlined requests must stay well under Gemini's 20 MB per batch request
BUSY_RETRY_S = 1.0  # another task submits for this model, or looks at this job, right now
COLLECT_LOOK_S = 2.0  # while others of its model are on their way, a ready analysis looks again this often
QUIET_S = 3.0  # a job is sent once no analysis of its model has been added for this long (or batch_collect_s passed)
SUBMIT_LEASE_S = 15 * 60.0  # longer than any submission; a dead holder's lease is taken over at once
CANCEL_BUDGET_S = 30.0


def in_batch_job(ctx: StepContext, analysis: Analysis, video: Video, should_stop: Callable[[], bool]) -> Outcome:
    """The analysis step on the Batch tier: send the question in a job (with others), or look at its job."""
    if analysis.batch_job:
        return _look(ctx, analysis, should_stop)
    with _submit_lease(ctx, analysis.model) as held:
        if not held:
            return Outcome.later(BUSY_RETRY_S)
        analysis = ctx.store.require(Analysis, analysis.id)
        if analysis.state.terminal:
            return Outcome.done()
        if analysis.batch_job:  # another engine's job took it in meanwhile
            return Outcome.now()
        if analysis.batch_token:  # a submission that stopped before the job's name was stored
            members = [a for a in ctx.store.unfinished() if a.batch_token == analysis.batch_token and not a.batch_job]
            return _submit(ctx, analysis, analysis.batch_token, members, should_stop, look_first=True)
        ready, wait_s = _gather(ctx, analysis)
        if wait_s > 0:
            return Outcome.later(wait_s)
        token = f"vsb-{uuid.uuid4().hex[:16]}"
        members = _claim(ctx, ready, token)
        if analysis.id not in {m.id for m in members}:
            return Outcome.now()
        return _submit(ctx, analysis, token, members, should_stop, look_first=False)


def left_batch_job(ctx: StepContext, analysis_id: str) -> None:
    """A cancelled analysis leaves its job; the job is cancelled at Gemini when no other analysis waits for it."""
    analysis = ctx.store.get(Analysis, analysis_id)
    if analysis is None or not (analysis.batch_job or analysis.batch_token):
        return
    ctx.store.update(Analysis, analysis_id, batch_job=None, batch_token=None)
    name, token = analysis.batch_job, analysis.batch_token
    if not name or any(a.batch_job == name or (token and a.batch_token == token) for a in ctx.store.unfinished()):
        return  # others wait for it (members still being given the job's name carry its token)
    try:
        ctx.call(lambda: ctx.gateway.cancel_batch(name), CANCEL_BUDGET_S, lambda: False)
        log.info("batch job cancelled: nobody waits for it any more", extra={"batch_job": name})
    except GeminiError as exc:
        log.warning("could not cancel the batch job", extra={"batch_job": name, "error": exc.label})


# -- submitting ------------------------------------------------------------------------------------------
@contextmanager
def _submit_lease(ctx: StepContext, model: str) -> Iterator[bool]:
    """One submission per model at a time: in this engine (a lock) and across engines on the store (a lease)."""
    shared = ctx.batch_looks
    if not shared.submitting.acquire(blocking=False):
        yield False
        return
    task = f"batch-submit:{_model_key(ctx, model)}"
    try:
        held = ctx.store.claim(task, shared.owner, SUBMIT_LEASE_S)
        try:
            yield held
        finally:
            if held:
                ctx.store.release(task, shared.owner)
    finally:
        shared.submitting.release()


def _model_key(ctx: StepContext, model: str) -> str:
    return f"{hashlib.sha256(ctx.settings.backend.encode()).hexdigest()[:12]}:{model}"


def _gather(ctx: StepContext, analysis: Analysis) -> tuple[list[Analysis], float]:
    """(the ready analyses of this model to send in one job, 0) or ([], seconds to wait for others to be ready)."""
    store, settings = ctx.store, ctx.settings
    until = ctx.batch_looks.collecting_until(_model_key(ctx, analysis.model), analysis.id)
    if until is not None:  # looking again, and a scan a moment ago found others on their way: no new scan
        return [], min(until - time.time(), COLLECT_LOOK_S)
    free = [
        a
        for a in store.unfinished()
        if a.tier == "batch"
        and a.model == analysis.model
        and a.backend == analysis.backend
        and not a.batch_job
        and not a.batch_token
        and not a.cancel_requested
    ]
    videos = store.by_id(Video, {a.video_id for a in free} | {analysis.video_id})
    ready: dict[str, Analysis] = {analysis.id: analysis}  # its own file is ready: the runner checked
    coming = 0
    for a in free:
        video = videos.get(a.video_id)
        if video is None or video.state is VideoState.FAILED:
            continue
        if video.file_usable(settings.backend):
            ready.setdefault(a.id, a)
        else:
            coming += 1
    # Files of this model's batch analyses are on their way, or analyses are still being added (a batch asked
    # again, web videos: ready at once, added one by one): wait a little so they share the job. The last of them
    # to be ready sends it; this one looks again meanwhile (a retry must not wait long).
    now = time.time()
    left = settings.batch_collect_s - (now - min(_ready_since(a, videos.get(a.video_id)) for a in ready.values()))
    quiet = QUIET_S - (now - max(a.created_at for a in [*free, analysis]))
    if left > 0 and (coming or quiet > 0):
        wait = min(left, COLLECT_LOOK_S if coming else quiet)
        ctx.batch_looks.collecting(_model_key(ctx, analysis.model), now + wait)
        return [], wait
    chosen = sorted(ready.values(), key=lambda a: (a.id != analysis.id, PRIORITY_RANK[a.priority], a.created_at))
    return chosen[:MAX_REQUESTS_PER_JOB], 0.0


def _ready_since(analysis: Analysis, video: Video | None) -> float:
    active = video.state_entered_at.get(VideoState.FILE_ACTIVE.value, 0.0) if video else 0.0
    return max(analysis.created_at, active)


def _claim(ctx: StepContext, candidates: list[Analysis], token: str) -> list[Analysis]:
    """Write ``token`` on each candidate still free (one atomic check-and-set each); the ones it was written on."""

    def take(a: Analysis) -> None:
        if not a.state.terminal and not a.batch_job and not a.batch_token and not a.cancel_requested:
            a.batch_token = token

    claimed = []
    for candidate in candidates:
        try:
            stored = ctx.store.mutate(Analysis, candidate.id, take)
        except NotFound:
            continue
        if stored.batch_token == token:
            claimed.append(stored)
    return claimed


def _submit(
    ctx: StepContext, analysis: Analysis, token: str, members: list[Analysis], should_stop: Callable[[], bool], *, look_first: bool
) -> Outcome:
    """Create the job of ``members`` (or find the one an earlier try created) and store its name on each."""
    store, settings = ctx.store, ctx.settings
    members = [m for m in (_still_asking(ctx, m) for m in members) if m is not None]
    if not members:  # every member ended meanwhile
        return Outcome.now()
    if look_first:  # an earlier submission may have reached Gemini: a second job would be a second bill
        try:
            found = ctx.call(lambda: _found_again(ctx, token), settings.analysis_budget_s, should_stop)
        except GeminiError as exc:
            _not_submitted(ctx, analysis, members, exc)
            raise
        if found is not None:
            return _stored(ctx, analysis, token, members, found, len(members))
        members = _with_usable_files(ctx, analysis, members)  # after a long stop, some files may have expired
    videos = store.by_id(Video, {m.video_id for m in members})
    requests = [
        BatchRequest(
            key=m.id,
            video=video_part(m, videos[m.video_id]),
            prompt=m.prompt,
            json_schema=STORY_SCHEMA if m.video_options.structured else None,
            resolution=m.video_options.resolution,
        )
        for m in members
        if m.video_id in videos
    ]
    count = len(requests)
    if not count:
        return Outcome.now()
    display_name = f"Video Storyteller {token}: {count} {'question' if count == 1 else 'questions'} ({analysis.model})"
    tried = [False]

    def find_or_create() -> BatchJob:
        if tried[0]:  # the try that failed may have created it
            found = _found_again(ctx, token)
            if found is not None:
                return found
        tried[0] = True
        return ctx.gateway.create_batch(model=analysis.model, requests=requests, display_name=display_name)

    try:
        job = ctx.call(find_or_create, settings.analysis_budget_s, should_stop)
    except GeminiError as exc:
        _not_submitted(ctx, analysis, members, exc)
        raise
    return _stored(ctx, analysis, token, members, job, count)


def _found_again(ctx: StepContext, token: str) -> BatchJob | None:
    found = ctx.gateway.find_batch(token)
    if found is not None:
        log.info("batch job found again by its token", extra={"batch_job": found.name, "token": token})
    return found


def _with_usable_files(ctx: StepContext, analysis: Analysis, members: list[Analysis]) -> list[Analysis]:
    """The members whose Gemini file can still be read; the others leave the token and wait for their file to be
    uploaded again (they join a later job). ``analysis`` itself was checked by the runner a moment ago."""
    videos = ctx.store.by_id(Video, {m.video_id for m in members})
    kept = []
    for member in members:
        video = videos.get(member.video_id)
        if member.id == analysis.id or (video is not None and video.file_usable(ctx.settings.backend)):
            kept.append(member)
        else:
            log.info("left out of a batch job: its file expired", extra={"analysis_id": member.id})
            _release(ctx, member.id, back_to_waiting=True)
    return kept


def _stored(ctx: StepContext, analysis: Analysis, token: str, members: list[Analysis], job: BatchJob, count: int) -> Outcome:
    """The job's name, stored on each member before anything waits on it."""
    kept = 0
    for member in members:
        stored = ctx.store.mutate(Analysis, member.id, lambda a: _set_job(a, token, job.name))
        kept += stored.batch_job == job.name
    log.info("batch job stored on its members", extra={"batch_job": job.name, "model": analysis.model, "requests": count, "members": kept})
    return Outcome.later(_delay(ctx.settings, 0.0))


def _set_job(analysis: Analysis, token: str, name: str) -> None:
    if analysis.batch_token == token and not analysis.state.terminal:  # not if it was cancelled meanwhile
        analysis.batch_job = name


def _not_submitted(ctx: StepContext, analysis: Analysis, members: list[Analysis], exc: GeminiError) -> None:
    """A refused job was never created: the members are free again. A transient failure may have created it:
    the others keep the token (the next try looks it up first); the one that fails now leaves."""
    refused = exc.kind is not Kind.TRANSIENT
    for member in members:
        if member.id == analysis.id or refused:
            _release(ctx, member.id, back_to_waiting=member.id != analysis.id)


def _release(ctx: StepContext, analysis_id: str, *, back_to_waiting: bool) -> None:
    try:
        ctx.store.update(Analysis, analysis_id, batch_token=None, batch_job=None)
        if back_to_waiting:
            ctx.store.transition(Analysis, analysis_id, AnalysisState.WAITING)
    except (NotFound, TransitionError):
        pass


def _still_asking(ctx: StepContext, analysis: Analysis) -> Analysis | None:
    """The member, ANALYZING; None when it ended meanwhile (cancelled, removed)."""
    try:
        return analyzing(ctx, ctx.store.require(Analysis, analysis.id))
    except (TransitionError, NotFound):
        return None


# -- waiting for the job ---------------------------------------------------------------------------------
def _look(ctx: StepContext, analysis: Analysis, should_stop: Callable[[], bool]) -> Outcome:
    """Look at the analysis's job (or use this engine's latest look); once it has ended, record every member."""
    name = analysis.batch_job or ""
    shared, settings = ctx.batch_looks, ctx.settings
    analysis = analyzing(ctx, analysis)  # back from a quota pause or a retry: it is Gemini's again
    with shared.looking(name) as mine:
        if not mine:
            return Outcome.later(BUSY_RETRY_S)
        last = shared.last(name)
        now = time.monotonic()
        if last is not None and (now < last.next_at or (last.job is not None and last.job.done)):
            job = last.job
        else:
            try:
                job = ctx.call(lambda: ctx.gateway.get_batch(name), settings.analysis_budget_s, should_stop)
            except GeminiError as exc:
                if exc.kind is not Kind.TRANSIENT:
                    raise
                log.warning("could not look at the batch job; looking again later", extra={"batch_job": name, "error": exc.label})
                return Outcome.later(settings.batch_poll_max_s)  # Gemini keeps the job: a bad hour fails nothing
            age = time.time() - (job.created_at if job and job.created_at else _submitted_at(analysis))
            last = Look(job, now + _delay(settings, age))
            shared.remember(name, last)
        if job is not None and not job.done:
            return Outcome.later(max(0.0, last.next_at - time.monotonic()))
        settle(ctx, name, job)
    after = ctx.store.get(Analysis, analysis.id)
    if after is None or after.state.terminal:
        return Outcome.done()
    return Outcome.now()  # its file vanished before the job ran: the next step asks for the video again


def _submitted_at(analysis: Analysis) -> float:
    return analysis.state_entered_at.get(AnalysisState.ANALYZING.value, analysis.created_at)


def _delay(settings: Settings, age_s: float) -> float:
    """Seconds until the next look at a job this old: a tenth of its age, within the bounds, +-20 %."""
    return min(settings.batch_poll_max_s, max(settings.batch_poll_initial_s, age_s / 10)) * random.uniform(0.8, 1.2)
