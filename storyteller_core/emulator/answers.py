"""What the emulated model answers: which video a request is about, the response body, the usage it reports.

Shared by generateContent, streamGenerateContent, countTokens and the Batch
API, so every way in sees the same video, the same markers and the same
token figures.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storyteller_core.emulator import collection
from storyteller_core.emulator.schema import Facts
from storyteller_core.emulator.story_writer import answer_text, file_facts, text_only_facts, token_split, youtube_facts
from storyteller_core.emulator.wire import ApiError, GenerateRequest, invalid
from storyteller_core.settings import MODELS

if TYPE_CHECKING:
    from storyteller_core.emulator.server import Emulator

METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
_FILE_NAME = re.compile(r"(files/[a-z0-9-]+)$")
RPC_CODES = {400: 3, 403: 7, 404: 5, 409: 6, 429: 8, 500: 13, 503: 14}  # google.rpc.Code for an HTTP status


@dataclass(frozen=True)
class Target:
    """The video a request is about: an uploaded file, a YouTube video, or none."""

    display_name: str  # a file's display name; "youtube:ID" for YouTube; "(no video)"
    facts: Facts
    youtube_id: str | None = None


@dataclass(frozen=True)
class WireCall:
    """What one accepted request carried, as the emulator read it (stats.wire)."""

    method: str  # generate | stream | batch | countTokens
    model: str
    display_name: str
    video_metadata: dict[str, Any]  # videoMetadata as received, keys in snake_case: start_offset, end_offset, fps
    media_resolution: str | None  # MEDIA_RESOLUTION_LOW / _MEDIUM / _HIGH, None when not sent
    service_tier: str | None  # "flex", "standard", ... None when not sent
    schema_field: str | None  # "responseJsonSchema" / "responseSchema" / None
    response_mime_type: str | None
    file_uri: str
    prompt_tokens: int
    media_processing: str | None = None  # the video part's mediaProcessing ("AGENTIC"), None when not sent
    cached_content: str | None = None  # the cachedContents name asked through, None when not
    cached_tokens: int = 0  # of prompt_tokens, read from the cache


def model_entries(emu: Emulator) -> list[dict[str, Any]]:
    """models.list entries: config.models (in the app's table order), then config.extra_models."""
    offered = emu.config.models
    names = [n for n in MODELS if n in offered] + sorted(offered - set(MODELS))
    entries: dict[str, dict[str, Any]] = {}
    for n in names:
        entries[n] = {
            "name": f"models/{n}",
            "version": "001",
            "displayName": MODELS[n].label if n in MODELS else n,
            "description": "Emulated by the local Gemini emulator.",
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 65_536,
            "supportedGenerationMethods": list(METHODS),
        }
    for extra in emu.config.extra_models:
        short = str(extra["name"]).removeprefix("models/")
        entries[short] = {"version": "001", "displayName": short, "supportedGenerationMethods": [], **extra, "name": f"models/{short}"}
    return list(entries.values())


def model_entry(emu: Emulator, model: str) -> dict[str, Any] | None:
    short = model.removeprefix("models/")
    return next((e for e in model_entries(emu) if e["name"] == f"models/{short}"), None)


def check_model(emu: Emulator, model: str, method: str) -> None:
    entry = model_entry(emu, model)
    verb = "generateContent" if method == "streamGenerateContent" else method  # models.list names no stream method
    short = model.removeprefix("models/")
    if entry is None and short in emu.config.retired:  # what Gemini answers for a retired model (2.5 since 2026-12)
        raise ApiError(
            404,
            "NOT_FOUND",
            f"This model models/{short} is no longer available to new users. Please update your code to use {emu.config.retired[short]}.",
        )
    if entry is None or verb not in entry.get("supportedGenerationMethods", []):
        raise ApiError(
            404,
            "NOT_FOUND",
            f"models/{model} is not found for API version v1beta, or is not supported for "
            f"{verb}. Call ListModels to see the list of available models and their supported methods.",
        )


def find_target(emu: Emulator, request: GenerateRequest, *, analysis: bool) -> Target:
    """The video the request names; 403/400 as Gemini answers a missing, unready or private one.

    analysis=False (countTokens) never triggers the vanish marker.
    """
    cfg, video = emu.config, request.video
    if video is None:
        return Target("(no video)", text_only_facts(request))
    vid = video.youtube_id
    if vid:
        if vid in cfg.private_youtube_ids:  # what Gemini says for a private, removed or age-restricted video
            raise invalid("Request contains an invalid argument.")
        duration = float(cfg.youtube_durations.get(vid, cfg.youtube_duration_s))
        facts = youtube_facts(vid, video.file_uri, duration, cfg.youtube_titles.get(vid), request)
        return Target(facts.display_name, facts, youtube_id=vid)
    uri = video.file_uri
    match = _FILE_NAME.search(uri.split("?", 1)[0])
    if not match and re.match(r"^(?:https?|gs)://", uri):
        raise invalid(f"Unsupported file uri: {uri}")
    name = match.group(1) if match else uri
    with emu.lock:
        f = emu.live_file(name)
        state = emu.file_json(f)["state"] if f else None
        vanish = analysis and f is not None and cfg.vanish_marker in f.display_name and f.display_name not in emu.vanished
        if f is not None and vanish:
            emu.vanished.add(f.display_name)
            del emu.files[name]
    if f is None or vanish:
        raise ApiError(403, "PERMISSION_DENIED", f"You do not have permission to access the File {name} or it may not exist.")
    if state != "ACTIVE":
        raise ApiError(400, "FAILED_PRECONDITION", f"The File {name} is not in an ACTIVE state and usage is not allowed.")
    return Target(f.display_name, file_facts(f.path, f.display_name, request))


def prompt_usage(target: Target, request: GenerateRequest) -> dict[str, Any]:
    """promptTokenCount and its split by modality: the clip's seconds x (frames x tokens per frame + audio)."""
    facts = target.facts
    seconds = max(0.0, facts.end_s - facts.start_s)
    fps = request.video.fps if request.video else None
    video, audio = token_split(seconds, fps, request.media_resolution) if request.video else (0, 0)
    text = len(request.prompt) // 4
    details = [{"modality": "TEXT", "tokenCount": text}]
    if request.video:
        details += [{"modality": "VIDEO", "tokenCount": video}, {"modality": "AUDIO", "tokenCount": audio}]
    return {"promptTokenCount": video + audio + text, "promptTokensDetails": details}


def record(
    emu: Emulator, method: str, model: str, target: Target, request: GenerateRequest, body: dict[str, Any], cached_tokens: int = 0
) -> None:
    usage = prompt_usage(target, request)
    call = WireCall(
        method=method,
        model=model,
        display_name=target.display_name,
        video_metadata=dict(request.video.metadata) if request.video else {},
        media_resolution=request.media_resolution,
        service_tier=request.service_tier,
        schema_field=request.schema_field,
        response_mime_type=request.response_mime_type,
        file_uri=request.video.file_uri if request.video else "",
        prompt_tokens=usage["promptTokenCount"],
        media_processing=request.video.processing if request.video else None,
        cached_content=str(body.get("cachedContent")) if body.get("cachedContent") else None,
        cached_tokens=cached_tokens,
    )
    stats = emu.stats
    with emu.lock:
        if method == "countTokens":
            stats.token_counts[target.display_name] += 1
        else:
            stats.generates[target.display_name] += 1
        if method == "stream":
            stats.streams[target.display_name] += 1
        if target.youtube_id:
            stats.youtube[target.youtube_id] += 1
        if request.service_tier:
            stats.service_tiers[request.service_tier] += 1
        stats.wire.append(call)
        stats.last_body = body


def answer(emu: Emulator, model: str, target: Target, request: GenerateRequest, key: str) -> dict[str, Any]:
    """The GenerateContentResponse body (markers applied); raises ApiError for the ECHOKEY refusal."""
    cfg, name = emu.config, target.display_name
    if cfg.blocked_marker in name:
        return {"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": f"{model}-emulator"}
    if cfg.echo_key_marker in name:  # a server that echoes the key and a link back
        raise invalid(f"Request with key {key} refused: see [details](http://phish.example/x).")
    text = "" if cfg.empty_marker in name else collection.reply(target.facts, request)
    if text is None:
        text = answer_text(target.facts, request, late_moment=cfg.late_moment_marker in name, break_schema=cfg.bad_json_marker in name)
    usage = prompt_usage(target, request)
    out_tokens = len(text) // 4
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}] if text else []},
                "finishReason": "STOP" if text else "OTHER",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": usage["promptTokenCount"],
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": usage["promptTokenCount"] + out_tokens,
            "promptTokensDetails": usage["promptTokensDetails"],
        },
        "modelVersion": f"{model}-emulator",
        "responseId": uuid.uuid4().hex[:22],
    }


