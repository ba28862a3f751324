"""Who may open the UI: a per-start access token, the way Jupyter does it, and only from this server's own address.

The server prints a link with the token; the first request that presents it
gets an HttpOnly, SameSite=Strict cookie holding a random session id (kept in
this process, expiring, revocable at /_storyteller/sign-out) and is redirected
to the same path without the token. Every other request (pages, the websocket,
uploads, media, custom routes) needs that session. STORYTELLER_TOKEN sets the
token; STORYTELLER_TOKEN=none turns the token off (single-user machines).

The job API under ``/api/v1`` (storyteller_ui.api) is for programs, not browsers: it takes no cookie and no
``?token=``, only ``Authorization: Bearer <token>``, and answers 401 JSON without it. A page elsewhere cannot
add that header to a request without a CORS preflight, which nothing here answers (CORS is off). ``/health``
is open: it says whether the engine and Gemini answer, and nothing else.

In every mode, the Host header must name this machine (localhost, 127.0.0.1,
[::1], or a name in STORYTELLER_ALLOWED_HOSTS) and any Origin header must be
this server's own scheme, host and port: browsers send localhost cookies to
every port, so a page on another port, or a web site whose name was rebound to
127.0.0.1, must get nothing from us.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import html
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "STORYTELLER_TOKEN"
TOKEN_OFF = "none"
QUERY_KEY = "token"
OPEN_PATHS = ("/_stcore/health",)  # says "ok" and nothing else: launchers and tests wait on it
API_PREFIX = "/api/v1"  # programs: Bearer token only (storyteller_ui.api)
API_PRINCIPAL = "storyteller.principal"  # scope["state"][...]: "app" (this token) or the id of an API token
HEALTH_PATH = "/health"  # open: whether the engine and Gemini answer
NEEDS_BEARER = (
    'This API needs the app\'s access token: send the header "Authorization: Bearer <token>" (the token is in '
    "the link printed where Video Storyteller was started, or set STORYTELLER_TOKEN)."
)
HOW_TO_GET_IN = "Open the link printed in the terminal where you started Video Storyteller, or set STORYTELLER_TOKEN."
HOSTS_ENV = "STORYTELLER_ALLOWED_HOSTS"  # more names this server answers to, comma-separated (a LAN name, a proxy)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SESSION_HOURS_ENV = "STORYTELLER_SESSION_HOURS"
SESSION_HOURS = 24.0  # a browser session lasts this long unused, and never longer than the server runs
MAX_SESSIONS = 200  # the oldest session is dropped past this (only a token holder makes them)
SIGN_OUT_PATH = "/_storyteller/sign-out"
WRONG_HOST = (
    f"This address is not one Video Storyteller answers to. Open it as http://localhost:<port>/, or add the "
    f"name you use to {HOSTS_ENV} (comma-separated) and restart."
)
WRONG_ORIGIN = "Refused: this request came from another web page or another port, not from Video Storyteller itself."


@functools.cache
def access_token() -> str | None:
    """The token for this server process (None: the check is off)."""
    raw = os.environ.get(TOKEN_ENV, "").strip()
    if raw.lower() == TOKEN_OFF:
        return None
    return raw or secrets.token_urlsafe(24)


def cookie_name(scope: Scope) -> str:
    """One cookie per port: browsers share localhost cookies across ports, and each server has its own token."""
    server = scope.get("server") or ("", 0)
    return f"storyteller_access_{server[1]}"


def allowed_hosts() -> frozenset[str]:
    """Host names accepted in Host and Origin: loopback, the configured server address, STORYTELLER_ALLOWED_HOSTS."""
    names = set(LOCAL_HOSTS)
    names |= {n.strip().lower().strip("[]") for n in os.environ.get(HOSTS_ENV, "").split(",") if n.strip()}
    with contextlib.suppress(Exception):  # outside a Streamlit server (tests of the gate alone): loopback only
        from streamlit import config

        for option in ("browser.serverAddress", "server.address"):
            value = config.get_option(option)
            if value and config.is_manually_set(option) and value not in ("0.0.0.0", "::"):
                names.add(str(value).lower().strip("[]"))
    return frozenset(names)


def _host_port(authority: str, default_port: int) -> tuple[str, int] | None:
    """``host[:port]`` (IPv6 in brackets) split, or None when it is not an authority at all."""
    try:
        parts = urlsplit(f"//{authority}")
        return (parts.hostname or "").lower(), parts.port or default_port
    except ValueError:
        return None


def own_address(scope: Scope, hosts: frozenset[str]) -> str | None:
    """Why this request is not addressed to this server (Host, then Origin), or None when it is."""
    port = (scope.get("server") or ("", 0))[1]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    secure = scope.get("scheme") in ("https", "wss")
    host = _host_port(headers.get("host", ""), 443 if secure else 80)
    if host is None or host[0] not in hosts or (port and host[1] != port):
        return WRONG_HOST
    origin = headers.get("origin")
    if origin is None:
        return None  # a typed address, a link, a form of our own served without one: Host said it is us
    parts = urlsplit(origin)
    wanted = ("https", "wss") if secure else ("http", "ws")
    seen = _host_port(parts.netloc, 443 if parts.scheme == "https" else 80) if parts.scheme in wanted else None
    if seen is None or seen != host:
        return WRONG_ORIGIN
    return None


def session_hours() -> float:
    with contextlib.suppress(ValueError):
        return max(0.01, float(os.environ.get(SESSION_HOURS_ENV, "") or SESSION_HOURS))
    return SESSION_HOURS


class Sessions:
    """Random per-browser session ids, kept only in this server process: a restart, or sign-out, revokes them."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def new(self) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._until) >= MAX_SESSIONS:
                self._until.pop(min(self._until, key=self._until.__getitem__))
            self._until[sid] = time.monotonic() + self.lifetime_s
        return sid

    def valid(self, sid: str) -> bool:
        """A live session (its life starts again on each use); an expired one is forgotten."""
        now = time.monotonic()
        with self._lock:
            known = next((k for k in self._until if _same(sid, k)), None) if sid else None
            if known is None:
                return False
            if self._until[known] < now:
                del self._until[known]
                return False
            self._until[known] = now + self.lifetime_s
            return True

    def revoke(self, sid: str) -> None:
        with self._lock:
            for key in [k for k in self._until if _same(sid, k)]:
                del self._until[key]

    def revoke_all(self) -> None:
        with self._lock:
            self._until.clear()


