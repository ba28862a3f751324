"""The job API for programs: uploads over tus, batches and jobs over HTTP, live events over SSE (docs/API.md).

app.py serves ``routes()`` next to the uploader's, behind access.TokenGate: every ``/api/v1`` route takes
``Authorization: Bearer <token>`` only; ``/health`` is open.
"""

from __future__ import annotations

from starlette.routing import Route

from . import health, jobs, openapi, sse, tokens, tus


def routes() -> list[Route]:
    return [*health.routes(), *tus.routes(), *sse.routes(), *jobs.routes(), *tokens.routes(), *openapi.routes()]
