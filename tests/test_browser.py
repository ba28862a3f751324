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
def app_url(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")}
    env["STORYTELLER_DATA_DIR"] = str(tmp_path / "data")
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
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


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
