"""Batch makespan against the ideal schedule and the seeds' sequential baseline.

    python bench/makespan.py                  # N = 5, 20, 100 with P = 2 s, A = 1 s
    python bench/makespan.py --sizes 5,20 --processing 2 --analysis 1

Ideal for tiny files with J analyses at once: P + ceil(N / J) * A (uploads take
milliseconds here). Sequential: one video at a time, upload, poll every second
until ACTIVE, analyze, as the seed prototype did; run for N <= 20 and
extrapolated (marked ~) above that to keep the run short.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the repo on sys.path)

from storyteller_core import Engine, Settings, State
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.gemini import Gateway, VideoPart, file_name_for
from storyteller_core.media import hash_file
from storyteller_core.samples import make_batch


def engine_makespan(emu: Emulator, videos: list[Path], data_dir: Path) -> float:
    engine = Engine(Settings(data_dir=data_dir, api_key="bench-key", base_url=emu.base_url),
                    stderr_log_level=logging.CRITICAL + 1).start()
    started = time.monotonic()
    jobs = engine.submit_paths(videos, prompt=f"Tell the story ({data_dir.name})")
    jobs = engine.wait([j.id for j in jobs])
    elapsed = time.monotonic() - started
    engine.shutdown()
    assert all(j.state is State.COMPLETED for j in jobs), [j.error_message for j in jobs]
    return elapsed


def sequential_makespan(emu: Emulator, videos: list[Path]) -> float:
    gateway = Gateway("bench-key", emu.base_url, 60)
    started = time.monotonic()
    for video in videos:
        sha, _ = hash_file(video)
        remote = gateway.upload(video, name=file_name_for("seq" + sha), display_name=video.name,
                                mime_type="video/mp4", on_progress=lambda _: None)
        while remote.state != "ACTIVE":
            time.sleep(1.0)
            remote = gateway.get_file(remote.name)
        gateway.generate(model="gemini-2.5-flash", video=VideoPart(remote.uri, "video/mp4"),
                         prompt="Tell the story", timeout_s=60)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5,20,100")
    parser.add_argument("--processing", type=float, default=2.0)
    parser.add_argument("--analysis", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pool = make_batch(Path(tmp) / "videos", max(int(n) for n in args.sizes.split(",")), seconds=0.5)
        for n in map(int, args.sizes.split(",")):
            config = EmulatorConfig(processing_delay_s=args.processing, analysis_delay_s=args.analysis)
            with Emulator(config) as emu:
                measured = engine_makespan(emu, pool[:n], Path(tmp) / f"data-{n}")
                if n <= 20:
                    sequential, mark = sequential_makespan(emu, pool[:n]), ""
                elif rows:
                    sequential, mark = rows[-1][4] / rows[-1][0] * n, "~"
                else:
                    sequential, mark = float("nan"), "n/a "  # run with a smaller N first to extrapolate
            ideal = args.processing + math.ceil(n / args.workers) * args.analysis
            rows.append((n, measured, ideal, measured / ideal, sequential, mark))
    print(f"P = {args.processing:g} s, A = {args.analysis:g} s, {args.workers} workers, 2 uploads at once")
    print(f"{'N':>4} | {'measured s':>10} | {'ideal s':>7} | {'ratio':>5} | {'sequential s':>12} | {'speed-up':>8}")
    for n, measured, ideal, ratio, sequential, mark in rows:
        print(f"{n:>4} | {measured:10.1f} | {ideal:7.1f} | {ratio:5.2f} | {mark}{sequential:11.1f} | {sequential / measured:7.1f}x")


if __name__ == "__main__":
    main()
