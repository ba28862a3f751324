"""The job API for programs: uploads over tus, batches and jobs over HTTP, live events over SSE (docs/API.md).

app.py serves ``routes()`` next to the uploader's, behind access.TokenGate: every ``/api/v1`` route takes
``Authorization: Bearer <token>`` only; ``/health`` is open. Any other path under ``/api/v1`` answers JSON
404 (or 405 for a known path and another method), never the app's page.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from storyteller_ui.api import health, jobs, openapi, sse, tokens, tus
from storyteller_ui.api.common import ApiError, prefix

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def routes() -> list[Route]:
    known = [*health.routes(), *tus.routes(), *sse.routes(), *jobs.routes(), *tokens.routes(), *openapi.routes()]

    async def unknown(request: Request) -> Response:
        allowed = sorted({m for r in known if r.matches(request.scope)[0] is Match.PARTIAL for m in r.methods or ()})
        if allowed:
            return ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not answered here; use {', '.join(allowed)}.",
                {"Allow": ", ".join(allowed)},
            ).response()
        return ApiError(404, "no_such_route", f"There is no {request.url.path} in this API; see {prefix()}/openapi.json.").response()

    return [*known, Route(prefix(), unknown, methods=METHODS), Route(prefix() + "/{rest:path}", unknown, methods=METHODS)]
