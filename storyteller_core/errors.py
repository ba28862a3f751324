"""Errors a caller can branch on without parsing strings."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    TRANSIENT = "transient"  # 408/429/5xx, timeouts, connection errors: retry
    AUTH = "auth"  # the key was rejected: stop every job
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


class StepFailed(Exception):
    """A step ended the job: a code to branch on and a message for a person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Cancelled(Exception):
    """The user asked to cancel while a step was running."""


KEY_REJECTED_MESSAGE = (
    "Gemini rejected the API key. Check the key in Settings (or GEMINI_API_KEY), "
    "then retry the failed videos."
)
