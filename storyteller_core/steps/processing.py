"""The processing step: ask Gemini about an uploaded file until it is ACTIVE (or FAILED).

A video waiting for Gemini's processing holds no worker: each check returns
the delay until the next one, and the scheduler keeps the video until then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import Code, GeminiError, Kind, StepFailed
from ..retry import poll_delay
from ..video import Video, VideoState
from . import Outcome
from .context import StepContext

log = logging.getLogger(__name__)


def wait_for_processing(ctx: StepContext, video: Video, should_stop: Callable[[], bool]) -> Outcome:
    store, settings = ctx.store, ctx.settings
    if video.state is VideoState.UPLOADED:
        video = store.transition(Video, video.id, VideoState.FILE_PROCESSING, poll_attempts=0)
    started = video.state_entered_at.get(VideoState.FILE_PROCESSING.value, time.time())
    if time.time() - started > settings.processing_budget_s:
        raise StepFailed(Code.PROCESSING_TIMEOUT, f"Gemini was still processing {video.display_name} after "
                         f"{settings.processing_budget_s / 60:.0f} min. Retry later.")
    assert video.gemini_name
    with ctx.polls.slot() as slot:
        if not slot.ok:
            return Outcome.later(slot.wait_s)  # over the status-call rate: give the worker back
        try:
            remote = ctx.gateway.get_file(video.gemini_name)
        except GeminiError as exc:
            if exc.kind is not Kind.TRANSIENT:
                raise
            if exc.quota:
                ctx.cooldown.note_exhausted(exc.retry_after_s)
            video = store.update(Video, video.id, poll_attempts=video.poll_attempts + 1)
            return Outcome.later(max(poll_delay(video.poll_attempts, settings), ctx.cooldown.remaining()))
    video = store.update(Video, video.id, poll_attempts=video.poll_attempts + 1,
                         gemini_state=remote.state if remote else "GONE")
    if remote is None:
        log.warning("gemini file gone while processing; uploading again", extra={"video_id": video.id})
        store.transition(Video, video.id, VideoState.CREATED)
        return Outcome.now()
    if remote.state == "ACTIVE":
        store.transition(Video, video.id, VideoState.FILE_ACTIVE, gemini_expires_at=remote.expires_at or video.gemini_expires_at)
        log.info("file active", extra={"video_id": video.id, "poll_attempts": video.poll_attempts,
                                       "processing_s": round(time.time() - started, 3)})
        return Outcome.done()
    if remote.state == "FAILED":
        raise StepFailed(Code.FILE_FAILED, f"Gemini could not process {video.display_name}: "
                         f"{remote.error or 'no reason given'}. Check that the video plays, then retry.")
    return Outcome.later(poll_delay(video.poll_attempts, settings))
