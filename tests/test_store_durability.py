"""The disk store never loses a row: rollbacks, SIGKILL at random moments, migrations cut short, a full disk.

diskcache keeps a value of 32 KB or more in a file of its own and, inside a nested transaction, deletes the
old value's file before the outer transaction commits; a rollback or a kill then leaves a row pointing at
nothing. The store keeps every value inside SQLite (store.NEVER_A_FILE) and moves an older release's files in
at open, so these tests use values over that size on purpose.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import diskcache
import pytest

from storyteller_core.errors import DataDirError
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item, new_id
from storyteller_core.storage.disk_store import DiskStore
from storyteller_core.views.rows import Status

from .helpers import cli_env, make_analysis, make_video, run_all, run_cli
from .store_writer import STORY, analysis_id, story_of

ROOT = Path(__file__).resolve().parent.parent


def writer(mode: str, directory: Path, arg: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store_writer", mode, str(directory), arg],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_at_random(proc: subprocess.Popen[str], rng: random.Random) -> list[str]:
    """Once the writer has opened the store, SIGKILL it at a random instant; every line it printed (what it stored)."""
    assert proc.stdout is not None
    seen = proc.stdout.readline().strip()
    assert seen == "open", proc.communicate(timeout=30)
    time.sleep(rng.uniform(0.05, 0.6))  # anywhere in a write: a time, not a count of lines, picks the instant
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    return [line for line in rest.splitlines() if line]


def test_an_exception_inside_a_transaction_leaves_every_large_record_readable(tmp_path):
    store = DiskStore(tmp_path / "store")
    video = store.add_video(make_video())
    analysis, _ = store.add_analysis(make_analysis(video.id, prompt="p" * 100_000))
    store.transition(Analysis, analysis.id, AnalysisState.ANALYZING)
    store.transition(Analysis, analysis.id, AnalysisState.COMPLETED, story="s" * 100_000)

    with pytest.raises(RuntimeError), store.cache.transact():
        store.update(Analysis, analysis.id, story="new " * 30_000)
        raise RuntimeError("the step failed after the write")

    def fail(record: Analysis) -> None:
        record.story = "half-made"
        raise ValueError("a change that fails half-way")

    with pytest.raises(ValueError):
        store.mutate(Analysis, analysis.id, fail)
    again = DiskStore(tmp_path / "store")
    for reader in (store, again):
        kept = reader.get(Analysis, analysis.id)
        assert kept is not None and kept.story == "s" * 100_000 and kept.prompt == "p" * 100_000
    assert not list((tmp_path / "store").rglob("*.val"))  # no value lives outside SQLite


@pytest.mark.slow
def test_sigkill_while_rows_are_added_to_a_3000_row_store_never_loses_a_listed_row(tmp_path):
    directory = tmp_path / "store"
    store = DiskStore(directory)
    batch = store.add_batch(Batch(id="20261202-000000-aaaa", name="big"))
    with store.cache.transact():
        for n in range(3000):
            store.add_item(Item(id=f"old-{n:05d}", batch_id=batch.id, display_name=f"clip-{n}.mp4", source_path=f"/v/clip-{n}.mp4"))
    store.close()
    stored: list[str] = []
    rng = random.Random(16)
    for _ in range(8):  # the release before this one lost every listed row in 2 of 20 such kills, most rows in 6
        lines = kill_at_random(writer("add-rows", directory, batch.id), rng)
        stored += [line.split()[1] for line in lines if line.startswith("row ")]
        store = DiskStore(directory)
        listed = store.item_ids(batch.id)
        assert len(listed) >= 3000 + len(stored)  # every row stored before the kill (one may have committed since)
        assert set(store.item_ids()) == set(listed) and {f"old-{n:05d}" for n in range(3000)} <= set(listed)
        assert set(stored) <= set(listed)
        assert store.row_count(batch.id) == len(listed) == sum(store.status_counts(batch.id).values())
        assert len(store.items(batch.id)) == len(listed)  # every listed row reads
        store.close()


@pytest.mark.slow
def test_sigkill_while_40_kb_stories_are_finished_loses_no_story(tmp_path):
    directory = tmp_path / "store"
    store = DiskStore(directory)
    video = store.add_video(make_video())
    batch = store.add_batch(Batch(id="20261202-000000-bbbb", name="stories"))
    for n in range(300):
        analysis, _ = store.add_analysis(make_analysis(video.id, prompt=f"{n} " + STORY, id=analysis_id(n)))
        store.add_item(Item(id=new_id(), batch_id=batch.id, video_id=video.id, analysis_id=analysis.id))
    store.close()
    rng = random.Random(17)
    finished: set[str] = set()
    for _ in range(3):
        lines = kill_at_random(writer("finish", directory, "300"), rng)
        finished |= {line.split()[1] for line in lines if line.startswith("done ")}
        store = DiskStore(directory)
        for n in range(300):
            analysis = store.get(Analysis, analysis_id(n))
            assert analysis is not None, f"analysis {n} vanished"
            assert analysis.prompt == f"{n} " + STORY
            if analysis.id in finished:
                assert analysis.state is AnalysisState.COMPLETED and analysis.story == story_of(n)
        done = sum(store.require(Analysis, analysis_id(n)).state is AnalysisState.COMPLETED for n in range(300))
        assert store.status_counts(batch.id)[Status.DONE] == done  # the kept counts follow, wherever it stopped
        store.close()
    assert finished  # each run got some way before its kill


def old_release_1_store(directory: Path, jobs: int) -> None:
    """What release 1 left: one pickled dict per job, 40 KB stories (so each lives in a file of its own)."""
    old = diskcache.Cache(str(directory))
    for n in range(jobs):
        old.set(
            f"job:j{n:04d}",
            {
                "id": f"j{n:04d}",
                "batch_id": "20260101-120000-abcd",
                "display_name": f"clip-{n}.mp4",
                "sha256": f"{n:064x}",
                "state": "COMPLETED",
                "story": story_of(n),
                "model": "gemini-2.5-flash",
                "prompt": "Tell the story",
                "created_at": 1_767_000_000.0 + n,
                "completed_at": 1_767_000_100.0 + n,
                "cost_usd": 0.001,
                "total_tokens": 1000,
            },
        )
    old.set("index:all", [f"j{n:04d}" for n in range(jobs)])
    old.set("index:batches", ["20260101-120000-abcd"])
    old.close()


@pytest.mark.slow
def test_sigkill_during_the_migration_of_400_jobs_then_a_restart_keeps_all_400_stories(tmp_path):
    directory = tmp_path / "store"
    old_release_1_store(directory, 400)
    rng = random.Random(18)
    for _ in range(3):
        proc = writer("open", directory)
        time.sleep(rng.uniform(0.3, 2.0))  # a kill at some instant of the migration (or after it: no harm either)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    store = DiskStore(directory)
    items = store.items("20260101-120000-abcd")
    assert len(items) == 400 and len({item.id for item in items}) == 400
    stories = {store.require(Analysis, item.analysis_id or "").story for item in items}
    assert stories == {story_of(n) for n in range(400)}
    assert store.status_counts("20260101-120000-abcd")[Status.DONE] == 400
    assert store.batch_sums("20260101-120000-abcd")["cost_usd"] == pytest.approx(0.4)


def test_an_odd_old_record_is_migrated_with_what_can_be_read_and_a_broken_one_set_aside(tmp_path):
    directory = tmp_path / "store"
    old = diskcache.Cache(str(directory))
    old.set(
        "job:a",
        {
            "id": "a",
            "batch_id": "20260101-120000-abcd",
            "display_name": "text-time.mp4",
            "sha256": "a" * 64,
            "state": "COMPLETED",
            "story": story_of(1),
            "created_at": "2026-01-01T12:00:00",
            "total_tokens": "900",
        },
    )
    old.set(
        "job:b",
        {
            "id": "b",
            "batch_id": "20260101-120000-abcd",
            "display_name": "fine.mp4",
            "sha256": "b" * 64,
            "state": "COMPLETED",
            "story": story_of(2),
            "created_at": 1_767_000_000.0,
        },
    )
    old.set("job:c", ["not", "a", "job"])
    old.close()

    store = DiskStore(directory)
    stories = {item.display_name: store.require(Analysis, item.analysis_id or "").story for item in store.items()}
    assert stories == {"text-time.mp4": story_of(1), "fine.mp4": story_of(2)}
    count, shown = store.set_aside()
    assert count == 1 and shown[0]["key"] == "job:c" and "not a job record" in shown[0]["reason"]
    assert store.cache.get("aside:job:c") == ["not", "a", "job"]  # kept as it was


def test_a_release_2_store_with_json_lists_is_migrated_to_one_record_per_member(tmp_path):
    directory = tmp_path / "store"
    old = diskcache.Cache(str(directory))  # release 2: JSON records, each index one JSON list
    video, analysis = make_video(), make_analysis("ab" * 32)
    items = [
        Item(id=f"i{n}", batch_id="20261101-000000-cccc", display_name=f"c{n}.mp4", video_id=video.id, analysis_id=analysis.id)
        for n in range(3)
    ]
    old.set("meta:schema", 2)
    old.set(f"video:{video.id}", video.to_json())
    old.set(f"analysis:{analysis.id}", analysis.to_json())
    old.set("batch:20261101-000000-cccc", Batch(id="20261101-000000-cccc", name="b").to_json())
    for item in items:
        old.set(f"item:{item.id}", item.to_json())
    old.set("index:batches", json.dumps(["20261101-000000-cccc"]))
    old.set("index:items", json.dumps([i.id for i in items]))
    old.set("index:batch:20261101-000000-cccc", json.dumps([i.id for i in items]))
    old.set(f"index:analysis-items:{analysis.id}", json.dumps([i.id for i in items]))
    old.set(f"index:video-analyses:{video.id}", json.dumps([analysis.id]))
    old.set("index:unfinished", json.dumps([analysis.id]))
    old.set("pending", json.dumps([{"path": "/v/next.mp4", "sha256": "cd"}]))
    old.close()

    store = DiskStore(directory)
    assert store.item_ids("20261101-000000-cccc") == ["i0", "i1", "i2"] and store.batch_ids() == ["20261101-000000-cccc"]
    assert [i.id for i in store.items_of(analysis.id)] == ["i0", "i1", "i2"] and store.unfinished_ids() == {analysis.id}
    assert store.pending() == [{"path": "/v/next.mp4", "sha256": "cd"}]
    assert sum(store.status_counts("20261101-000000-cccc").values()) == 3
    assert store.cache.get("index:items") is None and store.cache.get("pending") is None


def test_a_bad_record_is_set_aside_and_everything_else_works(make_engine, videos, tmp_path):
    engine = make_engine()
    rows = run_all(engine, videos[:3])
    broken, unknown = rows[0], rows[1]
    engine.store.cache.set(f"item:{broken.item.id}", "{not json")
    data = json.loads(engine.store.cache.get(f"analysis:{unknown.analysis.id}"))
    engine.store.cache.set(f"analysis:{unknown.analysis.id}", json.dumps({**data, "state": "FROM_THE_FUTURE"}))
    engine.shutdown()

    result = run_cli(["status"], cli_env(engine.settings.data_dir))
    assert result.returncode == 0, result.stderr
    assert "2 records could not be read and were set aside" in result.stdout + result.stderr
    assert f"item:{broken.item.id}" in result.stdout + result.stderr
    store = DiskStore(engine.settings.data_dir / "store")
    count, shown = store.set_aside()
    assert count == 2 and {s["key"] for s in shown} == {f"item:{broken.item.id}", f"analysis:{unknown.analysis.id}"}
    assert store.cache.get(f"aside:item:{broken.item.id}") == "{not json"  # kept as it was, never deleted
    assert rows[2].item.id in store.item_ids() and store.get(Item, rows[2].item.id) is not None
    export = run_cli(["export", "--csv", str(tmp_path / "all.csv")], cli_env(engine.settings.data_dir))
    assert export.returncode == 0, export.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a small disk needs root")
def test_a_full_disk_at_start_is_called_full_and_leaves_nothing_behind(tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        data_dir = disk / "data"
        store = DiskStore(data_dir / "store")
        store.add_batch(Batch(id="20261202-000000-dddd", name="kept"))
        store.close()
        with open(disk / "filler", "wb") as filler:  # the rest of the disk
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        with pytest.raises(DataDirError, match="is full") as raised:
            DiskStore(data_dir / "store")
        assert "not damaged" in str(raised.value) and "Free at least" in str(raised.value)
        result = run_cli(["status"], cli_env(data_dir))
        assert result.returncode != 0 and "full" in result.stdout + result.stderr
        assert "damaged" not in (result.stdout + result.stderr).replace("not damaged", "")
        assert not [p for p in (data_dir / "store").iterdir() if ".damaged-" in p.name]
        (disk / "filler").unlink()
        assert DiskStore(data_dir / "store").batch_ids() == ["20261202-000000-dddd"]  # healthy all along
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
