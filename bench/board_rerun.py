"""Time one full rerun of the Batch page with many jobs in the store.

    python bench/board_rerun.py            # 1,000 jobs
    python bench/board_rerun.py --jobs 10000

Target: under 300 ms for 1,000 jobs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT

from storyteller_core.jobs import Job, State
from storyteller_core.store import JobStore


def fill(store: JobStore, count: int) -> None:
    rng = random.Random(1)
    for i in range(count):
        state = rng.choice([State.COMPLETED] * 8 + [State.FAILED, State.CANCELLED])
        job = Job(display_name=f"video-{i:05d}.mp4", source_path=f"/videos/video-{i:05d}.mp4", size_bytes=10**7,
                  sha256=f"{i:064x}", mime_type="video/mp4", model="gemini-2.5-flash", prompt="Tell the story",
                  batch_id="bench-batch", state=state, progress=100 if state is State.COMPLETED else 40, duration_s=60.0,
                  story="A story. " * 60 if state is State.COMPLETED else None, total_tokens=18_000, cost_usd=0.006,
                  error_message="Gemini could not process it." if state is State.FAILED else None)
        store.create(job)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STORYTELLER_DATA_DIR"] = tmp
        os.environ.pop("GEMINI_API_KEY", None)
        store = JobStore(Path(tmp) / "jobs")
        fill(store, args.jobs)
        os.chdir(ROOT)
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()  # first run builds the engine
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            at.run()
            timings.append((time.perf_counter() - started) * 1000)
        assert not at.exception, at.exception
        load = []
        for _ in range(args.runs):
            started = time.perf_counter()
            store.jobs_in_batch("bench-batch")
            load.append((time.perf_counter() - started) * 1000)
    print(f"{'jobs':>6} | {'page rerun median ms':>20} | {'p90 ms':>7} | {'store read ms':>13}")
    p90 = sorted(timings)[int(len(timings) * 0.9) - 1]
    print(f"{args.jobs:>6} | {statistics.median(timings):20.0f} | {p90:7.0f} | {statistics.median(load):13.0f}")


if __name__ == "__main__":
    main()
