"""Who may open the UI: a per-start access token, the way Jupyter does it.

The server prints a link with the token; the first request that presents it
gets an HttpOnly, SameSite=Strict cookie and is redirected to the same address
without the token. Every other request (pages, the websocket, uploads, media,
custom routes) needs that cookie. STORYTELLER_TOKEN sets the token;
STORYTELLER_TOKEN=none turns the check off (single-user machines).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import html
import os
import secrets
import sys
import threading

from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "STORYTELLER_TOKEN"
TOKEN_OFF = "none"
QUERY_KEY = "token"
OPEN_PATHS = ("/_stcore/health",)  # says "ok" and nothing else: launchers and tests wait on it
HOW_TO_GET_IN = (
    "Open the link printed in the terminal where you started Video Storyteller, or set STORYTELLER_TOKEN."
)


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


def _cookie_value(token: str) -> str:
    return hashlib.sha256(b"video-storyteller-cookie:" + token.encode()).hexdigest()


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode(), expected.encode())


class TokenGate:
    """ASGI middleware in front of everything Streamlit serves, websocket included."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.token
        if token is None or scope["type"] not in ("http", "websocket") or scope["path"].endswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        offered = conn.query_params.get(QUERY_KEY)
        if scope["type"] == "http" and offered is not None:
            response = self._enter(conn, scope) if _same(offered, token) else _locked()
            await response(scope, receive, send)
        elif _same(conn.cookies.get(cookie_name(scope), ""), _cookie_value(token)):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect; a close before accept is answered with HTTP 403
            await send({"type": "websocket.close", "code": 1008})
        else:
            await _locked()(scope, receive, send)

    def _enter(self, conn: HTTPConnection, scope: Scope) -> RedirectResponse:
        """Remember the token in a cookie and drop it from the address bar."""
        rest = conn.url.remove_query_params(QUERY_KEY)
        response = RedirectResponse(rest.path + (f"?{rest.query}" if rest.query else ""), status_code=303)
        response.set_cookie(cookie_name(scope), _cookie_value(self.token or ""), httponly=True, samesite="strict", path="/")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
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


def announce(url: str, token: str | None) -> None:
    """The one place the token is written: this process's stdout, i.e. the terminal that started the app."""
    lines = ["", "  Video Storyteller is running. Open this link in your browser:", f"  {url}", ""]
    if token is None:
        lines.insert(3, "  (STORYTELLER_TOKEN=none: no access token; anyone on this machine can open the app.)")
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
        config, "_DEFINED_BY_FLAG", "command-line argument or environment variable")


def open_browser(url: str) -> None:
    """Open the link in the desktop's browser, in the background; never fails the start.

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
