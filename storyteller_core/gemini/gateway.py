"""The gateway to the Gemini API: the only module that imports google.genai.

Every call here is a single attempt; the retry policy lives in retry.py and is
applied by the pipeline. The SDK's own retries stay off (no retry_options).
SDK and transport errors, and answers that are not Gemini's JSON (a proxy's
HTML page, a truncated body), leave this module as GeminiError with a Kind.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from storyteller_core.errors import GeminiError, Kind
from storyteller_core.settings import API_VERSION

try:  # google-genai 3.x talks through httpx2; older releases through httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http  # type: ignore[no-redef]

log = logging.getLogger(__name__)

TRANSIENT_CODES = {408, 429, 500, 502, 503, 504}
ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class RemoteFile:
    name: str
    uri: str
    state: str  # PROCESSING | ACTIVE | FAILED
    expires_at: float | None
    error: str | None = None
    sha256: str | None = None  # lowercase hex of what Gemini stored, when it says


@dataclass(frozen=True)
class Uploaded:
    file: RemoteFile
    sha256: str | None  # lowercase hex of the bytes we sent; None when not read in one pass, or on a 409


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None
    block_reason: str | None
    prompt_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    model_version: str | None
    cached_tokens: int | None = None  # usageMetadata.cachedContentTokenCount: the part of prompt_tokens read from a cache


@dataclass(frozen=True)
class CachedVideo:
    """An explicit context cache (cachedContents/ID) holding one video part: asked through, billed at the cached price."""

    name: str
    model: str
    expires_at: float | None
    tokens: int | None  # usageMetadata.totalTokenCount of the cache


@dataclass(frozen=True)
class VideoPart:
    """What of a video to show the model: an uploaded file's uri or a YouTube URL, optionally a clip."""

    uri: str
    mime_type: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    fps: float | None = None
    processing: str | None = None  # "agentic": Gemini 3's agentic video processing (preview); None: Gemini's default


@dataclass(frozen=True)
class BatchRequest:
    """One question of a Gemini batch job; ``key`` comes back with its answer (metadata["key"])."""

    key: str
    video: VideoPart
    prompt: str
    json_schema: dict[str, Any] | None = None
    resolution: str | None = None


@dataclass(frozen=True)
class BatchResult:
    key: str | None  # the request's key, as Gemini echoed it (metadata); None: not echoed, mapped to nobody
    answer: Answer | None
    error_code: int | None = None  # google.rpc.Code of a request that failed inside the job
    error_message: str | None = None


@dataclass(frozen=True)
class BatchJob:
    name: str  # batches/ID
    display_name: str
    state: str  # JOB_STATE_* (the wire says BATCH_STATE_*; the SDK maps it)
    created_at: float | None
    results: tuple[BatchResult, ...] = ()  # in request order, once the job SUCCEEDED

    @property
    def done(self) -> bool:
        return self.state in BATCH_ENDED


BATCH_ENDED = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)


def file_name_for(sha256: str) -> str:
    """Deterministic Gemini file name (<= 40 chars, a-z 0-9 -) for a content hash."""
    return f"vs-{sha256[:37]}"


