"""SIGKILL the CLI at every stage of a batch, start it again, and check that nothing is lost or repeated.

The stages are the video's states and the analysis's ANALYZING. UPLOADED and
FILE_ACTIVE last microseconds in a real run, so for those the process is
killed in the state after and the records are put back to exactly what a
crash at that instant leaves on disk (the state written, the next not): a
video back in UPLOADED, or (its file ACTIVE) an analysis back in WAITING.
"""

from __future__ import annotations

import shutil
import signal

import pytest

from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.video import Video, VideoState
from storyteller_core.storage.disk_store import DiskStore, Store
from storyteller_core.views.board import Status, batch_rows

from .helpers import analyses_in, cli_env, read_csv, run_cli, start_cli, store_when_ready, videos_in, wait_until

pytestmark = pytest.mark.slow

STAGES = {
    # stage: (emulator settings, engine env, record to watch, state to kill in, state to roll back to)
    "CREATED": ({"chunk_delay_s": 1.5}, {"STORYTELLER_MAX_WORKERS": "1", "STORYTELLER_MAX_UPLOADS": "1"}, Video, VideoState.CREATED, None),
    "UPLOADING": ({"chunk_delay_s": 3.0}, {}, Video, VideoState.UPLOADING, None),
    "UPLOADED": ({"processing_delay_s": 3.0}, {}, Video, VideoState.FILE_PROCESSING, VideoState.UPLOADED),
    "FILE_PROCESSING": ({"processing_delay_s": 4.0}, {}, Video, VideoState.FILE_PROCESSING, None),
    "FILE_ACTIVE": ({"processing_delay_s": 0.2, "analysis_delay_s": 3.0}, {}, Analysis, AnalysisState.ANALYZING, AnalysisState.WAITING),
    "ANALYZING": ({"processing_delay_s": 0.2, "analysis_delay_s": 3.0}, {}, Analysis, AnalysisState.ANALYZING, None),
}


def records(store: Store, cls: type) -> list:
    return videos_in(store) if cls is Video else analyses_in(store)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_at_each_stage_then_restart(stage, tmp_path, videos, emulator):
    emu_settings, engine_env, cls, kill_in, roll_back_to = STAGES[stage]
    for key, value in emu_settings.items():
        setattr(emulator.config, key, value)
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, emulator.base_url) | engine_env
    batch = videos[:4]
    args = ["process", *map(str, batch), "--csv", str(tmp_path / "out.csv")]

    first = start_cli(args, env)
    store = store_when_ready(data_dir / "store", first)
    wait_until(
        lambda: len(store.items()) == 4 and any(r.state is kill_in for r in records(store, cls)), first, what=f"crash point ({stage})"
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    rows_before = sorted(item.id for item in store.items())
    if roll_back_to:
        rolled = [r.id for r in records(store, cls) if r.state is kill_in]
        for record_id in rolled:
            store.mutate(cls, record_id, lambda r: setattr(r, "state", roll_back_to))
        assert rolled and all(store.get(cls, i).state is roll_back_to for i in rolled)
        if cls is Analysis:  # the analysis starts only once its video's file is ACTIVE
            assert all(store.get(Video, store.get(Analysis, i).video_id).state is VideoState.FILE_ACTIVE for i in rolled)
    finished_uploads = dict(emulator.stats.uploads_finished)
    analyzed = {store.get(Video, a.video_id).display_name for a in analyses_in(store) if a.state is AnalysisState.COMPLETED}
    if stage == "UPLOADING":
        assert sum(finished_uploads.values()) < 4  # at least one upload was cut mid-file

    second = run_cli(args, {**env, "STORYTELLER_MAX_WORKERS": "3", "STORYTELLER_MAX_UPLOADS": "2"}, timeout=150)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "4 of 4 video(s) done." in second.stdout
    reopened = DiskStore(data_dir / "store")  # the store opens cleanly after the kill
    rows = batch_rows(reopened)
    assert sorted(row.item.id for row in rows) == rows_before  # none lost, none duplicated
    assert {row.status for row in rows} == {Status.DONE}
    assert len(videos_in(reopened)) == 4 and len(analyses_in(reopened)) == 4
    assert {p.name: emulator.uploads_of(p.name) for p in batch} == {p.name: 1 for p in batch}  # no upload repeated
    assert all(emulator.stats.generates[name] == 1 for name in analyzed)  # no completed analysis repeated
    csv_rows = read_csv(tmp_path / "out.csv")
    assert sorted(r["file_name"] for r in csv_rows) == sorted(p.name for p in batch)  # one row per file
    assert {r["status"] for r in csv_rows} == {"Done"}


@pytest.mark.timeout(120)
def test_a_data_dir_copied_mid_run_still_opens_and_finishes(tmp_path, videos, emulator):
    """The power-cut case: whatever is on disk at a random instant must open and resume."""
    emulator.config.processing_delay_s = 2.0
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, emulator.base_url)
    run = start_cli(["process", *map(str, videos[:6])], env)
    store = store_when_ready(data_dir / "store", run)
    wait_until(
        lambda: len(store.items()) == 6 and any(v.state is VideoState.FILE_PROCESSING for v in videos_in(store)), run, what="copy point"
    )
    snapshot = tmp_path / "snapshot"
    shutil.copytree(data_dir, snapshot)
    run.wait(60)

    copy_env = cli_env(snapshot, emulator.base_url)
    resumed = run_cli(["process", *map(str, videos[:6])], copy_env, timeout=90)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = batch_rows(DiskStore(snapshot / "store"))
    assert len(rows) == 6 and {row.status for row in rows} == {Status.DONE}
