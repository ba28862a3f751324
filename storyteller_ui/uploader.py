"""The Batch page's uploader: many videos dropped in the browser, each streamed in pieces straight to disk.

Three parts:

- ``routes()``, the browser's tus 1.0 endpoint (what uploader.js speaks): the job API's own tus handlers
  (storyteller_ui.api.tus over tus_store: durable offsets, sha256 in the same pass, the same checks), served
  under the page's path with the page's access (the session cookie, plus the guards below) so that ``/api/v1``
  stays Bearer-only:

      OPTIONS/POST /upload/tus                  tus creation (Upload-Length, Upload-Metadata filename)
      HEAD/PATCH/DELETE/GET /upload/tus/{id}    tus core and termination, the upload's JSON
      POST /upload/tus/{id}/list                a complete upload joins the checked list (add_pending);
                                                -> 200 {"ok", "name", "sha256", "size", "error"}; asked again: the same

- the older protocol of our own, kept for the tests that still speak it (test_hostile_files, test_trust_browser):
  Starlette routes over storyteller_core.intake.upload_sessions. The request body is read as a stream and written
  1 MiB at a time (sha256 in the same pass), so the server holds about 1 MiB per upload in flight.

      POST   /upload/start        {"name", "size"}            -> 201 {"id", "received": 0, ...}
      PUT    /upload/{id}         Content-Range: bytes a-b/size, body = those bytes
                                                              -> 200 {"received"}; 409 {"received"} to resume from
      GET    /upload/{id}                                     -> 200 {"received", "size", "state", ...}
      POST   /upload/{id}/finish                              -> 200 {"ok", "name", "sha256", "size", "error"}
      DELETE /upload/{id}                                     -> 204, the partial file deleted

  Errors answer {"error": text for a person, "code", "received"?} (the tus routes: {"error": {"code", "message"}}).
  TokenGate (storyteller_ui.access) guards
  these routes like every page (no cookie: 401). On top, every call must carry ``X-Storyteller-Upload: 1``,
  a header a cross-site form cannot send and a cross-site fetch cannot send without a CORS preflight that
  nothing here answers, and a browser's Origin / Sec-Fetch-Site must say this same origin (403 otherwise).

- ``render_uploader(engine)``: an st.components.v2 component (runs in the app page itself, so its fetch()
  calls are same-origin and carry the access cookie): drop zone, per-file progress, retries with back-off,
  resume from the server's offset (HEAD) after a dropped connection or a reload, cancel (DELETE). A finished
  file joins the checked list before Start
  (engine.commands.add_pending) and the component asks Streamlit for a rerun so the page shows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import streamlit.components.v2 as components_v2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storyteller_core.errors import DataDirError
from storyteller_core.intake.candidates import Candidate
from storyteller_core.intake.media import CHUNK
from storyteller_core.intake.upload_sessions import UploadError, UploadSessions, candidate_summary
from storyteller_core.settings import VIDEO_EXTENSIONS
from storyteller_ui.api import tus as tus_api
from storyteller_ui.api.common import ApiError
from storyteller_ui.api.common import engine as api_engine
from storyteller_ui.app_engine import data_dir_problem, start_engine

if TYPE_CHECKING:
    from storyteller_core import Engine

HEADER = "X-Storyteller-Upload"
PIECE_BYTES = 8 * 1024 * 1024  # what the browser sends per PUT; the server writes CHUNK (1 MiB) at a time
MAX_JSON_BYTES = 16 * 1024
_RANGE = re.compile(r"bytes (\d{1,18})-(\d{1,18})/(\d{1,18})")  # 18 digits: int() never sees thousands of them
_STATIC = Path(__file__).with_name("uploader_static")
log = logging.getLogger(__name__)

_sessions: dict[Path, UploadSessions] = {}  # one per data dir, for the server's life
_sessions_lock = threading.Lock()
# Probing a finished file runs on its own two threads, never on the default pool the other routes share: six
# slow probes there (crafted files) once left no thread for any /upload/* request. Each probe is time-limited.
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="upload-check")
_pending_lock = threading.Lock()  # finishes arriving together must not overwrite each other's checked-list entries


def endpoint() -> str:
    """The uploader's URL path, under server.baseUrlPath like the rest of the app."""
    from streamlit import config

    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}/upload" if base else "/upload"


