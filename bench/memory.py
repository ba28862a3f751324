"""Peak RSS of the engine process pushing large files through the whole pipeline.

    python bench/memory.py              # 1 GB
    python bench/memory.py --sizes 100M,1G,2G

Target: under 150 MB above the idle engine process, whatever the file size.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from common import RssSampler, external_emulator, padded_video

from storyteller_core import Engine, Settings
from storyteller_core.commands import Ask
from storyteller_core.views.board import Status

UNITS = {"M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    return int(float(text[:-1]) * UNITS[text[-1].upper()])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1G")
    args = parser.parse_args()
    rows = []
    with external_emulator() as emu, tempfile.TemporaryDirectory() as tmp:  # stopped, and its storage checked, on exit
        engine = Engine(
            Settings(data_dir=Path(tmp) / "data", api_key="bench-key", base_url=emu.url), stderr_log_level=logging.CRITICAL + 1
        ).start()
        idle = RssSampler().peak  # once, before any file: the honest baseline
        for label in args.sizes.split(","):
            video = padded_video(Path(tmp) / f"big-{label}.mp4", parse_size(label))
            started = time.monotonic()
            with RssSampler() as sampler:
                [item] = engine.commands.submit_paths([video], Ask(prompt="Tell the story", model=engine.settings.model))
                [row] = engine.wait([item.id])
            seconds = time.monotonic() - started
            assert row.status is Status.DONE, row.error
            rows.append((label, idle / 1024**2, sampler.peak / 1024**2, (sampler.peak - idle) / 1024**2, seconds))
            video.unlink()
        engine.shutdown()
    print(f"{'file':>6} | {'idle RSS MB':>11} | {'peak RSS MB':>11} | {'peak - idle MB':>14} | {'seconds':>7}")
    for label, idle, peak, delta, seconds in rows:
        print(f"{label:>6} | {idle:11.1f} | {peak:11.1f} | {delta:14.1f} | {seconds:7.1f}")


if __name__ == "__main__":
    main()