class Gateway:
    def __init__(self, api_key: str, base_url: str | None, request_timeout_s: float, *, api_version: str = API_VERSION) -> None:
        # api_version pinned (config.API_VERSION says why): google-genai 3.x would send Gemini API calls to /v1/
        options = types.HttpOptions(timeout=int(request_timeout_s * 1000), base_url=base_url, api_version=api_version)
        self._client = genai.Client(api_key=api_key, http_options=options)

    def upload(self, path: Path, *, name: str, display_name: str, mime_type: str, on_progress: ProgressFn) -> Uploaded:
        """Stream ``path`` to the File API, hashing the bytes as they are read; 409 (name taken) returns the existing file."""
        with path.open("rb") as raw, _HashingReader(raw, on_progress) as reader:
            try:
                result = _call(
                    self._client.files.upload,
                    file=reader,
                    config={"mime_type": mime_type, "display_name": display_name[:512], "name": name},
                )
            except GeminiError as exc:
                if exc.kind is not Kind.EXISTS:
                    raise
                existing = self.get_file(name)
                if existing is None:
                    raise
                return Uploaded(existing, None)
            return Uploaded(_remote(result), reader.sha256())

    def get_file(self, name: str) -> RemoteFile | None:
        """The file's current state, or None when it expired or was deleted."""
        try:
            return _remote(_call(self._client.files.get, name=name, about_file=True))
        except GeminiError as exc:
            if exc.kind is Kind.GONE:
                return None
            raise

    def delete_file(self, name: str) -> None:
        try:
            _call(self._client.files.delete, name=name, about_file=True)
        except GeminiError as exc:
            if exc.kind is not Kind.GONE:
                raise

    def generate(
        self,
        *,
        model: str,
        video: VideoPart,
        prompt: str,
        timeout_s: float,
        json_schema: dict[str, Any] | None = None,
        resolution: str | None = None,
        on_text: Callable[[str], None] | None = None,
        flex: bool = False,
        cache: str | None = None,
    ) -> Answer:
        """Ask ``prompt`` of ``video``, streamed: ``on_text`` sees the text so far; a cut stream raises (retry it whole).

        With ``cache`` (a cachedContents name holding the video) only the prompt is sent: the video is read from the cache.
        """
        config = _answer_config(json_schema, None if cache else resolution, model)
        config.http_options = types.HttpOptions(timeout=int(timeout_s * 1000))
        if flex:  # half price, minutes of latency (preview)
            config.service_tier = types.ServiceTier.FLEX
        contents: list[Any] = [prompt] if cache else _contents(video, prompt, model, resolution)
        if cache:
            config.cached_content = cache
        return _call(lambda: _collect(self._client.models.generate_content_stream(model=model, contents=contents, config=config), on_text))

    def ask_text(self, *, model: str, prompt: str, json_schema: dict[str, Any], timeout_s: float) -> Answer:
        """A text-only question with a structured answer (no video part): one generateContent call, not streamed.

        On the wire: ``contents[0].parts[0].text`` and ``generationConfig.responseMimeType`` /
        ``responseJsonSchema``, fields the analyses already send (v1beta GenerateContentRequest).
        """
        config = _answer_config(json_schema, None, model)
        config.http_options = types.HttpOptions(timeout=int(timeout_s * 1000))
        contents: list[Any] = [prompt]
        return _call(lambda: _collect([self._client.models.generate_content(model=model, contents=contents, config=config)], None))

    def ask_clip(
        self, *, model: str, video: VideoPart, prompt: str, json_schema: dict[str, Any], timeout_s: float, resolution: str | None = None
    ) -> Answer:
        """A question about one clip of an uploaded file (``video.start_s``/``end_s`` become videoMetadata
        start_offset/end_offset), answered in the schema: one generateContent call, not streamed. A file that
        expired answers GeminiError(Kind.GONE): upload it again, then ask again."""
        if video.start_s is None or video.end_s is None:
            raise ValueError("a clip check needs both ends of the clip")
        config = _answer_config(json_schema, resolution, model)
        config.http_options = types.HttpOptions(timeout=int(timeout_s * 1000))
        contents = _contents(video, prompt, model, resolution)
        return _call(
            lambda: _collect([self._client.models.generate_content(model=model, contents=contents, config=config)], None), about_file=True
        )

    # -- explicit context caching: one video, many questions, cached input at about a tenth of the price ----------
    def create_cache(self, *, model: str, video: VideoPart, ttl_s: float, display_name: str, resolution: str | None = None) -> CachedVideo:
        """A cache of the video part, living ``ttl_s`` unless deleted first. Not idempotent: store its name at once."""
        content = types.Content(role="user", parts=[_video_part(video, model, resolution)])
        config = types.CreateCachedContentConfig(contents=[content], ttl=f"{max(1, int(ttl_s))}s", display_name=display_name[:128])
        return _cached(_call(self._client.caches.create, model=model, config=config), model)

    def get_cache(self, name: str) -> CachedVideo | None:
        """The cache, or None when it expired or was deleted (Gemini answers 403/404)."""
        try:
            return _cached(_call(self._client.caches.get, name=name), "")
        except GeminiError as exc:
            if exc.code in (403, 404):
                return None
            raise

    def delete_cache(self, name: str) -> None:
        """Delete the cache now (storage is billed per hour); one already gone is fine."""
        try:
            _call(self._client.caches.delete, name=name)
        except GeminiError as exc:
            if exc.code not in (403, 404):
                raise

    # -- the Batch API: about half price, results within hours ---------------------------------
    def create_batch(self, *, model: str, requests: list[BatchRequest], display_name: str) -> BatchJob:
        """One batch job of inlined requests. Not idempotent: a second call makes a second job (and a second bill)."""
        src = [
            types.InlinedRequest(
                contents=_contents(r.video, r.prompt, model, r.resolution),
                config=_answer_config(r.json_schema, r.resolution, model),
                metadata={"key": r.key},
            )
            for r in requests
        ]
        job = _call(self._client.batches.create, model=model, src=src, config=types.CreateBatchJobConfig(display_name=display_name))
        return _batch_job(job)

    def get_batch(self, name: str) -> BatchJob | None:
        """The job's state (and its answers once it succeeded); None when Gemini no longer knows it."""
        try:
            return _batch_job(_call(self._client.batches.get, name=name))
        except GeminiError as exc:
            if exc.code == 404:
                return None
            raise

    def find_batch(self, token: str, *, most: int = 500) -> BatchJob | None:
        """The newest job whose display name holds ``token``, among the ``most`` newest (a batches.list page per 100)."""

        def look() -> BatchJob | None:
            for seen, job in enumerate(self._client.batches.list(config={"page_size": 100})):
                if token in (job.display_name or ""):
                    return _batch_job(job)
                if seen + 1 >= most:
                    break
            return None

        return _call(look)  # the pager fetches pages while it is iterated: errors are translated there too

    def cancel_batch(self, name: str) -> None:
        """Ask Gemini to stop the job; one that is gone or has ended already is left as it is."""
        try:
            _call(self._client.batches.cancel, name=name)
        except GeminiError as exc:
            if exc.code not in (400, 404):
                raise

    def list_files(self, *, page_size: int = 100, page_token: str | None = None) -> tuple[list[RemoteFile], str | None]:
        """One files.list page (one call): up to ``page_size`` (<= 100) files with their states, and the next page's token."""
        config: dict[str, Any] = {"page_size": page_size}
        if page_token:
            config["page_token"] = page_token
        pager = _call(self._client.files.list, config=config)
        return [_remote(f) for f in pager.page], pager.config.get("page_token") or None

    def list_models(self) -> list[str]:
        # the pager fetches pages while it is iterated: iterate inside _call so those errors are translated too
        models = _call(lambda: list(self._client.models.list()))
        return [
            m.name.removeprefix("models/")
            for m in models
            if m.name and (not m.supported_actions or "generateContent" in m.supported_actions)
        ]