def tus_endpoint() -> str:
    return endpoint() + "/tus"


def routes() -> list[Route]:
    root = endpoint()
    tus_root = tus_endpoint()
    return [  # the tus routes first: /upload/{upload_id} below would take "tus" for an id
        Route(tus_root, _guarded(tus_api.collection), methods=["OPTIONS", "POST"]),
        Route(f"{tus_root}/{{upload_id}}", _guarded(tus_api.one), methods=["HEAD", "PATCH", "DELETE", "GET"]),
        Route(f"{tus_root}/{{upload_id}}/list", _guarded(_list), methods=["POST"]),
        Route(f"{root}/start", _start, methods=["POST"]),
        Route(f"{root}/{{upload_id}}", _one, methods=["GET", "PUT", "DELETE"]),
        Route(f"{root}/{{upload_id}}/finish", _finish, methods=["POST"]),
    ]


def sessions_for(engine: Engine) -> UploadSessions:
    with _sessions_lock:
        sessions = _sessions.get(engine.settings.data_dir)
        if sessions is None:
            sessions = _sessions[engine.settings.data_dir] = UploadSessions(engine.settings)
        return sessions


# -- the routes -------------------------------------------------------------------------------------
def _answer(data: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def _refusal_reason(request: Request) -> str | None:
    """Why this is not our own page's fetch() (the custom header, a browser's own word on the origin), or None."""
    if request.headers.get(HEADER) != "1":
        return f"Uploads need the {HEADER} header (sent by the app's own uploader)."
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    hosts = {request.headers.get(h, "").lower() for h in ("host", "x-forwarded-host")} - {""}  # behind a proxy too
    if (site is not None and site != "same-origin") or (origin is not None and urlsplit(origin).netloc.lower() not in hosts):
        return "Uploads are accepted from this app's own page only."
    return None


def _refusal(request: Request) -> JSONResponse | None:
    reason = _refusal_reason(request)
    return None if reason is None else _answer({"error": reason, "code": "forbidden"}, 403)


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A tus handler behind the page's guards (the cookie is TokenGate's): 403 in the tus error shape otherwise."""

    async def guarded(request: Request) -> Response:
        reason = _refusal_reason(request)
        if reason is not None:
            return ApiError(403, "forbidden", reason, {"Tus-Resumable": tus_api.TUS_VERSION}).response()
        return await handler(request)

    return guarded


async def _list(request: Request) -> Response:
    """A complete tus upload joins the checked list, as /finish does: moved into the spool, then add_pending.

    Asked again (the answer was lost): the same file, listed once (add_pending keeps a source's entry).
    """
    upload_id = request.path_params["upload_id"]
    headers = {"Tus-Resumable": tus_api.TUS_VERSION}
    try:
        engine = await api_engine()
        store = tus_api.store_for(engine.settings)

        def work() -> Candidate:
            candidate = store.take(upload_id)  # probes first if every byte is here but the check never ran
            with _pending_lock:
                engine.commands.add_pending([candidate])
            return candidate

        candidate = await asyncio.get_running_loop().run_in_executor(_checks, work)
    except ApiError as exc:
        exc.headers = {**headers, **exc.headers}
        return exc.response()
    except Exception as exc:  # the checked list could not be written: the client asks again
        log.exception("an uploaded file could not be added to the checked list")
        return ApiError(
            503, "not_listed", f"The file arrived but could not be added to the list ({exc}); trying again.", headers
        ).response()
    return _answer({"id": upload_id, **candidate_summary(candidate)})


async def _sessions_or_error(request: Request) -> tuple[Engine | None, UploadSessions | JSONResponse]:
    refused = _refusal(request)
    if refused is not None:
        return None, refused
    try:
        engine = await asyncio.to_thread(start_engine)
    except (OSError, DataDirError) as exc:
        return None, _answer({"error": data_dir_problem(exc), "code": "data_dir"}, 503)
    return engine, sessions_for(engine)


async def _start(request: Request) -> Response:
    _, sessions = await _sessions_or_error(request)
    if isinstance(sessions, Response):
        return sessions
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return _answer({"error": "Send the file's name and size as JSON.", "code": "bad_request"}, 415)
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > MAX_JSON_BYTES:
            return _answer({"error": "The request is too large.", "code": "bad_request"}, 413)
    try:
        body = json.loads(raw)
        name, size = body["name"], body["size"]
    except (ValueError, KeyError, TypeError):
        return _answer({"error": 'Send {"name": ..., "size": ...} as JSON.', "code": "bad_request"}, 400)
    try:
        session = await asyncio.to_thread(sessions.start, str(name), size)
    except UploadError as exc:
        return _answer(exc.to_dict(), exc.status)
    return _answer({**session, "piece_bytes": PIECE_BYTES}, 201)


async def _one(request: Request) -> Response:
    _, sessions = await _sessions_or_error(request)
    if isinstance(sessions, Response):
        return sessions
    upload_id = request.path_params["upload_id"]
    try:
        if request.method == "PUT":
            return await _put(request, sessions, upload_id)
        if request.method == "DELETE":
            await asyncio.to_thread(sessions.cancel, upload_id)
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return _answer(sessions.status(upload_id))
    except UploadError as exc:
        return _answer(exc.to_dict(), exc.status)


async def _put(request: Request, sessions: UploadSessions, upload_id: str) -> Response:
    match = _RANGE.fullmatch(request.headers.get("content-range", "").strip())
    if not match:
        return _answer({"error": "Each piece needs a Content-Range: bytes first-last/size header.", "code": "bad_request"}, 400)
    first, last, total = (int(g) for g in match.groups())
    length = last - first + 1
    declared = request.headers.get("content-length")
    if length <= 0 or last >= total or (declared is not None and declared.strip() != str(length)):
        return _answer({"error": "The piece's Content-Range does not match its length.", "code": "bad_request"}, 400)
    receiver = sessions.receive(upload_id, first, total)
    try:
        buffer, got = bytearray(), 0
        try:
            async for piece in request.stream():
                got += len(piece)
                if got > length:
                    raise UploadError(400, "bad_request", "The piece is longer than its Content-Range says.", receiver.received)
                buffer += piece
                if len(buffer) >= CHUNK:
                    data, buffer = buffer, bytearray()
                    await asyncio.to_thread(receiver.write, data)
        except ClientDisconnect:
            pass  # keep what did arrive: the client asks where to resume
        if buffer:
            await asyncio.to_thread(receiver.write, buffer)
    finally:
        receiver.close()
    return _answer({"id": upload_id, "received": receiver.received})


async def _finish(request: Request) -> Response:
    engine, sessions = await _sessions_or_error(request)
    if isinstance(sessions, Response):
        return sessions
    assert engine is not None
    upload_id = request.path_params["upload_id"]

    def accept(candidate: Candidate) -> None:
        with _pending_lock:
            engine.commands.add_pending([candidate])

    try:
        candidate = await asyncio.get_running_loop().run_in_executor(_checks, sessions.finish, upload_id, accept)
    except UploadError as exc:
        return _answer(exc.to_dict(), exc.status)
    except Exception as exc:  # the checked list could not be written: the client asks again
        log.exception("an uploaded file could not be added to the checked list")
        return _answer({"error": f"The file arrived but could not be added to the list ({exc}); trying again.", "code": "not_listed"}, 503)
    return _answer({"id": upload_id, **candidate_summary(candidate)})


# -- the component ----------------------------------------------------------------------------------
_component = components_v2.component(
    "video_storyteller_uploader",
    js=(_STATIC / "uploader.js").read_text(encoding="utf-8"),
    css=(_STATIC / "uploader.css").read_text(encoding="utf-8"),
)


def _noop() -> None:
    pass


def render_uploader(engine: Engine) -> None:
    """Drop zone and per-file progress; each finished file joins the checked list and the page reruns.

    Call it at the top level of a page (not inside st.fragment: its rerun would then redraw only the fragment).
    """
    _component(
        key="storyteller-uploader",
        data={
            "endpoint": tus_endpoint(),
            "pieceBytes": PIECE_BYTES,
            "maxBytes": engine.settings.max_file_bytes,
            "extensions": sorted(VIDEO_EXTENSIONS),
        },
        on_uploaded_change=_noop,
    )
