"""Noticing ACTIVE: the delay after a file turns ACTIVE and the status calls spent, bulk watch vs per-file polls.

    python bench/polling.py                          # 10 files x 30 s, 3 runs (about 2 minutes)
    python bench/polling.py --files 10 --processing 30 --runs 3 --cap-files 100

Two engines run at the same time, each against its own emulator (so each
emulator counts only its engine's calls): the engine as built (the status
watch: files.list pages for many files, files.get for one) and the same
engine with the watch switched off (``runner.watch = None``: each video polls
files.get on its own backoff, 1 s x1.5 capped at 10 s, +-20 % jitter, the
previous behaviour). "Notice lag" is the time from the file turning ACTIVE on
the emulator to the engine recording FILE_ACTIVE. "Status calls" counts every
files.get and files.list page the emulator answered.

Then ``--cap-files`` files process at once under the engine as built, and the
busiest one-second window of status calls shows whether the 5/s cap holds.
Target (issue 13): 10 files x 30 s noticed on average <= 1.5 s after ACTIVE,
<= 40 status calls in all.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import threading
from pathlib import Path

from common import ROOT, load_line, spread  # noqa: F401  (puts the repo on sys.path)

from storyteller_core import Engine, Settings
from storyteller_core.commands import Ask
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.intake.samples import make_batch
from storyteller_core.views.board import Status

MODES = ("bulk watch", "per-file")


def run_engine(mode: str, videos: list[Path], data_dir: Path, processing: float, out: dict[str, tuple]) -> None:
    with Emulator(EmulatorConfig(processing_delay_s=processing, analysis_delay_s=0.0)) as emu:
        engine = Engine(Settings(data_dir=data_dir, api_key="bench-key", base_url=emu.base_url), stderr_log_level=logging.CRITICAL + 1)
        if mode == "per-file":
            engine.runner.watch = None  # the previous behaviour: one backoff schedule per file
        engine.start()
        items = engine.commands.submit_paths(videos, Ask(prompt=f"Tell the story ({mode})", model=engine.settings.model))
        rows = engine.wait([i.id for i in items], timeout=processing * 4 + 60)
        engine.shutdown()
        assert all(r.status is Status.DONE for r in rows), [r.error for r in rows]
        lags = []
        for row in rows:
            assert row.video is not None and row.video.gemini_name
            noticed = row.video.state_entered_at["FILE_ACTIVE"]
            lags.append(noticed - (emu.active_since(row.video.gemini_name) or noticed))
        out[mode] = (statistics.mean(lags), max(lags), emu.stats.status_calls, emu.stats.lists)


def rate_cap(tmp: Path, count: int) -> tuple[int, float, int]:
    videos = make_batch(tmp / "cap", count, seconds=0.3)
    with Emulator(EmulatorConfig(processing_delay_s=15, analysis_delay_s=0.0)) as emu:
        engine = Engine(
            Settings(data_dir=tmp / "cap-data", api_key="bench-key", base_url=emu.base_url), stderr_log_level=logging.CRITICAL + 1
        ).start()
        items = engine.commands.submit_paths(videos, Ask(prompt="Tell the story", model=engine.settings.model))
        engine.wait([i.id for i in items], timeout=300)
        engine.shutdown()
        times = sorted(emu.stats.poll_times + emu.stats.list_times)
    busiest = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
    return busiest, len(times) / max(1e-9, times[-1] - times[0]), len(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--processing", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cap-files", type=int, default=100)
    args = parser.parse_args()
    results: dict[str, list[tuple]] = {mode: [] for mode in MODES}
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pool = make_batch(tmp / "videos", args.files, seconds=0.3)
        for run in range(args.runs):
            out: dict[str, tuple] = {}
            threads = [
                threading.Thread(target=run_engine, args=(mode, pool, tmp / f"data-{mode}-{run}".replace(" ", "-"), args.processing, out))
                for mode in MODES
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for mode in MODES:
                results[mode].append(out[mode])
            loads.append(os.getloadavg())
        busiest, average, cap_calls = rate_cap(tmp, args.cap_files) if args.cap_files else (0, 0.0, 0)
    print(f"{args.files} files, processing {args.processing:g} s each, {args.runs} runs (min / median / max)")
    print(f"{'engine':<11} | {'lag avg s':<17} | {'lag max s':<17} | {'status calls':<14} | {'of them files.list':<18}")
    for mode in MODES:
        runs = results[mode]
        print(
            f"{mode:<11} | {spread([r[0] for r in runs], '.2f'):<17} | {spread([r[1] for r in runs], '.2f'):<17} | "
            f"{spread([r[2] for r in runs], '.0f'):<14} | {spread([r[3] for r in runs], '.0f'):<18}"
        )
    if args.cap_files:
        print(
            f"\n{args.cap_files} files processing at once (15 s): {cap_calls} status calls, busiest 1-second window "
            f"{busiest} (cap 5/s), average {average:.2f}/s"
        )
    print(load_line(loads))


if __name__ == "__main__":
    main()
