"""The store as a batch grows (issue 16): rows added per second, the board's read, `status`, memory; before and now.

    python bench/store_scale.py                         # 1,000 / 10,000 / 100,000 rows, before (e4fb57c) and now
    python bench/store_scale.py --rows 1000,10000 --before e4fb57c --budget 120

For each size and variant, in fresh processes with that variant's code (``git archive`` of ``--before``):
  add     rows are added one transaction each, as the background intake adds a checked file (its item, its video,
          its analysis, the item pointed at them); the rate of each block of 5,000 rows (or of the whole, when
          smaller) is printed, so a rate that falls as the batch grows shows. "before" stops at ``--budget`` s:
          its rate falls with the batch (every index is one JSON list rewritten per row), so 100,000 rows would take
          hours; its larger stores are then written directly in its own layout for the reads below.
  board   what the Batch page reads on each rerun: before, every row then the videos of a page; now, the kept
          counts and sums and one page of rows (``page_rows``, "All" and "Done"). Median of ``--reads``.
  status  wall time of ``python -m storyteller_core status`` on that data dir.
  rss     resident memory of the process that did the board reads (store open, reads done, streamlit and pandas
          imported as the app has them).
Targets: a page of a 100,000-row batch <= 50 ms; the last 5,000 rows added no slower than 0.8x the first 5,000;
`status` of 100,000 rows <= 1 s; the app's memory with 100,000 rows <= 300 MB.
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
BATCH = "20261202-000000-bnch"
BLOCK = 5000


def _store(tree: Path, directory: Path):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(tree))
    from storyteller_core.storage import disk_store as store_module

    return (getattr(store_module, "DiskStore", None) or store_module.Store)(directory)  # Store before the split


def _records(i: int, done: bool):  # type: ignore[no-untyped-def]
    from storyteller_core.records.analysis import Analysis, AnalysisState
    from storyteller_core.records.batch import Item
    from storyteller_core.records.video import Video, VideoState

    video = Video(
        id=f"{i:064x}",
        sha256=f"{i:064x}",
        display_name=f"video-{i:06d}.mp4",
        sources=[f"/videos/v-{i:06d}.mp4"],
        size_bytes=10**7,
        duration_s=60.0,
        state=VideoState.FILE_ACTIVE,
        progress=80,
        backend="https://example",
        gemini_name=f"files/vs-{i}",
        gemini_uri=f"https://example/v1beta/files/vs-{i}",
    )
    analysis = Analysis(
        id=f"{i:032x}",
        video_id=video.id,
        model="gemini-3-flash",
        prompt="Tell the story",
        backend="https://example",
        state=AnalysisState.COMPLETED if done else AnalysisState.WAITING,
        story="A story. " * 60 if done else None,
        total_tokens=18_000,
        cost_usd=0.006 if done else None,
        estimated_cost_usd=0.006,
    )
    item = Item(id=f"item-{i:07d}", batch_id=BATCH, display_name=video.display_name, source_path=video.sources[0])
    return video, analysis, item


def child_add(tree: Path, directory: Path, rows: int, budget_s: float) -> None:
    store = _store(tree, directory)
    from storyteller_core.records.batch import Batch, Item

    store.add_batch(Batch(id=BATCH, name="bench"))
    block = min(BLOCK, rows)
    rates, started, block_started = [], time.perf_counter(), time.perf_counter()
    for i in range(rows):
        video, analysis, item = _records(i, done=i % 10 < 8)
        store.add_item(item)
        store.add_video(video)
        store.add_analysis(analysis)
        store.mutate(Item, item.id, lambda it, v=video.id, a=analysis.id: (setattr(it, "video_id", v), setattr(it, "analysis_id", a)))
        if (i + 1) % block == 0:
            now = time.perf_counter()
            rates.append(round(block / (now - block_started)))
            block_started = now
            if now - started > budget_s:
                break
    print("RESULT " + json.dumps({"rows": i + 1, "rates": rates}))


def child_bulk_old(directory: Path, rows: int) -> None:
    """A store in the before-layout (release 2: JSON records, each index one JSON list), written directly."""
    import diskcache

    sys.path.insert(0, str(ROOT))
    from storyteller_core.records.batch import Batch

    cache = diskcache.Cache(str(directory))
    ids = []
    with cache.transact():
        for i in range(rows):
            video, analysis, item = _records(i, done=i % 10 < 8)
            item.video_id, item.analysis_id = video.id, analysis.id
            for record in (video, analysis, item):
                cache.set(f"{record.KIND}:{record.id}", record.to_json())
            cache.set(f"index:analysis-items:{analysis.id}", json.dumps([item.id]))
            cache.set(f"index:video-analyses:{video.id}", json.dumps([analysis.id]))
            ids.append(item.id)
        cache.set(f"batch:{BATCH}", Batch(id=BATCH, name="bench").to_json())
        cache.set("index:batches", json.dumps([BATCH]))
        cache.set("index:items", json.dumps(ids))
        cache.set(f"index:batch:{BATCH}", json.dumps(ids))
        cache.set("meta:schema", 2)
    cache.close()
    print("RESULT " + json.dumps({"rows": rows}))


def child_read(tree: Path, directory: Path, reads: int) -> None:
    store = _store(tree, directory)
    import pandas  # noqa: F401  the app has both loaded
    import psutil
    import streamlit  # noqa: F401

    from storyteller_core.views import board

    def read() -> int:
        if hasattr(board, "page_rows"):
            board.kept_totals(store, BATCH)
            rows, matching = board.page_rows(store, BATCH, "All", offset=0, limit=25)
            board.page_rows(store, BATCH, "Done", offset=0, limit=25)
            return matching
        rows = board.batch_rows(store, BATCH, videos_of_done=False)
        board.totals(rows)
        board.with_videos(store, rows[:25])
        return len(rows)

    count = read()
    timings = []
    for _ in range(reads):
        started = time.perf_counter()
        read()
        timings.append((time.perf_counter() - started) * 1000)
    print(
        "RESULT "
        + json.dumps(
            {"rows": count, "median_ms": round(statistics.median(timings), 2), "rss_mb": round(psutil.Process().memory_info().rss / 2**20)}
        )
    )


def run(*args: str, tree: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree or ROOT)}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((line for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[7:])


def status_time(tree: Path, data_dir: Path) -> float:
    env = {**os.environ, "STORYTELLER_DATA_DIR": str(data_dir), "PYTHONPATH": str(tree)}
    env.pop("GEMINI_API_KEY", None)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "storyteller_core", "status"], env=env, cwd=tree, capture_output=True, stdin=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1000,10000,100000")
    parser.add_argument("--before", default="e4fb57c")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds 'before' may spend adding rows per size")
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode == "add":
            child_add(Path(rest[0]), Path(rest[1]), int(rest[2]), float(rest[3]))
        elif mode == "bulk-old":
            child_bulk_old(Path(rest[0]), int(rest[1]))
        else:
            child_read(Path(rest[0]), Path(rest[1]), int(rest[2]))
        return
    sys.path.insert(0, str(BENCH))
    from common import previous_code

    with tempfile.TemporaryDirectory() as scratch:
        before_tree = previous_code(args.before, Path(scratch) / "before")
        print(
            f"{'rows':>8} {'variant':<8} {'added':>8} {'rows/s per 5,000 (first .. last)':<36} {'board ms':>9} "
            f"{'status s':>9} {'rss MB':>7}",
            flush=True,
        )
        for rows in (int(n) for n in args.rows.split(",")):
            for name, tree in (("before", before_tree), ("now", ROOT)):
                data_dir = Path(scratch) / f"{name}-{rows}"
                jobs = data_dir / "store"
                added = run("add", str(tree), str(jobs), str(rows), str(args.budget if name == "before" else 1e9), tree=tree)
                if added["rows"] < rows:  # before ran out of budget: write its layout directly for the reads
                    subprocess.run(["rm", "-rf", str(jobs)], check=True)
                    run("bulk-old", str(jobs), str(rows))
                read = run("read", str(tree), str(jobs), str(args.reads), tree=tree)
                status = status_time(tree, data_dir)
                rates = added["rates"]
                shown = f"{rates[0]:,} .. {rates[-1]:,}" + (f" (stopped at {added['rows']:,})" if added["rows"] < rows else "")
                print(
                    f"{rows:>8,} {name:<8} {added['rows']:>8,} {shown:<36} {read['median_ms']:>9.1f} {status:>9.2f} {read['rss_mb']:>7}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
