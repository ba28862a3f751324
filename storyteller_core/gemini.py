"""The gateway to the Gemini API: the only module that imports google.genai.

Every call here is a single attempt; the retry policy lives in retry.py and is
applied by the pipeline. The SDK's own retries stay off (no retry_options).
SDK and transport errors leave this module as GeminiError with a Kind.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from .errors import GeminiError, Kind

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


@dataclass(frozen=True)
class Analysis:
    text: str
    finish_reason: str | None
    block_reason: str | None
    prompt_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    model_version: str | None


def file_name_for(sha256: str) -> str:
    """Deterministic Gemini file name (<= 40 chars, a-z 0-9 -) for a content hash."""
    return f"vs-{sha256[:37]}"


class Gateway:
    def __init__(self, api_key: str, base_url: str | None, request_timeout_s: float) -> None:
        options = types.HttpOptions(timeout=int(request_timeout_s * 1000), base_url=base_url)
        self._client = genai.Client(api_key=api_key, http_options=options)

    def upload(
        self, path: Path, *, name: str, display_name: str, mime_type: str, on_progress: ProgressFn
    ) -> RemoteFile:
        """Stream ``path`` to the File API; 409 (name taken) returns the existing file."""
        with path.open("rb") as raw, _ProgressReader(raw, on_progress) as reader:
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
                return existing
        return _remote(result)

    def get_file(self, name: str) -> RemoteFile | None:
        """The file's current state, or None when it expired or was deleted."""
        try:
            return _remote(_call(self._client.files.get, name=name))
        except GeminiError as exc:
            if exc.kind is Kind.GONE:
                return None
            raise

    def delete_file(self, name: str) -> None:
        try:
            _call(self._client.files.delete, name=name)
        except GeminiError as exc:
            if exc.kind is not Kind.GONE:
                raise

    def generate(
        self, *, model: str, file_uri: str, mime_type: str, prompt: str, timeout_s: float
    ) -> Analysis:
        response = _call(
            self._client.models.generate_content,
            model=model,
            contents=[types.Part.from_uri(file_uri=file_uri, mime_type=mime_type), prompt],
            config=types.GenerateContentConfig(
                http_options=types.HttpOptions(timeout=int(timeout_s * 1000))
            ),
        )
        candidate = response.candidates[0] if response.candidates else None
        parts = candidate.content.parts if candidate and candidate.content else None
        text = "".join(p.text for p in parts or [] if p.text and not p.thought)
        usage = response.usage_metadata
        feedback = response.prompt_feedback
        return Analysis(
            text=text.strip(),
            finish_reason=_enum_name(candidate.finish_reason) if candidate else None,
            block_reason=_enum_name(feedback.block_reason) if feedback else None,
            prompt_tokens=usage.prompt_token_count if usage else None,
            output_tokens=usage.candidates_token_count if usage else None,
            total_tokens=usage.total_token_count if usage else None,
            model_version=response.model_version,
        )

    def list_models(self) -> list[str]:
        models = _call(self._client.models.list)
        return [m.name.removeprefix("models/") for m in models if m.name]


class _ProgressReader(io.RawIOBase):
    """A seekable read-only view of a file that reports bytes read so far."""

    def __init__(self, raw: io.BufferedReader, on_progress: ProgressFn) -> None:
        self._raw = raw
        self._on_progress = on_progress
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
        data = self._raw.read(size)
        self._on_progress(self._raw.tell())
        return data


def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except genai_errors.APIError as exc:
        raise _translate(exc) from None
    except _http.TransportError as exc:
        kind = "timed out" if isinstance(exc, _http.TimeoutException) else "connection failed"
        raise GeminiError(Kind.TRANSIENT, f"Gemini {kind} ({type(exc).__name__})", status="NETWORK") from None


def _translate(exc: genai_errors.APIError) -> GeminiError:
    code = exc.code
    status = exc.status or ""
    message = exc.message or str(exc)
    if code == 401 or (code in (400, 403) and _is_key_problem(message, exc.details)):
        return GeminiError(Kind.AUTH, message, code, status)
    if code in TRANSIENT_CODES:
        return GeminiError(Kind.TRANSIENT, message, code, status, _retry_delay(exc.details))
    if code == 409:
        return GeminiError(Kind.EXISTS, message, code, status)
    if code in (403, 404):
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
    return RemoteFile(name=file.name or "", uri=file.uri or "", state=state, expires_at=expires, error=error)


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return getattr(value, "value", None) or str(value)
