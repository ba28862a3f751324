"""The emulator's stories: plainly labeled, and true to the uploaded video.

Token figures are Gemini's published ones (https://ai.google.dev/gemini-api/docs/tokens and
.../video-understanding): 258 tokens per frame at default media resolution, 66 at low, frames sampled
at 1 per second unless videoMetadata.fps says otherwise, plus 32 tokens per second of audio (counted for
every second looked at, as the app's estimate does). Medium and high are counted like the default: Google
publishes no separate per-frame figure for video at those levels on Gemini 2.5.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from storyteller_core.emulator.schema import Facts, fill, moment_count, moment_times, timestamp
from storyteller_core.emulator.wire import GenerateRequest
from storyteller_core.intake.media import MediaError, Probe, probe

LABEL = "[Demo output from the local Gemini emulator, not written by Gemini]"
TOKENS_PER_FRAME = {None: 258, "MEDIA_RESOLUTION_LOW": 66, "MEDIA_RESOLUTION_MEDIUM": 258, "MEDIA_RESOLUTION_HIGH": 258}
AUDIO_TOKENS_PER_SECOND = 32
TOKENS_PER_SECOND = TOKENS_PER_FRAME[None] + AUDIO_TOKENS_PER_SECOND  # at 1 frame per second, default resolution
DEFAULT_SCHEMA: dict[str, Any] = {  # application/json asked for with no schema
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "story": {"type": "string"},
        "key_moments": {
            "type": "array",
            "items": {"type": "object", "properties": {"time": {"type": "string"}, "description": {"type": "string"}}},
        },
    },
}


def _probe(path: Path, display_name: str) -> Probe | None:
    try:
        return probe(path, display_name, max_bytes=2**62, max_duration_s=float("inf"))
    except MediaError:
        return None


def video_tokens(path: Path, display_name: str) -> int:
    """What Gemini would count for the whole video at 1 fps and default resolution."""
    info = _probe(path, display_name)
    return int(info.duration_s * TOKENS_PER_SECOND) if info else 0


def clip_seconds(duration_s: float, start_s: float | None, end_s: float | None) -> tuple[float, float]:
    """The part of the video looked at, inside it."""
    end = duration_s if end_s is None else min(end_s, duration_s)
    start = min(start_s or 0.0, end)
    return start, end


def token_split(seconds: float, fps: float | None, resolution: str | None) -> tuple[int, int]:
    """(video tokens, audio tokens) for that many seconds; their sum is what usage reports for the video part."""
    per_second = (fps or 1.0) * TOKENS_PER_FRAME.get(resolution, TOKENS_PER_FRAME[None]) + AUDIO_TOKENS_PER_SECOND
    total = int(seconds * per_second)
    audio = min(total, int(seconds * AUDIO_TOKENS_PER_SECOND))
    return total - audio, audio


def file_facts(path: Path, display_name: str, request: GenerateRequest) -> Facts:
    try:
        info = probe(path, display_name, max_bytes=2**62, max_duration_s=float("inf"))
    except MediaError as exc:
        prose = f"{LABEL}\n\nThe emulator could not read {display_name}: {exc.message}"
        return Facts(display_name, 0.0, 0.0, 0.0, title=f"[Demo] {display_name}", prose=prose)
    video = request.video
    start, end = clip_seconds(info.duration_s, video.start_s if video else None, video.end_s if video else None)
    sound = f"with {info.audio_codec} audio" if info.audio_codec else "without an audio track"
    fps = f" at {info.fps:.0f} frames per second" if info.fps else ""
    facts = Facts(
        display_name,
        info.duration_s,
        start,
        end,
        title=f"[Demo] {Path(display_name).stem}",
        prose="",
        width=info.width,
        height=info.height,
        video_codec=info.video_codec,
        audio_codec=info.audio_codec,
    )
    prose = (
        f"{LABEL}\n\n"
        f"{display_name} is a {info.duration_s:.1f}-second video, {info.width}x{info.height} pixels, "
        f"encoded as {info.video_codec}{fps}, {sound}. "
        f"{_looked_at(facts, request)}"
        f'A real Gemini model would now answer the request "{_ask(request.prompt)}" by describing what '
        "happens on screen. Set a Gemini API key in Settings to get real stories."
    )
    return replace(facts, prose=prose)


def youtube_facts(video_id: str, uri: str, duration_s: float, title: str | None, request: GenerateRequest) -> Facts:
    video = request.video
    start, end = clip_seconds(duration_s, video.start_s if video else None, video.end_s if video else None)
    facts = Facts(
        f"youtube:{video_id}",
        duration_s,
        start,
        end,
        title=title or f"[Demo] YouTube video {video_id}",
        prose="",
        source="youtube",
        uri=uri,
    )
    prose = (
        f"{LABEL}\n\n"
        f"{uri} is a YouTube video (id {video_id}). The emulator does not fetch YouTube: it assumes the video "
        f"lasts {timestamp(duration_s)}. {_looked_at(facts, request)}"
        f'A real Gemini model would now watch it and answer the request "{_ask(request.prompt)}". '
        "Set a Gemini API key in Settings to get real stories."
    )
    return replace(facts, prose=prose)


def text_only_facts(request: GenerateRequest) -> Facts:
    prose = f'{LABEL}\n\nNo video came with this request. A real Gemini model would answer "{_ask(request.prompt)}".'
    return Facts("(no video)", 0.0, 0.0, 0.0, title="[Demo] No video", prose=prose)


def answer_text(facts: Facts, request: GenerateRequest, *, late_moment: bool = False, break_schema: bool = False) -> str:
    """The model's text: the labeled prose, or JSON that matches the schema asked for."""
    if (request.response_mime_type or "").lower() == "text/x.enum" and request.schema:
        enum = request.schema.get("enum") or [""]
        return str(enum[0])
    if not request.wants_json:
        return facts.prose
    value = fill(request.schema or DEFAULT_SCHEMA, facts, late_moment=late_moment, break_schema=break_schema)
    return json.dumps(value, ensure_ascii=False, indent=2)


def describe(path: Path, display_name: str, prompt: str) -> str:
    """The plain-text story for the whole video."""
    return file_facts(path, display_name, GenerateRequest(video=None, prompt=prompt)).prose


def _looked_at(facts: Facts, request: GenerateRequest) -> str:
    video = request.video
    bits = []
    if facts.clipped:
        bits.append(f"This answer covers {timestamp(facts.start_s)}-{timestamp(facts.end_s)} of it")
    if video and video.fps:
        bits.append(f"sampled at {video.fps:g} frames per second")
    if request.media_resolution:
        bits.append(f"at {request.media_resolution.removeprefix('MEDIA_RESOLUTION_').lower()} media resolution")
    if not bits:
        return ""
    sentence = ", ".join(bits)
    return (sentence[0].upper() + sentence[1:] if not facts.clipped else sentence) + ". "


def _ask(prompt: str, limit: int = 140) -> str:
    """The prompt's first line, cut at a word (never mid-word) with an ellipsis when longer than ``limit``."""
    if not prompt.strip():
        return "a story"
    line = prompt.strip().splitlines()[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


__all__ = [
    "LABEL",
    "TOKENS_PER_SECOND",
    "answer_text",
    "describe",
    "file_facts",
    "moment_count",
    "moment_times",
    "token_split",
    "video_tokens",
    "youtube_facts",
]
