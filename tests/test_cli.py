"""The headless CLI as a script user runs it, including a SIGKILL mid-batch."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storyteller_core.jobs import State
from storyteller_core.store import JobStore

from .conftest import TEST_KEY

ROOT = Path(__file__).resolve().parents[1]


def cli_env(data_dir: Path, base_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")}
    env["STORYTELLER_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(ROOT)
    if base_url:
        env["GEMINI_API_KEY"] = TEST_KEY
        env["GOOGLE_GEMINI_BASE_URL"] = base_url
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "storyteller_core", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "CSV must start with a UTF-8 BOM for Excel"
    return list(csv.DictReader(raw.decode("utf-8-sig").splitlines(keepends=True)))


def test_process_a_folder_in_demo_mode_writes_the_csv(tmp_path, videos):
    folder = videos[0].parent
    (folder / "readme.txt").write_text("not a video")
    out = tmp_path / "out.csv"

    result = run_cli(["process", str(folder), "--csv", str(out)], cli_env(tmp_path / "data"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo mode" in result.stdout
    assert "readme.txt was skipped: not a video file extension" in result.stdout
    assert "12 of 12 video(s) completed." in result.stdout
    rows = read_csv(out)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"COMPLETED"}
    assert all("[Demo output from the local Gemini emulator" in r["story"] for r in rows)
    assert "Traceback" not in result.stderr


def test_a_bad_file_gives_exit_1_and_one_line_reason(tmp_path, videos):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")

    result = run_cli(["process", str(videos[0]), str(bad)], cli_env(tmp_path / "data"))

    assert result.returncode == 1
    assert "FAILED notes.mp4: notes.mp4 is not a video file" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_status_and_export_list_every_job(tmp_path, videos):
    env = cli_env(tmp_path / "data")
    assert run_cli(["process", str(videos[0]), str(videos[1])], env).returncode == 0

    status = run_cli(["status"], env)
    export = run_cli(["export", "--csv", str(tmp_path / "all.csv")], env)

    assert status.stdout.count("COMPLETED") == 2
    assert export.returncode == 0 and len(read_csv(tmp_path / "all.csv")) == 2


def test_an_unwritable_data_dir_is_a_clear_error(tmp_path, videos):
    locked = tmp_path / "locked"
    locked.write_text("a file, not a folder")

    result = run_cli(["process", str(videos[0])], cli_env(locked / "data"))

    assert result.returncode == 2
    assert "is not writable" in result.stderr and "STORYTELLER_DATA_DIR" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(240)
def test_sigkill_during_processing_then_restart_finishes_without_reuploading(tmp_path, videos, emulator):
    emulator.config.processing_delay_s = 6
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, emulator.base_url)
    batch = videos[:5]
    args = ["process", *map(str, batch), "--csv", str(tmp_path / "out.csv")]

    first = subprocess.Popen([sys.executable, "-m", "storyteller_core", *args], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = store_when_ready(data_dir / "jobs", first)
    wait_until(lambda: _states(store) == {State.FILE_PROCESSING} and len(store.job_ids()) == 5, first)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    uploads_before = sum(emulator.stats.uploads_finished.values())

    second = run_cli(args, env, timeout=180)

    assert second.returncode == 0, second.stdout + second.stderr
    assert uploads_before == 5
    assert {p.name: emulator.uploads_of(p.name) for p in batch} == {p.name: 1 for p in batch}
    assert len(store.job_ids()) == 5  # resumed, not duplicated
    assert {r["status"] for r in read_csv(tmp_path / "out.csv")} == {"COMPLETED"}


def store_when_ready(path: Path, proc: subprocess.Popen) -> JobStore:
    """The CLI's job store, once the CLI has created it."""
    wait_until(lambda: (path / "cache.db").exists(), proc)
    return JobStore(path)


def wait_until(condition, proc: subprocess.Popen, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the CLI ended before the crash point"
        assert time.monotonic() < deadline, "timed out waiting for the crash point"
        time.sleep(0.02)


def _states(store: JobStore) -> set[State]:
    return {job.state for job in store.jobs()}
