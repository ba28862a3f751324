"""The Batch tier: analyses asked through Gemini's Batch API (real SDK, emulator over loopback).

One job for several analyses, stories and cost at the batch price; a CLI
SIGKILLed while it waits resumes on the same job; a job that fails, expires or
is lost says what happened and what to do; cancelling leaves (and, for the
last one, cancels) the job.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from storyteller_core.errors import Code
from storyteller_core.intake.candidates import inspect_path
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Item
from storyteller_core.records.video import Video, VideoState
from storyteller_core.settings import EXPECTED_OUTPUT_TOKENS, cost_usd, estimate_cost, estimate_tokens
from storyteller_core.views.board import Status

from .helpers import (
    ROOT,
    analyses_in,
    ask,
    cli_env,
    read_csv,
    run_all,
    store_when_ready,
    wait_until,
)

FAST_LOOKS = {"batch_poll_initial_s": 0.2, "batch_poll_max_s": 0.5}


def jobs_created(emulator) -> int:  # type: ignore[no-untyped-def]
    return sum(emulator.stats.batches_created.values())


def in_a_job(engine, items) -> bool:  # type: ignore[no-untyped-def]
    analyses = engine.store.many(Analysis, {i.analysis_id for i in items})
    return bool(analyses) and all(a.batch_job for a in analyses)


def test_batch_tier_sends_one_job_for_several_videos_and_stores_stories_at_the_batch_price(make_engine, videos, emulator):
    engine = make_engine(**FAST_LOOKS)
    model = engine.settings.model

    rows = run_all(engine, videos[:4], tier="batch")

    assert [r.status for r in rows] == [Status.DONE] * 4, [r.error for r in rows]
    assert jobs_created(emulator) == 1
    calls = [w.method for w in emulator.stats.wire]
    assert calls.count("batch") == 4 and "generate" not in calls and "stream" not in calls
    [job] = emulator.batches.values()
    assert len(job.items) == 4 and all("response" in i for i in job.items)
    analyses = [r.analysis for r in rows if r.analysis]
    assert {a.batch_job for a in analyses} == {job.name}  # kept on the record: where the story came from
    for row in rows:
        a = row.analysis
        assert a and a.story and a.tier == "batch" and a.prompt_tokens and a.output_tokens
        full = cost_usd(model, a.prompt_tokens, a.output_tokens)
        assert full and a.cost_usd == pytest.approx(full * 0.5)
        standard_estimate = estimate_cost(model, row.video.duration_s if row.video else None, a.prompt)
        assert standard_estimate and a.estimated_cost_usd == pytest.approx(standard_estimate * 0.5)
    estimated = sum(a.estimated_cost_usd or 0 for a in analyses)
    actual = sum(a.cost_usd or 0 for a in analyses)
    assert estimated > 0 and actual > 0
    guessed_input = sum(
        estimate_tokens(r.video.duration_s if r.video else None, r.analysis.prompt) - EXPECTED_OUTPUT_TOKENS for r in rows if r.analysis
    )
    print(
        f"\nbatch tier, {len(analyses)} videos, {model}: estimate ${estimated:.6f}, actual ${actual:.6f} "
        f"(standard would be ${actual * 2:.6f}); input tokens estimated {guessed_input}, "
        f"actual {sum(a.prompt_tokens or 0 for a in analyses)}; output tokens estimated "
        f"{EXPECTED_OUTPUT_TOKENS * len(analyses)}, actual {sum(a.output_tokens or 0 for a in analyses)}; "
        f"one job, {emulator.stats.batch_polls[job.name]} batches.get"
    )


def test_the_estimate_before_start_is_halved_on_the_batch_tier():
    for model in ("gemini-3.8-flash", "gemini-3.1-pro-preview"):
        standard = estimate_cost(model, 60.0, "Tell the story")
        assert standard and estimate_cost(model, 60.0, "Tell the story", tier="batch") == pytest.approx(standard / 2)
    unknown = estimate_cost("gemini-99-unknown", 60.0, "x")  # not in the table: estimated from its family, never blank
    assert unknown and estimate_cost("gemini-99-unknown", 60.0, "x", tier="batch") == pytest.approx(unknown / 2)


@pytest.mark.slow
def test_an_analysis_waits_for_the_others_of_its_model_so_they_share_one_job(make_engine, videos, emulator):
    slow = videos[2].name
    emulator.config.processing_delay_s = lambda name: 2.0 if name == slow else 0.2
    engine = make_engine(**FAST_LOOKS)

    rows = run_all(engine, videos[:3], tier="batch")

    assert [r.status for r in rows] == [Status.DONE] * 3
    assert jobs_created(emulator) == 1 and len(next(iter(emulator.batches.values())).items) == 3


@pytest.mark.parametrize(
    ("marker", "code", "words"),
    [
        ("FAILBATCH", Code.BATCH_FAILED, "failed as a whole"),
        pytest.param("EXPIREBATCH", Code.BATCH_EXPIRED, "did not run it within 48 hours", marks=pytest.mark.slow),
    ],
)
def test_a_failed_or_expired_job_fails_its_analyses_with_what_to_do(make_engine, videos, emulator, marker, code, words):
    engine = make_engine(**FAST_LOOKS)
    prompt = f"Tell the story ({marker})"

    rows = run_all(engine, videos[:2], prompt=prompt, tier="batch")

    assert [r.status for r in rows] == [Status.FAILED] * 2
    assert jobs_created(emulator) == 1
    [job] = emulator.batches
    for row in rows:
        assert row.analysis and row.analysis.error_code == code
        assert row.error and words in row.error and job in row.error
        assert "Press Retry to send it in a new batch job" in row.error and "standard tier" in row.error
        assert row.analysis.batch_job is None and row.analysis.cost_usd is None

    # what the message says works: the same question on the standard tier is answered in seconds
    again = run_all(engine, videos[:2], prompt=prompt, tier="standard", resume=True)
    assert [r.status for r in again] == [Status.DONE] * 2
    assert {r.item.id for r in again} == {r.item.id for r in rows}  # the same rows, not new ones
    assert jobs_created(emulator) == 1 and all(r.analysis and r.analysis.tier == "standard" for r in again)


@pytest.mark.slow
def test_a_request_that_fails_inside_a_job_says_why_and_a_vanished_file_is_sent_again(make_engine, videos, one_video, emulator):
    vanishing = one_video("VANISHME.mp4", seed=5)
    engine = make_engine(**FAST_LOOKS)

    rows = run_all(engine, [videos[0], vanishing], tier="batch")

    assert [r.status for r in rows] == [Status.DONE] * 2, [r.error for r in rows]
    assert emulator.uploads_of("VANISHME.mp4") == 2  # gone before the job ran: uploaded again, asked in a second job
    assert jobs_created(emulator) == 2


@pytest.mark.slow
def test_structured_stories_of_web_videos_in_one_job_and_a_refused_request_says_why(make_engine, emulator):
    from storyteller_core.intake.candidates import inspect_url
    from storyteller_core.settings import PROMPT_PRESETS

    emulator.config.private_youtube_ids = {"aaaaaaaaaaa"}
    engine = make_engine(**FAST_LOOKS)
    links = ["https://youtu.be/dQw4w9WgXcQ", "https://www.youtube.com/watch?v=aaaaaaaaaaa"]
    items = engine.commands.submit([inspect_url(u) for u in links], ask(engine, PROMPT_PRESETS["Story"], preset="Story", tier="batch"))

    public, private = engine.wait([i.id for i in items], timeout=60)

    assert public.status is Status.DONE and public.analysis and public.analysis.structured
    assert public.analysis.structured.get("key_moments") and public.story
    assert private.status is Status.FAILED and private.error
    assert "Gemini could not answer this question about" in private.error and "in its batch job batches/" in private.error
    assert "invalid argument" in private.error  # Gemini's reason, as it gave it
    assert "standard tier" in private.error
    assert jobs_created(emulator) == 1 and emulator.stats.uploads_started == 0
    assert [w.schema_field for w in emulator.stats.wire if w.method == "batch"] == ["responseJsonSchema"]  # the public one
    assert len(next(iter(emulator.batches.values())).items) == 2


@pytest.mark.slow
def test_asking_a_finished_batch_again_on_the_batch_tier_is_one_job_and_no_upload(make_engine, emulator, videos):
    engine = make_engine(**FAST_LOOKS)
    first = run_all(engine, videos[:4])
    assert [r.status for r in first] == [Status.DONE] * 4 and jobs_created(emulator) == 0

    again = engine.commands.analyze_again([r.item.id for r in first], ask(engine, "List the people", tier="batch"))
    rows = engine.wait([i.id for i in again], timeout=60)

    assert [r.status for r in rows] == [Status.DONE] * 4, [r.error for r in rows]
    assert jobs_created(emulator) == 1 and len(next(iter(emulator.batches.values())).items) == 4
    assert emulator.stats.uploads_started == 4  # the files of the first run, reused


@pytest.mark.slow
def test_two_engines_on_one_data_dir_put_each_question_in_exactly_one_job(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 0.5
    first = make_engine(**FAST_LOOKS)
    items = first.commands.submit_paths(videos[:6], ask(first, tier="batch"))
    second = make_engine(**FAST_LOOKS)  # the app's engine next to a CLI run, over the same rows

    rows = second.wait([i.id for i in items], timeout=60)

    assert [r.status for r in rows] == [Status.DONE] * 6, [r.error for r in rows]
    assert all(emulator.uploads_of(p.name) == 1 for p in videos[:6])
    assert all(emulator.stats.generates[p.name] == 1 for p in videos[:6])  # each question asked once, in one job
    assert sum(len(job.items) for job in emulator.batches.values()) == 6
    print(
        f"\ntwo engines, 6 batch-tier questions: {jobs_created(emulator)} job(s) of "
        f"{sorted(len(job.items) for job in emulator.batches.values())} requests"
    )


def test_cancelling_leaves_the_job_and_the_last_one_cancels_it(make_engine, videos, emulator):
    emulator.config.batch_running_s = 60.0
    engine = make_engine(**FAST_LOOKS)
    items = engine.commands.submit_paths(videos[:2], ask(engine, tier="batch"))
    wait_until(lambda: in_a_job(engine, items), timeout=30, what="the batch job")
    [job] = emulator.batches.values()

    engine.commands.cancel(items[0].id)
    wait_until(
        lambda: engine.store.require(Analysis, items[0].analysis_id or "").state is AnalysisState.CANCELLED,
        timeout=20,
        what="the first cancel",
    )
    assert job.cancelled_at is None  # the other analysis still waits for it
    engine.commands.cancel(items[1].id)
    wait_until(lambda: job.cancelled_at is not None, timeout=20, what="the job's cancel at Gemini")

    rows = engine.wait([i.id for i in items], timeout=10)
    assert [r.status for r in rows] == [Status.CANCELLED] * 2
    assert all(r.analysis and r.analysis.state is AnalysisState.CANCELLED and not r.analysis.batch_job for r in rows)
    assert jobs_created(emulator) == 1


def test_a_job_whose_name_was_never_stored_is_found_by_its_token_not_created_again(make_engine, videos, emulator, tmp_path):
    """What a kill between creating the job and storing its name leaves: the token is on the analyses, the job at Gemini."""
    emulator.config.batch_running_s = 3.0
    first = make_engine(**FAST_LOOKS)
    items = first.commands.submit_paths(videos[:3], ask(first, tier="batch"))
    wait_until(lambda: in_a_job(first, items), timeout=30, what="the batch job")
    first.shutdown(timeout=5)
    [job] = emulator.batches.values()
    for analysis in first.store.many(Analysis, {i.analysis_id for i in items}):
        assert analysis.batch_token and analysis.batch_token in job.display_name
        first.store.update(Analysis, analysis.id, batch_job=None)  # as if killed before the name was written

    second = make_engine(**FAST_LOOKS)
    rows = second.wait([i.id for i in items], timeout=60)

    assert [r.status for r in rows] == [Status.DONE] * 3, [r.error for r in rows]
    assert jobs_created(emulator) == 1
    assert {r.analysis.batch_job for r in rows if r.analysis} == {job.name}


def test_a_submission_resumed_after_its_files_expired_sends_no_expired_file(make_engine, videos, emulator):
    """A kill between writing the token and creating the job, then a stop longer than a file's life: no job exists,
    and one member's file has expired. It is uploaded again and asked in a later job, never sent expired."""
    emulator.config.batch_running_s = 1.0
    first = make_engine(**FAST_LOOKS)
    items = first.commands.submit_paths(videos[:3], ask(first, tier="batch"))
    wait_until(lambda: in_a_job(first, items), timeout=30, what="the batch job")
    first.shutdown(timeout=5)
    emulator.batches.clear()  # as if the job was never created
    for analysis in first.store.many(Analysis, {i.analysis_id for i in items}):
        first.store.update(Analysis, analysis.id, batch_job=None)
    expired = first.store.require(Video, items[0].video_id)
    first.store.update(Video, expired.id, gemini_expires_at=time.time() - 10)
    emulator.expire(expired.display_name)

    second = make_engine(**FAST_LOOKS)
    rows = second.wait([i.id for i in items], timeout=90)

    assert [r.status for r in rows] == [Status.DONE] * 3, [r.error for r in rows]
    assert emulator.uploads_of(expired.display_name) == 2
    sent = [item for job in emulator.batches.values() for item in job.items]
    assert len(sent) == 3 and not [item for item in sent if "error" in item]  # no request for a file that is gone


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_while_waiting_on_the_batch_job_then_restart_finishes_on_the_same_job(tmp_path, videos, emulator):
    emulator.config.batch_running_s = 8.0  # the job runs while the CLI is killed and started again
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, emulator.base_url)
    batch = videos[:3]
    out = tmp_path / "out.csv"
    args = [sys.executable, "-m", "storyteller_core", "process", *map(str, batch), "--tier", "batch", "--csv", str(out)]

    first = subprocess.Popen(args, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = store_when_ready(data_dir / "store", first)
    wait_until(
        lambda: len(analyses_in(store)) == 3 and all(a.batch_job for a in analyses_in(store)),
        first,
        timeout=90,
        what="the batch job's name in the store",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    [job] = emulator.batches.values()
    assert {a.batch_job for a in analyses_in(store)} == {job.name}
    assert emulator.batches[job.name].state(emulator.config) != "BATCH_STATE_SUCCEEDED"  # killed while it waited
    polls_before = emulator.stats.batch_polls[job.name]

    started = time.monotonic()
    second = subprocess.Popen(
        args, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_until(
        lambda: emulator.stats.batch_polls[job.name] > polls_before,
        second,
        timeout=60,
        what="the restarted CLI's first look at the same job",
    )
    resumed_s = time.monotonic() - started
    output, _ = second.communicate(timeout=180)
    finished_s = time.monotonic() - started

    assert second.returncode == 0, output
    assert "Batch tier: about half price" in output and "3 of 3 video(s) done." in output, output
    assert jobs_created(emulator) == 1  # never submitted twice
    assert {p.name: emulator.uploads_of(p.name) for p in batch} == {p.name: 1 for p in batch}
    rows = read_csv(out)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"Done"}
    assert {a.batch_job for a in analyses_in(store)} == {job.name}
    assert all(a.state is AnalysisState.COMPLETED and a.cost_usd for a in analyses_in(store))
    print(
        f"\nSIGKILL while waiting on {job.name}: the restarted CLI looked at the same job after {resumed_s:.1f} s "
        f"and finished after {finished_s:.1f} s; 1 job created, each video uploaded once"
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_analyst_picks_the_batch_tier_on_the_page_and_sees_half_the_estimate(tmp_path, monkeypatch, emulator, videos):
    from streamlit.testing.v1 import AppTest

    from storyteller_core.storage.disk_store import DiskStore
    from storyteller_core.views.board import batch_rows

    from .helpers import TEST_KEY

    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GEMINI_API_KEY", TEST_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.chdir(ROOT)
    folder = tmp_path / "folder"
    folder.mkdir()
    for p in videos[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    at = AppTest.from_file(str(ROOT / "ui.py"), default_timeout=60).run()
    next(t for t in at.text_input if t.label.startswith("Path to a video file")).input(str(folder))
    next(b for b in at.button if b.label == "Add from path").click().run()

    def estimate() -> float:
        [line] = [c.value for c in at.caption if "Estimated cost for the batch" in c.value]
        return float(line.split("$", 1)[1].split()[0].rstrip(")"))

    standard = estimate()
    price = next(r for r in at.radio if r.label == "Price")
    assert "Batch (about half price, results within hours)" in price.options
    price.set_value("batch").run()
    assert estimate() == pytest.approx(standard / 2, abs=1e-4)
    next(b for b in at.button if b.label.startswith("Start batch")).click().run()

    store = DiskStore(tmp_path / "data" / "store")
    wait_until(
        lambda: len(batch_rows(store)) == 3 and all(r.ended for r in batch_rows(store)), timeout=120, what="the batch-tier rows to end"
    )
    rows = batch_rows(store)
    assert {r.status for r in rows} == {Status.DONE}
    assert all(r.analysis and r.analysis.tier == "batch" for r in rows) and jobs_created(emulator) == 1


def test_a_question_cancelled_then_asked_again_at_once_stays_wanted(make_engine, videos, emulator):
    emulator.config.batch_running_s = 3.0
    engine = make_engine(**FAST_LOOKS)
    question = ask(engine, tier="batch")
    items = engine.commands.submit_paths(videos[:1], question)
    wait_until(lambda: in_a_job(engine, items), timeout=30, what="the batch job")
    # What Cancel leaves when another engine (or a look at the job) holds the task: a request, acted on later.
    engine.store.update(Item, items[0].id, cancelled=True)
    engine.store.update(Analysis, items[0].analysis_id, cancel_requested=True)

    again = engine.commands.submit([inspect_path(videos[0], engine.settings)], question)  # asked again at once

    [row] = engine.wait([i.id for i in again], timeout=40)
    assert row.status is Status.DONE and jobs_created(emulator) == 1


def test_asking_again_on_the_standard_tier_after_a_job_member_failed_uploads_and_answers(make_engine, videos, emulator):
    emulator.config.batch_running_s = 60.0
    first = make_engine(**FAST_LOOKS)
    items = first.commands.submit_paths(videos[:1], ask(first, tier="batch"))
    wait_until(lambda: in_a_job(first, items), timeout=30, what="the batch job")
    first.shutdown(timeout=5)
    analysis_id, video_id = items[0].analysis_id, items[0].video_id
    # The member failed with its video while it waited on its job (its job's name stays on it), and the file expired.
    first.store.transition(Video, video_id, VideoState.FAILED, error_code="not_found", error_message="gone")
    first.store.transition(Analysis, analysis_id, AnalysisState.FAILED, error_code="not_found", error_message="gone")
    emulator.files.clear()
    second = make_engine(**FAST_LOOKS)

    again = second.commands.submit([inspect_path(videos[0], second.settings)], ask(second, tier="standard"))

    [row] = second.wait([i.id for i in again], timeout=60)
    assert row.status is Status.DONE and row.analysis.tier == "standard" and row.analysis.batch_job is None
    assert emulator.uploads_of(videos[0].name) == 2  # uploaded again for the standard call
