"""A local HTTP server speaking the Gemini REST subset that google-genai uses.

Resumable upload (start, chunks with offsets, finalize), files get/list/delete,
generateContent (structured output from a response schema, clips, fps, media
resolution, service tier, YouTube URIs), streamGenerateContent (SSE),
countTokens, models list/get and the Batch API (batchGenerateContent, batches
get/list/cancel/delete), with Google's error JSON. Request bodies are read in
both spellings the SDK mixes (camelCase at the top, snake_case inside; see
wire.py). Counters record what clients did so tests can assert on the
server's own view. Uploaded bytes live in a temp dir that stop() deletes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from storyteller_core.emulator import answers, caches
from storyteller_core.emulator.answers import WireCall
from storyteller_core.emulator.batches import Batch
from storyteller_core.emulator.config import EmulatorConfig
from storyteller_core.emulator.wire import ApiError, invalid, parse_generate, pick

FILE_TTL_S = 48 * 3600
_API = r"/(?:v1|v1beta)"


@dataclass
class _File:
    name: str
    display_name: str
    mime_type: str
    size: int
    path: Path
    created: float
    active_at: float
    failed: bool = False
    expires: float = 0.0
    sha256: bytes = b""  # raw digest of the bytes received


@dataclass
class _Session:
    name: str
    display_name: str
    mime_type: str
    size: int
    path: Path
    received: int = 0
    touched: float = field(default_factory=time.monotonic)
    digest: Any = field(default_factory=hashlib.sha256)


@dataclass
class Stats:
    uploads_started: int = 0
    uploads_finished: Counter = field(default_factory=Counter)  # by display name
    max_uploads_at_once: int = 0
    polls: Counter = field(default_factory=Counter)  # files.get by file name
    poll_times: list = field(default_factory=list)  # time.time() of every files.get
    lists: int = 0  # files.list pages served
    list_times: list = field(default_factory=list)  # time.time() of every files.list page
    generates: Counter = field(default_factory=Counter)  # by display name
    faults: Counter = field(default_factory=Counter)
    requests: int = 0
    request_times: list = field(default_factory=list)  # time.time() of every request
    chunks: int = 0
    streams: Counter = field(default_factory=Counter)  # streamGenerateContent answered, by display name
    stream_cuts: Counter = field(default_factory=Counter)  # streams cut half-way, by display name
    # every accepted generate / stream / batch request / countTokens, as read off the wire (answers.WireCall)
    wire: list[WireCall] = field(default_factory=list)
    last_body: dict = field(default_factory=dict)  # the raw JSON of the last such request (a batch: its last request)
    youtube: Counter = field(default_factory=Counter)  # requests naming a YouTube video, by video id
    service_tiers: Counter = field(default_factory=Counter)  # serviceTier as sent ("flex", ...)
    token_counts: Counter = field(default_factory=Counter)  # countTokens, by display name
    batches_created: Counter = field(default_factory=Counter)  # batchGenerateContent, by batch display name
    batch_polls: Counter = field(default_factory=Counter)  # batches.get, by batch name
    caches_created: Counter = field(default_factory=Counter)  # cachedContents.create, by the cached video's display name
    caches_deleted: int = 0
    cached_generates: Counter = field(default_factory=Counter)  # generate/stream through a cache, by cache name

    @property
    def status_calls(self) -> int:
        """files.get calls plus files.list pages: every call that asks after a file's state."""
        return sum(self.polls.values()) + self.lists

    def requests_by_minute(self, since: float | None = None) -> Counter:
        """Requests per whole minute since ``since`` (default: the first request): {0: n, 1: m, ...}."""
        times = list(self.request_times)
        start = since if since is not None else (times[0] if times else 0.0)
        return Counter(int((t - start) // 60) for t in times if t >= start)


class Emulator:
    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_root: Path | None = None,
        storage_prefix: str = "gemini-emulator-",
    ) -> None:
        self.config = config or EmulatorConfig()
        self.stats = Stats()
        self.lock = threading.Lock()
        self.files: dict[str, _File] = {}
        self.sessions: dict[str, _Session] = {}
        self.vanished: set[str] = set()  # display names whose file was deleted before analysis once
        self.cut_once: set[str] = set()  # display names whose first stream was cut (cut_marker)
        self.batches: dict[str, Batch] = {}
        self.caches: dict[str, caches.Cache] = {}
        self.random = random.Random(self.config.seed)
        self.stopping = threading.Event()
        self.storage = Path(tempfile.mkdtemp(prefix=storage_prefix, dir=storage_root))
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.emulator = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="gemini-emulator", daemon=True)
        self._thread.start()
        return self

    def go_away(self) -> None:
        """Stop answering (connections are refused) but keep every file and session."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def come_back(self) -> None:
        """Answer again on the same port, with the same state."""
        address = self.httpd.server_address[:2]
        self.httpd = ThreadingHTTPServer(address, _Handler)
        self.httpd.daemon_threads = True
        self.httpd.emulator = self  # type: ignore[attr-defined]
        self.start()

    def live_caches(self) -> list[str]:
        """Names of the caches not deleted and not expired (what would still be billed for storage)."""
        now = time.time()
        with self.lock:
            return sorted(n for n, c in self.caches.items() if c.expires > now)

    def expire_cache(self, name: str) -> None:
        """Let the cache's TTL end now."""
        with self.lock:
            if name in self.caches:
                self.caches[name].expires = time.time() - 1

    def stop(self) -> None:
        """Stop answering and delete every uploaded byte. Safe to call twice."""
        if not self.stopping.is_set():
            self.stopping.set()
            self.httpd.shutdown()
            self.httpd.server_close()
        shutil.rmtree(self.storage, ignore_errors=True)

    def count_request(self) -> None:
        with self.lock:
            self.stats.requests += 1
            self.stats.request_times.append(time.time())

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers tests use ------------------------------------------------------
    def expire(self, display_name: str) -> None:
        """Make every file of that display name vanish, as a 48-hour expiry would."""
        with self.lock:
            for name in [n for n, f in self.files.items() if f.display_name == display_name]:
                del self.files[name]

    def uploads_of(self, display_name: str) -> int:
        return self.stats.uploads_finished[display_name]

    def active_since(self, name: str) -> float | None:
        """When the file turned (or will turn) ACTIVE, as time.time()."""
        f = self.files.get(name)
        return f.active_at if f else None

    def uploads_in_flight(self) -> int:
        cutoff = time.monotonic() - 30
        return sum(1 for s in self.sessions.values() if s.touched > cutoff)

    def file_json(self, f: _File) -> dict[str, Any]:
        now = time.time()
        state = "FAILED" if f.failed and now >= f.active_at else ("ACTIVE" if now >= f.active_at else "PROCESSING")
        data: dict[str, Any] = {
            "name": f.name,
            "displayName": f.display_name,
            "mimeType": f.mime_type,
            "sizeBytes": str(f.size),
            "createTime": _iso(f.created),
            "updateTime": _iso(max(f.created, min(now, f.active_at))),
            "expirationTime": _iso(f.expires),
            "uri": f"{self.base_url}/v1beta/{f.name}",
            "state": state,
            "source": "UPLOADED",
            "sha256Hash": base64.b64encode(f.sha256).decode(),
        }
        if state == "FAILED":
            data["error"] = {"code": 400, "message": "The video could not be processed (emulated failure)."}
        return data

    def live_file(self, name: str) -> _File | None:
        f = self.files.get(name)
        if f and time.time() >= f.expires:
            del self.files[name]
            return None
        return f


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GeminiEmulator/1"

    @property
    def emu(self) -> Emulator:
        return self.server.emulator  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # -- plumbing ------------------------------------------------------------
    def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message, "status": status}
        if details:
            error["details"] = details
        self._send(code, {"error": error})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        cfg = self.emu.config
        key = self.headers.get("x-goog-api-key") or ""
        if key and key not in cfg.rejected_keys and (cfg.valid_keys is None or key in cfg.valid_keys):
            return True
        self._error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        )
        return False

    def _roll(self, where: str) -> str | None:
        """Which fault strikes this call, if any: "429", "503" or "bad_body"."""
        cfg = self.emu.config
        if where not in cfg.fault_on:
            return None
        with self.emu.lock:
            roll = self.emu.random.random()
        for fault, rate in (("429", cfg.rate_429), ("503", cfg.rate_503), ("bad_body", cfg.bad_body_rate)):
            if roll < rate:
                return fault
            roll -= rate
        return None

    def _fault(self, where: str) -> bool:
        """Answer with an injected 429, 503 or bad body when the dice say so."""
        fault = self._roll(where)
        if fault is None:
            return False
        with self.emu.lock:
            self.emu.stats.faults[fault] += 1
        if fault == "429":
            delay = self.emu.config.retry_delay_s
            details = None
            if delay is not None:
                details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": _duration(delay)}]
            self._error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", details)
        elif fault == "503":
            self._error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        else:
            self._bad_body(_TRUNCATED_FILE)
        return True

    def _bad_body(self, good: bytes, headers: dict[str, str] | None = None) -> None:
        """A 200 that is not Gemini's JSON: a proxy's HTML page, or the real answer cut short."""
        with self.emu.lock:
            html = self.emu.random.random() < 0.5
        raw = _HTML_PAGE if html else good[: max(1, len(good) // 2)]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=UTF-8" if html else "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    # -- routing ---------------------------------------------------------------
    def _wrong_version(self) -> bool:
        """Answer only config.api_version, as the gateway pins it: a call to another surface is a 404 (drift caught)."""
        match = re.match(r"^(?:/upload)?/(v\d+\w*)/", self.path)
        wanted = self.emu.config.api_version
        if match is None or match.group(1) == wanted:
            return False
        self._drain(int(self.headers.get("Content-Length") or 0))
        self._error(404, "NOT_FOUND", f"This emulator answers only API version {wanted} (got {match.group(1)}).")
        return True

    def do_GET(self) -> None:
        self.emu.count_request()
        if self._wrong_version():
            return
        path = self.path.split("?", 1)[0]
        if m := re.fullmatch(_API + r"/(files/[a-z0-9-]+)", path):
            self._get_file(m.group(1))
        elif re.fullmatch(_API + r"/files", path):
            self._list_files()
        elif re.fullmatch(_API + r"/models", path):
            self._list_models()
        elif m := re.fullmatch(_API + r"/(cachedContents/[a-z0-9]+)", path):
            self._get_cache(m.group(1))
        elif m := re.fullmatch(_API + r"/models/([^/:]+)", path):
            self._get_model(m.group(1))
        elif re.fullmatch(_API + r"/batches", path):
            self._list_batches()
        elif m := re.fullmatch(_API + r"/(batches/[A-Za-z0-9_-]+)", path):
            self._get_batch(m.group(1))
        else:
            self._error(404, "NOT_FOUND", f"No route for GET {path}")

    def do_POST(self) -> None:
        self.emu.count_request()
        if self._wrong_version():
            return
        path = self.path.split("?", 1)[0]
        if re.fullmatch(r"/upload" + _API + r"/files", path):
            self._upload_start()
        elif m := re.fullmatch(r"/upload-session/([0-9a-f]+)", path):
            self._upload_chunk(m.group(1))
        elif re.fullmatch(_API + r"/cachedContents", path):
            self._create_cache()
        elif m := re.fullmatch(_API + r"/models/([^/:]+):generateContent", path):
            self._generate(m.group(1))
        elif m := re.fullmatch(_API + r"/models/([^/:]+):streamGenerateContent", path):
            self._generate(m.group(1), stream=True)
        elif m := re.fullmatch(_API + r"/models/([^/:]+):countTokens", path):
            self._count_tokens(m.group(1))
        elif m := re.fullmatch(_API + r"/models/([^/:]+):batchGenerateContent", path):
            self._create_batch(m.group(1))
        elif m := re.fullmatch(_API + r"/(batches/[A-Za-z0-9_-]+):cancel", path):
            self._cancel_batch(m.group(1))
        else:
            self._body()
            self._error(404, "NOT_FOUND", f"No route for POST {path}")

    def do_DELETE(self) -> None:
        self.emu.count_request()
        if self._wrong_version():
            return
        path = self.path.split("?", 1)[0]
        if cache := re.fullmatch(_API + r"/(cachedContents/[a-z0-9]+)", path):
            self._delete_cache(cache.group(1))
            return
        if batch := re.fullmatch(_API + r"/(batches/[A-Za-z0-9_-]+)", path):
            self._delete_batch(batch.group(1))
            return
        m = re.fullmatch(_API + r"/(files/[a-z0-9-]+)", path)
        if not m or not self._authorized():
            if not m:
                self._error(404, "NOT_FOUND", "No such route")
            return
        with self.emu.lock:
            self.emu.files.pop(m.group(1), None)
        self._send(200, {})

    def _list_models(self) -> None:
        """models.list: config.models then config.extra_models, paged (pageSize default 50, pageToken, nextPageToken)."""
        if not self._authorized() or self._fault("models"):
            return
        entries = answers.model_entries(self.emu)
        page, token = _page(self.path, entries, 50, 1000)
        body: dict[str, Any] = {"models": page}
        if token:
            body["nextPageToken"] = token
        self._send(200, body)

    def _get_model(self, model: str) -> None:
        if not self._authorized() or self._fault("models"):
            return
        entry = answers.model_entry(self.emu, model)
        if entry is None:
            self._error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta.")
        else:
            self._send(200, entry)

    # -- files -----------------------------------------------------------------
    def _get_file(self, name: str) -> None:
        if not self._authorized() or self._fault("poll"):
            return
        emu = self.emu
        with emu.lock:
            emu.stats.polls[name] += 1
            emu.stats.poll_times.append(time.time())
            f = emu.live_file(name)
            body = emu.file_json(f) if f else None
        if body is None:
            self._error(403, "PERMISSION_DENIED", f"You do not have permission to access the File {name} or it may not exist.")
        else:
            self._send(200, body)

    def _list_files(self) -> None:
        """files.list as Gemini pages it: pageSize (default 10, at most 100), pageToken, nextPageToken; newest first.

        A status call like files.get: counted in ``stats.lists`` / ``list_times`` and open to the "poll" faults.
        """
        if not self._authorized() or self._fault("poll"):
            return
        query = parse_qs(urlsplit(self.path).query)
        size = max(1, min(100, int((query.get("pageSize") or ["10"])[0] or 10)))
        start = int((query.get("pageToken") or ["0"])[0] or 0)
        emu = self.emu
        with emu.lock:
            emu.stats.lists += 1
            emu.stats.list_times.append(time.time())
            live = [f for f in (emu.live_file(n) for n in list(emu.files)) if f]
            live.sort(key=lambda f: f.created, reverse=True)
            page = [emu.file_json(f) for f in live[start : start + size]]
        body: dict[str, Any] = {"files": page} if page else {}
        if start + size < len(live):
            body["nextPageToken"] = str(start + size)
        self._send(200, body)

    # -- resumable upload ------------------------------------------------------------
    def _upload_start(self) -> None:
        body = self._body()
        if not self._authorized() or self._fault("upload_start"):
            return
        if self.headers.get("X-Goog-Upload-Protocol") != "resumable" or self.headers.get("X-Goog-Upload-Command") != "start":
            self._error(400, "INVALID_ARGUMENT", "Only resumable uploads are supported.")
            return
        meta = json.loads(body or b"{}").get("file") or {}
        size = int(self.headers.get("X-Goog-Upload-Header-Content-Length") or meta.get("size_bytes") or 0)
        emu = self.emu
        name = meta.get("name") or f"files/{uuid.uuid4().hex[:12]}"
        if not re.fullmatch(r"files/[a-z0-9-]{1,40}", name):
            self._error(400, "INVALID_ARGUMENT", f"Invalid file name {name!r}.")
            return
        with emu.lock:
            if emu.live_file(name):
                self._error(409, "ALREADY_EXISTS", f"File {name} already exists.")
                return
            session_id = uuid.uuid4().hex
            emu.sessions[session_id] = _Session(
                name=name,
                display_name=meta.get("display_name") or name,
                mime_type=self.headers.get("X-Goog-Upload-Header-Content-Type") or meta.get("mime_type") or "video/mp4",
                size=size,
                path=emu.storage / session_id,
            )
            emu.stats.uploads_started += 1
            emu.stats.max_uploads_at_once = max(emu.stats.max_uploads_at_once, emu.uploads_in_flight())
        self._send(200, {}, {"x-goog-upload-url": f"{emu.base_url}/upload-session/{session_id}", "x-goog-upload-status": "active"})

    def _upload_chunk(self, session_id: str) -> None:
        emu, cfg = self.emu, self.emu.config
        session = emu.sessions.get(session_id)
        length = int(self.headers.get("Content-Length") or 0)
        if cfg.chunk_delay_s:
            time.sleep(cfg.chunk_delay_s)
        if session is None or emu.stopping.is_set():
            self._drain(length)
            self._error(404, "NOT_FOUND", "Upload session not found.")
            return
        with emu.lock:
            emu.stats.chunks += 1
            fail = cfg.fail_every_nth_chunk and emu.stats.chunks % cfg.fail_every_nth_chunk == 0
        if fail:
            self._drain(length)
            emu.stats.faults["chunk"] += 1
            self._error(500, "INTERNAL", "Internal error while receiving the chunk.")
            return
        offset = int(self.headers.get("X-Goog-Upload-Offset") or -1)
        if offset != session.received:
            self._drain(length)
            self._error(400, "INVALID_ARGUMENT", f"Offset {offset} does not match {session.received} bytes received.")
            return
        with session.path.open("ab") as out:
            remaining = length
            while remaining:
                piece = self.rfile.read(min(remaining, 1 << 20))
                if not piece:
                    break
                out.write(piece)
                session.digest.update(piece)
                remaining -= len(piece)
        session.received += length
        session.touched = time.monotonic()
        if "finalize" not in (self.headers.get("X-Goog-Upload-Command") or ""):
            self._send(200, {}, {"x-goog-upload-status": "active"})
            return
        self._finalize(session_id, session)

    def _finalize(self, session_id: str, session: _Session) -> None:
        emu, cfg = self.emu, self.emu.config
        now = time.time()
        ttl = cfg.expire_after_s if cfg.expire_after_s is not None else FILE_TTL_S
        f = _File(
            name=session.name,
            display_name=session.display_name,
            mime_type=session.mime_type,
            size=session.received,
            path=session.path,
            created=now,
            active_at=now + cfg.processing_delay(session.display_name),
            failed=cfg.fail_marker in session.display_name,
            expires=now + ttl,
            sha256=session.digest.digest(),
        )
        with emu.lock:  # check and record in one step, so two finalizes of one name cannot both win
            emu.sessions.pop(session_id, None)
            if emu.live_file(f.name):  # another upload of this name finished first (e.g. a dead client's last chunk landed)
                session.path.unlink(missing_ok=True)
                code = 409
                body = {"error": {"code": 409, "message": f"File {f.name} already exists.", "status": "ALREADY_EXISTS"}}
            else:
                emu.files[f.name] = f
                emu.stats.uploads_finished[f.display_name] += 1
                code, body = 200, {"file": emu.file_json(f)}
        final = {"x-goog-upload-status": "final"}  # the header stops the SDK resending the chunk
        if code == 200 and self._roll("upload_final") == "bad_body":  # the file is stored; only its answer is garbled
            with emu.lock:
                emu.stats.faults["bad_body"] += 1
            self._bad_body(json.dumps(body).encode(), final)
            return
        self._send(code, body, final)

    def _drain(self, length: int) -> None:
        while length > 0:
            piece = self.rfile.read(min(length, 1 << 20))
            if not piece:
                return
            length -= len(piece)

    # -- generateContent and streamGenerateContent ------------------------------------------
    def _api_error(self, exc: ApiError) -> None:
        self._error(exc.code, exc.status, exc.message, exc.details)

    def _generate(self, model: str, stream: bool = False) -> None:
        raw = self._body()
        if not self._authorized() or self._fault("generate"):
            return
        emu, cfg = self.emu, self.emu.config
        cached: caches.Cache | None = None
        try:
            body = _json(raw)
            answers.check_model(emu, model, "streamGenerateContent" if stream else "generateContent")
            for content in pick(body, "contents") or []:
                for p, part in enumerate(pick(content, "parts") or [] if isinstance(content, dict) else []):
                    caches.check_part(part, f"contents.parts[{p}]")
            request = parse_generate(body)
            if body.get("cachedContent"):
                with emu.lock:
                    cached = caches.live(emu.caches, str(body["cachedContent"]), model)
                request = dataclasses.replace(
                    request, video=cached.request.video, media_resolution=request.media_resolution or cached.request.media_resolution
                )
            target = answers.find_target(emu, request, analysis=True)
        except ApiError as exc:
            self._api_error(exc)
            return
        answers.record(emu, "stream" if stream else "generate", model, target, request, body, cached_tokens=cached.tokens if cached else 0)
        if cached:
            with emu.lock:
                emu.stats.cached_generates[cached.name] += 1
        if cfg.hang_generate_s and emu.stopping.wait(cfg.hang_generate_s):
            return
        delay = cfg.analysis_delay_s + (cfg.flex_delay_s if request.service_tier == "flex" else 0.0)
        if delay:
            time.sleep(delay)
        try:
            response = answers.answer(emu, model, target, request, self.headers.get("x-goog-api-key") or "")
        except ApiError as exc:
            self._api_error(exc)
            return
        if cached and "usageMetadata" in response:
            response["usageMetadata"]["cachedContentTokenCount"] = cached.tokens
        if stream:
            self._stream(answers.stream_events(response, cfg.stream_events), target.display_name)
        else:
            self._send(200, response)

    def _stream(self, events: list[dict[str, Any]], display_name: str) -> None:
        """text/event-stream, chunked: "data: {json}" + CRLF CRLF per event; a cut drops the connection mid-event."""
        emu, cfg = self.emu, self.emu.config
        with emu.lock:
            cut = cfg.cut_marker in display_name and display_name not in emu.cut_once
            if cut:
                emu.cut_once.add(display_name)
            elif cfg.stream_cut_rate:
                cut = emu.random.random() < cfg.stream_cut_rate
        cut_at = max(1, len(events) // 2) if cut and len(events) > 1 else None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, event in enumerate(events):
                data = b"data: " + json.dumps(event).encode() + b"\r\n\r\n"
                if i == cut_at:
                    with emu.lock:
                        emu.stats.stream_cuts[display_name] += 1
                    # announce the whole event, send half of it, hang up: the client sees an incomplete chunked body
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if i and cfg.stream_chunk_delay_s and emu.stopping.wait(cfg.stream_chunk_delay_s):
                    self.close_connection = True
                    return
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- cachedContents --------------------------------------------------------------------------
    def _create_cache(self) -> None:
        """cachedContents.create: the contents (a video part) counted like a prompt; under the minimum is refused."""
        raw = self._body()
        if not self._authorized() or self._fault("cache"):
            return
        emu = self.emu
        try:
            cache = caches.new_cache(_json(raw), time.time())
            answers.check_model(emu, cache.model, "createCachedContent")
            target = answers.find_target(emu, cache.request, analysis=False)
            cache.tokens = answers.prompt_usage(target, cache.request)["promptTokenCount"]
            if cache.tokens < caches.MIN_CACHE_TOKENS:
                raise invalid(
                    f"Cached content is too small. total_token_count={cache.tokens}, min_total_token_count={caches.MIN_CACHE_TOKENS}"
                )
        except ApiError as exc:
            self._api_error(exc)
            return
        with emu.lock:
            emu.caches[cache.name] = cache
            emu.stats.caches_created[target.display_name] += 1
        self._send(200, cache.json())

    def _get_cache(self, name: str) -> None:
        if not self._authorized() or self._fault("cache"):
            return
        try:
            with self.emu.lock:
                cache = caches.live(self.emu.caches, name)
        except ApiError as exc:
            self._api_error(exc)
            return
        self._send(200, cache.json())

    def _delete_cache(self, name: str) -> None:
        if not self._authorized() or self._fault("cache"):
            return
        try:
            with self.emu.lock:
                caches.live(self.emu.caches, name)
                del self.emu.caches[name]
                self.emu.stats.caches_deleted += 1
        except ApiError as exc:
            self._api_error(exc)
            return
        self._send(200, {})

    # -- countTokens ---------------------------------------------------------------------------
    def _count_tokens(self, model: str) -> None:
        """totalTokens for the contents, counted like generateContent's usage (clip, fps, media resolution).

        Like the Gemini API, a generationConfig beside the contents is refused; a generateContentRequest
        (contents and generationConfig together) is read whole.
        """
        raw = self._body()
        if not self._authorized() or self._fault("count_tokens"):
            return
        emu = self.emu
        try:
            body = _json(raw)
            answers.check_model(emu, model, "countTokens")
            for name in ("generationConfig", "generation_config", "config"):
                if name in body:
                    raise invalid(f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')
            request = parse_generate(pick(body, "generateContentRequest") or body)
            target = answers.find_target(emu, request, analysis=False)
        except ApiError as exc:
            self._api_error(exc)
            return
        answers.record(emu, "countTokens", model, target, request, body)
        usage = answers.prompt_usage(target, request)
        self._send(200, {"totalTokens": usage["promptTokenCount"], "promptTokensDetails": usage["promptTokensDetails"]})

    # -- Batch API -------------------------------------------------------------------------------
    def _create_batch(self, model: str) -> None:
        """batchGenerateContent with inlined requests: a new batch on every call (creation is not idempotent)."""
        raw = self._body()
        if not self._authorized() or self._fault("batch"):
            return
        emu = self.emu
        try:
            body = _json(raw)
            answers.check_model(emu, model, "batchGenerateContent")
            batch = pick(body, "batch") or {}
            input_config = pick(batch, "inputConfig") or {}
            if pick(input_config, "fileName"):
                raise invalid("The emulator takes inlined requests only (input_config.requests), not a file of requests.")
            requests = pick(pick(input_config, "requests") or {}, "requests") or []
            if not isinstance(requests, list) or not requests:
                raise invalid("A batch needs at least one request in input_config.requests.requests.")
        except ApiError as exc:
            self._api_error(exc)
            return
        key = self.headers.get("x-goog-api-key") or ""
        items: list[dict[str, Any]] = []
        texts: list[str] = []
        for entry in requests:
            inner = pick(entry, "request") or {}
            item: dict[str, Any] = {}
            try:
                request = parse_generate(inner)
                texts.append(request.prompt)
                target = answers.find_target(emu, request, analysis=True)
                answers.record(emu, "batch", model, target, request, inner)
                item["response"] = answers.answer(emu, model, target, request, key)
            except ApiError as exc:
                item["error"] = answers.rpc_status(exc)
            if pick(entry, "metadata") is not None:
                item["metadata"] = pick(entry, "metadata")
            items.append(item)
        display_name = str(pick(batch, "displayName") or "")
        new = Batch(name=f"batches/{uuid.uuid4().hex[:20]}", display_name=display_name, model=model, items=items, text="\n".join(texts))
        with emu.lock:
            emu.batches[new.name] = new
            emu.stats.batches_created[display_name] += 1
        self._send(200, new.operation(emu.config))

    def _find_batch(self, name: str) -> Batch | None:
        batch = self.emu.batches.get(name)
        if batch is None:
            self._error(404, "NOT_FOUND", "Requested entity was not found.")
        return batch

    def _get_batch(self, name: str) -> None:
        if not self._authorized() or self._fault("batch"):
            return
        with self.emu.lock:
            self.emu.stats.batch_polls[name] += 1
        if batch := self._find_batch(name):
            self._send(200, batch.operation(self.emu.config))

    def _list_batches(self) -> None:
        if not self._authorized() or self._fault("batch"):
            return
        with self.emu.lock:
            batches = sorted(self.emu.batches.values(), key=lambda b: b.created, reverse=True)
        page, token = _page(self.path, [b.operation(self.emu.config) for b in batches], 10, 100)
        body: dict[str, Any] = {"operations": page} if page else {}
        if token:
            body["nextPageToken"] = token
        self._send(200, body)

    def _cancel_batch(self, name: str) -> None:
        self._body()
        if not self._authorized() or self._fault("batch"):
            return
        if batch := self._find_batch(name):
            with self.emu.lock:
                if batch.state(self.emu.config) not in ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_EXPIRED"):
                    batch.cancelled_at = batch.cancelled_at or time.time()
            self._send(200, {})

    def _delete_batch(self, name: str) -> None:
        if not self._authorized():
            return
        if self._find_batch(name):
            with self.emu.lock:
                self.emu.batches.pop(name, None)
            self._send(200, {"name": name, "done": True})


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise invalid("Invalid JSON payload received.") from None
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. The request body is not a JSON object.")
    return body


def _page(path: str, items: list[Any], default: int, most: int) -> tuple[list[Any], str | None]:
    """One page of a list call (pageSize, pageToken = offset) and the next page's token."""
    query = parse_qs(urlsplit(path).query)
    try:
        size = max(1, min(most, int((query.get("pageSize") or [str(default)])[0] or default)))
        start = max(0, int((query.get("pageToken") or ["0"])[0] or 0))
    except ValueError:
        size, start = default, 0
    page = items[start : start + size]
    return page, str(start + size) if start + size < len(items) else None


_HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head>"
    b"<body><h1>Sign in to the network</h1><p>This page is not Gemini.</p></body></html>"
)
_TRUNCATED_FILE = b'{"name": "files/abc", "displayName": "video.mp4", "mimeType": "video/mp4", "state": "ACTIVE"}'


def _duration(seconds: float) -> str:
    """Google's Duration JSON: "0s", "12s", "1.5s"."""
    return f"{seconds:g}s"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
