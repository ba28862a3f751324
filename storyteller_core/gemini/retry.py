"""The one retry policy for every Gemini call (tenacity), and the poll backoff.

Retry only what can succeed later: 408, 429, 500, 502, 503, 504, timeouts,
connection errors and garbled answers (all Kind.TRANSIENT from gemini.py).
Every delay is at least MIN_WAIT_S, even when the server says "retry in 0s":
without the floor three videos sent 5,859 requests in 305 s. A longer server
delay is honoured. Every wait is cut into slices that check ``should_stop``,
so a cancel lands within a second. A shared quota.Cooldown makes all callers
wait out one 429 together and turns a long exhaustion into QuotaPaused.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import tenacity

from storyteller_core.errors import Cancelled, GeminiError, Kind, QuotaPaused
from storyteller_core.gemini.reach import REACH, current_task
from storyteller_core.work.cooldown import Cooldown

if TYPE_CHECKING:
    from storyteller_core.settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)

MIN_WAIT_S = 1.0
INITIAL_WAIT_S = 1.0
MAX_WAIT_S = 30.0
SLICE_S = 0.25


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, GeminiError) and exc.kind is Kind.TRANSIENT


def retry_delay(attempt: int, retry_after_s: float | None) -> float:
    """Seconds before the next attempt: the server's delay when it gives one, else exponential backoff; never under the floor."""
    if retry_after_s:  # "0s" is no advice: fall back to our own backoff
        delay = retry_after_s + random.uniform(0, 0.25)
    else:
        delay = min(MAX_WAIT_S, INITIAL_WAIT_S * 2 ** max(0, attempt - 1)) * random.uniform(0.8, 1.2)
    return max(MIN_WAIT_S, delay)


def poll_delay(attempt: int, settings: Settings) -> float:
    """Seconds until the next look at a processing file: 1 s, x1.5 per attempt, capped, with +-20 % jitter (by default)."""
    base = min(settings.poll_max_s, settings.poll_initial_s * settings.poll_factor ** max(0, attempt - 1))
    return base * random.uniform(1 - settings.poll_jitter, 1 + settings.poll_jitter)


def wait_or_cancel(seconds: float, should_stop: Callable[[], bool] | None) -> None:
    """Sleep ``seconds`` in slices of SLICE_S; raise Cancelled as soon as ``should_stop()`` says so."""
    deadline = time.monotonic() + seconds
    while True:
        if should_stop is not None and should_stop():
            raise Cancelled()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(SLICE_S, left))


def _wait(state: tenacity.RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    retry_after = exc.retry_after_s if isinstance(exc, GeminiError) else None
    return retry_delay(state.attempt_number, retry_after)


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    if exc is not None:  # the row says why it waits, when it tries again and which attempt that is
        REACH.retrying(current_task(), exc, state.attempt_number + 1, state.upcoming_sleep)
    # the terminal shows warnings: the first retry of a call is one, the next ones (the row counts them) only logged
    (log.warning if state.attempt_number == 1 else log.info)(
        "retrying gemini call",
        extra={
            "call": getattr(state.fn, "__name__", "call"),
            "attempt": state.attempt_number,
            "error": exc.label if isinstance(exc, GeminiError) else type(exc).__name__,
            "wait_s": round(state.upcoming_sleep, 2),
        },
    )


# The policy, declared once; each call varies only its budget and its sleep.
POLICY = tenacity.Retrying(
    retry=tenacity.retry_if_exception(is_transient),
    wait=_wait,
    before_sleep=_log_retry,
    reraise=True,
)


def call_with_retry(
    fn: Callable[[], T],
    budget_s: float,
    *,
    should_stop: Callable[[], bool] | None = None,
    cooldown: Cooldown | None = None,
) -> T:
    """Run ``fn``, retrying transient failures until ``budget_s`` is spent.

    Raises Cancelled when ``should_stop()`` turns true during a wait. With a
    ``cooldown``, a 429 never leaves as a failure: once the quota has been
    exhausted for ``cooldown.pause_after_s`` every caller is paused
    (``cooldown.pause()``) and QuotaPaused is raised; when only this call's
    budget runs out first, QuotaPaused says when the shared wait ends.
    """
    deadline = time.monotonic() + budget_s

    def attempt() -> T:
        if cooldown is not None:
            _wait_for_quota(cooldown, deadline, should_stop)
        try:
            result = fn()
        except GeminiError as exc:
            if cooldown is not None and exc.quota:
                cooldown.note_exhausted(exc.retry_after_s)
                if cooldown.exhausted_for() >= cooldown.pause_after_s:
                    raise _pause_everyone(cooldown) from exc
            raise
        if cooldown is not None:
            cooldown.note_ok()
        return result

    attempt.__name__ = getattr(fn, "__name__", "call")
    retrying = POLICY.copy(
        stop=tenacity.stop_before_delay(budget_s),
        sleep=lambda seconds: wait_or_cancel(seconds, should_stop),
    )
    try:
        result = retrying(attempt)
    except GeminiError as exc:
        if cooldown is not None and exc.quota:  # the budget ran out while the quota was exhausted
            raise _budget_out(cooldown) from exc
        raise
    REACH.answered(current_task())
    return result


def _wait_for_quota(cooldown: Cooldown, deadline: float, should_stop: Callable[[], bool] | None) -> None:
    if cooldown.active_pause() is not None:
        raise QuotaPaused(cooldown.paused_until or time.time())
    wait = cooldown.remaining()
    if wait <= 0:
        return
    if wait > deadline - time.monotonic():
        raise _budget_out(cooldown)
    log.info("waiting for the gemini quota", extra={"wait_s": round(wait, 2)})
    wait_or_cancel(wait, should_stop)


def _pause_everyone(cooldown: Cooldown) -> QuotaPaused:
    resume_at = cooldown.pause()
    log.warning("gemini quota exhausted; pausing every call", extra={"resume_at": resume_at})
    return QuotaPaused(resume_at)


def _budget_out(cooldown: Cooldown) -> QuotaPaused:
    resume_at = time.time() + max(MIN_WAIT_S, cooldown.remaining())
    log.info("gemini quota exhausted past this call's budget", extra={"resume_at": resume_at})
    return QuotaPaused(resume_at)
