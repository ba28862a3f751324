"""Three questions of one 10-minute video, with and without an explicit context cache: estimate before start
against the cost after, from the emulator's usage (cachedContentTokenCount) and prices.json.

    python bench/caching.py                  # gemini-3.8-flash, 600 s
    python bench/caching.py --model gemini-3.1-pro-preview --seconds 300

The video is real (PyAV, 160x120); the emulator counts about 290 tokens per second of it, as Gemini does.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the repo on sys.path)

from storyteller_core import Engine, Settings
from storyteller_core.commands import Ask
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.intake.samples import make_video
from storyteller_core.settings import estimate_questions_cost

PROMPTS = ["Tell the story of this video", "List the key moments with timestamps", "Summarise it for a report"]


def run(video: Path, model: str, *, cached: bool, work: Path) -> tuple[float, float, int, int]:
    """(estimate, actual USD, caches created, cached calls) for the three questions."""
    with Emulator(EmulatorConfig(processing_delay_s=0.1, analysis_delay_s=0.05)) as emu:
        settings = Settings(
            data_dir=work / ("cached" if cached else "plain"),
            api_key="bench-key",
            base_url=emu.base_url,
            model=model,
            model_pinned=True,
            context_cache=cached,
            poll_initial_s=0.1,
            poll_max_s=0.5,
            request_timeout_s=30,
        )
        engine = Engine(settings, stderr_log_level=logging.CRITICAL + 1)
        ids: list[str] = []
        for prompt in PROMPTS:
            ids += [i.id for i in engine.commands.submit_paths([video], Ask(prompt=prompt, model=model), resume=True)]
        engine.start()
        rows = engine.wait(ids, timeout=120)
        engine.shutdown(timeout=5)
        duration = rows[0].video.duration_s if rows[0].video else None
        estimate = estimate_questions_cost(model, duration, PROMPTS, cached=cached, held_s=60.0)
        actual = sum(r.analysis.cost_usd or 0.0 for r in rows if r.analysis)
        return estimate, actual, sum(emu.stats.caches_created.values()), sum(emu.stats.cached_generates.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemini-3.8-flash")
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = make_video(work / "ten-minutes.mp4", seconds=args.seconds, size=(160, 120))
        print(f"{args.model}, {args.seconds:g} s video, 3 questions")
        print(f"{'':12} {'estimate':>10} {'actual':>10} {'caches':>7} {'cached calls':>13}")
        for cached in (False, True):
            estimate, actual, caches, calls = run(video, args.model, cached=cached, work=work)
            label = "with cache" if cached else "no cache"
            print(f"{label:12} {estimate:>10.5f} {actual:>10.5f} {caches:>7} {calls:>13}")


if __name__ == "__main__":
    main()
