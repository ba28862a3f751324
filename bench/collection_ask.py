"""Ask the collection over 50 videos: estimate, then time and cost of the answer and of its citation checks,
asked again (reused), and the same question by map-reduce (a small context budget), against the emulator.

    python bench/collection_ask.py                       # 50 videos of 30 s, gemini-3.8-flash, 0.2 s per call
    python bench/collection_ask.py --videos 200 --delay 1.0 --checks-at-once 5

The emulator answers each call after ``--delay`` seconds (Gemini's own latency is longer: a real clip check
takes seconds); costs are from the emulator's usage figures (about 290 tokens per second of clip) and
prices.json, as in a real run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the repo on sys.path)

from storyteller_core import Engine, Settings
from storyteller_core.collection.ask import Asker, AskResult, Scope
from storyteller_core.commands import Ask
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.intake.samples import make_video
from storyteller_core.settings import PROMPT_PRESETS

QUESTION = "Which videos open on a picture, and when?"


def line(label: str, result: AskResult, seconds: float, calls: int) -> str:
    statuses = Counter(c.status for c in result.citations)
    return (
        f"{label:<26} {seconds:7.2f} s  ${result.cost_usd:8.4f}  {calls:4d} calls  {len(result.citations):3d} citations "
        f"({statuses['confirmed']} confirmed, {statuses['corrected']} corrected, {statuses['unsupported']} unsupported)"
        f"  reused={result.reused}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="gemini-3.8-flash")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the emulator takes per call")
    parser.add_argument("--checks-at-once", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Emulator(EmulatorConfig(processing_delay_s=0.05, analysis_delay_s=0.02)) as emu:
        work = Path(tmp)
        started = time.monotonic()
        paths = [make_video(work / "in" / f"clip-{i:03d}.mp4", seconds=args.seconds, seed=i) for i in range(args.videos)]
        settings = Settings(
            data_dir=work / "data",
            api_key="bench-key",
            base_url=emu.base_url,
            model=args.model,
            model_pinned=True,
            poll_initial_s=0.1,
            poll_max_s=0.5,
            request_timeout_s=30,
            max_workers=6,
        )
        engine = Engine(settings, stderr_log_level=logging.CRITICAL + 1).start()
        items = engine.commands.submit_paths(paths, Ask(prompt=PROMPT_PRESETS["Story"], model=args.model, preset="Story"))
        rows = engine.wait([i.id for i in items], timeout=600)
        batch = Scope((rows[0].item.batch_id,))
        print(f"{args.videos} videos of {args.seconds:g} s analyzed in {time.monotonic() - started:.1f} s (setup, not measured)")
        emu.config.analysis_delay_s = args.delay

        def measured(label: str, asker: Asker) -> AskResult:
            before = len(emu.stats.wire)
            t0 = time.monotonic()
            result = asker.ask(QUESTION, batch, args.model)
            print(line(label, result, time.monotonic() - t0, len(emu.stats.wire) - before))
            return result

        one = Asker(settings, engine.store, engine.ctx.gateway, checks_at_once=args.checks_at_once)
        estimate = one.estimate(QUESTION, batch, args.model)
        print(f"estimate: {estimate.describe()}")
        first = measured("one call + checks", one)
        checks = [c for c in first.citations if c.outcome and c.outcome.asked]
        per_check = [c.outcome.cost_usd or 0.0 for c in checks if c.outcome]
        if per_check:
            print(
                f"per clip check: ${sum(per_check) / len(per_check):.5f} on average "
                f"({sum(c.outcome.prompt_tokens for c in checks if c.outcome) // len(checks)} input tokens); "
                f"{len(first.citations) - len(checks)} citation(s) unsupported without a request (outside the video)"
            )
        measured("asked again", Asker(settings, engine.store, engine.ctx.gateway))
        small = Asker(settings, engine.store, engine.ctx.gateway, context_budget_tokens=6_000, checks_at_once=args.checks_at_once)
        small_estimate = small.estimate(QUESTION + " (map-reduce)", batch, args.model)
        print(f"map-reduce estimate: {small_estimate.describe()}")
        before = len(emu.stats.wire)
        t0 = time.monotonic()
        reduced = small.ask(QUESTION + " (map-reduce)", batch, args.model)
        print(line("map-reduce (6k budget)", reduced, time.monotonic() - t0, len(emu.stats.wire) - before))
        engine.shutdown(timeout=5)


if __name__ == "__main__":
    main()
