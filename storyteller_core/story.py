"""Structured stories: the schema Gemini answers in, checking its answer, and the story as Markdown.

A structured answer is JSON (title, the story in prose, key moments with
timestamps, people, places, tags). A moment outside the video (or outside
the clip that was asked about) is dropped and counted, never shown as real;
an answer that does not match the schema keeps Gemini's raw text and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .timecode import seconds_of, timestamp


class KeyMoment(BaseModel):
    time: str = Field(description="When it happens, as MM:SS (or H:MM:SS past an hour), from the start of the video")
    description: str = Field(description="One line: what happens at that moment")


class StoryAnswer(BaseModel):
    """What a structured preset asks Gemini to return."""

    title: str = Field(description="A short title for the video")
    story: str = Field(description="The story of the video in plain prose, for a report")
    key_moments: list[KeyMoment] = Field(description="The key moments, in order, with their timestamps")
    people: list[str] = Field(description="People who appear or speak (names or short descriptions)")
    places: list[str] = Field(description="Places shown or named")
    tags: list[str] = Field(description="A few keywords")


STORY_SCHEMA: dict[str, Any] = StoryAnswer.model_json_schema()


@dataclass(frozen=True)
class Moment:
    seconds: float
    description: str

    @property
    def time(self) -> str:
        return timestamp(self.seconds)


@dataclass(frozen=True)
class Story:
    """A checked answer: the prose always; the structure when the answer matched the schema."""

    text: str
    title: str | None = None
    moments: list[Moment] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    dropped_moments: int = 0
    note: str | None = None  # why the structure is missing, for a person

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "story": self.text, "people": self.people, "places": self.places, "tags": self.tags,
                "key_moments": [{"time": m.time, "seconds": m.seconds, "description": m.description} for m in self.moments],
                "dropped_moments": self.dropped_moments, "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Story:
        return cls(text=data.get("story") or "", title=data.get("title"), people=list(data.get("people") or []),
                   places=list(data.get("places") or []), tags=list(data.get("tags") or []),
                   moments=[Moment(float(m["seconds"]), str(m["description"])) for m in data.get("key_moments") or []],
                   dropped_moments=int(data.get("dropped_moments") or 0), note=data.get("note"))

    def markdown(self, name: str | None = None) -> str:
        """Clean Markdown to paste into a report, with the timestamps."""
        heading = self.title or name
        lines = [f"## {heading}", ""] if heading else []
        lines += [self.text.strip(), ""]
        if self.moments:
            lines += ["**Key moments**", ""] + [f"- {m.time} {m.description}" for m in self.moments] + [""]
        for label, values in (("People", self.people), ("Places", self.places), ("Tags", self.tags)):
            if values:
                lines.append(f"**{label}:** {', '.join(values)}")
        return "\n".join(lines).strip() + "\n"


def parse_answer(raw: str, *, start_s: float = 0.0, end_s: float | None = None) -> Story:
    """Check a structured answer; moments outside [start_s, end_s] are dropped and counted."""
    try:
        answer = StoryAnswer.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as exc:
        reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else f"{exc.error_count()} field(s) wrong or missing"
        return Story(text=raw.strip(), note=f"Gemini's answer did not match the story format ({reason}); "
                                            "its raw text is kept as the story.")
    moments, dropped = [], 0
    for moment in answer.key_moments:
        at = seconds_of(moment.time)
        if at is None or at < start_s - 1 or (end_s is not None and at > end_s + 1):
            dropped += 1
            continue
        moments.append(Moment(at, moment.description.strip()))
    moments.sort(key=lambda m: m.seconds)
    return Story(text=answer.story.strip(), title=answer.title.strip() or None, moments=moments, people=answer.people,
                 places=answer.places, tags=answer.tags, dropped_moments=dropped)


def webvtt(moments: list[Moment], end_s: float | None) -> str:
    """WebVTT chapters: one cue per key moment, running to the next one (or the end)."""
    lines = ["WEBVTT", ""]
    for n, moment in enumerate(moments):
        until = moments[n + 1].seconds if n + 1 < len(moments) else max(end_s or 0.0, moment.seconds + 1)
        lines += [str(n + 1), f"{_vtt_time(moment.seconds)} --> {_vtt_time(until)}", moment.description.replace("-->", "→"), ""]
    return "\n".join(lines)


def _vtt_time(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"
