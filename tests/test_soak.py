"""Soak: many videos through the app's engine with faults at a low rate, two browser sessions open.

Both sessions refresh through the board's own timer. Streamlit itself keeps about 3 file descriptors per
page load for good (seen with a one-line app too), so the sessions are not reloaded in a loop: that
would measure Streamlit, not us.

CI runs 40 videos; the full soak is `STORYTELLER_SOAK_VIDEOS=200 .venv/bin/python -m pytest tests/test_soak.py -s`.
Checks that nothing is lost and that the server leaks no threads or file handles and keeps memory flat.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from storyteller_core.intake.samples import make_batch
from storyteller_core.storage.disk_store import DiskStore
from storyteller_core.views.board import Status, batch_rows

from .helpers import needs_chromium

pytestmark = [needs_chromium, pytest.mark.slow]

COUNT = int(os.environ.get("STORYTELLER_SOAK_VIDEOS", "40"))


@pytest.fixture
def soak_env(app_env, emulator):  # type: ignore[no-untyped-def]
    emulator.config.rate_429 = 0.03
    emulator.config.retry_delay_s = 0.2
    emulator.config.rate_503 = 0.03
    emulator.config.processing_delay_s = 0.5
    emulator.config.analysis_delay_s = 0.05
    app_env["GEMINI_API_KEY"] = "soak-key-0000"
    app_env["GOOGLE_GEMINI_BASE_URL"] = emulator.base_url
    return app_env


def resources(proc: psutil.Process) -> tuple[int, int, float]:
    return proc.num_threads(), proc.num_fds(), proc.memory_info().rss / 1024**2


def fd_kinds(proc: psutil.Process) -> Counter:
    kinds: Counter = Counter()
    for fd in os.listdir(f"/proc/{proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
        except OSError:
            continue
        kinds[target.split(":")[0] if ":" in target else Path(target).name] += 1
    return kinds


@pytest.mark.timeout(900)
def test_soak_nothing_lost_no_leaks(soak_env, app_server, page, tmp_path, emulator):  # type: ignore[no-untyped-def]
    url, server = app_server
    folder = tmp_path / "soak"
    make_batch(folder, COUNT, seconds=0.5)
    second = page.context.browser.new_context().new_page()
    second.goto(url)
    page.get_by_text("Drop videos here").wait_for(timeout=60_000)
    second.get_by_text("Drop videos here").wait_for(timeout=60_000)
    proc = psutil.Process(server.pid)
    store = DiskStore(tmp_path / "data" / "store")
    warm = tmp_path / "warm-up"
    make_batch(warm, 6, seconds=0.5)
    for i in range(6):  # other content than the soak batch
        (warm / f"clip-{i:03d}.mp4").write_bytes((warm / f"clip-{i:03d}.mp4").read_bytes() + b"warm-up")

    def run_batch(path, count: int) -> None:  # type: ignore[no-untyped-def]
        total_before = len(store.item_ids())
        page.get_by_role("tab", name="Local folder, file path or YouTube link").click()
        page.get_by_label("Path to a video file or a folder of videos").fill(str(path))
        page.get_by_role("button", name="Add from path").click()
        page.get_by_role("button", name=f"Start batch ({count} video(s))").click(timeout=120_000)
        deadline = time.monotonic() + 600
        while len(store.item_ids()) < total_before + count:  # Start has stored the batch (40 files take a moment)
            assert time.monotonic() < deadline, "the batch was never stored"
            time.sleep(0.2)
        while not all(row.ended for row in batch_rows(store)):
            assert time.monotonic() < deadline, "soak did not finish"
            time.sleep(1)
        try:
            second.get_by_text(f"{count} / {count}").wait_for(timeout=60_000)  # untouched: the tab follows the newest batch
        except Exception:
            second.screenshot(path=str(tmp_path.parent / "soak-second.png"), full_page=True)
            raise
        try:
            page.get_by_text(f"{count} / {count}").wait_for(timeout=60_000)  # the first session saw it by itself
        except Exception:
            page.screenshot(path=str(tmp_path.parent / "soak-board.png"), full_page=True)
            rows = batch_rows(store)
            states = Counter((row.label, row.error) for row in rows)
            stuck = {i for row in rows if not row.ended for i in (row.item.id, row.item.analysis_id, row.item.video_id) if i}
            log = (tmp_path / "data" / "logs" / "storyteller.jsonl").read_text().splitlines()
            (tmp_path.parent / "soak-stuck.log").write_text("\n".join(line for line in log if any(i in line for i in stuck)))
            if shutil.which("py-spy"):
                spy = subprocess.run(["py-spy", "dump", "--pid", str(server.pid)], capture_output=True, text=True)
                (tmp_path.parent / "soak-stacks.txt").write_text(spy.stdout + spy.stderr)
            raise AssertionError(f"the first session's board did not show {count} / {count} by itself; store: {states}") from None
        time.sleep(5)

    run_batch(warm, 6)  # connections, thumbnails and caches that exist once per server, not per video
    before, kinds_before = resources(proc), fd_kinds(proc)
    run_batch(folder, COUNT)
    after, kinds_after = resources(proc), fd_kinds(proc)
    print("\nfd kinds before:", dict(kinds_before), "\nfd kinds after: ", dict(kinds_after))

    rows = batch_rows(store, store.batch_ids()[0])
    print(
        f"\nsoak {COUNT} videos: faults {dict(emulator.stats.faults)}, threads {before[0]}->{after[0]}, "
        f"fds {before[1]}->{after[1]}, rss {before[2]:.0f}->{after[2]:.0f} MB"
    )
    assert len(rows) == COUNT and {row.status for row in rows} == {Status.DONE}
    assert sum(emulator.stats.uploads_finished.values()) == COUNT + 6  # every video uploaded once, warm-up included
    assert sum(emulator.stats.faults.values()) > 0
    assert after[0] <= before[0] + 4, "threads leaked"
    assert after[1] <= before[1] + 10, "file handles leaked"
    assert after[2] - before[2] < 150, "memory grew"
