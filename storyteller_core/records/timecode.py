"""Timestamps as people write them: "MM:SS" or "H:MM:SS"."""

from __future__ import annotations

import re

_TIME = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{2}(?:\.\d+)?)\s*$")


def seconds_of(text: str) -> float | None:
    """Seconds from "MM:SS" or "H:MM:SS", with an optional fraction ("00:00.5"); None when the text is not a timestamp."""
    match = _TIME.match(text or "")
    if not match:
        return None
    hours, minutes, seconds = int(match.group(1) or 0), int(match.group(2)), float(match.group(3))
    if seconds >= 60 or (match.group(1) and minutes >= 60):
        return None
    return hours * 3600 + minutes * 60 + seconds  # "00:00.5" is 0.5: the fraction travels to Gemini ("0.5s")


def timestamp(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}" if whole >= 3600 else f"{whole // 60:02d}:{whole % 60:02d}"