def base_path() -> str:
    """server.baseUrlPath as a path prefix ("" or "/base"); "" outside a Streamlit server."""
    with contextlib.suppress(Exception):
        from streamlit import config

        base = (config.get_option("server.baseUrlPath") or "").strip("/")
        return f"/{base}" if base else ""
    return ""


def bearer(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    for key, value in scope.get("headers", []):
        if key.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
    return None


def own_path(path: str) -> str:
    """A path of this server: ``//evil.example/`` or ``/\\evil`` would be another site's address to a browser."""
    return "/" + path.lstrip("/\\")


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode(), expected.encode())


class TokenGate:
    """ASGI middleware in front of everything Streamlit serves, websocket included."""

    def __init__(
        self, app: ASGIApp, token: str | None, hosts: frozenset[str] | None = None, api_tokens: Callable[[str], str | None] | None = None
    ) -> None:
        """``api_tokens(offered)``: the id of the API token ``offered`` is (storyteller_ui.api.tokens), or None."""
        self.app = app
        self.token = token
        self.api_tokens = api_tokens
        self.hosts = hosts
        self.sessions = Sessions(session_hours() * 3600)
        self.base: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.hosts is None:
            self.hosts = allowed_hosts()  # read once the server's options are loaded
        wrong = own_address(scope, self.hosts)
        if wrong is not None:
            await _refuse(scope, receive, send, PlainTextResponse(wrong, status_code=403 if wrong == WRONG_ORIGIN else 400))
            return
        if self.base is None:
            self.base = base_path()
        token = self.token
        path = scope["path"]
        # Exact paths only: "/api/v1/x/_stcore/health" ends like an open path but is an API route.
        if token is None or path in (self.base + p for p in OPEN_PATHS) or path == self.base + HEALTH_PATH:
            await self.app(scope, receive, send)
            return
        if path == self.base + API_PREFIX or path.startswith(self.base + API_PREFIX + "/"):
            offered_bearer = bearer(scope)
            principal = None
            if offered_bearer is not None:
                principal = (
                    "app" if _same(offered_bearer, token) else (self.api_tokens(offered_bearer) if self.api_tokens is not None else None)
                )
            if principal is not None:
                scope.setdefault("state", {})[API_PRINCIPAL] = principal
                await self.app(scope, receive, send)
            else:
                await _refuse(scope, receive, send, _api_locked())
            return
        conn = HTTPConnection(scope)
        offered = conn.query_params.get(QUERY_KEY)
        sid = conn.cookies.get(cookie_name(scope), "")
        if scope["type"] == "http" and scope["path"] == SIGN_OUT_PATH:
            self.sessions.revoke(sid)
            await _signed_out(scope)(scope, receive, send)
        elif scope["type"] == "http" and offered is not None:
            response = self._enter(conn, scope) if _same(offered, token) else _locked()
            await response(scope, receive, send)
        elif self.sessions.valid(sid):
            await self.app(scope, receive, send)
        else:
            await _refuse(scope, receive, send, _locked())

    def _enter(self, conn: HTTPConnection, scope: Scope) -> RedirectResponse | HTMLResponse:
        """Start a session for this browser and drop the token from the address bar (to a path of ours only).

        Arriving from another site (the 0600 link file is a file:// page), a redirect would keep the navigation
        cross-site and the browser would not send the SameSite=Strict cookie on it: a page of ours moves on instead.
        """
        rest = conn.url.remove_query_params(QUERY_KEY)
        target = own_path(rest.path) + (f"?{rest.query}" if rest.query else "")
        response: RedirectResponse | HTMLResponse
        if conn.headers.get("sec-fetch-site") == "cross-site":
            quoted = html.escape(target, quote=True)
            response = HTMLResponse(
                f'<!doctype html><meta http-equiv="refresh" content="0;url={quoted}">'
                f'<title>Video Storyteller</title><a href="{quoted}">Open Video Storyteller</a>'
            )
        else:
            response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            cookie_name(scope), self.sessions.new(), max_age=int(self.sessions.lifetime_s), httponly=True, samesite="strict", path="/"
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


