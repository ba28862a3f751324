"""GET /health, open to all: whether the engine and Gemini (or demo mode's emulator) answer. Nothing else."""

from __future__ import annotations

import asyncio
import threading
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storyteller_core.errors import GeminiError
from storyteller_ui.access import HEALTH_PATH, base_path
from storyteller_ui.api.common import ApiError, answer, engine
from storyteller_ui.api.models import ErrorInfo, Health

GEMINI_TIMEOUT_S = 10.0
CACHE_S = 15.0  # one models.list per this long at most, however often /health is asked
_last: tuple[float, ErrorInfo | None] | None = None
_lock = threading.Lock()
_asking = threading.Lock()  # one models.list at a time: a flood of /health must not fill the threads the API shares
CHECKING = ErrorInfo(code="gemini_checking", message="Gemini is being asked right now; ask /health again in a moment.")


def routes() -> list[Route]:
    return [Route(base_path() + HEALTH_PATH, _health, methods=["GET"])]


def _ask_gemini(eng: object) -> ErrorInfo | None:
    global _last
    with _lock:
        if _last is not None and time.monotonic() - _last[0] < CACHE_S:
            return _last[1]
    if not _asking.acquire(blocking=False):  # another request is asking: answer from the last look, never queue up
        with _lock:
            return _last[1] if _last is not None else CHECKING
    try:
        eng.available_models()  # type: ignore[attr-defined]
        problem = None
    except GeminiError as exc:  # our words, never the server's text: /health is open to anyone who reaches the port
        problem = ErrorInfo(code="gemini", message=f"Gemini did not answer: {exc.plain_words}.")
    except Exception as exc:
        problem = ErrorInfo(code="gemini", message=f"Gemini did not answer ({type(exc).__name__}).")
    finally:
        _asking.release()
    with _lock:
        _last = (time.monotonic(), problem)
    return problem


async def _health(request: Request) -> Response:
    try:
        eng = await engine()
    except ApiError as exc:
        return answer(Health(ok=False, engine=ErrorInfo(code=exc.code, message=exc.message), gemini=None), 503)
    engine_problem = (
        None
        if eng.healthy
        else ErrorInfo(
            code="engine", message="The engine's workers stopped; restart Video Storyteller (the log in the data folder says why)."
        )
    )
    try:
        gemini = await asyncio.wait_for(asyncio.to_thread(_ask_gemini, eng), GEMINI_TIMEOUT_S)
    except TimeoutError:
        gemini = ErrorInfo(code="gemini_timeout", message=f"Gemini did not answer within {GEMINI_TIMEOUT_S:g} s.")
    ok = engine_problem is None and gemini is None
    return answer(Health(ok=ok, engine=engine_problem, gemini=gemini, demo=eng.demo), 200 if ok else 503)
