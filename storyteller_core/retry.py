"""The one retry policy for every Gemini call (tenacity).

Retry only what can succeed later: 408, 429, 500, 502, 503, 504, timeouts and
connection errors (all mapped to Kind.TRANSIENT by the gemini module). A 429
that names a retry delay is waited out exactly. Nothing else is retried.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TypeVar

import tenacity

from .errors import GeminiError, Kind

T = TypeVar("T")
log = logging.getLogger(__name__)

INITIAL_WAIT_S = 1.0
MAX_WAIT_S = 30.0


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, GeminiError) and exc.kind is Kind.TRANSIENT


def _wait(state: tenacity.RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, GeminiError) and exc.retry_after_s is not None:
        return exc.retry_after_s + random.uniform(0, 0.25)
    backoff = min(MAX_WAIT_S, INITIAL_WAIT_S * 2 ** (state.attempt_number - 1))
    return backoff * random.uniform(0.8, 1.2)


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "retrying gemini call",
        extra={
            "call": getattr(state.fn, "__name__", "call"),
            "attempt": state.attempt_number,
            "error": exc.label if isinstance(exc, GeminiError) else type(exc).__name__,
            "wait_s": round(state.upcoming_sleep, 2),
        },
    )


def call_with_retry(fn: Callable[[], T], budget_s: float) -> T:
    """Run ``fn``, retrying transient failures until ``budget_s`` is spent."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=_wait,
        stop=tenacity.stop_before_delay(budget_s),
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(fn)
