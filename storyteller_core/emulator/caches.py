"""cachedContents as the Gemini API (v1beta) answers them: create, get, delete, expiry, and usage when asked through.

A cache holds the contents it was created with (here: one video part); a
generateContent naming it reads the video from it and reports the cache's
tokens as usageMetadata.cachedContentTokenCount (included in promptTokenCount).
Gemini refuses fields its messages lack, and so does this: see KNOWN_FIELDS.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storyteller_core.emulator.wire import ApiError, GenerateRequest, invalid, parse_generate, seconds

# google.ai.generativelanguage.v1beta CachedContent (google-ai-generativelanguage 0.12.1), in JSON spelling;
# createTime, updateTime and usageMetadata are output only
CACHE_FIELDS = frozenset({"expireTime", "ttl", "name", "displayName", "model", "systemInstruction", "contents", "tools", "toolConfig"})
# v1beta Part (0.12.1), plus mediaResolution and mediaProcessing: the per-part options of Gemini 3 models, which
# google-genai 3.6.1 sends (types.Part.media_resolution / media_processing) though 0.12.1 predates them
PART_FIELDS = frozenset(
    {
        "text",
        "inlineData",
        "functionCall",
        "functionResponse",
        "fileData",
        "executableCode",
        "codeExecutionResult",
        "videoMetadata",
        "thought",
        "thoughtSignature",
        "partMetadata",
        "mediaResolution",
        "mediaProcessing",
    }
)
VIDEO_METADATA_FIELDS = frozenset({"startOffset", "endOffset", "fps"})
MEDIA_PROCESSING = ("MEDIA_PROCESSING_UNSPECIFIED", "STATIC", "AGENTIC")
MIN_CACHE_TOKENS = 1024  # smaller contents are refused, as Gemini refuses them (its minimum is per model)


@dataclass
class Cache:
    name: str
    model: str
    display_name: str
    request: GenerateRequest  # the cached contents, read as a request without a prompt
    body: dict[str, Any]
    created: float
    expires: float
    tokens: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": f"models/{self.model}",
            "displayName": self.display_name,
            "createTime": _iso(self.created),
            "updateTime": _iso(self.created),
            "expireTime": _iso(self.expires),
            "usageMetadata": {"totalTokenCount": self.tokens},
        }


def _camel(name: str) -> str:
    """Proto JSON takes both spellings: end_offset is endOffset."""
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def check_fields(body: dict[str, Any]) -> None:
    """400 for a field v1beta does not know, with Gemini's wording."""
    for key in body:
        if _camel(key) not in CACHE_FIELDS:
            raise _unknown(key, "")
    for content in body.get("contents") or []:
        for p, part in enumerate(content.get("parts") or [] if isinstance(content, dict) else []):
            check_part(part, f"contents.parts[{p}]")


def check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        return
    for key in part:
        if _camel(key) not in PART_FIELDS:
            raise _unknown(key, where)
    meta = part.get("videoMetadata", part.get("video_metadata"))
    for key in meta if isinstance(meta, dict) else {}:
        if _camel(key) not in VIDEO_METADATA_FIELDS:
            raise _unknown(key, where + ".video_metadata")
    mode = part.get("mediaProcessing", part.get("media_processing"))
    if mode is not None and str(mode).upper() not in MEDIA_PROCESSING:
        raise invalid(
            f"Invalid value at '{where}.media_processing' (type.googleapis.com/google.ai.generativelanguage."
            f'v1beta.Part.MediaProcessing), "{mode}"'
        )


def new_cache(body: dict[str, Any], now: float) -> Cache:
    """The cache a create body asks for (model, contents, ttl or expireTime); 400 as Gemini answers a bad one."""
    check_fields(body)
    model = str(body.get("model") or "").removeprefix("models/")
    if not model:
        raise invalid("CachedContent.model is required.")
    if "ttl" in body and "expireTime" in body:
        raise invalid("Only one of ttl and expire_time can be set.")
    ttl = seconds(body.get("ttl"), "cached_content.ttl")
    if body.get("expireTime"):
        expires = datetime.fromisoformat(str(body["expireTime"]).replace("Z", "+00:00")).timestamp()
    else:
        expires = now + (ttl if ttl is not None else 3600.0)
    request = parse_generate({"contents": body.get("contents") or []})
    return Cache(
        name=f"cachedContents/{uuid.uuid4().hex[:12]}",
        model=model,
        display_name=str(body.get("displayName") or ""),
        request=request,
        body=body,
        created=now,
        expires=expires,
    )


def live(caches: dict[str, Cache], name: str, model: str | None = None) -> Cache:
    """The cache by name, not expired (and made for ``model``); 403 as Gemini answers a missing one."""
    cache = caches.get(name)
    if cache is not None and cache.expires <= time.time():
        caches.pop(name, None)
        cache = None
    if cache is None:
        raise ApiError(403, "PERMISSION_DENIED", f"CachedContent not found (or permission denied): {name}")
    if model is not None and cache.model != model.removeprefix("models/"):
        raise invalid(
            f"Model used by GenerateContent request (models/{model}) and CachedContent (models/{cache.model}) has to be the same."
        )
    return cache


def _unknown(key: str, where: str) -> ApiError:
    place = f" at '{where}'" if where else ""
    return invalid(f'Invalid JSON payload received. Unknown name "{key}"{place}: Cannot find field.')


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