async def _refuse(scope: Scope, receive: Receive, send: Send, response: HTMLResponse | PlainTextResponse | JSONResponse) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect; a close before accept is answered with HTTP 403
        await send({"type": "websocket.close", "code": 1008})
    else:
        await response(scope, receive, send)


def _api_locked() -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "unauthorized", "message": NEEDS_BEARER}},
        status_code=401,
        headers={"Cache-Control": "no-store", "WWW-Authenticate": 'Bearer realm="video-storyteller"'},
    )


def _signed_out(scope: Scope) -> HTMLResponse:
    response = HTMLResponse(
        "<!doctype html><title>Video Storyteller</title><p>Signed out of Video Storyteller in this "
        "browser. Open the printed link again to come back.</p>",
        headers={"Cache-Control": "no-store"},
    )
    response.delete_cookie(cookie_name(scope), path="/", httponly=True, samesite="strict")
    return response


def _locked() -> HTMLResponse:
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="color-scheme" content="light dark">
<title>Video Storyteller</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1.5rem;line-height:1.5}}
code{{font-size:.95em}}</style></head>
<body><h1>Video Storyteller</h1><p>{html.escape(HOW_TO_GET_IN)}</p>
<p>The link looks like <code>http://localhost:8501/?token=…</code>.</p></body></html>"""
    return HTMLResponse(page, status_code=401, headers={"Cache-Control": "no-store"})


