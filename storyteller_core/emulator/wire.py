"""Reading Gemini request bodies as google-genai writes them.

The SDK mixes spellings: camelCase at the top (fileData, videoMetadata,
generationConfig, responseJsonSchema, mediaResolution, serviceTier) and
snake_case inside (file_uri, mime_type, start_offset, end_offset). Every
lookup here accepts both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_FPS = 24.0
RESOLUTIONS = ("MEDIA_RESOLUTION_UNSPECIFIED", "MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH")
SERVICE_TIERS = ("unspecified", "standard", "flex", "priority")
_YOUTUBE = re.compile(
    r"^https?://(?:(?:www\.|m\.|music\.)?youtube\.com/(?:watch\?(?:.*&)?v=|shorts/|embed/|live/)|youtu\.be/)([A-Za-z0-9_-]{6,64})"
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class ApiError(Exception):
    """An answer in Google's error JSON: {"error": {"code", "message", "status", "details"}}."""

    def __init__(self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.details = code, status, message, details

    def json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def pick(data: Any, camel: str, default: Any = None) -> Any:
    """data[camel] or data[snake_case of it], whichever is there."""
    if not isinstance(data, dict):
        return default
    if camel in data:
        return data[camel]
    return data.get(snake(camel), default)


def youtube_id(uri: str) -> str | None:
    match = _YOUTUBE.match(uri.strip())
    return match.group(1) if match else None


def seconds(value: Any, where: str) -> float | None:
    """Google's Duration JSON ("40s", "1.5s"), or {"seconds": 40, "nanos": 5e8}; None when absent."""
    if value is None:
        return None
    if isinstance(value, dict):
        return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
    match = _DURATION.match(str(value))
    if not match:
        raise invalid(
            f"Invalid value at '{where}' (type.googleapis.com/google.protobuf.Duration), \"{value}\": "
            'a duration is seconds with an s suffix, e.g. "40s" or "1.5s".'
        )
    return float(match.group(1))


@dataclass
class VideoPart:
    file_uri: str
    mime_type: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    fps: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # videoMetadata as received, keys in snake_case
    processing: str | None = None  # the part's mediaProcessing as sent ("AGENTIC"), None when absent
    part_resolution: str | None = None  # the part's own mediaResolution level, None when absent

    @property
    def youtube_id(self) -> str | None:
        return youtube_id(self.file_uri)


@dataclass
class GenerateRequest:
    """What one generateContent request (or one request of a batch) asks for."""

    video: VideoPart | None
    prompt: str
    media_resolution: str | None = None  # MEDIA_RESOLUTION_LOW | _MEDIUM | _HIGH; None: the default
    service_tier: str | None = None  # lower case
    response_mime_type: str | None = None
    schema: dict[str, Any] | None = None
    schema_field: str | None = None  # "responseJsonSchema" or "responseSchema"

    @property
    def wants_json(self) -> bool:
        return (self.response_mime_type or "").lower() == "application/json"


def parse_generate(body: dict[str, Any]) -> GenerateRequest:
    """Read a GenerateContentRequest in either spelling; bad values answer 400 the way Gemini does."""
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. Expected an object.")
    contents = pick(body, "contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    video: VideoPart | None = None
    texts: list[str] = []
    part_resolution: str | None = None
    for c, content in enumerate(contents):
        for p, part in enumerate(pick(content, "parts") or []):
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str) and part["text"]:
                texts.append(part["text"])
            data = pick(part, "fileData")
            level = pick(part, "mediaResolution")
            if isinstance(level, dict):
                level = pick(level, "level")
            if level:
                part_resolution = _resolution(level, f"contents[{c}].parts[{p}].media_resolution")
            if video is not None or not isinstance(data, dict):
                continue
            uri = pick(data, "fileUri") or ""
            meta = pick(part, "videoMetadata") or {}
            where = f"contents[{c}].parts[{p}].video_metadata"
            received = {snake(k): v for k, v in meta.items()} if isinstance(meta, dict) else {}
            video = VideoPart(
                file_uri=str(uri),
                mime_type=pick(data, "mimeType"),
                start_s=seconds(pick(meta, "startOffset"), where + ".start_offset"),
                end_s=seconds(pick(meta, "endOffset"), where + ".end_offset"),
                fps=_fps(pick(meta, "fps"), where + ".fps"),
                metadata=received,
                processing=str(pick(part, "mediaProcessing")).upper() if pick(part, "mediaProcessing") else None,
                part_resolution=part_resolution,
            )
            if video.start_s is not None and video.end_s is not None and video.end_s <= video.start_s:
                raise invalid(f"{where}.end_offset ({video.end_s:g}s) must be after start_offset ({video.start_s:g}s).")
    config = pick(body, "generationConfig") or {}
    resolution = pick(config, "mediaResolution")
    media_resolution = _resolution(resolution, "generation_config.media_resolution") if resolution else None
    tier = pick(body, "serviceTier") or pick(config, "serviceTier")
    if tier is not None and str(tier).lower() not in SERVICE_TIERS:
        raise invalid(f"Invalid value at 'service_tier' (type.googleapis.com/google.ai.generativelanguage.v1beta.ServiceTier), \"{tier}\"")
    schema, schema_field = None, None
    for name in ("responseJsonSchema", "responseSchema"):
        value = pick(config, name)
        if value is not None:
            if not isinstance(value, dict):
                raise invalid(f"Invalid value at 'generation_config.{snake(name)}': a schema is a JSON object.")
            schema, schema_field = value, name
            break
    mime = pick(config, "responseMimeType")
    if schema is not None and (mime or "").lower() not in ("application/json", "text/x.enum"):
        raise invalid("response_schema and response_json_schema need response_mime_type application/json (or text/x.enum).")
    return GenerateRequest(
        video=video,
        prompt="\n".join(texts),
        media_resolution=part_resolution or media_resolution,
        service_tier=str(tier).lower() if tier is not None else None,
        response_mime_type=mime,
        schema=schema,
        schema_field=schema_field,
    )


def _fps(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid value at '{where}' (TYPE_DOUBLE), \"{value}\"") from None
    if not 0 < fps <= MAX_FPS:
        raise invalid(f"{where} must be greater than 0 and at most {MAX_FPS:g} (got {fps:g}).")
    return fps


def _resolution(value: Any, where: str) -> str | None:
    text = str(value).upper()
    if text not in RESOLUTIONS:
        raise invalid(
            f"Invalid value at '{where}' (type.googleapis.com/google.ai.generativelanguage.v1beta."
            f'GenerationConfig.MediaResolution), "{value}"'
        )
    return None if text == "MEDIA_RESOLUTION_UNSPECIFIED" else text
