"""Which part of a video to look at and how closely: clip range, frames per second, media resolution.

These go into an analysis's key (a different clip is a different question),
onto the wire as VideoMetadata and media_resolution, and into the estimate
before a batch runs. Only what differs from Gemini's defaults is kept, so a
plain question has the same key as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storyteller_core.records.timecode import seconds_of, timestamp

RESOLUTIONS = ("low", "medium", "high")
_FIELDS = frozenset({"start_s", "end_s", "fps", "resolution", "structured", "processing", "answer_schema"})
PROCESSING_MODES = ("agentic",)  # Gemini 3's agentic video processing (preview, Part.media_processing); None: default
# Google says agentic processing uses far fewer tokens on long videos but publishes no ratio: this share of the
# default count is an estimate, replaced by the real usage once an answer is back.
AGENTIC_TOKEN_SHARE = 0.3
MAX_FPS = 24.0
# Gemini's published token counts (ai.google.dev/gemini-api/docs/tokens and .../video-understanding):
# 258 tokens per frame at default media resolution, 66 at low, frames sampled at 1 per second by default,
# plus 32 tokens per second of audio. That is about 300 tokens per second of video, about 100 at low.
TOKENS_PER_FRAME = {"low": 66, "medium": 258, "high": 258, None: 258}
AUDIO_TOKENS_PER_SECOND = 32


@dataclass(frozen=True)
class VideoOptions:
    start_s: float | None = None
    end_s: float | None = None
    fps: float | None = None
    resolution: str | None = None  # low | medium | high; None: Gemini's default
    structured: bool = False  # ask for the JSON story (title, prose, key moments, people, places, tags)
    processing: str | None = None  # "agentic" (Gemini 3 models); None: Gemini's default processing
    # a custom answer's JSON schema, as JSON text (collection/table.py builds it from the analyst's fields): the
    # answer is asked for in that shape and stored in Analysis.answer; part of the key (other fields, other question)
    answer_schema: str | None = None

    def __post_init__(self) -> None:
        if self.fps is not None and not 0 < self.fps <= MAX_FPS:
            raise ValueError(f"frames per second must be above 0 and at most {MAX_FPS:g} (got {self.fps:g})")
        if self.resolution is not None and self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}")
        if self.processing is not None and self.processing not in PROCESSING_MODES:
            raise ValueError(f"processing must be one of {', '.join(PROCESSING_MODES)} (or left at Gemini's default)")
        if self.start_s is not None and self.start_s < 0:
            raise ValueError("the clip cannot start before 0:00")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError("the clip must end after it starts")
        if self.structured and self.answer_schema:
            raise ValueError("an answer is either the structured story or a custom schema, not both")

    def to_key(self) -> dict[str, Any]:
        """The options as stored with the analysis and hashed into its key: defaults left out."""
        values = {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "fps": self.fps,
            "resolution": self.resolution,
            "structured": self.structured or None,
            "processing": self.processing,
            "answer_schema": self.answer_schema,
        }
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_key(cls, data: dict[str, Any]) -> VideoOptions:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    @property
    def clipped(self) -> bool:
        return self.start_s is not None or self.end_s is not None

    def seconds(self, duration_s: float | None) -> float:
        """How many seconds of video Gemini will look at."""
        end = min(x for x in (self.end_s, duration_s) if x is not None) if (self.end_s or duration_s) else 0.0
        return max(0.0, end - (self.start_s or 0.0))

    def video_tokens(self, duration_s: float | None) -> int:
        per_second = (self.fps or 1.0) * TOKENS_PER_FRAME[self.resolution] + AUDIO_TOKENS_PER_SECOND
        share = AGENTIC_TOKEN_SHARE if self.processing == "agentic" else 1.0
        return int(self.seconds(duration_s) * per_second * share)

    def describe(self) -> str:
        parts = []
        if self.clipped:
            parts.append(f"clip {timestamp(self.start_s or 0)}-{timestamp(self.end_s) if self.end_s is not None else 'end'}")
        if self.fps is not None:
            parts.append(f"{self.fps:g} fps")
        if self.resolution:
            parts.append(f"{self.resolution} resolution")
        if self.processing:
            parts.append(f"{self.processing} processing")
        return ", ".join(parts)


def parse_clip(text: str) -> tuple[float | None, float | None]:
    """ "00:30-02:00" -> (30.0, 120.0); "00:00.5-00:02" -> (0.5, 2.0); either side may be empty ("-02:00", "00:30-")."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise ValueError(f"a clip is START-END, e.g. 00:30-02:00 (got {text!r})")
    start = seconds_of(start_text) if start_text.strip() else None
    end = seconds_of(end_text) if end_text.strip() else None
    if (start_text.strip() and start is None) or (end_text.strip() and end is None):
        raise ValueError(f"clip times are MM:SS or H:MM:SS (got {text!r})")
    return start, end
