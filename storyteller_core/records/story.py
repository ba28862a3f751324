"""A checked story: its prose, and when it was asked for, its title, key moments, people, places and tags.

Rendered as Markdown to paste into a report and as WebVTT chapters. How an
answer from Gemini becomes a Story is story_answer.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storyteller_core.records.timecode import timestamp


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
        return {
            "title": self.title,
            "story": self.text,
            "people": self.people,
            "places": self.places,
            "tags": self.tags,
            "key_moments": [{"time": m.time, "seconds": m.seconds, "description": m.description} for m in self.moments],
            "dropped_moments": self.dropped_moments,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Story:
        return cls(
            text=data.get("story") or "",
            title=data.get("title"),
            people=list(data.get("people") or []),
            places=list(data.get("places") or []),
            tags=list(data.get("tags") or []),
            moments=[Moment(float(m["seconds"]), str(m["description"])) for m in data.get("key_moments") or []],
            dropped_moments=int(data.get("dropped_moments") or 0),
            note=data.get("note"),
        )

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
