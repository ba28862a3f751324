"""Batch makespan against its bound, and where analysis workers sat idle.

    python bench/makespan.py                              # N = 200, P = 2 s, A = 1 s, 3 runs per variant
    python bench/makespan.py --sizes 20,200 --runs 1 --variants now,per-file
    python bench/makespan.py --sizes 5,20 --sequential    # also the seeds' one-video-at-a-time baseline

Tiny videos, the emulator's clock: processing P, analysis A, the SPEC's limits
(3 workers, 2 uploads at once, 5 status calls/s). Intake (hash, probe,
thumbnail) runs before the workers start and is not timed; the emulator runs
in its own process, as Gemini would: the clock starts
at ``engine.start()`` and stops at the last Done. Bound = U + P + ceil(N / J) * A,
U being the first upload (measured on the emulator), J the workers. The step
bound puts the median time an analysis step really took (ANALYZING to
COMPLETED: the emulator's A plus the streamed answer, the SDK and the store)
in place of A: what no scheduling can beat.

"Idle s" adds up the time, summed over workers, during which a worker was
free while an ACTIVE file waited for its analysis (sampled every 20 ms).

Variants:
  now        the engine as built: the status watch, uploads in their own lane with a look-ahead
  one-lane   one lane, as before: 3 threads take any task by priority then FIFO, uploads included
  per-file   the status watch off: every video polls files.get on its own backoff
  before     both: one lane and per-file polls (the scheduling and polling of 161dda3)
Target (issue 13): N = 200 within 1.03x of the bound.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import external_emulator, load_line, spread

from storyteller_core import Engine, Settings
from storyteller_core.commands import Ask
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.gemini.gateway import Gateway, file_name_for
from storyteller_core.intake.media import hash_file
from storyteller_core.intake.samples import make_batch
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.video import Video, VideoState
from storyteller_core.views.board import Status


def engine_makespan(base_url: str, videos: list[Path], data_dir: Path, variant: str, workers: int) -> tuple[float, float, float]:
    one_lane = variant in ("one-lane", "before")
    uploads = 2
    # one lane, as before: ``workers`` threads in all take any task, uploads included (at most 2 at once)
    engine = Engine(
        Settings(
            data_dir=data_dir,
            api_key="bench-key",
            base_url=base_url,
            max_uploads=uploads,
            max_workers=workers - uploads if one_lane else workers,
        ),
        stderr_log_level=logging.CRITICAL + 1,
    )
    if one_lane:
        engine.scheduler.max_work = engine.scheduler.look_ahead = None
    if variant in ("per-file", "before"):
        engine.runner.watch = None
    items = engine.commands.submit_paths(videos, Ask(prompt=f"Tell the story ({data_dir.name})", model=engine.settings.model))
    video_ids = sorted({i.video_id for i in items if i.video_id})
    analysis_ids = sorted({i.analysis_id for i in items if i.analysis_id})
    stop = threading.Event()
    idle = [0.0]

    def sample() -> None:  # worker-seconds free while an ACTIVE file waited for its analysis
        last = time.monotonic()
        while not stop.wait(0.02):
            now = time.monotonic()
            busy = len(engine.scheduler.running())
            if busy < workers:
                active = {v.id for v in engine.store.many(Video, video_ids) if v.state is VideoState.FILE_ACTIVE}
                waiting = sum(
                    1 for a in engine.store.many(Analysis, analysis_ids) if a.state is AnalysisState.WAITING and a.video_id in active
                )
                idle[0] += min(workers - busy, waiting) * (now - last)
            last = now

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.monotonic()
    engine.start()
    sampler.start()
    rows = engine.wait([i.id for i in items], timeout=3600)
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    engine.shutdown()
    assert all(r.status is Status.DONE for r in rows), [r.error for r in rows if r.error][:3]
    took = [a.state_entered_at["COMPLETED"] - a.state_entered_at["ANALYZING"] for a in engine.store.many(Analysis, analysis_ids)]
    return elapsed, idle[0], statistics.median(took)


def sequential_makespan(emu: Emulator, videos: list[Path]) -> float:
    gateway = Gateway("bench-key", emu.base_url, 60)
    started = time.monotonic()
    for video in videos:
        sha, _ = hash_file(video)
        remote = gateway.upload(
            video, name=file_name_for("seq" + sha), display_name=video.name, mime_type="video/mp4", on_progress=lambda _: None
        ).file
        while remote.state != "ACTIVE":
            time.sleep(1.0)
            remote = gateway.get_file(remote.name) or remote
        gateway.generate(model="gemini-3.8-flash", file_uri=remote.uri, mime_type="video/mp4", prompt="Tell the story", timeout_s=60)
    return time.monotonic() - started


def first_upload_s(base_url: str, video: Path) -> float:
    gateway = Gateway("bench-key", base_url, 60)
    started = time.monotonic()
    gateway.upload(video, name="first-upload-probe", display_name=video.name, mime_type="video/mp4", on_progress=lambda _: None)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="200")
    parser.add_argument("--processing", type=float, default=2.0)
    parser.add_argument("--analysis", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default="now,before,one-lane,per-file")
    parser.add_argument("--sequential", action="store_true", help="also the seeds' sequential baseline (N <= 20)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    loads = [os.getloadavg()]
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [int(n) for n in args.sizes.split(",")]
        pool = make_batch(Path(tmp) / "videos", max(sizes), seconds=0.5)
        for n in sizes:
            results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
            uploads = []
            for run in range(args.runs):
                for variant in variants:
                    with external_emulator(args.processing, args.analysis) as emu:  # Gemini is another process
                        uploads.append(first_upload_s(emu.url, pool[0]))
                        results[variant].append(
                            engine_makespan(emu.url, pool[:n], Path(tmp) / f"data-{n}-{variant}-{run}", variant, args.workers)
                        )
                    loads.append(os.getloadavg())
            sequential = None
            if args.sequential and n <= 20:
                with Emulator(EmulatorConfig(processing_delay_s=args.processing, analysis_delay_s=args.analysis)) as emu:
                    sequential = sequential_makespan(emu, pool[:n])
            bound = min(uploads) + args.processing + math.ceil(n / args.workers) * args.analysis
            a_step = statistics.median(r[2] for runs in results.values() for r in runs)
            step_bound = min(uploads) + args.processing + math.ceil(n / args.workers) * a_step
            table.append((n, bound, step_bound, a_step, results, sequential))
    print(
        f"P = {args.processing:g} s, A = {args.analysis:g} s, {args.workers} workers, 2 uploads at once, "
        f"{args.runs} runs per variant (min / median / max)"
    )
    print(
        f"{'N':>4} | {'variant':<8} | {'makespan s':<20} | {'bound s':>7} | {'ratio':<20} | "
        f"{'ratio to step bound':<20} | {'idle worker-s':<18}"
    )
    for n, bound, step_bound, a_step, results, sequential in table:
        for variant, runs in results.items():
            spans = [r[0] for r in runs]
            print(
                f"{n:>4} | {variant:<8} | {spread(spans, '.1f'):<20} | {bound:7.1f} | "
                f"{spread([s / bound for s in spans], '.3f'):<20} | {spread([s / step_bound for s in spans], '.3f'):<20} | "
                f"{spread([r[1] for r in runs], '.1f'):<18}"
            )
        if sequential is not None:
            print(f"{n:>4} | {'seeds':<8} | {sequential:<20.1f} | {bound:7.1f} | {sequential / bound:<20.2f} |")
        print(
            f"       one analysis step took {a_step:.3f} s (median; the emulator's A = {args.analysis:g} s): step bound {step_bound:.1f} s"
        )
    print(load_line(loads))


if __name__ == "__main__":
    main()
