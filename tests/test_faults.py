"""The fault matrix beyond the basics: each fault with its expected end state and message."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storyteller_core import State
from storyteller_core.errors import KEY_REJECTED_MESSAGE

from .conftest import TEST_KEY
from .test_pipeline import _wait_for, run_all

ROOT = Path(__file__).resolve().parents[1]


def test_429_without_a_retry_delay_backs_off_and_completes(make_engine, emulator, videos):
    emulator.config.rate_429 = 0.3
    emulator.config.retry_delay_s = None
    engine = make_engine(upload_budget_s=60, analysis_budget_s=60)

    jobs = run_all(engine, videos[:4])

    assert [j.state for j in jobs] == [State.COMPLETED] * 4
    assert emulator.stats.faults["429"] > 0


def test_503_on_polls_only_delays_the_poll(make_engine, emulator, videos):
    emulator.config.rate_503 = 0.5
    emulator.config.fault_on = {"poll"}
    emulator.config.processing_delay_s = 1.0
    engine = make_engine()

    jobs = run_all(engine, videos[:4])

    assert [j.state for j in jobs] == [State.COMPLETED] * 4
    assert emulator.stats.faults["503"] > 0
    assert sum(emulator.stats.uploads_finished.values()) == 4


def test_a_key_rejected_mid_batch_stops_the_rest_with_one_message(make_engine, emulator, videos):
    emulator.config.analysis_delay_s = 0.3
    engine = make_engine(max_jobs=1, max_uploads=1)
    jobs = engine.submit_paths(videos[:6], prompt="P")
    _wait_for(engine, jobs[0].id, State.COMPLETED)
    emulator.config.rejected_keys = {TEST_KEY}
    requests_at_rejection = emulator.stats.requests

    done = engine.wait([j.id for j in jobs], timeout=60)

    assert done[0].state is State.COMPLETED
    failed = [j for j in done if j.state is State.FAILED]
    assert failed and {j.error_message for j in failed} == {KEY_REJECTED_MESSAGE}
    assert all(j.state in (State.COMPLETED, State.FAILED) for j in done)
    assert emulator.stats.requests - requests_at_rejection <= 2  # no job burned retries on the bad key


def test_the_emulator_going_away_and_coming_back(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    engine = make_engine(processing_budget_s=60, analysis_budget_s=60)
    jobs = engine.submit_paths(videos[:4], prompt="P")
    _wait_for(engine, jobs[-1].id, State.FILE_PROCESSING)

    emulator.go_away()
    time.sleep(3)  # polls and analyses meet refused connections meanwhile
    assert all(j.state is not State.FAILED for j in engine.store.jobs([j.id for j in jobs]))
    emulator.come_back()

    done = engine.wait([j.id for j in jobs], timeout=60)
    assert [j.state for j in done] == [State.COMPLETED] * 4
    assert sum(emulator.stats.uploads_finished.values()) == 4


@pytest.fixture
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_spooling_an_upload_is_a_clear_refusal(tiny_disk, monkeypatch, emulator, videos):
    data_dir = tiny_disk / "data"
    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("GEMINI_API_KEY", TEST_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    big = videos[0].read_bytes() + b"\0" * 2_000_000
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()

    at.file_uploader[0].set_value([("huge.mp4", big, "video/mp4")]).run()

    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("huge.mp4 could not be saved" in w and "Free some disk space" in w for w in warnings), warnings
    assert [p.name for p in (data_dir / "spool").iterdir()] == []  # nothing half-written is left
    assert emulator.stats.requests == 0


def test_disk_full_under_the_store_keeps_workers_alive(tiny_disk, make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    engine = make_engine(data_dir=tiny_disk / "data")
    jobs = engine.submit_paths(videos[:2], prompt="P")
    _wait_for(engine, jobs[0].id, State.FILE_PROCESSING)
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

    done = engine.wait([j.id for j in jobs], timeout=60)
    assert survived
    assert [j.state for j in done] == [State.COMPLETED] * 2


def test_a_file_deleted_between_active_and_analysis_is_uploaded_again(make_engine, emulator, one_video):
    engine = make_engine()

    [job] = run_all(engine, [one_video("street-VANISHME.mp4")])

    assert job.state is State.COMPLETED
    assert emulator.uploads_of("street-VANISHME.mp4") == 2  # the first file vanished at analysis time
    assert emulator.stats.generates["street-VANISHME.mp4"] == 1  # the 403 answer is not counted as an analysis
