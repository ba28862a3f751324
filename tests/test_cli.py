"""The headless CLI as a script user runs it, including a SIGKILL mid-batch."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.video import VideoState
from storyteller_core.storage.datadir import ensure_data_dir
from storyteller_core.storage.disk_store import DiskStore

from .helpers import ROOT, cli_env, read_csv, run_cli, start_cli, store_when_ready, videos_in, wait_until

SUMMARY = "Summary for a report"


@pytest.mark.slow  # over 10 s
def test_process_a_folder_in_demo_mode_writes_the_csv(tmp_path, videos):
    folder = videos[0].parent
    (folder / "readme.txt").write_text("not a video")
    out = tmp_path / "out.csv"

    result = run_cli(["process", str(folder), "--csv", str(out)], cli_env(tmp_path / "data"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo mode" in result.stdout
    assert "readme.txt was skipped: not a video file extension" in result.stdout
    assert "12 of 12 video(s) done." in result.stdout
    rows = read_csv(out)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"Done"}
    assert all("[Demo output from the local Gemini emulator" in r["story"] for r in rows)
    assert "Traceback" not in result.stderr
    assert list((tmp_path / "data" / "demo-gemini").iterdir()) == []  # what the demo emulator was sent left with it


def test_the_demo_emulator_keeps_what_it_is_sent_in_the_data_dir_and_a_killed_ones_is_swept(tmp_path):
    from storyteller_core.gemini import demo_mode as demo

    root = tmp_path / "demo-gemini"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = root / f"{dead.stdout.strip()}-abc"  # the folder of a process killed with SIGKILL
    live = root / f"{os.getpid()}-def"
    for folder in (left, live):
        folder.mkdir(parents=True)
        (folder / "video.bin").write_bytes(b"x" * 1000)
    demo._sweep(root)
    assert not left.exists() and live.exists()


@pytest.mark.slow
def test_a_bad_file_gives_exit_1_and_one_line_reason(tmp_path, videos):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")

    result = run_cli(["process", str(videos[0]), str(bad)], cli_env(tmp_path / "data"))

    assert result.returncode == 1
    assert "Not added notes.mp4: notes.mp4 is not a video file" in result.stderr  # refused: never a (Failed) row
    assert "1 of 1 video(s) done." in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow  # over 10 s
def test_status_and_export_list_every_row(tmp_path, videos):
    env = cli_env(tmp_path / "data")
    assert run_cli(["process", str(videos[0]), str(videos[1])], env).returncode == 0

    status = run_cli(["status"], env)
    export = run_cli(["export", "--csv", str(tmp_path / "all.csv")], env)

    assert status.stdout.count("Done") == 2
    assert export.returncode == 0 and len(read_csv(tmp_path / "all.csv")) == 2


@pytest.mark.slow
def test_an_unwritable_data_dir_is_a_clear_error(tmp_path, videos):
    locked = tmp_path / "locked"
    locked.write_text("a file, not a folder")

    result = run_cli(["process", str(videos[0])], cli_env(locked / "data"))

    assert result.returncode == 2
    assert "cannot create its data folder" in result.stderr and "STORYTELLER_DATA_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def _row_count(status: subprocess.CompletedProcess[str]) -> int:
    found = re.search(r"^(\d+) row\(s\):", status.stdout, re.MULTILINE)
    assert found, status.stdout + status.stderr
    return int(found.group(1))


@pytest.mark.slow  # over 10 s
def test_process_twice_on_one_folder_adds_no_rows(tmp_path, videos):
    folder = videos[0].parent
    env = cli_env(tmp_path / "data")
    first = run_cli(["process", str(folder), "--csv", str(tmp_path / "first.csv")], env)
    assert first.returncode == 0, first.stdout + first.stderr
    rows_after_first = _row_count(run_cli(["status"], env))

    second = run_cli(["process", str(folder), "--csv", str(tmp_path / "second.csv")], env)

    assert second.returncode == 0, second.stdout + second.stderr
    assert rows_after_first == len(videos)
    assert _row_count(run_cli(["status"], env)) == rows_after_first  # the second run reused its rows
    rows = read_csv(tmp_path / "second.csv")
    assert sorted(r["file_name"] for r in rows) == sorted(p.name for p in videos)  # one row per file, no more
    assert {r["status"] for r in rows} == {"Done"}


@pytest.mark.slow
def test_another_preset_reuses_the_uploaded_files(tmp_path, videos, emulator):
    batch = videos[:3]
    env = cli_env(tmp_path / "data", emulator.base_url)
    first = run_cli(["process", *map(str, batch)], env)
    assert first.returncode == 0, first.stdout + first.stderr
    uploads_before, generates_before = emulator.stats.uploads_started, dict(emulator.stats.generates)

    again = run_cli(["process", *map(str, batch), "--preset", SUMMARY, "--csv", str(tmp_path / "again.csv")], env)

    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 of 3 video(s) done." in again.stdout
    assert emulator.stats.uploads_started == uploads_before  # 0 uploads: the Gemini files are still ACTIVE
    assert {p.name: emulator.stats.generates[p.name] - generates_before.get(p.name, 0) for p in batch} == {
        p.name: 1 for p in batch
    }  # one new analysis per video
    rows = read_csv(tmp_path / "again.csv")
    assert sorted(r["file_name"] for r in rows) == sorted(p.name for p in batch)
    assert {r["prompt"] for r in rows} == {SUMMARY} and {r["status"] for r in rows} == {"Done"}


def test_status_into_a_closed_pipe_exits_cleanly(tmp_path):
    data_dir = tmp_path / "data"
    ensure_data_dir(data_dir)
    store = DiskStore(data_dir / "store")
    try:  # ~300 KB of status lines: far more than a pipe holds, so `head` leaves while status still writes
        store.add_batch(Batch(id="20260101-000000-aaaa", name="many"))
        for i in range(100):
            store.add_item(
                Item(
                    id=f"item{i:04d}",
                    batch_id="20260101-000000-aaaa",
                    display_name=f"clip-{i:04d}.mp4",
                    source_path=f"/nowhere/clip-{i:04d}.mp4",
                    error_code="NOT_VIDEO",
                    error_message=f"clip-{i:04d}.mp4 is not a video file. " + "x" * 3000,
                )
            )
    finally:
        store.close()
    command = f"set -o pipefail; {shlex.quote(sys.executable)} -m storyteller_core status | head -1"

    result = subprocess.run(
        ["bash", "-c", command], env=cli_env(data_dir), cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("Batch 20260101-000000-aaaa")


@pytest.mark.slow
def test_a_csv_path_in_a_missing_folder_fails_before_any_upload(tmp_path, videos, emulator):
    out = tmp_path / "no-such-folder" / "out.csv"
    started = time.monotonic()

    result = run_cli(["process", *map(str, videos[:3]), "--csv", str(out)], cli_env(tmp_path / "data", emulator.base_url))

    assert result.returncode == 2
    assert time.monotonic() - started < 30
    assert f"cannot write the CSV file {out}" in result.stderr
    assert "Give a path in a folder you can write to." in result.stderr
    assert "Traceback" not in result.stderr and "Checking" not in result.stdout
    assert emulator.stats.uploads_started == 0 and emulator.stats.requests == 0
    assert not out.parent.exists()


@pytest.mark.slow
def test_terminal_escapes_in_a_file_name_never_reach_the_terminal(tmp_path, one_video):
    evil = one_video("evil\x1b[2J\x1b]0;pwned\x07.mp4")
    env = cli_env(tmp_path / "data")

    result = run_cli(["process", str(evil)], env)
    status = run_cli(["status"], env)

    assert result.returncode == 0, result.stdout + result.stderr
    shown = re.compile(r"evil[^\s\x1b\x07]*\.mp4 .*Done")  # the name, whatever is left of the escapes, on its row
    assert shown.search(result.stdout) and "1 of 1 video(s) done." in result.stdout, result.stdout
    assert re.search(r"Done .*evil[^\s\x1b\x07]*\.mp4", status.stdout), status.stdout
    for output in (result.stdout, result.stderr, status.stdout, status.stderr):
        assert "\x1b" not in output and "\x07" not in output


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_during_processing_then_restart_finishes_without_reuploading(tmp_path, videos, emulator):
    emulator.config.processing_delay_s = 6
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, emulator.base_url)
    batch = videos[:5]
    args = ["process", *map(str, batch), "--csv", str(tmp_path / "out.csv")]

    first = start_cli(args, env)
    store = store_when_ready(data_dir / "store", first)
    wait_until(
        lambda: (
            len(store.items()) == 5 and {v.state for v in videos_in(store)} == {VideoState.FILE_PROCESSING} and len(videos_in(store)) == 5
        ),
        first,
        what="crash point",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    rows_before = sorted(i.id for i in store.items())
    uploads_before = sum(emulator.stats.uploads_finished.values())

    second = run_cli(args, env, timeout=180)

    assert second.returncode == 0, second.stdout + second.stderr
    assert uploads_before == 5
    assert {p.name: emulator.uploads_of(p.name) for p in batch} == {p.name: 1 for p in batch}
    assert sorted(i.id for i in store.items()) == rows_before  # resumed, not duplicated
    assert {r["status"] for r in read_csv(tmp_path / "out.csv")} == {"Done"}
    assert len(read_csv(tmp_path / "out.csv")) == 5
