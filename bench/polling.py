"""Polling cost: files.get calls per file and the delay in noticing ACTIVE, against fixed pollers.

    python bench/polling.py                       # P = 5, 30, 120 s (about 2.5 minutes)
    python bench/polling.py --delays 5,30 --cap-files 100

For each processing delay P, three pollers watch their own files at the same
time on one emulator: our engine (1 s x1.5, capped at 10 s, +-20 % jitter,
5 polls/s for the process), a fixed 1 s poller and the seeds' fixed 3 s
poller. Then 100 files process at once under the engine, and the busiest
one-second window of files.get calls shows whether the 5/s cap holds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the repo on sys.path)

from storyteller_core import Engine, Settings, State
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.gemini import Gateway, file_name_for
from storyteller_core.media import hash_file
from storyteller_core.samples import make_batch

FILES_PER_POLLER = 3


def fixed_poller(emu: Emulator, videos: list[Path], interval: float, out: list[tuple[int, float]]) -> None:
    gateway = Gateway("bench-key", emu.base_url, 60)

    def watch(video: Path) -> None:
        sha, _ = hash_file(video)
        remote = gateway.upload(video, name=file_name_for(f"f{int(interval)}{sha}"), display_name=video.name,
                                mime_type="video/mp4", on_progress=lambda _: None)
        polls = 0
        while remote.state != "ACTIVE":
            time.sleep(interval)
            remote = gateway.get_file(remote.name)
            polls += 1
        out.append((polls, time.time() - (emu.active_since(remote.name) or time.time())))

    threads = [threading.Thread(target=watch, args=(v,)) for v in videos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def engine_poller(emu: Emulator, videos: list[Path], data_dir: Path, out: list[tuple[int, float]]) -> None:
    engine = Engine(Settings(data_dir=data_dir, api_key="bench-key", base_url=emu.base_url),
                    stderr_log_level=logging.CRITICAL + 1).start()
    jobs = engine.submit_paths(videos, prompt="Tell the story")
    for job in engine.wait([j.id for j in jobs]):
        assert job.state is State.COMPLETED, job.error_message
        noticed = job.state_entered_at[State.FILE_ACTIVE.value]
        out.append((job.poll_attempts, noticed - (emu.active_since(job.gemini_name or "") or noticed)))
    engine.shutdown()


def rate_cap(tmp: Path, count: int) -> tuple[int, float]:
    videos = make_batch(tmp / "cap", count, seconds=0.3)
    with Emulator(EmulatorConfig(processing_delay_s=15, analysis_delay_s=0.0)) as emu:
        engine = Engine(Settings(data_dir=tmp / "cap-data", api_key="bench-key", base_url=emu.base_url, max_jobs=3),
                        stderr_log_level=logging.CRITICAL + 1).start()
        jobs = engine.submit_paths(videos, prompt="Tell the story")
        engine.wait([j.id for j in jobs])
        engine.shutdown()
        times = sorted(emu.stats.poll_times)
    busiest = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
    return busiest, len(times) / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delays", default="5,30,120")
    parser.add_argument("--cap-files", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for delay in map(float, args.delays.split(",")):
            results: dict[str, list[tuple[int, float]]] = {"engine": [], "fixed 1 s": [], "fixed 3 s": []}
            with Emulator(EmulatorConfig(processing_delay_s=delay, analysis_delay_s=0.0)) as emu:
                sets = {name: make_batch(tmp / f"{name}-{delay}".replace(" ", ""), FILES_PER_POLLER, seconds=0.3)
                        for name in results}
                for name, vids in sets.items():  # distinct content per poller
                    for i, v in enumerate(vids):
                        v.write_bytes(v.read_bytes() + f"{name}{delay}{i}".encode())
                threads = [
                    threading.Thread(target=engine_poller, args=(emu, sets["engine"], tmp / f"d{delay}", results["engine"])),
                    threading.Thread(target=fixed_poller, args=(emu, sets["fixed 1 s"], 1.0, results["fixed 1 s"])),
                    threading.Thread(target=fixed_poller, args=(emu, sets["fixed 3 s"], 3.0, results["fixed 3 s"])),
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            for name, values in results.items():
                polls = [p for p, _ in values]
                lags = [lag for _, lag in values]
                rows.append((delay, name, statistics.mean(polls), sum(polls), statistics.mean(lags), max(lags)))
        busiest, average = rate_cap(tmp, args.cap_files)
    print(f"{'P s':>5} | {'poller':<9} | {'gets/file':>9} | {'gets total':>10} | {'notice lag avg s':>16} | {'max s':>5}")
    for delay, name, per_file, total, lag, lag_max in rows:
        print(f"{delay:5.0f} | {name:<9} | {per_file:9.1f} | {total:10d} | {lag:16.2f} | {lag_max:5.2f}")
    print(f"\n{args.cap_files} files processing at once: busiest 1-second window {busiest} files.get calls "
          f"(cap 5/s), average {average:.2f}/s")


if __name__ == "__main__":
    main()
