"""Starting the app the README's way: ./scripts/app.sh with no terminal, the access token, the engine started with the server."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storyteller_core.intake.samples import make_video
from storyteller_ui.access import HOW_TO_GET_IN

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-output"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KEY = "test-key-0123456789"
START_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No key, no desktop, no token, a HOME with no ~/.streamlit in it: a fresh machine's first run."""
    drop = {
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "STORYTELLER_TOKEN",
        "STORYTELLER_PORT",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("STREAMLIT_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env |= {"HOME": str(home), "STORYTELLER_DATA_DIR": str(tmp_path / "data")} | extra
    return env


class Server:
    """A server process started with no terminal; stdout collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, log_dir: Path) -> None:
        self.port = port
        self.base = f"http://localhost:{port}"
        self.stderr_path = log_dir / f"stderr-{port}.log"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr_path.open("w"),
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    def wait_served(self, timeout: float = START_S) -> str:
        """The link printed at start, once the page is served."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(rf"http://localhost:{self.port}/\S*", self.stdout)
            if found and _get(self.base + "/_stcore/health")[0] == 200:
                return found.group(0)
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.stdout}\n{self.stderr_path.read_text()}"
            assert time.monotonic() < deadline, f"not served in {timeout} s:\n{self.stdout}\n{self.stderr_path.read_text()}"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@contextmanager
def serving(args: list[str], env: dict[str, str], port: int, log_dir: Path) -> Iterator[Server]:
    server = Server(args, env, port, log_dir)
    try:
        yield server
    finally:
        server.stop()


def app_sh(*args: str) -> list[str]:
    return [str(ROOT / "scripts" / "app.sh"), *args]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One request, redirects not followed."""
    parts = urllib.request.urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode(errors="replace")
    except OSError:
        return 0, {}, ""
    finally:
        conn.close()


def websocket_status(port: int, cookie: str | None = None) -> int:
    """The status line of a raw websocket handshake on /_stcore/stream (101 when let through)."""
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        + (f"Cookie: {cookie}\r\n" if cookie else "")
        + "\r\n"
    )
    with socket.create_connection(("localhost", port), timeout=5) as sock:
        sock.sendall(request.encode())
        first = sock.makefile("rb").readline().decode()
    return int(first.split()[1])


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield chromium
        chromium.close()


def shows_batch_page(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stSidebarNav").get_by_text("Batch")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("heading", level=1, name=re.compile("batch", re.I))).to_be_visible(timeout=30_000)
    page.locator('[data-test-script-state="notRunning"]').wait_for(timeout=30_000)  # the run is over: a settled screenshot


def background_is_dark(page) -> bool:  # type: ignore[no-untyped-def]
    rgb = page.get_by_test_id("stApp").evaluate("e => getComputedStyle(e).backgroundColor")
    red, green, blue = (int(n) for n in re.findall(r"\d+", rgb)[:3])
    return (0.299 * red + 0.587 * green + 0.114 * blue) / 255 < 0.5


# -- app.sh, the token, the chrome ------------------------------------------------------------
@pytest.mark.timeout(180)
@pytest.mark.slow
def test_app_sh_serves_with_no_terminal_and_only_the_printed_link_gets_in(tmp_path, browser):
    port = free_port()
    with serving(app_sh("--server.port", str(port)), clean_env(tmp_path), port, tmp_path) as server:
        link = server.wait_served()
        token = re.fullmatch(rf"http://localhost:{port}/\?token=([\w-]+)", link).group(1)  # type: ignore[union-attr]

        status, _, body = _get(server.base + "/")
        assert status == 401 and HOW_TO_GET_IN in body and "<script" not in body
        assert _get(server.base + "/_stcore/host-config")[0] == 401
        assert _get(server.base + "/?token=not-the-token")[0] == 401
        assert websocket_status(port) in (401, 403)
        assert websocket_status(port, cookie=f"storyteller_access_{port}=guess") in (401, 403)

        locked = browser.new_page()
        locked.goto(server.base)
        assert HOW_TO_GET_IN in locked.inner_text("body")
        assert locked.get_by_test_id("stApp").count() == 0
        locked.screenshot(path=SHOTS / "launch-locked.png")

        context = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="light")
        page = context.new_page()
        page.goto(link)
        shows_batch_page(page)
        assert "token" not in page.url  # dropped from the address bar
        [cookie] = [c for c in context.cookies() if c["name"] == f"storyteller_access_{port}"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]
        assert page.get_by_role("button", name="Deploy").count() == 0
        assert page.get_by_test_id("stAppDeployButton").count() == 0
        assert page.get_by_test_id("stMainMenu").count() == 0
        assert page.get_by_test_id("stToast").count() == 0  # no "install skills" nudge or other pop-up
        assert not background_is_dark(page)
        page.screenshot(path=SHOTS / "launch-batch-light.png")

        dark = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="dark").new_page()
        dark.goto(link)
        shows_batch_page(dark)
        assert background_is_dark(dark)  # follows the system theme
        dark.screenshot(path=SHOTS / "launch-batch-dark.png")

    assert server.stdout.count(token) == 1  # printed once, in the link
    logs = server.stderr_path.read_text() + "".join(p.read_text() for p in (tmp_path / "data").rglob("*.jsonl"))
    assert "engine started" in logs and "engine stopped" in logs  # with the server, not with a page
    assert token not in logs


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_token_none_opt_out_and_port_from_the_environment(tmp_path, browser):
    port = free_port()
    env = clean_env(tmp_path, STORYTELLER_TOKEN="none", STORYTELLER_PORT=str(port))
    with serving(app_sh(), env, port, tmp_path) as server:
        link = server.wait_served()
        assert link == f"http://localhost:{port}/"
        assert "STORYTELLER_TOKEN=none" in server.stdout
        page = browser.new_page()
        page.goto(server.base)
        shows_batch_page(page)
        page.screenshot(path=SHOTS / "launch-token-none.png")


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_plain_streamlit_run_prints_and_opens_its_link_and_takes_the_token_from_the_environment(tmp_path):
    """The Windows/macOS way, on a desktop: a stand-in xdg-open records what it is asked to open (a 0600 link file)."""
    port, token = free_port(), "a-token-chosen-by-the-user"
    bin_dir, opened = tmp_path / "bin", tmp_path / "opened.txt"
    bin_dir.mkdir()
    (bin_dir / "xdg-open").write_text(f'#!/bin/sh\necho "$1" >> "{opened}"\n')
    (bin_dir / "xdg-open").chmod(0o755)
    env = clean_env(tmp_path, STORYTELLER_TOKEN=token, DISPLAY=":0")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    args = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    with serving(args, env, port, tmp_path) as server:
        link = server.wait_served()
        assert link == f"http://localhost:{port}/?token={token}"
        deadline = time.monotonic() + 10
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        [opened_arg] = opened.read_text().split()
        assert token not in opened_arg  # xdg-open's arguments are on the process list for every user to read
        link_file = Path(urllib.request.url2pathname(urllib.parse.urlsplit(opened_arg).path))
        assert opened_arg.startswith("file://") and link_file.stat().st_mode & 0o777 == 0o600
        assert link in link_file.read_text()  # a page that redirects to the link, as Jupyter does
        status, headers, _ = _get(f"{server.base}/results?token={token}&keep=1")
        assert status == 303 and headers["location"] == "/results?keep=1"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and token not in cookie
        pair = cookie.split(";")[0]
        status, _, body = _get(server.base + "/", {"Cookie": pair})
        assert status == 200 and HOW_TO_GET_IN not in body
        assert websocket_status(port, cookie=pair) == 101


def test_app_sh_installs_packages_only_when_requirements_change(tmp_path):
    """A stand-in .venv/bin/python records what app.sh asks of it: pip once per requirements.txt."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "app.sh", tmp_path / "scripts" / "app.sh")
    (tmp_path / "requirements.txt").write_text("streamlit>=1.67\n")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/calls.log"\n[ "$1" = "-c" ] && exec {sys.executable} "$@"\nexit 0\n')
    fake.chmod(0o755)

    def run() -> list[str]:
        (tmp_path / "calls.log").unlink(missing_ok=True)
        done = subprocess.run(
            [tmp_path / "scripts" / "app.sh", "--server.port", "8600"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return [line for line in (tmp_path / "calls.log").read_text().splitlines() if not line.startswith("-c")]

    assert run() == ["-m pip install -q --disable-pip-version-check -r requirements.txt", "-m streamlit run app.py --server.port 8600"]
    assert run() == ["-m streamlit run app.py --server.port 8600"]
    assert (tmp_path / ".venv" / ".requirements.sha256").read_text().strip() == hashlib.sha256(b"streamlit>=1.67\n").hexdigest()
    (tmp_path / "requirements.txt").write_text("streamlit>=1.68\n")
    assert run()[0].startswith("-m pip install")


def test_one_engine_per_data_dir_and_clear_cache_keeps_it(tmp_path, monkeypatch):
    import streamlit as st

    from storyteller_ui.app_engine import start_engine, stop_engines

    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(tmp_path / "data"))
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    try:
        engine = start_engine()
        st.cache_resource.clear()
        assert start_engine() is engine
    finally:
        stop_engines()
    assert start_engine() is not engine  # stopped at server stop, built again on the next start
    stop_engines()


def test_an_unusable_data_dir_is_a_clear_message_not_a_traceback(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(not_a_folder / "data"))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "ui.py"), default_timeout=30).run()
    assert not at.exception
    [error] = at.error
    assert "cannot create its data folder" in error.value and "STORYTELLER_DATA_DIR" in error.value
    assert not at.title  # st.stop(): no page under the message


