"""What a structured preset asks Gemini for, and how its answer is checked.

A structured answer is JSON (title, the story in prose, key moments with
timestamps, people, places, tags). A moment outside the video (or outside
the clip that was asked about) is dropped and counted, never shown as real;
an answer that does not match the schema keeps Gemini's raw text and says so.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from storyteller_core.records.options import VideoOptions
from storyteller_core.records.story import Moment, Story
from storyteller_core.records.timecode import seconds_of


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


def schema_for(options: VideoOptions) -> dict[str, Any] | None:
    """The JSON schema an analysis asks Gemini to answer in: the story's, a custom one (a table's), or None (prose)."""
    if options.structured:
        return STORY_SCHEMA
    return json.loads(options.answer_schema) if options.answer_schema else None


def parse_custom_answer(raw: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object, None), or (None, why not) when the answer is not an object with the schema's required keys.
    The values themselves are checked by whoever asked (collection/table.py knows each field's type)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None, "Gemini's answer was not JSON; its raw text is kept."
    if not isinstance(value, dict):
        return None, "Gemini's answer was not a JSON object; its raw text is kept."
    missing = [key for key in schema.get("required") or [] if key not in value]
    if missing:
        return value, f"Gemini's answer left out {len(missing)} field(s): {', '.join(missing)[:200]}."
    return value, None


def parse_answer(raw: str, *, start_s: float = 0.0, end_s: float | None = None) -> Story:
    """Check a structured answer; moments outside [start_s, end_s] are dropped and counted."""
    try:
        answer = StoryAnswer.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as exc:
        reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else f"{exc.error_count()} field(s) wrong or missing"
        return Story(
            text=raw.strip(), note=f"Gemini's answer did not match the story format ({reason}); its raw text is kept as the story."
        )
    moments, dropped = [], 0
    for moment in answer.key_moments:
        at = seconds_of(moment.time)
        if at is None or at < start_s - 1 or (end_s is not None and at > end_s + 1):
            dropped += 1
            continue
        moments.append(Moment(at, moment.description.strip()))
    moments.sort(key=lambda m: m.seconds)
    return Story(
        text=answer.story.strip(),
        title=answer.title.strip() or None,
        moments=moments,
        people=answer.people,
        places=answer.places,
        tags=answer.tags,
        dropped_moments=dropped,
    )