_RESOLUTION = {
    "low": types.MediaResolution.MEDIA_RESOLUTION_LOW,
    "medium": types.MediaResolution.MEDIA_RESOLUTION_MEDIUM,
    "high": types.MediaResolution.MEDIA_RESOLUTION_HIGH,
}


_PART_RESOLUTION = {
    "low": types.PartMediaResolutionLevel.MEDIA_RESOLUTION_LOW,
    "medium": types.PartMediaResolutionLevel.MEDIA_RESOLUTION_MEDIUM,
    "high": types.PartMediaResolutionLevel.MEDIA_RESOLUTION_HIGH,
}


def per_part_options(model: str) -> bool:
    """Gemini 3 and later take media resolution on the part (Part.media_resolution) and the agentic processing mode."""
    match = re.match(r"(?:models/)?gemini-(\d+)", model)
    return bool(match and int(match.group(1)) >= 3)


def _contents(video: VideoPart, prompt: str, model: str = "", resolution: str | None = None) -> list[Any]:
    return [_video_part(video, model, resolution), prompt]


def _answer_config(json_schema: dict[str, Any] | None, resolution: str | None, model: str = "") -> types.GenerateContentConfig:
    """What shapes the answer: the structured story's schema, the media resolution (for models before Gemini 3)."""
    config = types.GenerateContentConfig()
    if json_schema is not None:
        config.response_mime_type = "application/json"
        config.response_json_schema = json_schema
    if resolution and not per_part_options(model):
        config.media_resolution = _RESOLUTION[resolution]
    return config


def _cached(cache: types.CachedContent, model: str) -> CachedVideo:
    usage = cache.usage_metadata
    return CachedVideo(
        name=cache.name or "",
        model=(cache.model or model).removeprefix("models/"),
        expires_at=cache.expire_time.timestamp() if cache.expire_time else None,
        tokens=usage.total_token_count if usage else None,
    )


def _batch_job(job: types.BatchJob) -> BatchJob:
    results: list[BatchResult] = []
    for item in (job.dest.inlined_responses if job.dest else None) or []:
        key = (item.metadata or {}).get("key")
        if item.response is not None:
            results.append(BatchResult(key, _collect([item.response], None)))
        else:
            error = item.error
            results.append(
                BatchResult(key, None, error.code if error else None, (error.message if error else None) or "no answer and no reason given")
            )
    return BatchJob(
        name=job.name or "",
        display_name=job.display_name or "",
        state=_enum_name(job.state) or "",
        created_at=job.create_time.timestamp() if job.create_time else None,
        results=tuple(results),
    )


