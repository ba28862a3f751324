"""Fixtures: real small videos (PyAV), a live emulator on loopback, engines against it."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storyteller_core import Engine, Settings
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.intake.samples import make_batch, make_video

from .helpers import TEST_KEY


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    make_batch(folder, 12)
    return folder


@pytest.fixture
def videos(video_dir: Path, tmp_path: Path) -> list[Path]:
    """Fresh copies per test, so tests never share paths."""
    out = tmp_path / "in"
    shutil.copytree(video_dir, out)
    return sorted(out.glob("*.mp4"))


@pytest.fixture
def one_video(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str, seed: int = 99, seconds: float = 1.0) -> Path:
        return make_video(tmp_path / "named" / name, seconds=seconds, seed=seed)

    return make


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(processing_delay_s=0.3, analysis_delay_s=0.05)) as emu:
        yield emu


def fast_settings(data_dir: Path, emu: Emulator, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        data_dir=data_dir,
        api_key=TEST_KEY,
        base_url=emu.base_url,
        poll_initial_s=0.1,
        poll_max_s=0.5,
        upload_budget_s=20,
        processing_budget_s=20,
        analysis_budget_s=5,
        request_timeout_s=5,
        lease_ttl_s=5,
        polls_per_second=50,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_engine(tmp_path: Path, emulator: Emulator) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make(*, start: bool = True, **overrides: object) -> Engine:
        """An engine against the emulator; with start=False, work can be queued before any worker runs."""
        settings = fast_settings(overrides.pop("data_dir", tmp_path / "data"), emulator, **overrides)
        engine = Engine(settings, stderr_log_level=logging.CRITICAL + 1)
        engines.append(engine)
        return engine.start() if start else engine

    yield make
    for engine in engines:
        engine.shutdown(timeout=5)


# -- the app in a real browser ---------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_env(tmp_path: Path) -> dict[str, str]:
    """Demo mode: no key. A test may add GEMINI_API_KEY and GOOGLE_GEMINI_BASE_URL before the app starts."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")}
    env["STORYTELLER_DATA_DIR"] = str(tmp_path / "data")
    env["STORYTELLER_TOKEN"] = "none"  # the access token has tests of its own (test_launch.py)
    return env


@pytest.fixture
def app_server(tmp_path: Path, app_env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    port = _free_port()
    env = app_env
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
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
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
        page = context.new_page()
        page.goto(app_url)
        yield page
        browser.close()
