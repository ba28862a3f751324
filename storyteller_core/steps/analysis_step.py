"""The analysis step: ask Gemini the analysis's question of its video's file, streamed, and store the story.

The text is stored as it arrives (about once a second) so the board shows it
being written; the finished record holds the whole answer and its usage. A
structured answer is checked (story.py) before it is stored.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from storyteller_core.errors import Cancelled, Code, GeminiError, Kind, StepFailed
from storyteller_core.gemini.gateway import Answer, VideoPart
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.story_answer import parse_answer, parse_custom_answer, schema_for
from storyteller_core.records.video import Video, VideoState
from storyteller_core.settings import cost_usd
from storyteller_core.steps import Outcome
from storyteller_core.steps import context_cache as caching
from storyteller_core.steps.step_context import StepContext

log = logging.getLogger(__name__)
PARTIAL_EVERY_S = 1.0


def analyze(ctx: StepContext, analysis: Analysis, video: Video, should_stop: Callable[[], bool]) -> Outcome:
    """Ask now (standard or flex tier); the Batch tier's analyses go through steps/batch_tier_submit.py instead."""
    store, settings = ctx.store, ctx.settings
    analysis = store.transition(Analysis, analysis.id, AnalysisState.ANALYZING, partial_story=None)
    options = analysis.video_options
    part = video_part(analysis, video)
    flex = analysis.tier == "flex"
    budget = settings.flex_budget_s if flex else settings.analysis_budget_s
    cache = caching.cache_for(ctx, analysis, video, part, should_stop) if not video.url else None
    try:
        answer = ctx.call(
            lambda: ctx.gateway.generate(
                model=analysis.model,
                video=part,
                prompt=analysis.prompt,
                timeout_s=budget,
                json_schema=schema_for(options),
                resolution=options.resolution,
                on_text=_partial_writer(ctx, analysis.id, should_stop),
                flex=flex,
                cache=cache,
            ),
            budget,
            should_stop,
        )
    except GeminiError as exc:
        if cache and "CachedContent" in exc.message:  # expired or deleted under us: forget it, ask again
            log.info("context cache gone; asking again", extra={"analysis_id": analysis.id, "cache": cache})
            caching.forget(ctx, video.id, cache)
            return Outcome.now()
        if exc.kind not in (Kind.GONE, Kind.NOT_READY) or video.url:
            raise
        log.warning("gemini file not usable for analysis; uploading again", extra={"analysis_id": analysis.id, "error": exc.label})
        if store.require(Video, video.id).state is VideoState.FILE_ACTIVE:
            store.transition(Video, video.id, VideoState.CREATED)
        store.transition(Analysis, analysis.id, AnalysisState.WAITING, partial_story=None)
        return Outcome.now()  # the analysis's next step asks for the video again
    record_answer(ctx, analysis, video, answer, cache_name=cache)
    if cache:  # the last question of the part deletes its cache (after its own answer is stored: see caching.release)
        storage_usd = caching.release(ctx, analysis)
        done = store.require(Analysis, analysis.id)
        if storage_usd and done.cost_usd is not None:
            store.update(Analysis, analysis.id, cost_usd=done.cost_usd + storage_usd)
    return Outcome.done()


def video_part(analysis: Analysis, video: Video) -> VideoPart:
    options = analysis.video_options
    return VideoPart(
        uri=video.gemini_uri or "",
        mime_type=video.mime_type,
        start_s=options.start_s,
        end_s=options.end_s,
        fps=options.fps,
        processing=options.processing,
    )


def record_answer(ctx: StepContext, analysis: Analysis, video: Video, answer: Answer, extra_usd: float = 0.0, **fields: Any) -> None:
    """Check Gemini's answer (a structured one against the video) and store it with its usage and cost at the tier."""
    store, options = ctx.store, analysis.video_options
    if not answer.text:
        reason = answer.block_reason or answer.finish_reason or "no reason given"
        raise StepFailed(
            Code.EMPTY_ANSWER, f"Gemini returned no story for {video.display_name} ({reason}). Try another prompt or model, then retry."
        )
    story_text, structured, custom = answer.text, None, None
    schema = schema_for(options)
    if options.answer_schema and schema is not None:
        custom, note = parse_custom_answer(answer.text, schema)
        if custom is not None:
            story_text = "\n".join(f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in custom.items())
        if note:
            log.info("custom answer checked", extra={"analysis_id": analysis.id, "note": note})
    if options.structured:
        story = parse_answer(answer.text, start_s=options.start_s or 0.0, end_s=_end_of(options.end_s, video.duration_s))
        story_text, structured = story.text, story.to_dict()
        if story.dropped_moments or story.note:
            log.info("structured answer checked", extra={"analysis_id": analysis.id, "dropped": story.dropped_moments, "note": story.note})
    store.transition(
        Analysis,
        analysis.id,
        AnalysisState.COMPLETED,
        story=story_text,
        structured=structured,
        answer=custom,
        partial_story=None,
        finish_reason=answer.finish_reason,
        model_version=answer.model_version,
        prompt_tokens=answer.prompt_tokens,
        output_tokens=answer.output_tokens,
        total_tokens=answer.total_tokens,
        cached_tokens=answer.cached_tokens,
        cost_usd=None if analysis.demo else _cost(analysis, answer) + extra_usd,
        **fields,
    )


def _cost(analysis: Analysis, answer: Answer) -> float:
    """The answer's cost at the tier, cached tokens at the cached price."""
    return (
        cost_usd(
            analysis.model, answer.prompt_tokens or 0, answer.output_tokens or 0, analysis.tier, cached_tokens=answer.cached_tokens or 0
        )
        or 0.0
    )


def _end_of(clip_end: float | None, duration_s: float | None) -> float | None:
    ends = [x for x in (clip_end, duration_s) if x is not None]
    return min(ends) if ends else None


def _partial_writer(ctx: StepContext, analysis_id: str, should_stop: Callable[[], bool]) -> Callable[[str], None]:
    last = [0.0]

    def on_text(text: str) -> None:
        if should_stop():
            raise Cancelled("analysis stopped")
        if time.monotonic() - last[0] >= PARTIAL_EVERY_S:
            last[0] = time.monotonic()
            ctx.store.update(Analysis, analysis_id, partial_story=text)

    return on_text