# -- the engine starts with the server ---------------------------------------------------------
def cli_status(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "storyteller_core", "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# LEAD: adapt with the store API. Job states are read from the CLI's output (`process` prints a line per state change,
# `status` a line per job), never from the store; these two patterns accept the old state names and the new labels.
PROCESSING = re.compile(r"FILE_PROCESSING|Gemini is processing")
DONE = re.compile(r"\bCOMPLETED\b|\bDone\b")


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_an_interrupted_job_resumes_when_the_server_starts_with_no_browser(tmp_path, emulator):
    emulator.config.processing_delay_s = 4.0
    video = make_video(tmp_path / "videos" / "interrupted.mp4", seconds=1.0)
    env = clean_env(tmp_path, GEMINI_API_KEY=KEY, GOOGLE_GEMINI_BASE_URL=emulator.base_url)
    cli = subprocess.Popen(
        [sys.executable, "-m", "storyteller_core", "process", str(video)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(cli.stdout or []), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any(PROCESSING.search(line) for line in seen):
            assert cli.poll() is None and time.monotonic() < deadline, "".join(seen)
            time.sleep(0.1)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(10)
    before = cli_status(env)
    assert PROCESSING.search(before) and not DONE.search(before), before

    port = free_port()
    with serving(app_sh("--server.port", str(port)), env, port, tmp_path) as server:
        server.wait_served()
        deadline = time.monotonic() + 90
        while not DONE.search(status := cli_status(env)):
            assert server.proc.poll() is None and time.monotonic() < deadline, status + server.stderr_path.read_text()
            time.sleep(1)
    assert emulator.uploads_of(video.name) == 1  # resumed, not uploaded again
