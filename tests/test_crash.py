"""SIGKILL the CLI at every stage of a batch, start it again, and check that nothing is lost or repeated.

UPLOADED and FILE_ACTIVE last microseconds in a real run, so for those the
process is killed in the stage after and the records are put back to exactly
what a crash at that instant leaves on disk (the state written, the next not).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest

from storyteller_core.jobs import State
from storyteller_core.store import JobStore

from .test_cli import ROOT, cli_env, read_csv, run_cli, store_when_ready, wait_until

STAGES = {
    # stage: (emulator settings, engine env, state to wait for, state to roll back to)
    "CREATED": ({"chunk_delay_s": 1.5}, {"STORYTELLER_MAX_JOBS": "1", "STORYTELLER_MAX_UPLOADS": "1"}, State.CREATED, None),
    "UPLOADING": ({"chunk_delay_s": 3.0}, {}, State.UPLOADING, None),
    "UPLOADED": ({"processing_delay_s": 3.0}, {}, State.FILE_PROCESSING, State.UPLOADED),
    "FILE_PROCESSING": ({"processing_delay_s": 4.0}, {}, State.FILE_PROCESSING, None),
    "FILE_ACTIVE": ({"processing_delay_s": 0.2, "analysis_delay_s": 3.0}, {}, State.ANALYZING, State.FILE_ACTIVE),
    "ANALYZING": ({"processing_delay_s": 0.2, "analysis_delay_s": 3.0}, {}, State.ANALYZING, None),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_at_each_stage_then_restart(stage, tmp_path, videos, emulator):
    emu_settings, engine_env, kill_in, roll_back_to = STAGES[stage]
    for key, value in emu_settings.items():
        setattr(emulator.config, key, value)
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, emulator.base_url) | engine_env
    batch = videos[:4]
    args = ["process", *map(str, batch), "--csv", str(tmp_path / "out.csv")]

    first = subprocess.Popen([sys.executable, "-m", "storyteller_core", *args], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = store_when_ready(data_dir / "jobs", first)
    wait_until(lambda: len(store.job_ids()) == 4 and any(j.state is kill_in for j in store.jobs()), first)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    before = {j.id: j for j in store.jobs()}
    if roll_back_to:
        for job in before.values():
            if job.state is kill_in:
                store.mutate(job.id, lambda j: setattr(j, "state", roll_back_to))
    finished_uploads = dict(emulator.stats.uploads_finished)
    analyzed = {j.display_name for j in before.values() if j.state is State.COMPLETED}
    if stage == "UPLOADING":
        assert sum(finished_uploads.values()) < 4  # at least one upload was cut mid-file

    second = run_cli(args, {**env, "STORYTELLER_MAX_JOBS": "3", "STORYTELLER_MAX_UPLOADS": "2"}, timeout=150)

    assert second.returncode == 0, second.stdout + second.stderr
    reopened = JobStore(data_dir / "jobs")  # the store opens cleanly after the kill
    jobs = reopened.jobs()
    assert sorted(j.id for j in jobs) == sorted(before)  # none lost, none duplicated
    assert {j.state for j in jobs} == {State.COMPLETED}
    assert {p.name: emulator.uploads_of(p.name) for p in batch} == {p.name: 1 for p in batch}  # no upload repeated
    assert all(emulator.stats.generates[name] == 1 for name in analyzed)  # no completed analysis repeated
    assert len(read_csv(tmp_path / "out.csv")) == 4


@pytest.mark.timeout(120)
def test_a_data_dir_copied_mid_run_still_opens_and_finishes(tmp_path, videos, emulator):
    """The power-cut case: whatever is on disk at a random instant must open and resume."""
    emulator.config.processing_delay_s = 2.0
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, emulator.base_url)
    run = subprocess.Popen([sys.executable, "-m", "storyteller_core", "process", *map(str, videos[:6])], env=env,
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = store_when_ready(data_dir / "jobs", run)
    wait_until(lambda: len(store.job_ids()) == 6 and any(j.state is State.FILE_PROCESSING for j in store.jobs()), run)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(data_dir, snapshot)
    run.wait(60)

    copy_env = cli_env(snapshot, emulator.base_url)
    resumed = run_cli(["process", *map(str, videos[:6])], copy_env, timeout=90)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert {j.state for j in JobStore(snapshot / "jobs").jobs()} == {State.COMPLETED}
