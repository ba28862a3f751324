"""Errors a caller can branch on without parsing strings.

Two families: ``GeminiError`` (a failed call, reduced to a ``Kind``) and
``StorytellerError`` (something a person must act on: a code from ``Code`` and
a message that says what happened and what to do).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class Kind(StrEnum):
    TRANSIENT = "transient"  # 408/429/5xx, timeouts, connection errors, a garbled answer: retry
    AUTH = "auth"  # the key was rejected: stop every job
    MODEL = "model"  # the model is not offered (404 naming a model): stop asking it
    GONE = "gone"  # the Gemini file expired or was deleted: upload again
    NOT_READY = "not_ready"  # the file is not ACTIVE yet
    EXISTS = "exists"  # 409 on create: the deterministic name already exists
    FATAL = "fatal"  # any other 4xx: do not retry


class GeminiError(Exception):
    """A failed Gemini call, reduced to plain fields that survive pickling."""

    def __init__(
        self,
        kind: Kind,
        message: str,
        code: int | None = None,
        status: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.status = status
        self.retry_after_s = retry_after_s

    def __reduce__(self):  # keep the fields when pickled across processes
        return (type(self), (self.kind, self.message, self.code, self.status, self.retry_after_s))

    @property
    def label(self) -> str:
        return f"{self.code} {self.status}" if self.code else (self.status or self.kind.value)

    @property
    def plain_words(self) -> str:
        """What went wrong, for a person (no internal names such as NETWORK or UNAVAILABLE)."""
        if self.code == 429:
            return "Gemini's quota for this key is used up for now"
        if self.kind is Kind.TRANSIENT:
            return (
                f"Gemini answered with a temporary error ({self.code})"
                if self.code
                else "Gemini could not be reached (no network, or the service did not answer)"
            )
        if self.kind is Kind.AUTH:
            return "Gemini rejected the key"
        if self.kind is Kind.MODEL:
            return "the model is not offered to this key"
        return f"Gemini refused the request ({self.code})" if self.code else "Gemini refused the request"

    @property
    def quota(self) -> bool:
        """Gemini said the quota is exhausted (429)."""
        return self.code == 429


class Code(StrEnum):
    """Why a video or an analysis stopped; stored with the record and shown in exports."""

    # intake
    NOT_FOUND = "not_found"
    NOT_A_FILE = "not_a_file"
    EMPTY_FILE = "empty_file"
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"
    NOT_VIDEO = "not_video"
    UNREADABLE = "unreadable"
    NOT_SAVED = "not_saved"
    # the video's steps
    SOURCE_MISSING = "source_missing"
    SOURCE_CHANGED = "source_changed"
    TOO_MANY_UPLOADS = "too_many_uploads"
    FILE_FAILED = "file_failed"
    PROCESSING_TIMEOUT = "processing_timeout"
    # the analysis step
    EMPTY_ANSWER = "empty_answer"
    MODEL_NOT_FOUND = "model_not_found"
    BATCH_FAILED = "batch_failed"  # the Batch tier: Gemini's batch job failed, was cancelled elsewhere, or is gone
    BATCH_EXPIRED = "batch_expired"  # the Batch tier: Gemini did not run the job within its 48 hours
    # Gemini, any step
    API_KEY_REJECTED = "api_key_rejected"
    QUOTA_EXHAUSTED = "quota_exhausted"
    NETWORK = "network"
    GEMINI_UNAVAILABLE = "gemini_unavailable"
    GEMINI_REFUSED = "gemini_refused"
    # ours
    INTERNAL = "internal_error"


class StorytellerError(Exception):
    """Something a person must act on: a code to branch on and a message for them."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = Code(code)
        self.message = message


class MediaError(StorytellerError):
    """A file refused before any API call."""


class StepFailed(StorytellerError):
    """A step ended its record (video or analysis) for good."""


class DataDirError(StorytellerError):
    """The data dir cannot be used safely (not ours, writable by others, damaged)."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.INTERNAL, message)


class Cancelled(Exception):
    """The user asked to cancel (or the engine is stopping) while a step was running or waiting."""


class QuotaPaused(Exception):
    """Gemini's quota stayed exhausted past the pause threshold: stop asking until ``resume_at``."""

    def __init__(self, resume_at: float) -> None:
        self.resume_at = resume_at
        super().__init__(quota_paused_message(resume_at))


def quota_paused_message(resume_at: float) -> str:
    at = datetime.fromtimestamp(resume_at).strftime("%H:%M")
    return f"Gemini quota exhausted; the batch resumes at {at}, or press Resume on the Queue page."


KEY_REJECTED_MESSAGE = "Gemini rejected the API key. Check the key in Settings (or GEMINI_API_KEY), then retry the failed videos."
