"""The app in a real browser (Debian's chromium via playwright), in demo mode, as an analyst uses it."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = ROOT / "test-output"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_env(tmp_path: Path) -> dict[str, str]:
    """Demo mode: no key. A test may add GEMINI_API_KEY and GOOGLE_GEMINI_BASE_URL before the app starts."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")}
    env["STORYTELLER_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture
def app_server(tmp_path: Path, app_env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    port = _free_port()
    env = app_env
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "streamlit.log").read_text()
            time.sleep(0.3)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.fixture
def app_url(app_server: tuple[str, subprocess.Popen]) -> str:
    return app_server[0]


@pytest.fixture
def page(app_url: str):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
        page = context.new_page()
        page.goto(app_url)
        yield page
        browser.close()


@pytest.mark.timeout(240)
def test_drop_three_videos_and_get_stories_csv_and_copy(page, videos, tmp_path):  # type: ignore[no-untyped-def]
    OUTPUT.mkdir(exist_ok=True)
    page.get_by_text("Demo mode: no API key; stories are emulator output.").wait_for(timeout=60_000)

    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(p) for p in videos[:3]])
    page.get_by_role("button", name="Start batch (3 video(s))").click(timeout=60_000)

    # No clicks from here: the board refreshes by itself until all three are done.
    page.get_by_text("3 / 3").wait_for(timeout=120_000)
    assert page.get_by_text("✔️ Completed").count() == 3
    page.screenshot(path=str(OUTPUT / "finished-board.png"), full_page=True)

    code = page.locator('[data-testid="stCode"]').first
    code.hover()
    page.get_by_role("button", name="Copy to clipboard").first.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("[Demo output from the local Gemini emulator") and "clip-00" in copied

    page.get_by_role("link", name="Results").click()
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download CSV (3 row(s))").click(timeout=60_000)
    saved = tmp_path / "export.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(saved.read_bytes().decode("utf-8-sig").splitlines(keepends=True)))
    assert sorted(r["file_name"] for r in rows) == ["clip-000.mp4", "clip-001.mp4", "clip-002.mp4"]
    assert {r["status"] for r in rows} == {"COMPLETED"}
    page.screenshot(path=str(OUTPUT / "results.png"), full_page=True)


@pytest.fixture
def with_key(app_env: dict[str, str], emulator) -> str:  # type: ignore[no-untyped-def]
    key = "AIzaSy-secret-key-for-hygiene-0042"
    app_env["GEMINI_API_KEY"] = key
    app_env["GOOGLE_GEMINI_BASE_URL"] = emulator.base_url
    return key


@pytest.mark.timeout(240)
def test_the_key_appears_in_no_page_export_file_or_log(with_key, app_server, page, videos, tmp_path):  # type: ignore[no-untyped-def]
    key = with_key
    _url, server = app_server
    page.get_by_text("Drop videos here").wait_for(timeout=60_000)
    assert page.get_by_text("Demo mode").count() == 0
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(p) for p in videos[:2]])
    page.get_by_role("button", name="Start batch (2 video(s))").click(timeout=60_000)
    page.get_by_text("2 / 2").wait_for(timeout=120_000)
    html = [page.content()]
    for name in ("Results", "Queue", "Settings"):
        page.get_by_role("link", name=name).click()
        page.get_by_role("heading", name=name).wait_for(timeout=30_000)
        html.append(page.content())
        if name == "Results":
            with page.expect_download() as download:
                page.get_by_role("button", name="Download CSV (2 row(s))").click()
            download.value.save_as(tmp_path / "export.csv")
    assert "••••••••0042" in html[-1]  # Settings shows the key masked

    listening = {c.laddr.ip for c in psutil.Process(server.pid).net_connections() if c.status == "LISTEN"}
    assert listening and all(ip in ("127.0.0.1", "::1") for ip in listening), listening

    artifacts = [(f"page {i}", h.encode()) for i, h in enumerate(html)]
    artifacts += [(str(p), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()]  # data dir, CSV, server log
    assert len(artifacts) > 10
    leaks = [name for name, content in artifacts if key.encode() in content]
    assert leaks == []
