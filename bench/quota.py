"""Requests sent to Gemini per minute while the quota is exhausted: before and after the floor and the shared cooldown.

    python bench/quota.py                          # 60 s before, then after until the pause (about 3.5 minutes)
    python bench/quota.py --seconds 30 --pause-after 20

Three callers poll their own file on one emulator that answers every files.get
with 429 and RetryInfo "0s" (rate_429=1.0, retry_delay_s=0.0). Before: the
retry wait as it was until commit 0086a48 (the server's delay plus 0-0.25 s of
jitter, no floor, no shared cooldown). After: retry.call_with_retry with one
quota.Cooldown shared by the three; it pauses them after --pause-after seconds.
Counts come from the emulator's own request log.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import tenacity
from common import ROOT  # noqa: F401  (puts the repo on sys.path)

from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.errors import GeminiError, QuotaPaused
from storyteller_core.gemini.gateway import Gateway
from storyteller_core.gemini.retry import call_with_retry, is_transient
from storyteller_core.work.cooldown import Cooldown

CALLERS = 3
ISSUE_BEFORE = (5859, 305)  # requests, seconds: three videos on real Gemini, from the issue


def old_wait(state: tenacity.RetryCallState) -> float:
    """retry._wait before the floor: a RetryInfo of "0s" meant 0-0.25 s."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, GeminiError) and exc.retry_after_s is not None:
        return exc.retry_after_s + random.uniform(0, 0.25)
    return min(30.0, 2 ** (state.attempt_number - 1)) * random.uniform(0.8, 1.2)


def run(emu: Emulator, names: list[str], call: Callable[[Callable[[], object]], object]) -> tuple[float, list[str]]:
    """Three callers at once; returns the elapsed seconds and how each one ended."""
    gateway = Gateway("bench-key", emu.base_url, 30)
    endings: list[str] = []
    started = time.monotonic()

    def caller(name: str) -> None:
        try:
            call(lambda: gateway.get_file(name))
            endings.append("ok")
        except QuotaPaused:
            endings.append(f"QuotaPaused after {time.monotonic() - started:.0f} s")
        except GeminiError as exc:
            endings.append(f"{exc.label} after {time.monotonic() - started:.0f} s")

    threads = [threading.Thread(target=caller, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started, endings


def report(label: str, emu: Emulator, since: float, elapsed: float, endings: list[str]) -> None:
    sent = sum(1 for t in emu.stats.request_times if t >= since)
    minutes = emu.stats.requests_by_minute(since=since)
    per_minute = ", ".join(f"min {m + 1}: {minutes[m]}" for m in sorted(minutes))
    print(
        f"{label}: {sent} requests in {elapsed:.0f} s = {sent * 60 / elapsed:.0f} per minute ({per_minute}); "
        f"callers: {'; '.join(sorted(set(endings)))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the before run lasts (its retry budget)")
    parser.add_argument("--after-seconds", type=float, default=600.0, help="retry budget of each call in the after run (a poll's 10 min)")
    parser.add_argument("--pause-after", type=float, default=120.0, help="Cooldown.pause_after_s in the after run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    print(
        f"before (the issue, real Gemini): {ISSUE_BEFORE[0]} requests in {ISSUE_BEFORE[1]} s = "
        f"{ISSUE_BEFORE[0] * 60 / ISSUE_BEFORE[1]:.0f} per minute for 3 videos"
    )
    with tempfile.TemporaryDirectory() as tmp, Emulator(EmulatorConfig(processing_delay_s=0)) as emu:
        video = Path(tmp) / "v.mp4"
        video.write_bytes(b"\0" * 1024)
        gateway = Gateway("bench-key", emu.base_url, 30)
        names = [
            gateway.upload(
                video, name=f"vs-quota-{i}", display_name=f"v{i}.mp4", mime_type="video/mp4", on_progress=lambda _: None
            ).file.name
            for i in range(CALLERS)
        ]
        emu.config.fault_on, emu.config.rate_429, emu.config.retry_delay_s = {"poll"}, 1.0, 0.0

        old = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient), wait=old_wait, stop=tenacity.stop_before_delay(args.seconds), reraise=True
        )
        since = time.time()
        elapsed, endings = run(emu, names, old)
        report("before (old wait, emulator)", emu, since, elapsed, endings)

        cooldown = Cooldown(pause_after_s=args.pause_after)
        since = time.time()
        elapsed, endings = run(emu, names, lambda fn: call_with_retry(fn, args.after_seconds, cooldown=cooldown))
        report(f"after (1 s floor, shared cooldown, pause after {args.pause_after:.0f} s)", emu, since, elapsed, endings)


if __name__ == "__main__":
    main()
