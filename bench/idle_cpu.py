"""What waiting costs: CPU of an engine whose jobs all wait for Gemini's processing.

    python bench/idle_cpu.py                      # 1,000 videos, 3 runs per variant (about 10 minutes)
    python bench/idle_cpu.py --jobs 400 --runs 1 --window 20

Each run is a fresh process with a fresh data dir: it submits ``--jobs``
distinct tiny videos to an external emulator (its own process, so its CPU is
not counted) whose processing never ends during the run, waits until every
video is FILE_PROCESSING, then measures this process's CPU time (user +
system) over ``--window`` seconds: the share of one core spent waiting. An
engine that has not got every video uploaded after 5 minutes (161dda3 at
1,000: its polls starve the uploads) is measured as it is then; the table
says how many were processing.

Variants, side by side in one run:
  before     the code at ``--before`` (default 161dda3: per-file polls, a scheduler that
             scans its entries), unpacked with ``git archive`` into a temp dir
  per-file   the current code with the status watch switched off (per-file polls,
             timer-heap scheduler)
  now        the current code as built (bulk status watch, timer-heap scheduler)
Target (issue 13): 1,000 jobs waiting on processing use <= 2 % of a core.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VARIANTS = ("before", "per-file", "now")


def measure(
    tree: Path, videos: Path, data_dir: Path, base_url: str, jobs: int, window: float, watch: bool, settle_s: float = 300.0
) -> dict:
    """Runs in a child process with ``tree`` first on sys.path."""
    sys.path.insert(0, str(tree))
    import psutil

    from storyteller_core import Engine, Settings
    from storyteller_core.commands import Ask
    from storyteller_core.records.video import Video, VideoState
    from storyteller_core.storage.disk_store import Store  # noqa: F401  (the store of that tree)

    engine = Engine(
        Settings(data_dir=data_dir, api_key="bench-key", base_url=base_url, processing_budget_s=3600), stderr_log_level=logging.CRITICAL + 1
    )
    if not watch and hasattr(engine.runner, "watch"):
        engine.runner.watch = None
    engine.start()
    paths = sorted(videos.glob("*.mp4"))[:jobs]
    started = time.monotonic()
    items = engine.commands.submit_paths(paths, Ask(prompt="Tell the story", model=engine.settings.model))
    intake_s = time.monotonic() - started
    video_ids = sorted({i.video_id for i in items if i.video_id})
    assert len(video_ids) == jobs, f"{len(video_ids)} distinct videos"
    deadline = time.monotonic() + settle_s
    while True:  # the previous engine may never get there: its polls starve the uploads; measure it as it is then
        processing = sum(v.state is VideoState.FILE_PROCESSING for v in engine.store.many(Video, video_ids))
        if processing == len(video_ids) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    ready_s = time.monotonic() - started
    time.sleep(3.0)  # let the first looks after the uploads pass
    process = psutil.Process()
    stats = getattr(engine.scheduler, "stats", None)
    taken_before = stats.taken if stats else 0
    watch_stats = engine.watch.stats if watch and hasattr(engine, "watch") else None
    calls_before = watch_stats["list"] + watch_stats["get"] if watch_stats else 0
    import threading

    def by_thread() -> dict[str, float]:
        names = {t.native_id: t.name for t in threading.enumerate()}
        out: dict[str, float] = {}
        for t in process.threads():
            name = names.get(t.id, "other")
            kind = "workers" if name.startswith("storyteller-worker") else name.removeprefix("storyteller-")
            out[kind] = out.get(kind, 0.0) + t.user_time + t.system_time
        return out

    threads_before = by_thread()
    cpu_before = sum(process.cpu_times()[:2])
    wall_before = time.monotonic()
    time.sleep(window)
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    wall = time.monotonic() - wall_before
    threads_after = by_thread()
    split = {k: round(100 * (v - threads_before.get(k, 0.0)) / wall, 2) for k, v in threads_after.items()}
    result = {
        "core_pct": 100 * cpu / wall,
        "intake_s": intake_s,
        "ready_s": ready_s,
        "processing": processing,
        "by_thread_pct": {k: v for k, v in split.items() if v >= 0.05},
        "taken_per_s": (stats.taken - taken_before) / wall if stats else None,
        "watch_calls_per_s": (watch_stats["list"] + watch_stats["get"] - calls_before) / wall if watch_stats else None,
    }
    engine.shutdown()
    return result


def child(args: argparse.Namespace) -> None:
    result = measure(Path(args.tree), Path(args.videos), Path(args.data_dir), args.url, args.jobs, args.window, args.variant == "now")
    print("RESULT " + json.dumps(result))


def make_videos(folder: Path, count: int) -> None:
    """``count`` distinct small MP4s: one real video, each copy followed by its own bytes (probe and hash differ)."""
    sys.path.insert(0, str(ROOT))
    from storyteller_core.intake.samples import make_video

    base_path = make_video(folder.parent / "base.mp4", seconds=0.3)
    base = base_path.read_bytes()
    base_path.unlink()
    for i in range(count):
        (folder / f"v{i:05d}.mp4").write_bytes(base + f"distinct-{i}".encode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--before", default="161dda3", help="git revision measured as 'before'")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--videos", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(BENCH))
    from common import external_emulator, load_line, previous_code, spread

    variants = args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        before = previous_code(args.before, tmp / "before")
        (tmp / "videos").mkdir()
        make_videos(tmp / "videos", args.jobs)
        for run in range(args.runs):
            for variant in variants:
                tree = before if variant == "before" else ROOT
                with external_emulator(processing_delay=3600, analysis_delay=0.0) as emu:
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            "--variant",
                            variant,
                            "--tree",
                            str(tree),
                            "--videos",
                            str(tmp / "videos"),
                            "--data-dir",
                            str(tmp / f"data-{variant}-{run}"),
                            "--url",
                            emu.url,
                            "--jobs",
                            str(args.jobs),
                            "--window",
                            str(args.window),
                        ],
                        capture_output=True,
                        text=True,
                        cwd=ROOT,
                        timeout=1200,
                    )
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    raise SystemExit(f"{variant} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
                results[variant].append(json.loads(line[7:]))
                loads.append(os.getloadavg())
                print(f"run {run + 1} {variant}: {results[variant][-1]}", file=sys.stderr)
    print(
        f"{args.jobs} videos waiting on Gemini's processing; CPU of the engine process over {args.window:g} s, "
        f"{args.runs} runs (min / median / max)"
    )
    print(
        f"{'variant':<9} | {'% of one core':<19} | {'tasks taken /s':<19} | {'status calls /s':<17} | {'submit s':<8} | "
        f"{'processing at the window':<24}"
    )
    for variant in variants:
        runs = results[variant]
        taken = [r["taken_per_s"] for r in runs if r["taken_per_s"] is not None]
        calls = [r["watch_calls_per_s"] for r in runs if r["watch_calls_per_s"] is not None]
        print(
            f"{variant:<9} | {spread([r['core_pct'] for r in runs], '.2f'):<19} | "
            f"{spread(taken, '.1f') if taken else 'n/a':<19} | {spread(calls, '.2f') if calls else 'n/a':<17} | "
            f"{statistics_median([r['intake_s'] for r in runs]):<8.1f} | "
            f"{spread([r['processing'] for r in runs], '.0f'):<24}"
        )
    for variant in variants:
        median_run = sorted(results[variant], key=lambda r: r["core_pct"])[len(results[variant]) // 2]
        print(f"{variant}: % of a core by thread, median run: {median_run['by_thread_pct']}")
    print(load_line(loads))


def statistics_median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


if __name__ == "__main__":
    main()
