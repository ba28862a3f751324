"""Trust, second pass (issue 17, items 2, 3, 4 and the open redirect): the browser's neighbours on localhost.

A real server started the README's way (./scripts/app.sh), spoken to over raw HTTP so each header is the one a
neighbour's page, a rebound web site or another user would send.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys

import pytest

from storyteller_ui.access import WRONG_HOST, WRONG_ORIGIN, own_path

from .test_launch import ROOT, app_sh, browser, clean_env, free_port, serving, shows_batch_page

__all__ = ["browser"]  # the fixture, used by name


def request(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """One request with exactly these headers (Host included), redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Host": f"localhost:{port}", **headers})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode(errors="replace")
    finally:
        conn.close()


def websocket(port: int, headers: dict[str, str]) -> int:
    """The status of a websocket handshake on /_stcore/stream (101: let through)."""
    lines = [
        "GET /_stcore/stream HTTP/1.1",
        f"Host: localhost:{port}",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.makefile("rb").readline().decode().split()[1])


def enter(port: int, token: str) -> str:
    """Present the token once; the session cookie (name=value) it set."""
    status, headers, _ = request(port, "GET", f"/?token={token}", {})
    assert status == 303, status
    return headers["set-cookie"].split(";")[0]


def test_a_path_of_our_own_is_what_the_token_redirect_goes_to():
    assert own_path("//evil.example/") == "/evil.example/"
    assert own_path("/\\evil.example/") == "/evil.example/"
    assert own_path("/results") == "/results"


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_neighbours_on_other_ports_and_other_names_get_nothing(tmp_path, browser):
    port = free_port()
    with serving(app_sh("--server.port", str(port)), clean_env(tmp_path), port, tmp_path) as server:
        link = server.wait_served()
        token = re.fullmatch(rf"http://localhost:{port}/\?token=([\w-]+)", link).group(1)  # type: ignore[union-attr]

        # the open redirect: only to our own paths
        status, headers, _ = request(port, "GET", f"//evil.example/?token={token}", {})
        assert status == 303 and headers["location"] == "/evil.example/"

        # a random session per browser, not a function of the token; revocable
        first, second = enter(port, token), enter(port, token)
        assert first != second and token not in first
        assert request(port, "GET", "/", {"Cookie": first})[0] == 200
        assert request(port, "GET", "/_stcore/host-config", {"Cookie": second})[0] == 200

        # another port's page, with the cookie the browser sends it anyway (localhost cookies ignore ports)
        other = f"http://localhost:{port + 1 if port < 65535 else port - 1}"
        status, _, body = request(port, "GET", "/_stcore/host-config", {"Cookie": first, "Origin": other})
        assert status == 403 and WRONG_ORIGIN in body
        assert request(port, "POST", "/upload/start", {"Cookie": first, "Origin": other, "Content-Length": "0"})[0] == 403
        assert websocket(port, {"Cookie": first, "Origin": other}) != 101
        assert websocket(port, {"Cookie": first, "Origin": "null"}) != 101
        assert websocket(port, {"Cookie": first, "Origin": f"http://localhost:{port}"}) == 101
        assert websocket(port, {"Cookie": first}) == 101

        # a name rebound to 127.0.0.1 (DNS rebinding): refused even with the session
        status, _, body = request(port, "GET", "/", {"Cookie": first, "Host": f"evil.example:{port}"})
        assert status == 400 and WRONG_HOST in body
        assert request(port, "GET", "/", {"Cookie": first, "Host": f"localhost:{port + 1}"})[0] == 400

        # sign-out revokes this browser's session, not the other's
        assert request(port, "GET", "/_storyteller/sign-out", {"Cookie": first})[0] == 200
        assert request(port, "GET", "/", {"Cookie": first})[0] == 401
        assert request(port, "GET", "/", {"Cookie": second})[0] == 200

        # the browser is opened on a 0600 page that redirects to the link: it gets in
        link_file = tmp_path / "data" / f"open-{port}.html"
        assert link_file.stat().st_mode & 0o777 == 0o600 and token in link_file.read_text()
        page = browser.new_context().new_page()
        page.goto(link_file.as_uri())
        shows_batch_page(page)
        assert page.url.startswith(f"http://localhost:{port}/") and "token" not in page.url
    assert not link_file.exists()  # removed at stop


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_token_none_still_answers_only_to_this_machines_names(tmp_path):
    port = free_port()
    env = clean_env(tmp_path, STORYTELLER_TOKEN="none", STORYTELLER_ALLOWED_HOSTS="storyteller.lan")
    with serving(app_sh("--server.port", str(port)), env, port, tmp_path) as server:
        server.wait_served()
        rebound = {"Host": f"evil.example:{port}"}
        assert request(port, "GET", "/", rebound)[0] == 400
        assert request(port, "POST", "/upload/start", {**rebound, "Content-Length": "0"})[0] == 400
        assert websocket(port, rebound) != 101
        for host in ("localhost", "127.0.0.1", "[::1]", "storyteller.lan"):
            assert request(port, "GET", "/", {"Host": f"{host}:{port}"})[0] == 200, host
        assert websocket(port, {"Origin": f"http://localhost:{port}"}) == 101


def test_under_systemd_the_token_goes_to_the_link_file_not_the_journal(tmp_path):
    """JOURNAL_STREAM names the journal's socket; a file stands in for it (same device:inode test)."""
    out = tmp_path / "journal.txt"
    out.touch()
    st = os.stat(out)
    script = (
        "from pathlib import Path; from storyteller_ui.access import announce; "
        "announce('http://localhost:8615/?token=SECRET', 'SECRET', Path('/home/me/.video-storyteller/open-8615.html'))"
    )
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "PYTHONPATH": str(ROOT)}
    with out.open("w") as sink:
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=sink, check=True, timeout=60)
    printed = out.read_text()
    assert "SECRET" not in printed and "http://localhost:8615/" in printed and "open-8615.html" in printed
    with (tmp_path / "terminal.txt").open("w") as sink:  # not the journal: the link as before
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**env, "JOURNAL_STREAM": "1:2"}, stdout=sink, check=True, timeout=60)
    assert "http://localhost:8615/?token=SECRET" in (tmp_path / "terminal.txt").read_text()
