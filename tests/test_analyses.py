"""One video, many analyses: reuse by key, coalescing, analyze again, content checks, the spool, migration."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time

import diskcache
import pytest

from storyteller_core.gemini.gateway import file_name_for
from storyteller_core.intake.candidates import inspect_stream
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.video import Video, VideoState
from storyteller_core.views.board import Status, batch_rows

from .helpers import ROOT, ask, cli_env, read_csv, run_all, run_cli, wait_until


@pytest.mark.slow
def test_three_copies_in_one_batch_are_uploaded_once_analyzed_once(make_engine, emulator, videos, tmp_path):
    copies = []
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        copies.append(tmp_path / name)
        shutil.copy(videos[0], copies[-1])
    engine = make_engine()

    rows = run_all(engine, copies)

    assert [r.status for r in rows] == [Status.DONE] * 3
    assert len({r.item.id for r in rows}) == 3 and len({r.analysis.id for r in rows}) == 1
    assert sum(emulator.stats.uploads_finished.values()) == 1
    assert sum(emulator.stats.generates.values()) == 1
    assert len({r.story for r in rows}) == 1


def test_a_completed_question_is_reused_and_costs_nothing(make_engine, emulator, videos):
    engine = make_engine()
    [first] = run_all(engine, [videos[0]], prompt="P")

    [again] = run_all(engine, [videos[0]], prompt="P")

    assert again.item.id != first.item.id and again.item.reused and again.cost_usd == 0.0
    assert again.story == first.story
    assert sum(emulator.stats.generates.values()) == 1


@pytest.mark.slow
def test_analyze_again_reuses_the_active_file(make_engine, emulator, videos):
    engine = make_engine()
    first = run_all(engine, videos[:3], prompt="Tell the story")
    uploads_before = sum(emulator.stats.uploads_finished.values())

    again = engine.commands.analyze_again([r.item.id for r in first], ask(engine, "List the people", preset=None))
    rows = engine.wait([i.id for i in again], timeout=60)

    assert [r.status for r in rows] == [Status.DONE] * 3
    assert sum(emulator.stats.uploads_finished.values()) == uploads_before == 3  # no upload, no processing wait
    assert all(emulator.stats.generates[p.name] == 2 for p in videos[:3])  # one new call per video
    assert {r.item.batch_id for r in rows} != {r.item.batch_id for r in first}
    assert {r.analysis.prompt for r in rows} == {"List the people"}


@pytest.mark.slow
def test_analyze_again_after_the_file_expired_uploads_it_again(make_engine, emulator, videos):
    engine = make_engine()
    [first] = run_all(engine, [videos[0]])
    emulator.expire(videos[0].name)

    [item] = engine.commands.analyze_again([first.item.id], ask(engine, "Another question"))
    [row] = engine.wait([item.id], timeout=60)

    assert row.status is Status.DONE
    assert emulator.uploads_of(videos[0].name) == 2


@pytest.mark.slow
def test_demo_answers_are_never_handed_out_for_a_real_key(make_engine, emulator, videos):
    engine = make_engine(api_key=None)  # demo mode: the process's own emulator answers
    [demo] = run_all(engine, [videos[0]], prompt="P")
    assert demo.status is Status.DONE and demo.story.startswith("[Demo output")
    assert not emulator.stats.generates

    engine.set_api_key("test-key-0123456789")
    [real] = run_all(engine, [videos[0]], prompt="P")

    assert real.status is Status.DONE and not real.item.reused
    assert real.analysis.id != demo.analysis.id
    assert emulator.stats.generates[videos[0].name] == 1  # a real call was made
    assert emulator.uploads_of(videos[0].name) == 1  # and the video went to the real backend


@pytest.mark.slow
def test_retry_of_a_demo_row_after_a_key_is_set_asks_the_real_backend(make_engine, emulator, one_video):
    engine = make_engine(api_key=None)
    [demo] = run_all(engine, [one_video("talk-EMPTYME.mp4")], prompt="P")
    assert demo.status is Status.FAILED
    engine.set_api_key("test-key-0123456789")
    emulator.config.empty_marker = "nothing matches this"

    engine.commands.retry(demo.item.id)
    [row] = engine.wait([demo.item.id], timeout=60)

    assert row.status is Status.DONE and row.analysis.backend == emulator.base_url
    assert emulator.stats.generates["talk-EMPTYME.mp4"] == 1


@pytest.mark.slow
def test_a_file_changed_after_it_was_added_fails_and_is_never_reused(make_engine, emulator, videos, tmp_path):
    path = tmp_path / "interview.mp4"
    shutil.copy(videos[0], path)
    engine = make_engine(start=False)
    [item] = engine.commands.submit_paths([path], ask(engine, "P"))
    shutil.copy(videos[1], path)  # edited after it was added: other bytes under the old content's name

    engine.start()
    [row] = engine.wait([item.id], timeout=60)

    assert row.status is Status.FAILED
    assert row.error == "interview.mp4 changed after it was added; add it again."
    assert not emulator.stats.generates
    assert emulator.live_file(file_name_for(row.video.sha256)) is None  # the stale upload was deleted

    shutil.copy(videos[0], path)  # the original content again: uploaded and analyzed for real
    [fresh] = run_all(engine, [path], prompt="P")
    assert fresh.status is Status.DONE and not fresh.item.reused
    assert emulator.stats.generates["interview.mp4"] == 1


def test_the_spool_is_emptied_after_completion_remove_and_clear(make_engine, emulator, videos, tmp_path):
    engine = make_engine()
    spool = engine.settings.spool_dir

    def drop(path):
        with path.open("rb") as stream:
            return inspect_stream(io.BufferedReader(stream), path.name, engine.settings)  # type: ignore[arg-type]

    engine.commands.add_pending([drop(videos[0]), drop(videos[1])])
    assert len(list(spool.iterdir())) == 2
    batch = engine.commands.start_pending(ask(engine, "P"))
    rows = engine.wait(engine.store.item_ids(batch.id), timeout=60)
    assert [r.status for r in rows] == [Status.DONE] * 2
    # completed: nothing needs the copies any more (the worker deletes them just after it stores the answer)
    wait_until(lambda: list(spool.iterdir()) == [], timeout=10, what="the spool to be emptied after completion")

    emulator.config.processing_delay_s = 30
    engine.commands.add_pending([drop(videos[2])])
    batch = engine.commands.start_pending(ask(engine, "P"))
    [item] = engine.store.items(batch.id)
    assert len(list(spool.iterdir())) == 1
    engine.commands.remove(item.id)  # whether or not its file has been checked yet
    assert list(spool.iterdir()) == []  # removed while in flight

    engine.commands.add_pending([drop(videos[3]), drop(videos[4])])
    engine.commands.remove_pending(str(engine.commands.pending()[0].path))
    assert len(list(spool.iterdir())) == 1
    engine.commands.clear_pending()
    assert list(spool.iterdir()) == [] and engine.commands.pending() == []


def test_a_refused_drop_and_a_crashed_spool_leave_nothing(make_engine, tmp_path):
    engine = make_engine()
    spool = engine.settings.spool_dir
    refused = inspect_stream(io.BytesIO(b"not a video at all"), "notes.mp4", engine.settings)
    assert not refused.ok and list(spool.iterdir()) == []
    engine.shutdown()

    partial = spool / ".incoming-crashed"
    partial.write_bytes(b"half a video")
    old = time.time() - 3600
    import os

    os.utime(partial, (old, old))
    make_engine()
    assert not partial.exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_cli_runs_started_together_upload_and_analyze_each_video_once(tmp_path, videos, emulator):
    emulator.config.chunk_delay_s = 0.2
    env = cli_env(tmp_path / "data", emulator.base_url)
    folder = videos[0].parent
    for extra in videos[5:]:
        extra.unlink()
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "storyteller_core", "process", str(folder), "--csv", str(tmp_path / f"out-{n}.csv")],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for n in (1, 2)
    ]
    outputs = [run.communicate(timeout=150) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    names = [p.name for p in videos[:5]]
    assert {n: emulator.uploads_of(n) for n in names} == {n: 1 for n in names}
    assert {n: emulator.stats.generates[n] for n in names} == {n: 1 for n in names}
    for n in (1, 2):
        rows = read_csv(tmp_path / f"out-{n}.csv")
        assert sorted(r["file_name"] for r in rows) == names and {r["status"] for r in rows} == {"Done"}


@pytest.mark.slow
def test_cli_process_again_adds_no_rows_and_a_new_preset_asks_without_uploading(tmp_path, videos, emulator):
    env = cli_env(tmp_path / "data", emulator.base_url)
    folder = videos[0].parent
    for extra in videos[3:]:
        extra.unlink()
    first = run_cli(["process", str(folder)], env)
    again = run_cli(["process", str(folder), "--csv", str(tmp_path / "again.csv")], env)
    other = run_cli(["process", str(folder), "--preset", "Summary for a report", "--csv", str(tmp_path / "other.csv")], env)

    assert [r.returncode for r in (first, again, other)] == [0, 0, 0], other.stdout + other.stderr
    assert len(read_csv(tmp_path / "again.csv")) == 3
    other_rows = read_csv(tmp_path / "other.csv")
    assert {r["prompt"] for r in other_rows} == {"Summary for a report"} and len(other_rows) == 3
    assert sum(emulator.stats.uploads_finished.values()) == 3
    assert all(emulator.stats.generates[p.name] == 2 for p in videos[:3])
    status = run_cli(["status"], env)
    assert "6 row(s): 6 done" in status.stdout


def _old_job(job_id: str, batch: str, name: str, sha: str, state: str, **extra: object) -> dict[str, object]:
    job = {
        "id": job_id,
        "display_name": name,
        "source_path": f"/videos/{name}",
        "size_bytes": 1000,
        "sha256": sha,
        "mime_type": "video/mp4",
        "model": "gemini-3.8-flash",
        "prompt": "Tell the story",
        "batch_id": batch,
        "priority": "normal",
        "state": state,
        "progress": 100 if state == "COMPLETED" else 0,
        "duration_s": 3.0,
        "demo": False,
        "created_at": time.time() - 100,
        "updated_at": time.time(),
        "state_entered_at": {},
    }
    job.update(extra)
    return job


@pytest.mark.slow
def test_a_data_dir_of_the_previous_release_is_migrated(tmp_path, make_engine, emulator, videos, monkeypatch):
    from storyteller_core.intake.media import hash_file

    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)  # the same server the old release used

    sha, size = hash_file(videos[0])
    old = diskcache.Cache(str(tmp_path / "data" / "store"))  # the old release pickled plain dicts
    jobs = [
        _old_job(
            "j1",
            "20260101-120000-abcd",
            "done.mp4",
            "a" * 64,
            "COMPLETED",
            story="An old story.",
            prompt_tokens=900,
            output_tokens=100,
            total_tokens=1000,
            cost_usd=0.0005,
            completed_at=time.time(),
        ),
        _old_job(
            "j2",
            "20260101-120000-abcd",
            "broken.mp4",
            "b" * 64,
            "FAILED",
            error_code="file_failed",
            error_message="Gemini could not process broken.mp4",
            failed_step="processing",
        ),
        _old_job("j3", "20260101-120000-abcd", videos[0].name, sha, "FILE_PROCESSING", source_path=str(videos[0]), size_bytes=size),
    ]
    for job in jobs:
        old.set(f"job:{job['id']}", job)
    old.set("index:all", [j["id"] for j in jobs])
    old.set("index:batches", ["20260101-120000-abcd"])
    old.set("index:unfinished", ["j3"])
    old.close()

    engine = make_engine()
    rows = {r.name: r for r in engine.wait(engine.store.item_ids(), timeout=60)}

    assert rows["done.mp4"].status is Status.DONE and rows["done.mp4"].story == "An old story."
    assert rows["done.mp4"].analysis.cost_usd == 0.0005 and rows["done.mp4"].analysis.total_tokens == 1000
    assert rows["broken.mp4"].status is Status.FAILED and "could not process" in rows["broken.mp4"].error
    assert rows[videos[0].name].status is Status.DONE  # the unfinished job resumed and finished
    assert rows[videos[0].name].analysis.prompt == "Tell the story"
    assert engine.store.batch_ids() == ["20260101-120000-abcd"]
    assert all(r.item.batch_id == "20260101-120000-abcd" for r in rows.values())


def test_a_planted_pickle_never_runs_when_the_store_opens(tmp_path, make_engine):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (shutil.copy, (__file__, str(marker)))

    planted = diskcache.Cache(str(tmp_path / "data" / "store"))
    planted.set("job:x", {"id": "x", "payload": Evil()})
    planted.set("index:all", ["x"])
    planted.close()

    engine = make_engine()

    assert not marker.exists()
    assert batch_rows(engine.store) == []


def test_the_unfinished_index_follows_analyses_and_items_follow_their_analysis(make_engine, emulator, videos):
    engine = make_engine()
    rows = run_all(engine, videos[:2])
    assert engine.store.unfinished() == []
    assert all(engine.store.get(Analysis, r.analysis.id).state is AnalysisState.COMPLETED for r in rows)
    assert all(engine.store.get(Video, r.video.id).state is VideoState.FILE_ACTIVE for r in rows)
