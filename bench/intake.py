"""What Start costs the page for a large selection: checked before Start (before) vs checked after it (now).

    python bench/intake.py                  # 2,000 distinct local videos, 3 runs per variant
    python bench/intake.py --videos 500 --runs 1

before  the page checks every file (hash, probe) when the folder is added, then Start makes each
        row's video (thumbnail), analysis and row in turn: ``inspect_path`` for each file + ``submit``.
now     the folder is listed unchecked (a stat per file) and Start stores the batch and its rows in one
        transaction; a background thread checks the files. Also measured: until every row is checked.

Engines are not started (no workers, no network): this measures intake alone. Each run uses a fresh
data dir, deleted afterwards. Target (issue 13): Start for 2,000 local videos gives the page back in <= 3 s.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storyteller_core import Engine, Settings  # noqa: E402
from storyteller_core.commands import Ask  # noqa: E402
from storyteller_core.intake.candidates import expand, inspect_path, unchecked  # noqa: E402
from storyteller_core.intake.samples import make_video  # noqa: E402


def distinct_videos(folder: Path, count: int) -> list[Path]:
    """One real 2 s clip, copied ``count`` times with a few distinct trailing bytes (distinct content)."""
    raw = make_video(folder / "base" / "base.mp4", seconds=2, size=(160, 120)).read_bytes()
    out = folder / "videos"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (out / f"clip-{i:04d}.mp4").write_bytes(raw + f"#{i}".encode())
    return expand([out])[0]


def one_run(variant: str, paths: list[Path], scratch: Path) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(dir=scratch))
    engine = Engine(Settings(data_dir=data, api_key="bench-key", base_url="http://127.0.0.1:9"), stderr_log_level=logging.CRITICAL + 1)
    ask = Ask(prompt="Tell the story", model=engine.settings.model)
    try:
        started = time.monotonic()
        if variant == "before":
            candidates = [inspect_path(p, engine.settings) for p in paths]
            added = time.monotonic()
            engine.commands.submit(candidates, ask)
            done = time.monotonic()
            return {"add": added - started, "start": done - added, "page": done - started, "checked": done - started}
        engine.commands.add_pending(unchecked(p) for p in paths)
        added = time.monotonic()
        batch = engine.commands.start_pending(ask)
        returned = time.monotonic()
        assert batch is not None
        engine.commands.intake.idle.wait()
        checked = time.monotonic()
        assert all(item.intake is None and item.analysis_id for item in engine.store.items(batch.id))
        return {"add": added - started, "start": returned - added, "page": returned - started, "checked": checked - started}
    finally:
        engine.shutdown(timeout=2)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    try:
        paths = distinct_videos(scratch, args.videos)
        print(f"{args.videos} local videos, {args.runs} run(s) per variant; load average {os.getloadavg()}")
        print(f"{'variant':8} {'figure':34} {'min':>8} {'median':>8} {'max':>8}")
        for variant in ("before", "now"):
            runs = [one_run(variant, paths, scratch) for _ in range(args.runs)]
            for key, label in (
                ("add", "add the folder (s)"),
                ("start", "press Start (s)"),
                ("page", "page blocked, add + Start (s)"),
                ("checked", "until every row is checked (s)"),
            ):
                values = [run[key] for run in runs]
                print(f"{variant:8} {label:34} {min(values):8.2f} {statistics.median(values):8.2f} {max(values):8.2f}")
        print(f"load average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
