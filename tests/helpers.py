"""Helpers the tests share: running the CLI, waiting for rows, reading the CSV."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from storyteller_core.commands import Ask
from storyteller_core.records.analysis import Analysis, AnalysisState, analysis_key
from storyteller_core.records.batch import Item
from storyteller_core.records.video import Video, VideoState
from storyteller_core.storage.disk_store import DiskStore, Store
from storyteller_core.views.board import Row, Status

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "test-key-0123456789"


def ask(engine: Any, prompt: str = "Tell the story", **kw: Any) -> Ask:
    return Ask(prompt=prompt, model=kw.pop("model", None) or engine.settings.model, **kw)


def run_all(engine: Any, paths: list[Path], prompt: str = "Tell the story", timeout: float = 60, **kw: Any) -> list[Row]:
    """Submit local paths with one question and wait until every row has ended."""
    resume = kw.pop("resume", False)
    items = engine.commands.submit_paths(paths, ask(engine, prompt, **kw), resume=resume)
    return engine.wait([i.id for i in items], timeout=timeout)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before the {what}")
        assert time.monotonic() < deadline, f"timed out waiting for the {what}"
        time.sleep(0.05)


def store_when_ready(directory: Path, proc: subprocess.Popen | None = None, timeout: float = 60) -> Store:
    """The store of a data dir another process is creating, once it can be opened."""
    wait_until(lambda: (directory / "cache.db").exists(), proc, timeout, "job store")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return DiskStore(directory)
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def cli_env(data_dir: Path, base_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")}
    env["STORYTELLER_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(ROOT)
    if base_url:
        env["GEMINI_API_KEY"] = TEST_KEY
        env["GOOGLE_GEMINI_BASE_URL"] = base_url
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "storyteller_core", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "CSV must start with a UTF-8 BOM for Excel"
    return list(csv.DictReader(raw.decode("utf-8-sig").splitlines(keepends=True)))


# -- added for the CLI, crash, fault and soak tests ------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """The CLI in the background (to be killed), its output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "storyteller_core", *args],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def videos_in(store: Store) -> list[Video]:
    """The videos the store's rows point at."""
    return store.many(Video, dict.fromkeys(i.video_id for i in store.items() if i.video_id))


def analyses_in(store: Store) -> list[Analysis]:
    """The analyses the store's rows ask for."""
    return store.many(Analysis, dict.fromkeys(i.analysis_id for i in store.items() if i.analysis_id))


def row_of_item(engine: Any, item_id: str) -> Row:
    [row] = engine.rows(engine.store.many(Item, [item_id]))
    return row


def wait_for_state(engine: Any, item_id: str, state: VideoState | AnalysisState | Status, timeout: float = 20) -> None:
    """Wait until a row's video (VideoState), analysis (AnalysisState) or row (Status) is in ``state``."""

    def reached() -> bool:
        row = row_of_item(engine, item_id)
        if isinstance(state, VideoState):
            return row.video is not None and row.video.state is state
        if isinstance(state, AnalysisState):
            return row.analysis is not None and row.analysis.state is state
        return row.status is state

    wait_until(reached, timeout=timeout, what=f"row {item_id} to reach {state.value}")


def as_shown(markdown: str) -> str:
    """Markdown text as the page shows it: the backslash escapes removed."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")  # the word joiners that break autolinks are invisible


# -- records for unit tests ------------------------------------------------------------------------
def make_video(**kw: Any) -> Video:
    values = dict(id="ab" * 32, sha256="ab" * 32, display_name="café.mp4", sources=["/x/café.mp4"], size_bytes=1)
    values.update(kw)
    return Video(**values)


def make_analysis(video_id: str = "ab" * 32, prompt: str = "p", **kw: Any) -> Analysis:
    values = dict(
        id=analysis_key(video_id, "gemini-3.8-flash", prompt, {}, "b"),
        video_id=video_id,
        model="gemini-3.8-flash",
        prompt=prompt,
        backend="b",
    )
    values.update(kw)
    return Analysis(**values)
