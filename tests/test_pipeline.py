"""The engine against the emulator over loopback, with the real google-genai SDK."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from storyteller_core import Engine, State
from storyteller_core.errors import KEY_REJECTED_MESSAGE

from .conftest import fast_settings


def run_all(engine, paths: list[Path], prompt: str = "Tell the story", timeout: float = 60, **kw):
    jobs = engine.submit_paths(paths, prompt=prompt, **kw)
    return engine.wait([j.id for j in jobs], timeout=timeout)


def test_batch_of_twelve_completes_within_the_upload_cap(make_engine, emulator, videos):
    emulator.config.chunk_delay_s = 0.3  # uploads take long enough to overlap
    engine = make_engine(max_jobs=3, max_uploads=2)

    jobs = run_all(engine, videos)

    assert [j.state for j in jobs] == [State.COMPLETED] * 12
    assert all("1.0-second video" in j.story for j in jobs)
    assert all(j.total_tokens and j.cost_usd and j.model_version for j in jobs)
    assert emulator.stats.max_uploads_at_once == 2  # overlapped, and never more than the cap
    assert sum(emulator.stats.uploads_finished.values()) == 12


def test_429_and_503_bursts_are_retried_until_done(make_engine, emulator, videos):
    emulator.config.rate_429 = 0.15
    emulator.config.retry_delay_s = 0.2
    emulator.config.rate_503 = 0.1
    engine = make_engine(upload_budget_s=60, analysis_budget_s=60)  # a long streak must not end a job

    jobs = run_all(engine, videos[:6])

    assert [j.state for j in jobs] == [State.COMPLETED] * 6
    assert emulator.stats.faults["429"] > 0 and emulator.stats.faults["503"] > 0


def test_failed_chunks_are_resent_and_the_upload_finishes(make_engine, emulator, videos):
    emulator.config.fail_every_nth_chunk = 2
    engine = make_engine()

    jobs = run_all(engine, videos[:4])

    assert [j.state for j in jobs] == [State.COMPLETED] * 4
    assert emulator.stats.faults["chunk"] >= 2  # half of all chunk requests were refused
    assert sum(emulator.stats.uploads_finished.values()) == 4


def test_a_file_gemini_cannot_process_fails_with_its_reason_and_no_retry(make_engine, emulator, one_video):
    engine = make_engine()

    [job] = run_all(engine, [one_video("holiday-FAILME.mp4")])

    assert job.state is State.FAILED
    assert job.error_code == "file_failed" and job.failed_step == "processing"
    assert "could not be processed (emulated failure)" in job.error_message
    assert emulator.uploads_of("holiday-FAILME.mp4") == 1
    assert not emulator.stats.generates


def test_a_rejected_key_fails_every_job_once_with_one_message(make_engine, emulator, videos):
    emulator.config.rejected_keys = {"bad-key-000"}
    engine = make_engine(api_key="bad-key-000", max_jobs=2)

    jobs = run_all(engine, videos[:8])

    assert {j.state for j in jobs} == {State.FAILED}
    assert {j.error_message for j in jobs} == {KEY_REJECTED_MESSAGE}
    assert emulator.stats.uploads_started == 0
    assert emulator.stats.requests <= 2  # one refused call per worker, then the engine stops calling
    assert engine.halted == KEY_REJECTED_MESSAGE


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

    jobs = {j.display_name: j for j in run_all(engine, sorted(bad.iterdir()) + [bad / "missing.mp4"])}

    assert {j.state for j in jobs.values()} == {State.FAILED}
    assert jobs["empty.mp4"].error_message.startswith("empty.mp4 is empty (0 bytes)")
    assert "notes.mp4 is not a video file" in jobs["notes.mp4"].error_message
    assert "picture.mov is not a video file" in jobs["picture.mov"].error_message
    assert "truncated or damaged" in jobs["truncated.mp4"].error_message
    assert "over the" in jobs["big.mp4"].error_message and "limit" in jobs["big.mp4"].error_message
    assert "does not exist" in jobs["missing.mp4"].error_message
    assert all(j.failed_step == "intake" for j in jobs.values())
    assert emulator.stats.requests == 0


def test_odd_names_stay_inside_the_data_dir(make_engine, emulator, one_video, tmp_path):
    path = one_video("Ünïcødé ☃ interview — part 1 (final).mp4")
    engine = make_engine()

    [job] = run_all(engine, [path])

    assert job.state is State.COMPLETED
    assert job.display_name == "Ünïcødé ☃ interview — part 1 (final).mp4"
    assert Path(job.thumbnail_path).parent == tmp_path / "data" / "thumbs"


def test_dedupe_same_content_uploads_once_and_a_completed_story_is_reused(make_engine, emulator, videos, tmp_path):
    twin = tmp_path / "copy-of-clip-000.mp4"
    twin.write_bytes(videos[0].read_bytes())
    engine = make_engine()

    first = run_all(engine, [videos[0], twin], prompt="P")
    again = run_all(engine, [videos[0]], prompt="P")
    other_prompt = run_all(engine, [videos[0]], prompt="Another prompt")

    assert [j.state for j in first + again + other_prompt] == [State.COMPLETED] * 4
    assert sum(emulator.stats.uploads_finished.values()) == 1  # the twin and the new prompt reuse the file
    assert again[0].reused_from in {first[0].id, first[1].id} and again[0].story == first[0].story
    # both first-run jobs (neither had finished) + the other prompt; the reused job made no call
    assert sum(emulator.stats.generates.values()) == 3  # counted under whichever twin's name uploaded
    assert other_prompt[0].reused_from is None


def test_submitting_a_running_path_again_returns_the_same_job(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 2
    engine = make_engine()

    [first] = engine.submit_paths([videos[0]], prompt="P")
    [second] = engine.submit_paths([videos[0]], prompt="P")

    assert second.id == first.id
    assert len(engine.store.job_ids()) == 1


def test_cancel_a_queued_job_at_once_and_retry_it(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    engine = make_engine(max_jobs=1, max_uploads=1)
    jobs = engine.submit_paths(videos[:3], prompt="P", priority="low")
    last = jobs[-1]

    cancelled = engine.cancel(last.id)

    assert cancelled.state is State.CANCELLED
    assert emulator.uploads_of(last.display_name) == 0
    engine.retry(last.id)
    done = engine.wait([j.id for j in jobs], timeout=60)
    assert [j.state for j in done] == [State.COMPLETED] * 3


def test_cancel_while_processing_stops_at_the_next_step(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 3
    engine = make_engine()
    [job] = engine.submit_paths([videos[0]], prompt="P")
    _wait_for(engine, job.id, State.FILE_PROCESSING)

    engine.cancel(job.id)

    [job] = engine.wait([job.id], timeout=10)
    assert job.state is State.CANCELLED
    assert not emulator.stats.generates


def test_retry_after_a_failed_analysis_reuses_the_active_file(make_engine, emulator, videos):
    emulator.config.rate_503 = 1.0
    emulator.config.fault_on = {"generate"}
    engine = make_engine(analysis_budget_s=1.5)
    [job] = run_all(engine, [videos[0]])
    assert job.state is State.FAILED and job.error_code == "gemini_503" and job.failed_step == "analysis"
    assert "Retry later" in job.error_message

    emulator.config.rate_503 = 0.0
    engine.retry(job.id)

    [job] = engine.wait([job.id], timeout=30)
    assert job.state is State.COMPLETED
    assert emulator.uploads_of(videos[0].name) == 1


def test_a_file_that_vanished_before_analysis_is_uploaded_again(make_engine, emulator, videos):
    emulator.config.analysis_delay_s = 0.0
    emulator.config.hang_generate_s = 0.0
    engine = make_engine()
    [job] = run_all(engine, [videos[0]])
    emulator.expire(videos[0].name)

    [again] = run_all(engine, [videos[0]], prompt="A different question")

    assert again.state is State.COMPLETED
    assert emulator.uploads_of(videos[0].name) == 2


def test_a_hanging_analysis_ends_at_the_step_budget(make_engine, emulator, videos):
    emulator.config.hang_generate_s = 30
    engine = make_engine(analysis_budget_s=1.0)

    [job] = run_all(engine, [videos[0]], timeout=30)

    assert job.state is State.FAILED and job.error_code == "network"
    assert "during analysis" in job.error_message


def test_blocked_and_empty_answers_fail_with_the_reason(make_engine, emulator, one_video):
    engine = make_engine()

    jobs = {j.display_name: j for j in run_all(engine, [one_video("a-BLOCKME.mp4", 1), one_video("b-EMPTYME.mp4", 2)])}

    assert jobs["a-BLOCKME.mp4"].state is State.FAILED
    assert "(SAFETY)" in jobs["a-BLOCKME.mp4"].error_message
    assert jobs["b-EMPTYME.mp4"].error_code == "empty_answer"


def test_priorities_run_high_before_low(make_engine, emulator, videos):
    engine = make_engine(max_jobs=1, max_uploads=1)
    low = engine.submit_paths(videos[:3], prompt="P", priority="low")
    high = engine.submit_paths(videos[3:5], prompt="P", priority="high")

    done = engine.wait([j.id for j in low + high], timeout=60)

    by_id = {j.id: j for j in done}
    first_low_upload = min(by_id[j.id].state_entered_at["UPLOADING"] for j in low[1:])
    assert all(by_id[j.id].state_entered_at["UPLOADING"] < first_low_upload for j in high)


def test_the_api_key_is_never_written_to_logs_or_the_store(make_engine, emulator, videos, tmp_path):
    emulator.config.rate_503 = 0.3
    engine = make_engine(api_key="sk-very-secret-key-4711")
    run_all(engine, videos[:3])
    engine.shutdown()

    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert b"sk-very-secret-key-4711" not in path.read_bytes(), path


def _wait_for(engine, job_id: str, state: State, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while engine.store.require(job_id).state is not state:
        assert time.monotonic() < deadline, f"job never reached {state}"
        time.sleep(0.05)


def test_two_engines_on_one_data_dir_never_work_the_same_job(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    first = make_engine()
    jobs = first.submit_paths(videos[:6], prompt="P")
    second = make_engine()  # e.g. the app's engine rebuilt by "Clear cache", over the same jobs

    done = second.wait([j.id for j in jobs], timeout=60)

    assert [j.state for j in done] == [State.COMPLETED] * 6
    assert all(emulator.uploads_of(p.name) == 1 for p in videos[:6])
    assert all(emulator.stats.generates[p.name] == 1 for p in videos[:6])


def test_a_second_engine_takes_over_when_the_first_stops(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 2.0
    first = make_engine()
    jobs = first.submit_paths(videos[:3], prompt="P")
    _wait_for(first, jobs[-1].id, State.FILE_PROCESSING)
    first.shutdown()  # leaves FILE_PROCESSING jobs and releases their leases

    second = make_engine()
    done = second.wait([j.id for j in jobs], timeout=60)

    assert [j.state for j in done] == [State.COMPLETED] * 3
    assert all(emulator.uploads_of(p.name) == 1 for p in videos[:3])


def test_an_upload_that_loses_the_race_for_its_name_adopts_the_finished_file(emulator, videos):
    from storyteller_core.gemini import Gateway, file_name_for
    from storyteller_core.media import hash_file

    sha, _ = hash_file(videos[0])
    gateway = Gateway("k", emulator.base_url, 10)
    emulator.config.chunk_delay_s = 0.5
    results = []
    threads = [threading.Thread(target=lambda: results.append(gateway.upload(
        videos[0], name=file_name_for(sha), display_name=videos[0].name, mime_type="video/mp4",
        on_progress=lambda _: None))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 2 and results[0].name == results[1].name
    assert emulator.uploads_of(videos[0].name) == 1  # one file; the loser was answered 409 and got it


def test_everything_in_the_data_dir_is_private_to_its_owner(tmp_path, emulator, videos):
    settings = fast_settings(tmp_path / "parent" / "data", emulator)
    engine = Engine(settings, stderr_log_level=logging.CRITICAL + 1).start()
    engine.submit_paths(videos[:2], prompt="P")
    engine.wait(engine.store.job_ids(), timeout=30)
    engine.shutdown()

    entries = [settings.data_dir, *settings.data_dir.rglob("*")]
    assert len(entries) > 5
    loose = {str(p): oct(p.stat().st_mode & 0o777) for p in entries if p.stat().st_mode & 0o077}
    assert loose == {}
