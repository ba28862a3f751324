"""The analysis step: ask Gemini the analysis's question of its video's ACTIVE file, store the story."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..analysis import Analysis, AnalysisState
from ..config import cost_usd
from ..errors import Code, GeminiError, Kind, StepFailed
from ..video import Video, VideoState
from . import Outcome
from .context import StepContext

log = logging.getLogger(__name__)


def analyze(ctx: StepContext, analysis: Analysis, video: Video, should_stop: Callable[[], bool]) -> Outcome:
    store, settings = ctx.store, ctx.settings
    analysis = store.transition(Analysis, analysis.id, AnalysisState.ANALYZING)
    try:
        result = ctx.call(
            lambda: ctx.gateway.generate(model=analysis.model, file_uri=video.gemini_uri or "", mime_type=video.mime_type,
                                         prompt=analysis.prompt, timeout_s=settings.analysis_budget_s),
            settings.analysis_budget_s, should_stop,
        )
    except GeminiError as exc:
        if exc.kind not in (Kind.GONE, Kind.NOT_READY):
            raise
        log.warning("gemini file not usable for analysis; uploading again", extra={"analysis_id": analysis.id,
                                                                                  "error": exc.label})
        current = store.require(Video, video.id)
        if current.state is VideoState.FILE_ACTIVE:
            store.transition(Video, video.id, VideoState.CREATED)
        store.transition(Analysis, analysis.id, AnalysisState.WAITING)
        return Outcome.now()  # the analysis's next step asks for the video again
    if not result.text:
        reason = result.block_reason or result.finish_reason or "no reason given"
        raise StepFailed(Code.EMPTY_ANSWER, f"Gemini returned no story for {video.display_name} ({reason}). "
                         "Try another prompt or model, then retry.")
    store.transition(
        Analysis, analysis.id, AnalysisState.COMPLETED, story=result.text, finish_reason=result.finish_reason,
        model_version=result.model_version, prompt_tokens=result.prompt_tokens, output_tokens=result.output_tokens,
        total_tokens=result.total_tokens,
        cost_usd=None if analysis.demo else cost_usd(analysis.model, result.prompt_tokens or 0, result.output_tokens or 0),
    )
    return Outcome.done()
