"""The Batch tier's answers: a job that has ended becomes each member's story, or the reason it has none.

Every member is recorded by the first look that sees the job ended: its story,
tokens and cost at the batch price (checked as any answer is, analysis.py), or
a message that says what happened and what to do. A member whose file vanished
before the job ran goes back to waiting: its video is uploaded again and it is
asked in a later job.
"""

from __future__ import annotations

import logging
from contextlib import suppress

from storyteller_core.errors import Code, StepFailed
from storyteller_core.gemini.gateway import BatchJob, BatchResult
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.record import TransitionError
from storyteller_core.records.video import Video, VideoState
from storyteller_core.sanitize import scrub
from storyteller_core.steps.analysis_step import record_answer
from storyteller_core.steps.step_context import StepContext
from storyteller_core.storage.disk_store import NotFound

log = logging.getLogger(__name__)
FILE_GONE_CODES = {5, 7}  # google.rpc NOT_FOUND, PERMISSION_DENIED: with a message naming a file, it is gone
NEXT_STEPS = (
    "Press Retry to send it in a new batch job, or ask again on the standard tier (Ask again, Price: "
    "standard; or `process --tier standard`) for an answer in seconds."
)


def analyzing(ctx: StepContext, analysis: Analysis) -> Analysis:
    if analysis.state is AnalysisState.WAITING:
        return ctx.store.transition(Analysis, analysis.id, AnalysisState.ANALYZING, partial_story=None)
    return analysis


def settle(ctx: StepContext, name: str, job: BatchJob | None) -> None:
    """The job has ended (or is gone): every analysis still waiting for it gets its answer or the reason."""
    members = [a for a in ctx.store.unfinished() if a.batch_job == name]
    if job is None or job.state not in ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED"):
        code, message = _ended_without_answers(name, job)
        log.warning(
            "batch job ended without answers", extra={"batch_job": name, "state": job.state if job else "GONE", "members": len(members)}
        )
        for member in members:
            _fail(ctx, member.id, code, message)
        return
    results = {r.key: r for r in job.results if r.key}
    log.info("batch job succeeded", extra={"batch_job": name, "answers": len(results), "members": len(members)})
    for member in members:
        result = results.get(member.id)
        with suppress(TransitionError, NotFound):  # recorded (or removed) meanwhile by another engine
            _record(ctx, member, name, result)


def _record(ctx: StepContext, member: Analysis, name: str, result: BatchResult | None) -> None:
    store = ctx.store
    video = store.require(Video, member.video_id)
    if result is None:
        _fail(
            ctx,
            member.id,
            Code.BATCH_FAILED,
            f"Gemini's batch job {name} finished without an answer for {video.display_name}. {NEXT_STEPS}",
        )
        return
    if result.answer is not None:
        member = analyzing(ctx, store.require(Analysis, member.id))
        try:
            record_answer(ctx, member, video, result.answer)
        except StepFailed as exc:
            _fail(ctx, member.id, exc.code, exc.message)
        return
    text = result.error_message or "no reason given"
    if result.error_code in FILE_GONE_CODES and "file" in text.lower() and not video.url:
        log.warning("gemini file gone before the batch job ran; uploading again", extra={"analysis_id": member.id, "batch_job": name})
        if video.state is VideoState.FILE_ACTIVE:
            store.transition(Video, video.id, VideoState.CREATED)
        analyzing(ctx, store.require(Analysis, member.id))
        store.transition(Analysis, member.id, AnalysisState.WAITING, batch_job=None, batch_token=None)
        return
    _fail(
        ctx,
        member.id,
        Code.GEMINI_REFUSED,
        f"Gemini could not answer this question about {video.display_name} in its batch job {name} ({text.rstrip('. ')}). {NEXT_STEPS}",
    )


def _ended_without_answers(name: str, job: BatchJob | None) -> tuple[Code, str]:
    state = job.state if job else "GONE"
    if state == "JOB_STATE_EXPIRED":
        return Code.BATCH_EXPIRED, (
            f"Gemini's batch job {name} expired: Gemini did not run it within 48 hours (it "
            f"does when it is busy), so there is no story and nothing was charged. {NEXT_STEPS}"
        )
    if state == "JOB_STATE_CANCELLED":
        return Code.BATCH_FAILED, (
            f"Gemini's batch job {name} was cancelled outside this app (in AI Studio or by "
            f"another program), so there is no story. {NEXT_STEPS}"
        )
    if job is None:
        return Code.BATCH_FAILED, (
            f"Gemini no longer knows the batch job {name} (deleted, or kept past its time), so its stories are lost. {NEXT_STEPS}"
        )
    return Code.BATCH_FAILED, (
        f"Gemini's batch job {name} failed as a whole ({state.removeprefix('JOB_STATE_')}), so there is no story. {NEXT_STEPS}"
    )


def _fail(ctx: StepContext, analysis_id: str, code: Code, message: str) -> None:
    """The analysis leaves its job for good: Retry starts a new one."""
    with suppress(TransitionError, NotFound):
        ctx.store.transition(
            Analysis,
            analysis_id,
            AnalysisState.FAILED,
            error_code=str(code),
            error_message=scrub(message),
            failed_step="analysis",
            batch_job=None,
            batch_token=None,
        )
    log.warning("step failed", extra={"task": f"analysis:{analysis_id}", "error_code": str(code), "failed_step": "analysis"})
