"""The processing step: wait for Gemini to process an uploaded file until it is ACTIVE (or FAILED).

A video waiting for Gemini's processing holds no worker. With a status watch
(the engine's default) the step registers the file there and sleeps in the
scheduler until the watch, which learns many files' states per call, wakes
it; the step then records what the watch saw. Without one (or when the watch
hands a file back), the step asks ``files.get`` for its own file and returns
the delay until its next look (1 s, x1.5, capped at 10 s by default).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from storyteller_core.errors import Code, GeminiError, Kind, StepFailed
from storyteller_core.gemini.gateway import RemoteFile
from storyteller_core.gemini.reach import REACH
from storyteller_core.gemini.retry import poll_delay
from storyteller_core.records.video import Video, VideoState
from storyteller_core.steps import Outcome
from storyteller_core.steps.step_context import StepContext

if TYPE_CHECKING:
    from storyteller_core.work.status_watch import StatusWatch

log = logging.getLogger(__name__)
WAKE_MARGIN_S = 0.05  # sleep a little past the budget, so the step that wakes is the one that times out


def wait_for_processing(ctx: StepContext, video: Video, should_stop: Callable[[], bool], watch: StatusWatch | None = None) -> Outcome:
    store, settings = ctx.store, ctx.settings
    if video.state is VideoState.UPLOADED:
        if video.gemini_state == "ACTIVE":  # the upload's answer already said so: nothing to ask
            return _settled(ctx, video, _as_remote(video), time.time())
        video = store.transition(Video, video.id, VideoState.FILE_PROCESSING, poll_attempts=0)
    started = video.state_entered_at.get(VideoState.FILE_PROCESSING.value, time.time())
    assert video.gemini_name
    if watch is not None:
        seen = watch.check(video.id, video.gemini_name)
        if seen is not None and not seen.ask_alone:
            video = store.update(
                Video, video.id, poll_attempts=video.poll_attempts + seen.checks, gemini_state=seen.remote.state if seen.remote else "GONE"
            )
            return _settled(ctx, video, seen.remote, started)
        if seen is None:
            left = settings.processing_budget_s - (time.time() - started)
            if left > 0:
                return Outcome.later(left + WAKE_MARGIN_S)  # the watch wakes this task when the file settles
            watch.forget(video.id)
            _timed_out(video, settings.processing_budget_s)
    if time.time() - started > settings.processing_budget_s:
        _timed_out(video, settings.processing_budget_s)
    return _poll_alone(ctx, video, started)


def _poll_alone(ctx: StepContext, video: Video, started: float) -> Outcome:
    """One files.get for this file under the status-call limits; the delay until the next look."""
    store, settings = ctx.store, ctx.settings
    assert video.gemini_name
    with ctx.polls.slot(video.id) as slot:
        if not slot.ok:
            return Outcome.later(slot.wait_s)  # its reserved status-call slot comes then: wait in the timer heap
        try:
            remote = ctx.gateway.get_file(video.gemini_name)
        except GeminiError as exc:
            if exc.kind is not Kind.TRANSIENT:
                raise
            if exc.quota:
                ctx.cooldown.note_exhausted(exc.retry_after_s)
            video = store.update(Video, video.id, poll_attempts=video.poll_attempts + 1)
            delay = max(poll_delay(video.poll_attempts, settings), ctx.cooldown.remaining())
            # the row says why it waits, as the other steps' waits do; the note outlives this look (to the next)
            REACH.retrying(f"video:{video.id}", exc, retry_attempt(video.id), delay, store, lasting=True)
            return Outcome.later(delay)
    REACH.answered(f"video:{video.id}")  # a store write only when a note was there
    video = store.update(Video, video.id, poll_attempts=video.poll_attempts + 1, gemini_state=remote.state if remote else "GONE")
    if remote is not None and remote.state not in ("ACTIVE", "FAILED"):
        return Outcome.later(poll_delay(video.poll_attempts, settings))
    return _settled(ctx, video, remote, started)


def retry_attempt(video_id: str) -> int:
    """The number of the next look at a file whose looks fail: counts on from its note (the first look was 1)."""
    note = REACH.note(f"video:{video_id}")
    return note.attempt + 1 if note else 2


def _settled(ctx: StepContext, video: Video, remote: RemoteFile | None, started: float) -> Outcome:
    store = ctx.store
    if remote is None:
        log.warning("gemini file gone while processing; uploading again", extra={"video_id": video.id})
        store.transition(Video, video.id, VideoState.CREATED)
        return Outcome.now()
    if remote.state == "FAILED":
        raise StepFailed(
            Code.FILE_FAILED,
            f"Gemini could not process {video.display_name}: "
            f"{(remote.error or 'no reason given').rstrip('. ')}. Check that the video plays, then retry.",
        )
    store.transition(Video, video.id, VideoState.FILE_ACTIVE, gemini_expires_at=remote.expires_at or video.gemini_expires_at)
    log.info(
        "file active", extra={"video_id": video.id, "poll_attempts": video.poll_attempts, "processing_s": round(time.time() - started, 3)}
    )
    return Outcome.done()


def _as_remote(video: Video) -> RemoteFile:
    return RemoteFile(
        name=video.gemini_name or "", uri=video.gemini_uri or "", state=video.gemini_state or "", expires_at=video.gemini_expires_at
    )


def _timed_out(video: Video, budget_s: float) -> None:
    raise StepFailed(
        Code.PROCESSING_TIMEOUT, f"Gemini was still processing {video.display_name} after {budget_s / 60:.0f} min. Retry later."
    )
