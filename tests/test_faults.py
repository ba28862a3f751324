"""The fault matrix beyond the basics: each fault with its expected end state and message."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storyteller_core.errors import KEY_REJECTED_MESSAGE
from storyteller_core.records.batch import Item
from storyteller_core.records.video import VideoState
from storyteller_core.views.board import Status

from .helpers import ROOT, TEST_KEY, as_shown, ask, run_all, wait_for_state


@pytest.mark.slow  # over 10 s
def test_429_without_a_retry_delay_backs_off_and_completes(make_engine, emulator, videos):
    emulator.config.rate_429 = 0.3
    emulator.config.retry_delay_s = None
    engine = make_engine(upload_budget_s=60, analysis_budget_s=60)

    rows = run_all(engine, videos[:4])

    assert [r.status for r in rows] == [Status.DONE] * 4
    assert emulator.stats.faults["429"] > 0


@pytest.mark.slow
def test_503_on_polls_only_delays_the_poll(make_engine, emulator, videos):
    emulator.config.rate_503 = 0.5
    emulator.config.fault_on = {"poll"}
    emulator.config.processing_delay_s = 1.0
    engine = make_engine()

    rows = run_all(engine, videos[:4])

    assert [r.status for r in rows] == [Status.DONE] * 4
    assert emulator.stats.faults["503"] > 0
    assert sum(emulator.stats.uploads_finished.values()) == 4


@pytest.mark.slow
def test_a_key_rejected_mid_batch_stops_the_rest_with_one_message(make_engine, emulator, videos):
    emulator.config.analysis_delay_s = 0.3
    engine = make_engine(max_workers=1, max_uploads=1)
    items = engine.commands.submit_paths(videos[:6], ask(engine, "P"))
    wait_for_state(engine, items[0].id, Status.DONE)
    emulator.config.rejected_keys = {TEST_KEY}
    requests_at_rejection = emulator.stats.requests

    done = engine.wait([i.id for i in items], timeout=60)

    assert done[0].status is Status.DONE
    failed = [r for r in done if r.status is Status.FAILED]
    assert failed and {r.error for r in failed} == {KEY_REJECTED_MESSAGE}
    assert all(r.status in (Status.DONE, Status.FAILED) for r in done)
    assert emulator.stats.requests - requests_at_rejection <= 2  # no row burned retries on the bad key


@pytest.mark.slow
def test_the_emulator_going_away_and_coming_back(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    engine = make_engine(processing_budget_s=60, analysis_budget_s=60)
    items = engine.commands.submit_paths(videos[:4], ask(engine, "P"))
    ids = [i.id for i in items]
    wait_for_state(engine, ids[-1], VideoState.FILE_PROCESSING)

    emulator.go_away()
    time.sleep(3)  # polls and analyses meet refused connections meanwhile
    assert all(r.status is not Status.FAILED for r in engine.rows(engine.store.many(Item, ids)))
    emulator.come_back()

    done = engine.wait(ids, timeout=60)
    assert [r.status for r in done] == [Status.DONE] * 4
    assert sum(emulator.stats.uploads_finished.values()) == 4


TINY_DISK_BYTES = 8 * 1024 * 1024


@pytest.fixture
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A small disk, yet big enough for the store's write-ahead log: SQLite lets it grow to ~4 MB before it is
    checkpointed, so on a smaller disk the log alone fills it and no space is ever given back."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TINY_DISK_BYTES}", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_spooling_an_upload_is_a_clear_refusal(tiny_disk, monkeypatch, emulator, videos):
    data_dir = tiny_disk / "data"
    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("GEMINI_API_KEY", TEST_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.chdir(ROOT)  # the router names its pages relative to the checkout
    big = videos[0].read_bytes() + b"\0" * (TINY_DISK_BYTES + 1_000_000)  # more than the whole disk
    at = AppTest.from_file(str(ROOT / "ui.py"), default_timeout=60).run()  # app.py serves ui.py

    at.file_uploader[0].set_value([("huge.mp4", big, "video/mp4")]).run()

    assert not at.exception
    warnings = [as_shown(w.value) for w in at.warning]
    assert any("huge.mp4 could not be saved" in w and "Free some disk space" in w for w in warnings), warnings
    assert [p.name for p in (data_dir / "spool").iterdir()] == []  # nothing half-written is left
    stats = emulator.stats  # nothing about the file reached Gemini (the page may list the key's models)
    assert (stats.uploads_started, stats.chunks, stats.lists) == (0, 0, 0), stats
    assert not (stats.generates or stats.polls or stats.token_counts or stats.wire), stats


@pytest.mark.slow
def test_disk_full_under_the_store_keeps_workers_alive(tiny_disk, make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    engine = make_engine(data_dir=tiny_disk / "data")
    items = engine.commands.submit_paths(videos[:2], ask(engine, "P"))
    wait_for_state(engine, items[0].id, VideoState.FILE_PROCESSING)
    filler = tiny_disk / "filler"
    with filler.open("wb", buffering=0) as out:  # fill the disk to the last byte
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    time.sleep(3)  # workers and the lease keeper meet 'database or disk is full'
    survived = engine.healthy
    filler.unlink()

    done = engine.wait([i.id for i in items], timeout=60)
    assert survived
    assert [r.status for r in done] == [Status.DONE] * 2


@pytest.mark.slow
def test_a_file_deleted_between_active_and_analysis_is_uploaded_again(make_engine, emulator, one_video):
    engine = make_engine()

    [row] = run_all(engine, [one_video("street-VANISHME.mp4")])

    assert row.status is Status.DONE
    assert emulator.uploads_of("street-VANISHME.mp4") == 2  # the first file vanished at analysis time
    assert emulator.stats.generates["street-VANISHME.mp4"] == 1  # the 403 answer is not counted as an analysis
