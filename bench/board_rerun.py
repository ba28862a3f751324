"""Reading a batch for the pages: the board's rows for 1,000 and 10,000 items, before and now, in one run.

    python bench/board_rerun.py                       # 1,000 and 10,000 rows, 3 runs per variant
    python bench/board_rerun.py --rows 1000 --runs 5 --before 161dda3
    python bench/board_rerun.py --status-cli          # also time `status` and `export --csv` of the CLI

One store is filled (with the current code) with a batch of N items, each
with its own video and analysis (8 in 10 stories done), and read as the
Batch page's board reads it on every rerun: ``board.batch_rows`` (the
index, the items, their analyses, and the videos of rows whose status
depends on them), then ``board.with_videos`` for the 25 rows of a page.
Each run is a fresh process that opens the store, reads the rows once to
warm up, then times ``--reads`` reads and keeps the median, as wall time
and as this process's CPU time (what a shared machine's load does not
inflate much). The variants alternate, so both see the same machine load:
  before   the code at ``--before`` (default 161dda3: one SQL query and one
           dataclasses.fields() per record), unpacked with ``git archive``
  now      the current code (one query per 900 records, field sets cached, no
           video read for a row whose story is done unless it is shown)
Targets (issue 13): 10,000 rows <= 300 ms, 1,000 rows <= 80 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BATCH = "bench-batch"
PAGE_SIZE = 25  # pages/batch.py shows this many rows a page


def fill(directory: Path, count: int) -> None:
    sys.path.insert(0, str(ROOT))
    import random

    from storyteller_core.records.analysis import Analysis, AnalysisState
    from storyteller_core.records.batch import Batch, Item
    from storyteller_core.records.video import Video, VideoState
    from storyteller_core.storage.disk_store import DiskStore

    rng = random.Random(1)
    store = DiskStore(directory)
    store.add_batch(Batch(id=BATCH, name="bench"))
    with store.cache.transact():
        for i in range(count):
            state = rng.choice([AnalysisState.COMPLETED] * 8 + [AnalysisState.FAILED, AnalysisState.WAITING])
            video = Video(
                id=f"{i:064x}",
                sha256=f"{i:064x}",
                display_name=f"video-{i:05d}.mp4",
                sources=[f"/videos/video-{i:05d}.mp4"],
                size_bytes=10**7,
                duration_s=60.0,
                state=VideoState.FILE_ACTIVE,
                progress=80,
                backend="https://example",
                gemini_name=f"files/vs-{i}",
                gemini_uri=f"https://example/v1beta/files/vs-{i}",
                gemini_expires_at=time.time() + 3600,
                state_entered_at={"CREATED": time.time(), "FILE_ACTIVE": time.time()},
            )
            store.put(video)
            analysis = Analysis(
                id=f"{i:032x}",
                video_id=video.id,
                model="gemini-3.8-flash",
                prompt="Tell the story",
                backend="https://example",
                state=state,
                story="A story. " * 60 if state is AnalysisState.COMPLETED else None,
                total_tokens=18_000,
                cost_usd=0.006,
                estimated_cost_usd=0.006,
                error_message="Gemini could not process it." if state is AnalysisState.FAILED else None,
            )
            store.put(analysis)
            store.add_item(
                Item(
                    id=f"item-{i:06d}",
                    batch_id=BATCH,
                    display_name=video.display_name,
                    source_path=video.sources[0],
                    video_id=video.id,
                    analysis_id=analysis.id,
                )
            )
    store.close()


def child(tree: Path, directory: Path, reads: int) -> None:
    sys.path.insert(0, str(tree))
    from storyteller_core.storage import disk_store as store_module
    from storyteller_core.views import board

    store = getattr(store_module, "DiskStore", getattr(store_module, "Store", None))(directory)

    def board_read() -> int:
        """What the Batch page reads on each rerun of its board: every row, then the videos of the rows shown."""
        if not hasattr(board, "with_videos"):  # code before the board skipped finished stories' videos
            return len(board.batch_rows(store, BATCH))
        rows = board.batch_rows(store, BATCH, videos_of_done=False)
        board.with_videos(store, rows[:PAGE_SIZE])
        return len(rows)

    count = board_read()  # warm: open, page cache
    timings, cpu = [], []
    for _ in range(reads):
        started, cpu_started = time.perf_counter(), time.process_time()
        board_read()
        timings.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    print("RESULT " + json.dumps({"rows": count, "median_ms": statistics.median(timings), "cpu_ms": statistics.median(cpu)}))


def cli_time(runs: int, *command: str) -> list[float]:
    """Wall time of `python -m storyteller_core <command>` on an empty data dir, a fresh process each time."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as data:
            env = {**os.environ, "STORYTELLER_DATA_DIR": data, "PYTHONPATH": str(ROOT)}
            env.pop("GEMINI_API_KEY", None)
            args = [arg.replace("{data}", data) for arg in command]
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "storyteller_core", *args],
                env=env,
                cwd=ROOT,
                check=False,
                capture_output=True,
                stdin=subprocess.DEVNULL,
            )
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--before", default="161dda3", help="git revision measured as 'before'")
    parser.add_argument("--status-cli", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
        return

    sys.path.insert(0, str(BENCH))
    from common import load_line, previous_code, spread

    loads = [os.getloadavg()]
    table = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        before = previous_code(args.before, tmp / "before")
        for count in map(int, args.rows.split(",")):
            directory = tmp / f"store-{count}"
            fill(directory, count)
            results: dict[str, list[float]] = {"before": [], "now": [], "before cpu": [], "now cpu": []}
            for _ in range(args.runs):
                for variant, tree in (("before", before), ("now", ROOT)):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", str(tree), str(directory), str(args.reads)],
                        capture_output=True,
                        text=True,
                        cwd=tmp,
                        check=True,
                    )
                    result = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:])
                    assert result["rows"] == count, result
                    results[variant].append(result["median_ms"])
                    results[f"{variant} cpu"].append(result["cpu_ms"])
                    loads.append(os.getloadavg())
            table.append((count, results))
    print(
        f"the board's read of one batch (batch_rows, then with_videos for a page), median of {args.reads} reads "
        f"per process, {args.runs} processes per variant: min / median / max ms"
    )
    print(f"{'rows':>6} | {'before ms':<20} | {'now ms':<20} | {'speed-up':>8} | {'before CPU ms':<20} | {'now CPU ms':<20}")
    for count, results in table:
        speed = statistics.median(results["before"]) / statistics.median(results["now"])
        print(
            f"{count:>6} | {spread(results['before'], '.0f'):<20} | {spread(results['now'], '.0f'):<20} | {speed:7.1f}x | "
            f"{spread(results['before cpu'], '.0f'):<20} | {spread(results['now cpu'], '.0f'):<20}"
        )
    if args.status_cli:
        print()
        for command in (("status",), ("export", "--csv", "{data}/out.csv")):
            times = cli_time(args.runs, *command)
            loads.append(os.getloadavg())
            shown = " ".join(command).replace("{data}/", "")
            print(f"`python -m storyteller_core {shown}` on an empty data dir: {spread(times, '.2f')} s (min / median / max)")
    print(load_line(loads))


if __name__ == "__main__":
    main()
