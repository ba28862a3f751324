"""The engine against the emulator over loopback, with the real google-genai SDK."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from storyteller_core import Engine
from storyteller_core.errors import KEY_REJECTED_MESSAGE
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.video import Video, VideoState
from storyteller_core.views.board import Status

from .conftest import fast_settings
from .helpers import ask, run_all, wait_until


def video_of(engine, row) -> Video:
    return engine.store.require(Video, row.item.video_id)


@pytest.mark.slow
def test_batch_of_twelve_completes_within_the_upload_cap(make_engine, emulator, videos):
    emulator.config.chunk_delay_s = 0.3  # uploads take long enough to overlap
    engine = make_engine(max_workers=3, max_uploads=2)

    rows = run_all(engine, videos)

    assert [r.status for r in rows] == [Status.DONE] * 12
    assert all("1.0-second video" in r.story for r in rows)
    assert all(r.analysis.total_tokens and r.cost_usd and r.analysis.model_version for r in rows)
    assert emulator.stats.max_uploads_at_once == 2  # overlapped, and never more than the cap
    assert sum(emulator.stats.uploads_finished.values()) == 12


@pytest.mark.slow
def test_429_and_503_bursts_are_retried_until_done(make_engine, emulator, videos):
    emulator.config.rate_429 = 0.15
    emulator.config.retry_delay_s = 0.2
    emulator.config.rate_503 = 0.1
    engine = make_engine(upload_budget_s=60, analysis_budget_s=60)  # a long streak must not end a row

    rows = run_all(engine, videos[:6], timeout=120)

    assert [r.status for r in rows] == [Status.DONE] * 6
    assert emulator.stats.faults["429"] > 0 and emulator.stats.faults["503"] > 0


@pytest.mark.slow
def test_failed_chunks_are_resent_and_the_upload_finishes(make_engine, emulator, videos):
    emulator.config.fail_every_nth_chunk = 2
    engine = make_engine()

    rows = run_all(engine, videos[:4])

    assert [r.status for r in rows] == [Status.DONE] * 4
    assert emulator.stats.faults["chunk"] >= 2  # half of all chunk requests were refused
    assert sum(emulator.stats.uploads_finished.values()) == 4


def test_a_file_gemini_cannot_process_fails_with_its_reason_and_no_retry(make_engine, emulator, one_video):
    engine = make_engine()

    [row] = run_all(engine, [one_video("holiday-FAILME.mp4")])

    assert row.status is Status.FAILED
    assert row.analysis.error_code == "file_failed" and row.analysis.failed_step == "processing"
    assert "could not be processed (emulated failure)" in row.error
    assert video_of(engine, row).state is VideoState.FAILED
    assert emulator.uploads_of("holiday-FAILME.mp4") == 1
    assert not emulator.stats.generates


def test_a_rejected_key_fails_every_row_once_with_one_message(make_engine, emulator, videos):
    emulator.config.rejected_keys = {"bad-key-000"}
    engine = make_engine(api_key="bad-key-000", max_workers=2)

    rows = run_all(engine, videos[:8])

    assert {r.status for r in rows} == {Status.FAILED}
    assert {r.error for r in rows} == {KEY_REJECTED_MESSAGE}
    assert emulator.stats.uploads_started == 0
    # the engine's models.list at start, and at most one refused call per worker, then no more calls
    assert emulator.stats.requests <= 1 + 2
    assert engine.gate.message == KEY_REJECTED_MESSAGE


def test_bad_files_are_refused_before_any_api_call(make_engine, emulator, tmp_path, video_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("meeting notes, not a video")
    (bad / "picture.mov").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 2000)
    whole = (video_dir / "clip-000.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (bad / "big.mp4").write_bytes(whole)
    engine = make_engine(max_file_bytes=len(whole) - 1)

    rows = {r.name: r for r in run_all(engine, sorted(bad.iterdir()) + [bad / "missing.mp4"])}

    assert {r.status for r in rows.values()} == {Status.FAILED}
    assert rows["empty.mp4"].error.startswith("empty.mp4 is empty (0 bytes)")
    assert "notes.mp4 is not a video file" in rows["notes.mp4"].error
    assert "picture.mov is not a video file" in rows["picture.mov"].error
    assert "truncated or damaged" in rows["truncated.mp4"].error
    assert "over the" in rows["big.mp4"].error and "limit" in rows["big.mp4"].error
    assert "no such file or folder" in rows["missing.mp4"].error  # issue 19: not "missing.mp4 does not exist"
    assert all(r.analysis is None and r.item.error_code for r in rows.values())
    # not one call about these files (the engine's own models.list at start is not about them)
    assert emulator.stats.uploads_started == 0 and emulator.stats.status_calls == 0 and not emulator.stats.generates
    assert not emulator.stats.wire


@pytest.mark.slow
def test_odd_names_stay_inside_the_data_dir(make_engine, emulator, one_video, tmp_path):
    path = one_video("Ünïcødé ☃ interview — part 1 (final).mp4")
    engine = make_engine()

    [row] = run_all(engine, [path])

    assert row.status is Status.DONE
    assert row.name == "Ünïcødé ☃ interview — part 1 (final).mp4"
    assert Path(row.video.thumbnail_path).parent == tmp_path / "data" / "thumbs"


def test_submitting_a_running_path_again_returns_the_same_row(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 2
    engine = make_engine()

    [first] = engine.commands.submit_paths([videos[0]], ask(engine, "P"), resume=True)
    [second] = engine.commands.submit_paths([videos[0]], ask(engine, "P"), resume=True)

    assert second.id == first.id
    assert len(engine.store.item_ids()) == 1


@pytest.mark.slow
def test_cancel_a_queued_row_at_once_and_retry_it(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    engine = make_engine(max_workers=1, max_uploads=1, start=False)
    items = engine.commands.submit_paths(videos[:3], ask(engine, "P", priority="low"))
    last = items[-1]

    engine.commands.cancel(last.id)

    [row] = engine.rows([engine.store.require(type(last), last.id)])
    assert row.status is Status.CANCELLED and row.analysis.state is AnalysisState.CANCELLED
    engine.start()
    engine.wait([i.id for i in items[:2]], timeout=60)
    assert emulator.uploads_of(last.display_name) == 0
    engine.commands.retry(last.id)
    done = engine.wait([i.id for i in items], timeout=60)
    assert [r.status for r in done] == [Status.DONE] * 3


def test_cancel_while_processing_stops_at_the_next_step(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 3
    engine = make_engine()
    [item] = engine.commands.submit_paths([videos[0]], ask(engine, "P"))
    wait_until(lambda: engine.store.require(Video, item.video_id).state is VideoState.FILE_PROCESSING, what="processing")

    engine.commands.cancel(item.id)

    [row] = engine.wait([item.id], timeout=10)
    assert row.status is Status.CANCELLED
    wait_until(lambda: engine.store.require(Analysis, item.analysis_id).state is AnalysisState.CANCELLED, timeout=10)
    assert not emulator.stats.generates


@pytest.mark.slow
def test_retry_after_a_failed_analysis_reuses_the_active_file(make_engine, emulator, videos):
    emulator.config.rate_503 = 1.0
    emulator.config.fault_on = {"generate"}
    engine = make_engine(analysis_budget_s=1.5)
    [row] = run_all(engine, [videos[0]])
    assert row.status is Status.FAILED and row.analysis.error_code == "gemini_unavailable"
    assert row.analysis.failed_step == "analysis" and "Retry later" in row.error

    emulator.config.rate_503 = 0.0
    engine.commands.retry(row.item.id)

    [row] = engine.wait([row.item.id], timeout=30)
    assert row.status is Status.DONE
    assert emulator.uploads_of(videos[0].name) == 1


@pytest.mark.slow
def test_a_file_that_expired_is_uploaded_again_by_itself(make_engine, emulator, videos):
    engine = make_engine()
    run_all(engine, [videos[0]])
    emulator.expire(videos[0].name)

    [again] = run_all(engine, [videos[0]], prompt="A different question")

    assert again.status is Status.DONE
    assert emulator.uploads_of(videos[0].name) == 2


@pytest.mark.slow
def test_a_hanging_analysis_ends_at_the_step_budget(make_engine, emulator, videos):
    emulator.config.hang_generate_s = 30
    engine = make_engine(analysis_budget_s=1.0)

    [row] = run_all(engine, [videos[0]], timeout=30)

    assert row.status is Status.FAILED and row.analysis.error_code == "network"
    assert "during the analysis" in row.error


@pytest.mark.slow
def test_blocked_and_empty_answers_fail_with_the_reason(make_engine, emulator, one_video):
    engine = make_engine()

    rows = {r.name: r for r in run_all(engine, [one_video("a-BLOCKME.mp4", 1), one_video("b-EMPTYME.mp4", 2)])}

    assert rows["a-BLOCKME.mp4"].status is Status.FAILED
    assert "(SAFETY)" in rows["a-BLOCKME.mp4"].error
    assert rows["b-EMPTYME.mp4"].analysis.error_code == "empty_answer"


@pytest.mark.slow
def test_priorities_run_high_before_low(make_engine, emulator, videos):
    # Everything is queued before the one worker starts, so the order depends on priority alone, not on
    # how fast this machine submits (the old version of this test raced the worker on a busy machine).
    engine = make_engine(max_workers=1, max_uploads=1, start=False)
    low = engine.commands.submit_paths(videos[:3], ask(engine, "P", priority="low"))
    high = engine.commands.submit_paths(videos[3:5], ask(engine, "P", priority="high"))
    engine.start()

    done = engine.wait([i.id for i in low + high], timeout=60)

    assert [r.status for r in done] == [Status.DONE] * 5
    uploaded = {r.item.id: r.video.state_entered_at["UPLOADING"] for r in done}
    assert max(uploaded[i.id] for i in high) < min(uploaded[i.id] for i in low)


@pytest.mark.slow
def test_the_api_key_is_never_written_to_logs_or_the_store(make_engine, emulator, videos, tmp_path):
    emulator.config.rate_503 = 0.3
    engine = make_engine(api_key="sk-very-secret-key-4711")
    run_all(engine, videos[:3])
    engine.shutdown()

    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert b"sk-very-secret-key-4711" not in path.read_bytes(), path


@pytest.mark.slow
def test_two_engines_on_one_data_dir_never_do_the_same_work(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    first = make_engine()
    items = first.commands.submit_paths(videos[:6], ask(first, "P"))
    second = make_engine()  # e.g. the app's engine next to a CLI run, over the same rows

    done = second.wait([i.id for i in items], timeout=60)

    assert [r.status for r in done] == [Status.DONE] * 6
    assert all(emulator.uploads_of(p.name) == 1 for p in videos[:6])
    assert all(emulator.stats.generates[p.name] == 1 for p in videos[:6])


@pytest.mark.slow
def test_a_second_engine_takes_over_when_the_first_stops(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 2.0
    first = make_engine()
    items = first.commands.submit_paths(videos[:3], ask(first, "P"))
    wait_until(lambda: first.store.require(Video, items[-1].video_id).state is VideoState.FILE_PROCESSING)
    first.shutdown()  # leaves videos in processing and releases their leases

    second = make_engine()
    done = second.wait([i.id for i in items], timeout=60)

    assert [r.status for r in done] == [Status.DONE] * 3
    assert all(emulator.uploads_of(p.name) == 1 for p in videos[:3])


def test_an_upload_that_loses_the_race_for_its_name_adopts_the_finished_file(emulator, videos):
    from storyteller_core.gemini.gateway import Gateway, file_name_for
    from storyteller_core.intake.media import hash_file

    sha, _ = hash_file(videos[0])
    gateway = Gateway("k", emulator.base_url, 10)
    emulator.config.chunk_delay_s = 0.5
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                gateway.upload(
                    videos[0], name=file_name_for(sha), display_name=videos[0].name, mime_type="video/mp4", on_progress=lambda _: None
                )
            )
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 2 and results[0].file.name == results[1].file.name
    assert emulator.uploads_of(videos[0].name) == 1  # one file; the loser was answered 409 and got it


@pytest.mark.slow
def test_everything_in_the_data_dir_is_private_to_its_owner(tmp_path, emulator, videos):
    settings = fast_settings(tmp_path / "parent" / "data", emulator)
    engine = Engine(settings, stderr_log_level=logging.CRITICAL + 1).start()
    items = engine.commands.submit_paths(videos[:2], ask(engine, "P"))
    engine.wait([i.id for i in items], timeout=30)
    engine.shutdown()

    entries = [settings.data_dir, *settings.data_dir.rglob("*")]
    assert len(entries) > 5
    loose = {str(p): oct(p.stat().st_mode & 0o777) for p in entries if p.stat().st_mode & 0o077}
    assert loose == {}