def duration_text(seconds: float) -> str:
    """Google's Duration JSON: "0.5s", "90s", "12.25s" (a fraction travels; at most nanosecond digits)."""
    return f"{round(seconds, 9):.9f}".rstrip("0").rstrip(".") + "s"


def _video_part(video: VideoPart, model: str = "", resolution: str | None = None) -> types.Part:
    metadata = None
    if video.start_s is not None or video.end_s is not None or video.fps is not None:
        metadata = types.VideoMetadata(
            start_offset=duration_text(video.start_s) if video.start_s is not None else None,
            end_offset=duration_text(video.end_s) if video.end_s is not None else None,
            fps=video.fps,
        )
    part = types.Part(file_data=types.FileData(file_uri=video.uri, mime_type=video.mime_type), video_metadata=metadata)
    if per_part_options(model):
        if resolution:
            part.media_resolution = types.PartMediaResolution(level=_PART_RESOLUTION[resolution])
        if video.processing == "agentic":
            part.media_processing = types.MediaProcessing.AGENTIC
    return part


def _collect(stream: Any, on_text: Callable[[str], None] | None) -> Answer:
    """Join a streamed answer; the last chunk carries the usage and the finish reason."""
    text, last, finish, block = "", None, None, None
    for chunk in stream:
        last = chunk
        candidate = chunk.candidates[0] if chunk.candidates else None
        parts = candidate.content.parts if candidate and candidate.content else None
        piece = "".join(p.text for p in parts or [] if p.text and not p.thought)
        if candidate and candidate.finish_reason:
            finish = _enum_name(candidate.finish_reason)
        if chunk.prompt_feedback and chunk.prompt_feedback.block_reason:
            block = _enum_name(chunk.prompt_feedback.block_reason)
        if piece:
            text += piece
            if on_text:
                on_text(text)
    usage = last.usage_metadata if last else None
    return Answer(
        text=text.strip(),
        finish_reason=finish,
        block_reason=block,
        prompt_tokens=usage.prompt_token_count if usage else None,
        output_tokens=usage.candidates_token_count if usage else None,
        total_tokens=usage.total_token_count if usage else None,
        model_version=last.model_version if last else None,
        cached_tokens=usage.cached_content_token_count if usage else None,
    )


class _HashingReader(io.RawIOBase):
    """A seekable read-only view of a file that reports bytes read so far and hashes them in the same pass.

    Each byte is hashed once, in order: a chunk read again (after a seek back)
    is skipped up to the highest offset already hashed. A read that starts past
    that offset leaves a hole, and then there is no digest.
    """

    def __init__(self, raw: io.BufferedReader, on_progress: ProgressFn) -> None:
        self._raw = raw
        self._on_progress = on_progress
        self._hash = hashlib.sha256()
        self._hashed = 0  # bytes 0.._hashed are in the digest
        self._hole = False
        self.mode = "rb"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, size: int = -1) -> bytes:
        start = self._raw.tell()
        data = self._raw.read(size)
        self._absorb(start, data)
        self._on_progress(self._raw.tell())
        return data

    def _absorb(self, start: int, data: bytes) -> None:
        end = start + len(data)
        if end <= self._hashed:
            return
        if start > self._hashed:
            self._hole = True
            return
        self._hash.update(memoryview(data)[self._hashed - start :])
        self._hashed = end

    def sha256(self) -> str | None:
        """Hex digest when the reads covered the file from 0 to its current end without a hole."""
        if self._hole or self._hashed != os.fstat(self._raw.fileno()).st_size:
            return None
        return self._hash.hexdigest()


# What the SDK raises when a 200 answer is not Gemini's JSON, by call:
# files.get / models.generate_content / models.list parse with json.loads (JSONDecodeError);
# the upload's finalize answer goes through HttpResponse.json (UnknownApiResponseError);
# an upload start answer without the x-goog-upload-url header (a proxy's page) is a KeyError,
# and a last chunk answered without x-goog-upload-status is a ValueError.
_UPLOAD_ANSWER_PROBLEMS = (
    "Upload URL was not returned from the create file request",
    "Failed to upload file: Upload status is not finalized",
    "All content has been uploaded, but the upload status is not finalized",
)