def stream_events(response: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The answer as streamGenerateContent sends it: the text over up to ``count`` events, running usage on each.

    The last event has the finishReason and the full usage. An answer with no text is one event.
    """
    candidates = response.get("candidates") or []
    parts = candidates[0]["content"]["parts"] if candidates else []
    if not parts:
        return [response]
    pieces = split_text(parts[0]["text"], max(1, count))
    usage = response["usageMetadata"]
    events, written = [], 0
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        written += len(piece)
        out = usage["candidatesTokenCount"] if last else written // 4
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}
        if last:
            candidate["finishReason"] = candidates[0]["finishReason"]
        event_usage = {
            "promptTokenCount": usage["promptTokenCount"],
            "candidatesTokenCount": out,
            "totalTokenCount": usage["promptTokenCount"] + out,
        }
        if last:
            event_usage["promptTokensDetails"] = usage["promptTokensDetails"]
        if "cachedContentTokenCount" in usage:
            event_usage["cachedContentTokenCount"] = usage["cachedContentTokenCount"]
        events.append(
            {
                "candidates": [candidate],
                "usageMetadata": event_usage,
                "modelVersion": response["modelVersion"],
                "responseId": response["responseId"],
            }
        )
    return events


def split_text(text: str, count: int) -> list[str]:
    """``count`` pieces that join back to ``text``, cut after a space where there is one near the cut."""
    if count <= 1 or len(text) < count:
        return [text]
    cuts, previous = [], 0
    for i in range(1, count):
        at = len(text) * i // count
        space = text.rfind(" ", previous + 1, at + 1)
        at = space + 1 if space > previous else at
        if previous < at < len(text):
            cuts.append(at)
            previous = at
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def rpc_status(error: ApiError) -> dict[str, Any]:
    """google.rpc.Status, as a failed request of a batch carries it."""
    status: dict[str, Any] = {"code": RPC_CODES.get(error.code, 2), "message": error.message}
    if error.details:
        status["details"] = error.details
    return status
