"""The Analysis record: one question asked of one video, keyed by what makes the answer.

The key is (video, model, prompt text, analysis options, backend): the same key
is never paid for twice. A COMPLETED analysis is reused; identical analyses in
flight are one record, so they share one Gemini call. Demo answers live under
the emulator backend and are never handed out for a real key.

An analysis's life: WAITING (for its video's file, or a worker) -> ANALYZING ->
COMPLETED, or FAILED / CANCELLED. ANALYZING goes back to WAITING when the
file vanished under it (the video is uploaded again).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar

from storyteller_core.records.options import VideoOptions
from storyteller_core.records.record import Record, now
from storyteller_core.settings import DEMO_BACKEND, PROMPT_PRESETS, STRUCTURED_PRESETS, TIERS


class AnalysisState(StrEnum):
    WAITING = "WAITING"
    ANALYZING = "ANALYZING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (AnalysisState.COMPLETED, AnalysisState.FAILED, AnalysisState.CANCELLED)


A = AnalysisState
ANALYSIS_TRANSITIONS: dict[AnalysisState, frozenset[AnalysisState]] = {
    A.WAITING: frozenset({A.ANALYZING, A.FAILED, A.CANCELLED}),
    A.ANALYZING: frozenset({A.ANALYZING, A.WAITING, A.COMPLETED, A.FAILED, A.CANCELLED}),  # ANALYZING again: resumed
    A.COMPLETED: frozenset(),
    A.FAILED: frozenset({A.WAITING}),  # retry, or asked again
    A.CANCELLED: frozenset({A.WAITING}),
}
PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


def analysis_key(video_id: str, model: str, prompt: str, options: dict[str, Any], backend: str) -> str:
    """A stable id for an analysis: the same question of the same video on the same backend."""
    raw = json.dumps([video_id, model, prompt, options, backend], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


@dataclass
class Analysis(Record):
    KIND: ClassVar[str] = "analysis"
    TRANSITIONS: ClassVar = ANALYSIS_TRANSITIONS
    STATE: ClassVar = AnalysisState

    video_id: str = ""
    model: str = ""
    prompt: str = ""
    preset: str | None = None  # the preset's name when the prompt came from one
    options: dict[str, Any] = field(default_factory=dict)
    backend: str = ""
    priority: str = "normal"
    tier: str = "standard"  # standard | flex | batch (about half price, minutes or hours): how it is asked, not what
    # the Batch tier: the Gemini batch job that holds this question (stored before any wait), and the token in the
    # job's display name, stored before the job is created, by which a job whose name was never stored is found again
    batch_job: str | None = None
    batch_token: str | None = None
    state: AnalysisState = AnalysisState.WAITING
    story: str | None = None  # the prose: what a person copies
    structured: dict[str, Any] | None = None  # the checked structured answer (story.Story.to_dict), when asked for
    answer: dict[str, Any] | None = None  # the JSON answer to a custom schema (options' answer_schema), when asked for
    partial_story: str | None = None  # the text so far while Gemini writes (streamed)
    finish_reason: str | None = None
    model_version: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None  # of prompt_tokens, read from an explicit context cache (billed at the cached price)
    cache_name: str | None = None  # the cachedContents this question was asked through, if any
    estimated_cost_usd: float | None = None
    cost_usd: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    failed_step: str | None = None
    cancel_requested: bool = False
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    completed_at: float | None = None
    state_entered_at: dict[str, float] = field(default_factory=dict)

    @property
    def demo(self) -> bool:
        return self.backend == DEMO_BACKEND

    @property
    def video_options(self) -> VideoOptions:
        return VideoOptions.from_key(self.options)

    @property
    def prompt_label(self) -> str:
        """What to call the question in a table: the preset's name, else the prompt text."""
        return self.preset or self.prompt


@dataclass(frozen=True)
class Ask:
    """What to ask of each video."""

    prompt: str
    model: str
    preset: str | None = None
    priority: str = "normal"
    options: VideoOptions = field(default_factory=VideoOptions)
    tier: str = "standard"  # flex / batch: about half price, minutes / hours; not part of the key (the same answer)

    @property
    def key_options(self) -> dict[str, Any]:
        """The options that make the answer: a structured preset asks for the JSON story."""
        structured = self.preset in STRUCTURED_PRESETS and self.prompt == PROMPT_PRESETS.get(self.preset or "")
        return replace(self.options, structured=structured).to_key()

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "model": self.model,
            "preset": self.preset,
            "priority": self.priority,
            "options": self.options.to_key(),
            "tier": self.tier,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ask:
        return cls(**{**data, "options": VideoOptions.from_key(data.get("options") or {})})

    def __post_init__(self) -> None:
        if self.priority not in PRIORITY_RANK:
            raise ValueError(f"priority must be one of {', '.join(PRIORITY_RANK)}")
        if self.tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}")
        if not self.prompt.strip():
            raise ValueError("the prompt is empty: write what to ask Gemini about each video")