def _call(fn: Callable[..., Any], *, about_file: bool = False, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except genai_errors.APIError as exc:
        raise _translate(exc, about_file=about_file) from None
    except _http.TransportError as exc:
        kind = "timed out" if isinstance(exc, _http.TimeoutException) else "connection failed"
        raise GeminiError(Kind.TRANSIENT, f"Gemini {kind} ({type(exc).__name__})", status="NETWORK") from None
    except (json.JSONDecodeError, genai_errors.UnknownApiResponseError) as exc:
        what = _describe_body(exc)
        raise GeminiError(
            Kind.TRANSIENT, f"Gemini sent an answer that is not valid JSON ({what}); retrying", status="BAD_RESPONSE"
        ) from None
    except (KeyError, ValueError) as exc:
        if not any(text in str(exc) for text in _UPLOAD_ANSWER_PROBLEMS):
            raise
        raise GeminiError(
            Kind.TRANSIENT,
            "Gemini's upload answer lacked its upload headers (not a Gemini answer?); retrying",
            status="BAD_RESPONSE",
        ) from None


def _describe_body(exc: Exception) -> str:
    cause = exc if isinstance(exc, json.JSONDecodeError) else exc.__cause__
    body = cause.doc if isinstance(cause, json.JSONDecodeError) else ""
    head = body.lstrip()[:200].lower()
    if not head:
        return "empty body"
    if head.startswith(("<!doctype html", "<html")) or "<html" in head:
        return "HTML page"
    if head.startswith(("{", "[")):
        return "truncated JSON"
    return "not JSON"


# Real Gemini, for a model it does not offer: 404 NOT_FOUND "models/NAME is not found for API
# version v1beta, or is not supported for generateContent. Call ListModels ..."; for a file that
# expired or never existed: 403 PERMISSION_DENIED "You do not have permission to access the File
# files/NAME or it may not exist."
# A retired model (gemini-2.5-flash since 2026-12-01): 404 "... is no longer available to new users. Please update
# your code to use ...".
_MODEL_MISSING = re.compile(r"\bmodels/\S+ is not found|\bmodel\b[^.]*\bnot found|no longer available to new users", re.IGNORECASE)
_ABOUT_FILE = re.compile(r"\bfiles?\b", re.IGNORECASE)


def _translate(exc: genai_errors.APIError, *, about_file: bool = False) -> GeminiError:
    code = exc.code
    status = exc.status or ""
    message = exc.message or str(exc)
    if code == 401 or (code in (400, 403) and _is_key_problem(message, exc.details)):
        return GeminiError(Kind.AUTH, message, code, status)
    if code in TRANSIENT_CODES:
        return GeminiError(Kind.TRANSIENT, message, code, status, _retry_delay(exc.details))
    if code == 409:
        return GeminiError(Kind.EXISTS, message, code, status)
    if code == 404 and _MODEL_MISSING.search(message):
        return GeminiError(Kind.MODEL, message, code, status)
    if code in (403, 404) and (about_file or _ABOUT_FILE.search(message)):
        return GeminiError(Kind.GONE, message, code, status)
    if code == 400 and status == "FAILED_PRECONDITION":
        return GeminiError(Kind.NOT_READY, message, code, status)
    return GeminiError(Kind.FATAL, message, code, status)


def _is_key_problem(message: str, details: Any) -> bool:
    return "api key" in message.lower() or "API_KEY" in str(details)


def _retry_delay(details: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail such as {"retryDelay": "12s"}."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for item in error.get("details", []) if isinstance(error, dict) else []:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(delay or ""))
        if match:
            return float(match.group(1))
    return None


def _remote(file: types.File) -> RemoteFile:
    state = _enum_name(file.state) or "STATE_UNSPECIFIED"
    expires = file.expiration_time.timestamp() if file.expiration_time else None
    error = file.error.message if file.error else None
    return RemoteFile(
        name=file.name or "",
        uri=file.uri or "",
        state=state,
        expires_at=expires,
        error=error,
        sha256=normalize_sha256(file.sha256_hash),
    )


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def normalize_sha256(value: str | None) -> str | None:
    """Lowercase hex from what Gemini calls sha256Hash.

    Real Gemini sends base64; seen are base64 of the 32 raw bytes and base64 of
    the 64-character hex text. Plain hex is accepted too. Anything else: None.
    """
    text = (value or "").strip()
    if _HEX64.fullmatch(text):
        return text.lower()
    text = text.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) == 32:
        return raw.hex()
    if len(raw) == 64 and _HEX64.fullmatch(raw.decode("ascii", "replace")):
        return raw.decode("ascii").lower()
    return None


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return getattr(value, "value", None) or str(value)