# -- the link printed at start, and the browser opened on a desktop ----------------------
def server_port() -> int:
    from streamlit import config

    return int(config.get_option("server.port"))


def app_url(token: str | None) -> str:
    from streamlit import config

    host = "localhost"
    if config.is_manually_set("browser.serverAddress"):
        host = config.get_option("browser.serverAddress")
    elif config.get_option("server.address") not in (None, "", "0.0.0.0", "::"):
        host = config.get_option("server.address")
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    url = f"http://{host}:{config.get_option('server.port')}/" + (f"{base}/" if base else "")
    return url + (f"?{QUERY_KEY}={token}" if token else "")


def write_link_file(url: str, folder: Path, port: int) -> Path | None:
    """A page readable only by this user that sends the browser on to the link (Jupyter's way).

    The browser is opened on this file, so the token never sits on a command line (``ps`` shows every
    user the arguments of xdg-open and of the browser it starts). None when it cannot be written.
    """
    target = folder / f"open-{port}.html"
    quoted = html.escape(url, quote=True)
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={quoted}">'
        f'<title>Video Storyteller</title></head><body><p><a href="{quoted}">Open Video Storyteller</a></p>'
        f"<script>location.replace({_js_string(url)})</script></body></html>"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(prefix=".open-", suffix=".html", dir=folder)  # 0600, created here
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(page)
        os.replace(temp, target)
    except OSError:
        return None
    return target


def _js_string(text: str) -> str:
    return "'" + "".join(c if c.isalnum() or c in ":/?=&._-~%" else f"\\u{ord(c):04x}" for c in text) + "'"


def stdout_is_journal() -> bool:
    """stdout goes to systemd's journal (JOURNAL_STREAM names it), which other users of the machine may read."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return bool(stream) and stream == f"{st.st_dev}:{st.st_ino}"


def announce(url: str, token: str | None, link_file: Path | None = None) -> None:
    """Where the token is written: this process's stdout (the terminal that started the app), never a journal.

    Under systemd the link is printed without its token and the person is sent to the 0600 link file.
    """
    lines = ["", "  Video Storyteller is running. Open this link in your browser:", f"  {url}", ""]
    if token is None:
        lines.insert(3, "  (STORYTELLER_TOKEN=none: no access token; anyone on this machine can open the app.)")
    elif stdout_is_journal():
        lines[2] = f"  {url.split('?', 1)[0]}"
        where = f"open {link_file} (readable only by you)" if link_file else "set STORYTELLER_TOKEN to a token of your own"
        lines.insert(3, f"  (Its access token is not written to the journal: {where} in your browser.)")
    else:
        lines.insert(3, "  (The link holds this run's access token; keep it to yourself.)")
    print("\n".join(lines), flush=True)


def has_desktop() -> bool:
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # macOS and Windows sessions have one


def headless_asked() -> bool:
    """`--server.headless true` (or STREAMLIT_SERVER_HEADLESS) given on start: Streamlit's own "no browser"."""
    from streamlit import config

    return bool(config.get_option("server.headless")) and config.get_where_defined("server.headless") == getattr(
        config, "_DEFINED_BY_FLAG", "command-line argument or environment variable"
    )


def open_browser(url: str) -> None:
    """Open ``url`` (the link file's file:// address, never the token) in the desktop's browser; never fails the start.

    Streamlit's opener: xdg-open / open with the browser's chatter sent to /dev/null, the webbrowser module on
    Windows (plain webbrowser on Linux can fall back to a console browser that takes over the terminal).
    """
    if headless_asked() or not has_desktop():
        return

    def run() -> None:
        from streamlit import cli_util

        with contextlib.suppress(Exception):  # no browser, a broken one: the printed link is enough
            cli_util.open_browser(url)

    threading.Thread(target=run, name="storyteller-open-browser", daemon=True).start()
