"""The upload step: put a video's content on Gemini once, under a name derived from its sha256.

After a crash the step first asks Gemini whether the file already exists, so
an upload that did finish is never repeated. The bytes are hashed as they are
sent; content that changed since it was added is never stored under the old
content's name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from storyteller_core.errors import Cancelled, Code, StepFailed
from storyteller_core.gemini.gateway import RemoteFile, file_name_for
from storyteller_core.records.video import UPLOAD_PROGRESS_SPAN, Video, VideoState
from storyteller_core.steps import Outcome
from storyteller_core.steps.step_context import StepContext

log = logging.getLogger(__name__)
MAX_UPLOADS_PER_VIDEO = 3
FRESH_FOR_S = 15 * 60  # a found file must stay usable at least this long to be worth keeping


def upload(ctx: StepContext, video: Video, should_stop: Callable[[], bool]) -> Outcome:
    backend = ctx.settings.backend
    budget = ctx.settings.upload_budget_s
    name = file_name_for(video.sha256)
    existing = None
    if video.state is VideoState.UPLOADING or (video.gemini_name and video.backend == backend):
        with ctx.polls.slot() as slot:  # files.get counts against the status-call rate
            if not slot.ok:
                return Outcome.later(slot.wait_s)
            existing = ctx.call(lambda: ctx.gateway.get_file(name), budget, should_stop)
    if existing and _reusable(existing, video):
        log.info("gemini file already exists; not uploading", extra={"video_id": video.id, "gemini_name": name})
        record_file(ctx, video, existing)
        return Outcome.now()
    if existing:  # FAILED, about to expire, or not this content: start clean
        ctx.call(lambda: ctx.gateway.delete_file(name), budget, should_stop)
    if video.upload_count >= MAX_UPLOADS_PER_VIDEO:
        raise StepFailed(
            Code.TOO_MANY_UPLOADS,
            f"{video.display_name} was uploaded {video.upload_count} times and the file kept disappearing from Gemini. Retry later.",
        )
    source = next((Path(s) for s in video.sources if Path(s).is_file()), None)
    if source is None:
        raise StepFailed(
            Code.SOURCE_MISSING,
            f"{video.display_name} is no longer on this computer ({', '.join(video.sources) or 'no copy was kept'}). Add the file again.",
        )
    ctx.store.transition(
        Video,
        video.id,
        VideoState.UPLOADING,
        upload_count=video.upload_count + 1,
        backend=backend,
        gemini_name=None,
        gemini_uri=None,
        gemini_state=None,
        gemini_expires_at=None,
    )
    started = time.monotonic()
    log.info("upload start", extra={"video_id": video.id, "file_size": video.size_bytes, "gemini_name": name})
    sent = ctx.call(
        lambda: ctx.gateway.upload(
            source,
            name=name,
            display_name=video.display_name,
            mime_type=video.mime_type,
            on_progress=_progress_writer(ctx, video, should_stop),
        ),
        budget,
        should_stop,
    )
    log.info("upload end", extra={"video_id": video.id, "gemini_name": sent.file.name, "seconds": round(time.monotonic() - started, 3)})
    found = sent.sha256 or sent.file.sha256
    if found and found != video.sha256:
        return _changed(ctx, video, source, sent.file, should_stop)
    record_file(ctx, video, sent.file)
    return Outcome.now()


def record_file(ctx: StepContext, video: Video, remote: RemoteFile) -> None:
    ctx.store.transition(
        Video,
        video.id,
        VideoState.UPLOADED,
        backend=ctx.settings.backend,
        gemini_name=remote.name,
        gemini_uri=remote.uri,
        gemini_state=remote.state,
        gemini_expires_at=remote.expires_at or time.time() + ctx.settings.file_ttl_s,
    )


def _reusable(remote: RemoteFile, video: Video) -> bool:
    fresh = remote.expires_at is None or remote.expires_at > time.time() + FRESH_FOR_S
    same_content = remote.sha256 is None or remote.sha256 == video.sha256
    return remote.state != "FAILED" and fresh and same_content


def _changed(ctx: StepContext, video: Video, source: Path, remote: RemoteFile, should_stop: Callable[[], bool]) -> Outcome:
    """The file's bytes are not the content it was added with: never keep them under this name."""
    log.warning("source changed after it was added", extra={"video_id": video.id, "source": str(source)})
    ctx.call(lambda: ctx.gateway.delete_file(remote.name), ctx.settings.upload_budget_s, should_stop)
    others = [s for s in video.sources if s != str(source)]
    ctx.store.transition(Video, video.id, VideoState.CREATED, sources=others)
    if others:
        return Outcome.now()  # another copy of the same content may still be intact
    raise StepFailed(Code.SOURCE_CHANGED, f"{source.name} changed after it was added; add it again.")


def _progress_writer(ctx: StepContext, video: Video, should_stop: Callable[[], bool]) -> Callable[[int], None]:
    low, high = UPLOAD_PROGRESS_SPAN
    total = max(1, video.size_bytes)
    last_write = [0.0]

    def on_progress(sent: int) -> None:
        now = time.monotonic()
        if now - last_write[0] < 0.5 and sent < total:
            return
        last_write[0] = now
        if should_stop():
            raise Cancelled("upload stopped")
        ctx.store.update(Video, video.id, progress=low + (high - low) * min(sent, total) // total)

    return on_progress
