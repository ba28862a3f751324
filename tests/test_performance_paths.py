"""The paths that make waiting cheap: status checks in bulk, waits in timers, lanes with a look-ahead, batched reads.

Behaviour, not timing: calls counted by the emulator, tasks counted by the
scheduler, records compared. The figures are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import time

from storyteller_core.gemini.gateway import Gateway
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.video import Video, VideoState
from storyteller_core.storage.disk_store import DiskStore
from storyteller_core.views.board import Status, batch_rows, with_videos
from storyteller_core.work.poll_limits import PollLimits
from storyteller_core.work.scheduler import Scheduler

from .helpers import TEST_KEY, ask, make_analysis, make_video, run_all, wait_until


def processing_everywhere(engine, items) -> bool:
    videos = engine.store.many(Video, {i.video_id for i in items})
    return all(v.state is VideoState.FILE_PROCESSING for v in videos)


# -- status checks in bulk ---------------------------------------------------------------------------
def test_many_processing_files_are_learnt_from_files_list_pages(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 2.0
    engine = make_engine(poll_initial_s=0.25, poll_max_s=2.0)

    rows = run_all(engine, videos[:8])

    assert [r.status for r in rows] == [Status.DONE] * 8
    assert emulator.stats.lists >= 1
    # per file on its own backoff this costs 8 x ~5 files.get; one page answers for all eight
    assert emulator.stats.status_calls <= 20, (emulator.stats.lists, dict(emulator.stats.polls))
    assert all(r.video.poll_attempts >= 1 for r in rows)  # each file's looks are still counted on its record


def test_one_processing_file_is_asked_with_files_get(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.0
    engine = make_engine(poll_initial_s=0.2, poll_max_s=1.0)

    [row] = run_all(engine, videos[:1])

    assert row.status is Status.DONE
    assert emulator.stats.lists == 0 and sum(emulator.stats.polls.values()) >= 1


def test_files_list_pages_carry_states_and_a_next_page_token(emulator, one_video):
    gateway = Gateway(TEST_KEY, emulator.base_url, 10)
    for i in range(5):
        gateway.upload(
            one_video(f"page-{i}.mp4", seed=i),
            name=f"page-{i}",
            display_name=f"page-{i}.mp4",
            mime_type="video/mp4",
            on_progress=lambda _: None,
        )

    seen, token, pages = [], None, 0
    while True:
        files, token = gateway.list_files(page_size=2, page_token=token)
        seen += files
        pages += 1
        if not token:
            break

    assert pages == 3 and emulator.stats.lists == 3
    assert sorted(f.name for f in seen) == [f"files/page-{i}" for i in range(5)]
    assert {f.state for f in seen} <= {"PROCESSING", "ACTIVE"}


def test_a_file_gone_while_processing_is_uploaded_again(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 1.5
    engine = make_engine(poll_initial_s=0.2, poll_max_s=1.0)
    items = engine.commands.submit_paths(videos[:3], ask(engine, "P"))
    wait_until(lambda: processing_everywhere(engine, items), what="processing")

    emulator.expire(items[0].display_name)  # no longer listed, and files.get says 403

    rows = engine.wait([i.id for i in items], timeout=60)
    assert [r.status for r in rows] == [Status.DONE] * 3
    assert emulator.uploads_of(items[0].display_name) == 2


def test_a_key_refused_while_files_process_fails_them_with_one_message(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 30.0
    engine = make_engine(poll_initial_s=0.2, poll_max_s=1.0, processing_budget_s=60)
    items = engine.commands.submit_paths(videos[:3], ask(engine, "P"))
    wait_until(lambda: processing_everywhere(engine, items), what="processing")
    emulator.config.rejected_keys = {TEST_KEY}

    rows = engine.wait([i.id for i in items], timeout=30)

    assert {r.status for r in rows} == {Status.FAILED}
    assert len({r.error for r in rows}) == 1 and "key" in rows[0].error.lower()


# -- waiting costs nothing ---------------------------------------------------------------------------
def test_videos_waiting_on_processing_take_no_worker_steps(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 6.0
    engine = make_engine(poll_initial_s=0.2, poll_max_s=1.0)
    items = engine.commands.submit_paths(videos[:6], ask(engine, "P"))
    wait_until(lambda: processing_everywhere(engine, items), what="processing")
    time.sleep(0.3)  # the last processing step has returned its worker
    taken = engine.scheduler.stats.taken
    reads_before = emulator.stats.status_calls

    time.sleep(1.5)

    assert engine.scheduler.stats.taken == taken  # nobody woke a video to ask after its file
    assert engine.scheduler.waiting() == 6 and engine.watch.watching() == 6
    assert emulator.stats.status_calls > reads_before  # the watch kept looking meanwhile
    rows = engine.wait([i.id for i in items], timeout=60)
    assert [r.status for r in rows] == [Status.DONE] * 6


def test_per_file_polls_wake_once_per_reserved_rate_slot(make_engine, emulator, videos):
    emulator.config.processing_delay_s = 4.0
    engine = make_engine(start=False, poll_initial_s=0.2, poll_max_s=0.5, polls_per_second=3)
    engine.runner.watch = None  # the per-file fallback: each video asks files.get for itself
    engine.start()
    items = engine.commands.submit_paths(videos[:8], ask(engine, "P"))
    wait_until(lambda: processing_everywhere(engine, items), what="processing")
    taken, polls = engine.scheduler.stats.taken, sum(emulator.stats.polls.values())

    time.sleep(2.0)

    taken, polls = engine.scheduler.stats.taken - taken, sum(emulator.stats.polls.values()) - polls
    assert polls <= 3 * 2.0 + 2  # the 3/s cap holds
    # without reservations all eight woke at every free slot and seven went back: ~8 takes per poll
    assert taken <= 2 * polls + 8, (taken, polls)
    rows = engine.wait([i.id for i in items], timeout=60)
    assert [r.status for r in rows] == [Status.DONE] * 8


def test_a_scheduler_full_of_waiting_tasks_does_not_spin():
    scheduler = Scheduler(max_uploads=2, max_work=3)
    for i in range(1000):
        scheduler.put(f"video:{i}", 1, delay=60)
    wakeups = scheduler.stats.wakeups

    assert scheduler.take(timeout=1.0) is None

    assert scheduler.stats.wakeups - wakeups <= 2  # one wait to the timeout, not a loop over the entries
    assert scheduler.waiting() == 1000


def test_a_wake_makes_a_waiting_task_due_and_is_kept_for_a_running_one():
    scheduler = Scheduler(max_uploads=2)
    scheduler.put("video:a", 1, delay=600)
    assert scheduler.take(timeout=0.05) is None

    assert scheduler.wake("video:a")
    entry = scheduler.take(timeout=1.0)
    assert entry is not None and entry.task == "video:a"

    assert not scheduler.wake("video:a")  # it is running: the wake waits for it to be put back
    scheduler.done("video:a")
    scheduler.put("video:a", 1, delay=600)
    assert scheduler.take(timeout=1.0) is not None  # due at once, not in ten minutes


def test_rate_slots_are_reserved_in_turn():
    limits = PollLimits(max_at_once=10, per_second=10)
    waits = []
    for key in "abcd":
        with limits.slot(key) as slot:
            waits.append(0.0 if slot.ok else slot.wait_s)

    assert waits[0] == 0.0 and 0.05 < waits[1] < waits[2] < waits[3] <= 0.35  # each its own slot, 0.1 s apart
    with limits.slot("b") as slot:
        assert not slot.ok  # its time has not come yet
    time.sleep(waits[1] + 0.01)
    with limits.slot("b") as slot:
        assert slot.ok  # the reserved slot is b's; nobody else took it


# -- lanes, look-ahead and priorities ----------------------------------------------------------------
def test_uploads_never_take_the_workers_analyses_need():
    scheduler = Scheduler(max_uploads=2, max_work=1)
    for i in range(3):
        scheduler.put(f"video:up{i}", 1, uploads=True)
    scheduler.put("analysis:x", 1)

    taken = {scheduler.take(timeout=0.1).task for _ in range(3)}

    assert taken == {"video:up0", "video:up1", "analysis:x"}  # two uploads and the analysis run together
    assert scheduler.take(timeout=0.05) is None  # the third upload waits for an upload slot


def test_uploads_wait_for_room_in_the_look_ahead_but_high_priority_does_not():
    scheduler = Scheduler(max_uploads=2, max_work=1, look_ahead=2)

    def run(task: str, seconds: float = 0.0) -> None:
        assert scheduler.take(timeout=0.5).task == task
        time.sleep(seconds)
        scheduler.done(task)

    assert scheduler.window() is None  # nothing processed and analyzed yet: uploads are not held back
    scheduler.put("video:p0", 1, delay=600)  # one file: processed in no time, then analyzed in 1 s
    scheduler.wake("video:p0")
    run("video:p0")
    scheduler.put("analysis:a0", 1)
    run("analysis:a0")  # parks behind its video
    scheduler.put("analysis:a0", 1)
    run("analysis:a0", 1.0)
    assert scheduler.window() == 2  # the worker needs only a file or two ahead of it

    for name in ("p1", "p2"):  # two files processing: their videos wait for the status watch
        scheduler.put(f"video:{name}", 1, delay=600)
    scheduler.put("video:normal", 1, uploads=True)
    scheduler.put("video:low", 2, uploads=True)
    assert scheduler.take(timeout=0.05) is None  # two files ahead already: no more uploads

    scheduler.put("video:urgent", 0, uploads=True)
    run("video:urgent")  # high priority does not wait
    scheduler.wake("video:p1")  # its file is ACTIVE: it leaves the look-ahead once run
    run("video:p1")
    run("video:normal")  # then priority order again: normal before low


def test_priorities_hold_across_lanes(make_engine, emulator, videos):
    # Uploads go in priority order (test_pipeline.py). Here the analysis lane: with every file already ACTIVE and
    # every question asked before the one worker starts, it takes each high question before any low one, whatever
    # the order they were asked in. (Asserting completion order while files were still processing raced the
    # notice of each file's ACTIVE state on a busy machine: a worker never idles waiting for a high file.)
    first = make_engine(max_workers=1, max_uploads=1)
    run_all(first, videos[:5], prompt="first question")
    first.shutdown(timeout=5)
    engine = make_engine(max_workers=1, max_uploads=1, start=False)  # the same data dir
    low = engine.commands.submit_paths(videos[:3], ask(engine, "P", priority="low"))
    high = engine.commands.submit_paths(videos[3:5], ask(engine, "P", priority="high"))
    engine.start()

    rows = engine.wait([i.id for i in low + high], timeout=60)

    assert [r.status for r in rows] == [Status.DONE] * 5
    started = {r.item.id: r.analysis.state_entered_at["ANALYZING"] for r in rows}
    assert max(started[i.id] for i in high) < min(started[i.id] for i in low)
    assert sum(emulator.stats.uploads_finished.values()) == 5  # the second questions used the ACTIVE files


# -- batched reads -------------------------------------------------------------------------------
def test_batched_reads_match_single_reads_and_see_every_change(make_engine, videos):
    engine = make_engine(start=False)
    store = engine.store
    items = engine.commands.submit_paths(videos[:4], ask(engine, "P"))
    ids = [i.id for i in items]

    assert [i.id for i in store.many(Item, [ids[2], ids[0], "missing", ids[2]])] == [ids[2], ids[0], ids[2]]
    assert store.many(Item, ids) == [store.get(Item, i) for i in ids]

    big = "A long story. " * 5000  # ~70 KB: diskcache keeps it in a file, not in the row
    analysis_id = items[0].analysis_id
    first = store.by_id(Analysis, [analysis_id])[analysis_id]
    store.transition(Analysis, analysis_id, AnalysisState.ANALYZING)
    store.transition(Analysis, analysis_id, AnalysisState.COMPLETED, story=big)
    now = store.by_id(Analysis, [analysis_id])[analysis_id]

    assert first.state is AnalysisState.WAITING  # what was read stays as it was read
    assert now.state is AnalysisState.COMPLETED and now.story == big
    assert store.by_id(Analysis, [analysis_id])[analysis_id] is now  # unchanged since: not decoded again
    assert store.get(Analysis, analysis_id) is not now  # get (read-modify-write) never shares a record


def test_board_rows_are_the_same_read_in_bulk(make_engine, emulator, videos):
    engine = make_engine()
    rows = run_all(engine, videos[:3])
    items = engine.store.many(Item, [r.item.id for r in rows])

    again = engine.rows(items)

    assert [(r.item.id, r.status, r.analysis.id, r.video.id) for r in again] == [
        (r.item.id, r.status, r.analysis.id, r.video.id) for r in rows
    ]


def test_the_board_reads_videos_only_for_rows_whose_status_needs_them(tmp_path):
    store = DiskStore(tmp_path / "store")
    store.add_batch(Batch(id="b", name="b"))
    cases = {  # name: (video state and its error, analysis state)
        "done": (VideoState.FILE_ACTIVE, None, AnalysisState.COMPLETED),
        "processing": (VideoState.FILE_PROCESSING, None, AnalysisState.WAITING),
        "failed": (VideoState.FAILED, "Gemini could not process the file.", AnalysisState.FAILED),
    }
    for n, (name, (video_state, error, analysis_state)) in enumerate(cases.items()):
        video = make_video(
            id=f"{n}" * 64, sha256=f"{n}" * 64, display_name=f"{name}.mp4", state=video_state, error_message=error, progress=50
        )
        analysis = make_analysis(video.id, state=analysis_state, story="A story." if name == "done" else None)
        store.put(video)
        store.put(analysis)
        store.add_item(
            Item(
                id=name,
                batch_id="b",
                display_name=video.display_name,
                source_path=video.sources[0],
                video_id=video.id,
                analysis_id=analysis.id,
            )
        )

    full = batch_rows(store, "b")
    light = batch_rows(store, "b", videos_of_done=False)

    assert [r.video is None for r in light] == [True, False, False]  # only the finished story's video is skipped
    assert [(r.status, r.label, r.progress, r.error) for r in light] == [(r.status, r.label, r.progress, r.error) for r in full]
    assert light[2].error == "Gemini could not process the file."  # a failed row still says why, from its video
    assert with_videos(store, light) == full


def test_the_status_watch_thread_stops_with_the_engine(make_engine):
    engine = make_engine()
    assert engine.watch.alive
    engine.shutdown(timeout=5)
    assert not engine.watch.alive
