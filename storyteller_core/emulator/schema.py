"""Answers that match a response schema, filled from what the emulator knows about the video.

Walks a JSON schema as pydantic emits it (object, properties, required,
array, items, string, integer, number, boolean, enum, const, $defs/$ref,
anyOf/allOf, minItems/maxItems, minimum/maximum, maxLength) or Gemini's own
Schema (type in upper case, property_ordering, nullable). Fields are filled
by name: title and story get the labeled demo text, an array of objects with a
time field gets key moments at real times inside the video (or the clip),
people/places/tags get short plausible lists, numbers named like duration or
width get the video's figures.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_TIME_NAMES = {"time", "timestamp", "start", "start_time", "starttime", "at", "timecode", "time_code", "when", "ts", "offset"}
_MOMENT_HINTS = ("moment", "chapter", "timeline", "highlight", "event", "scene", "shot", "timestamp")
_DESCRIPTION_NAMES = {"description", "summary", "text", "event", "what", "caption", "label", "content", "detail", "details", "note"}
_PROSE_NAMES = {
    "story",
    "summary",
    "narrative",
    "description",
    "text",
    "overview",
    "synopsis",
    "abstract",
    "content",
    "body",
    "answer",
    "report",
    "analysis",
}
_TITLE_NAMES = {"title", "headline", "name", "video_title", "heading"}
_PEOPLE_NAMES = {"people", "persons", "person", "speakers", "characters", "participants", "subjects", "who", "cast", "individuals"}
_PLACE_NAMES = {"places", "place", "locations", "location", "settings", "setting", "where", "venues", "venue"}
_TAG_NAMES = {"tags", "tag", "keywords", "topics", "labels", "categories", "hashtags", "themes"}
MAX_DEPTH = 12


@dataclass(frozen=True)
class Facts:
    """What a demo answer may say about a video: read from the file (PyAV), or assumed for YouTube."""

    display_name: str
    duration_s: float
    start_s: float  # the part looked at (the clip), inside the video
    end_s: float
    title: str
    prose: str  # the labeled demo story
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    source: str = "file"  # "file" or "youtube"
    uri: str = ""

    @property
    def clipped(self) -> bool:
        return self.start_s > 0 or self.end_s < self.duration_s


def timestamp(seconds: float) -> str:
    """ "MM:SS", or "H:MM:SS" past an hour."""
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}" if whole >= 3600 else f"{whole // 60:02d}:{whole % 60:02d}"


def moment_times(facts: Facts, count: int) -> list[float]:
    """Whole seconds spread over the clip from its start, each inside it."""
    span = max(0.0, facts.end_s - facts.start_s)
    first, last = int(facts.start_s + 0.999), int(facts.end_s)  # whole seconds inside [start, end]
    if last < first:
        first = last = int(facts.start_s)
    return [float(min(last, max(first, int(facts.start_s + span * i / count)))) for i in range(count)]


def moment_count(facts: Facts) -> int:
    span = facts.end_s - facts.start_s
    return 3 if span < 60 else 4 if span < 600 else 5


def fill(schema: dict[str, Any], facts: Facts, *, late_moment: bool = False, break_schema: bool = False) -> Any:
    """A value that matches the schema (or, with break_schema, valid JSON that does not)."""
    value = _Filler(schema, facts, late_moment).value(schema, "", 0)
    return _broken(schema, value) if break_schema else value


def _broken(schema: dict[str, Any], value: Any) -> Any:
    """Valid JSON that misses required fields (or has a field of the wrong type)."""
    required = list(_get(schema, "required") or [])
    if isinstance(value, dict) and required:
        keep = required[0] if len(required) > 1 else None
        return {k: v for k, v in value.items() if k not in required or k == keep}
    if isinstance(value, dict) and value:
        key = next(iter(value))
        return {**value, key: 12345 if not isinstance(value[key], (int, float)) else "not a number"}
    return {"unexpected": "the emulator broke this answer on purpose (BADJSON)"}


def _get(node: dict[str, Any], camel: str, default: Any = None) -> Any:
    if camel in node:
        return node[camel]
    return node.get(re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower(), default)


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().replace("-", "_").strip("_")


class _Filler:
    def __init__(self, root: dict[str, Any], facts: Facts, late_moment: bool) -> None:
        self.root, self.facts, self.late_moment = root, facts, late_moment
        self.moments_done = False  # the late moment goes into the first moments array only

    # -- schema plumbing -------------------------------------------------------------
    def lookup(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for piece in ref.lstrip("#").strip("/").split("/"):
            if not piece:
                continue
            piece = piece.replace("~1", "/").replace("~0", "~")
            node = node.get(piece, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}

    def resolve(self, node: Any) -> dict[str, Any]:
        if not isinstance(node, dict):
            return {}
        for _ in range(32):
            ref = node.get("$ref") or node.get("ref")
            if not isinstance(ref, str):
                break
            rest = {k: v for k, v in node.items() if k not in ("$ref", "ref")}
            node = {**self.lookup(ref), **rest}
        parts = _get(node, "allOf")
        if parts:
            merged: dict[str, Any] = {}
            for part in parts:
                merged.update(self.resolve(part))
            merged.update({k: v for k, v in node.items() if k not in ("allOf", "all_of")})
            node = merged
        for key in ("anyOf", "oneOf"):
            options = _get(node, key)
            if options:
                resolved = [self.resolve(o) for o in options]
                chosen = next((o for o in resolved if self.type_of(o) != "null"), resolved[0])
                rest = {k: v for k, v in node.items() if k not in (key, re.sub(r"([A-Z])", r"_\1", key).lower())}
                node = {**rest, **chosen}
        return node

    @staticmethod
    def type_of(node: dict[str, Any]) -> str:
        kind = node.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if str(k).lower() != "null"), "null")
        if kind:
            return str(kind).lower()
        if "const" in node:
            return "const"
        if "properties" in node:
            return "object"
        if "items" in node:
            return "array"
        return "string"

    # -- values ------------------------------------------------------------------------
    def value(self, raw: Any, name: str, depth: int) -> Any:
        node = self.resolve(raw)
        if "const" in node:
            return copy.deepcopy(node["const"])
        enum = _get(node, "enum")
        if enum:
            return copy.deepcopy(enum[0])
        kind = self.type_of(node)
        if kind == "object":
            return self.object(node, depth)
        if kind == "array":
            return self.array(node, name, depth)
        if kind == "integer":
            return int(round(self.number(node, name)))
        if kind == "number":
            return self.number(node, name)
        if kind == "boolean":
            return self.boolean(name)
        if kind == "null":
            return None
        return self.string(node, name, depth)

    def object(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = node.get("properties") or {}
        if depth >= MAX_DEPTH:
            return {}
        return {key: self.value(properties[key], key, depth + 1) for key in _ordered(node)}

    def array(self, node: dict[str, Any], name: str, depth: int) -> list[Any]:
        items = self.resolve(node.get("items") or {})
        low, high = int(_get(node, "minItems") or 0), _get(node, "maxItems")
        high = int(high) if high is not None else None
        if depth >= MAX_DEPTH:
            return []
        if self.is_moments(name, items):
            return self.moments(items, low, high, depth)
        words = _words(name)
        kind = self.type_of(items)
        if kind == "string" and not _get(items, "enum"):
            listed = self.named_list(words)
            if listed is not None:
                return _clamp_list(listed, low, high, lambda i: f"{listed[0] if listed else 'item'} ({i + 1})")
        count = 2
        return _clamp_list(
            [self.value(items, _singular(name), depth + 1) for _ in range(count)],
            low,
            high,
            lambda i: self.value(items, _singular(name), depth + 1),
        )

    def is_moments(self, name: str, items: dict[str, Any]) -> bool:
        kind = self.type_of(items)
        if kind == "object":
            return any(_is_time_name(k) for k in (items.get("properties") or {}))
        return kind == "string" and any(h in _words(name) for h in _MOMENT_HINTS)

    def moments(self, items: dict[str, Any], low: int, high: int | None, depth: int) -> list[Any]:
        facts = self.facts
        count = moment_count(facts)
        count = max(low, min(count, high)) if high is not None else max(low, count)
        times = moment_times(facts, max(count, 1))[:count]
        late = self.late_moment and not self.moments_done and count > 0
        self.moments_done = True
        if late:
            times[-1] = float(int(max(facts.end_s, facts.duration_s)) + 60)
        out: list[Any] = []
        for i, at in enumerate(times):
            what = self.moment_text(i, len(times), at, late and i == len(times) - 1)
            if self.type_of(items) == "string":
                out.append(f"{timestamp(at)} {what}")
                continue
            moment: dict[str, Any] = {}
            properties = items.get("properties") or {}
            for key in _ordered(items):
                prop = self.resolve(properties[key])
                kind = self.type_of(prop)
                words = _words(key)
                if _is_time_name(key) or words in ("end", "end_time", "until"):
                    when = at if not words.startswith("end") and words != "until" else min(facts.end_s, at + 1)
                    moment[key] = timestamp(when) if kind == "string" else (int(when) if kind == "integer" else float(when))
                elif kind == "string" and not _get(prop, "enum") and (words in _DESCRIPTION_NAMES or words in _TITLE_NAMES):
                    moment[key] = _limit(prop, what)
                else:
                    moment[key] = self.value(prop, key, depth + 2)
            out.append(moment)
        return out

    def moment_text(self, index: int, count: int, at: float, late: bool) -> str:
        facts = self.facts
        if late:
            return "[Demo] A moment the emulator put past the end of the video on purpose (LATEMOMENT)"
        part = "the clip" if facts.clipped else "the video"
        picture = f"{facts.width}x{facts.height} picture" if facts.width and facts.height else "picture"
        if index == 0:
            return f"[Demo] {part.capitalize()} opens on the {picture} at {timestamp(at)}"
        if index == count - 1:
            return f"[Demo] The last look at {part}, {timestamp(facts.end_s - at)} before it ends"
        return f"[Demo] Moment {index + 1} of {count}: {timestamp(at - facts.start_s)} into {part}"

    def named_list(self, words: str) -> list[str] | None:
        facts = self.facts
        if words in _PEOPLE_NAMES:
            return ["[Demo] A person in the foreground", "[Demo] A second person, off to one side"]
        if words in _PLACE_NAMES:
            return ["[Demo] The scene shown in the video"]
        if words in _TAG_NAMES:
            tags = ["demo", "youtube" if facts.source == "youtube" else "uploaded video"]
            if facts.video_codec:
                tags.append(facts.video_codec)
            if facts.height:
                tags.append(f"{facts.height}p")
            if facts.source == "file":
                tags.append("with audio" if facts.audio_codec else "no audio")
            return tags
        return None

    def string(self, node: dict[str, Any], name: str, depth: int) -> str:
        facts, words = self.facts, _words(name)
        fmt = str(_get(node, "format") or "")
        if fmt == "date-time":
            return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if fmt == "date":
            return datetime.now(tz=UTC).strftime("%Y-%m-%d")
        if words in _TITLE_NAMES and depth <= 1:
            text = facts.title
        elif words in _PROSE_NAMES and depth <= 1:
            text = facts.prose
        elif _is_end_name(name):  # the end of a span: after its start, inside the clip
            text = timestamp(_span_end(facts))
        elif _is_time_name(name):
            text = timestamp(facts.start_s)
        elif words in ("duration", "length", "runtime"):
            text = timestamp(facts.duration_s)
        elif words in ("url", "uri", "link", "source", "video_url"):
            text = facts.uri or facts.display_name
        elif words in ("language", "lang"):
            text = "English"
        elif words in ("file_name", "filename", "video", "video_name", "display_name"):
            text = facts.display_name
        else:
            text = f"[Demo] {words.replace('_', ' ') or 'text'} for {facts.display_name}"
        return _limit(node, text)

    def number(self, node: dict[str, Any], name: str) -> float:
        facts, words = self.facts, _words(name)
        if words in ("duration", "duration_s", "duration_seconds", "length", "length_seconds", "seconds", "runtime"):
            value = facts.end_s - facts.start_s
        elif words in ("width",):
            value = float(facts.width or 0)
        elif words in ("height",):
            value = float(facts.height or 0)
        elif words in ("confidence", "score", "probability", "certainty"):
            value = 0.5
        elif words in ("year",):
            value = float(datetime.now(tz=UTC).year)
        elif _is_end_name(name):
            value = _span_end(facts)
        elif _is_time_name(name):
            value = facts.start_s
        else:
            value = 1.0
        low = _get(node, "minimum")
        high = _get(node, "maximum")
        if low is not None:
            value = max(value, float(low))
        if high is not None:
            value = min(value, float(high))
        exclusive_low = _get(node, "exclusiveMinimum")
        if isinstance(exclusive_low, (int, float)) and not isinstance(exclusive_low, bool) and value <= exclusive_low:
            value = float(exclusive_low) + 1
        exclusive_high = _get(node, "exclusiveMaximum")
        if isinstance(exclusive_high, (int, float)) and not isinstance(exclusive_high, bool) and value >= exclusive_high:
            value = float(exclusive_high) - 1
        return float(value)

    def boolean(self, name: str) -> bool:
        words = _words(name)
        if "audio" in words or "sound" in words:
            return bool(self.facts.audio_codec)
        return "demo" in words


def _ordered(node: dict[str, Any]) -> list[str]:
    """Property names in Gemini's property_ordering when given, then in the schema's order."""
    properties = node.get("properties") or {}
    first = [k for k in (_get(node, "propertyOrdering") or []) if k in properties]
    return first + [k for k in properties if k not in first]


def _is_end_name(name: str) -> bool:
    words = _words(name)
    return words in ("end", "end_time", "endtime", "until", "end_s", "stop") or words.startswith("end_") or words.endswith("_end")


def _span_end(facts: Any) -> float:
    return float(min(facts.end_s, facts.start_s + 2))


def _is_time_name(name: str) -> bool:
    words = _words(name)
    return words in _TIME_NAMES or words.endswith(("_time", "timestamp", "_at", "_start")) or words.startswith("start_")


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") and len(name) > 1 else name


def _limit(node: dict[str, Any], text: str) -> str:
    longest, shortest = _get(node, "maxLength"), _get(node, "minLength")
    if longest is not None:
        text = text[: int(longest)]
    if shortest is not None and len(text) < int(shortest):
        text = text + "." * (int(shortest) - len(text))
    return text


def _clamp_list(values: list[Any], low: int, high: int | None, more: Any) -> list[Any]:
    values = list(values)
    while len(values) < low:
        values.append(more(len(values)))
    return values[:high] if high is not None else values
