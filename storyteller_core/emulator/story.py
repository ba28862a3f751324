"""The emulator's stories: plainly labeled, and true to the uploaded video."""

from __future__ import annotations

from pathlib import Path

from ..media import MediaError, probe

LABEL = "[Demo output from the local Gemini emulator, not written by Gemini]"
# Gemini's published figures at default media resolution: 258 tokens per frame at 1 frame per second,
# plus 32 tokens per second of audio (https://ai.google.dev/gemini-api/docs/tokens).
TOKENS_PER_SECOND = 258 + 32


def video_tokens(path: Path, display_name: str) -> int:
    """What Gemini would count for the video part: it grows with the video's duration."""
    try:
        info = probe(path, display_name, max_bytes=2**62, max_duration_s=float("inf"))
    except MediaError:
        return 0
    return int(info.duration_s * TOKENS_PER_SECOND)


def describe(path: Path, display_name: str, prompt: str) -> str:
    try:
        info = probe(path, display_name, max_bytes=2**62, max_duration_s=float("inf"))
    except MediaError as exc:
        return f"{LABEL}\n\nThe emulator could not read {display_name}: {exc.message}"
    sound = f"with {info.audio_codec} audio" if info.audio_codec else "without an audio track"
    fps = f" at {info.fps:.0f} frames per second" if info.fps else ""
    ask = prompt.strip().splitlines()[0][:140] if prompt.strip() else "a story"
    return (
        f"{LABEL}\n\n"
        f"{display_name} is a {info.duration_s:.1f}-second video, {info.width}x{info.height} pixels, "
        f"encoded as {info.video_codec}{fps}, {sound}. "
        f"A real Gemini model would now answer the request \"{ask}\" by describing what "
        "happens on screen. Set a Gemini API key in Settings to get real stories."
    )
