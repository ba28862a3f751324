"""N SSE clients on one batch: the server's CPU and memory while they watch it run to the end.

    python bench/api_sse.py                 # 200 clients, 20 videos
    python bench/api_sse.py --clients 50 --videos 5

Starts the emulator in this process and `streamlit run app.py` against it, makes a batch of local files
over the API, opens N event streams on it (httpx, asyncio) and samples the server's CPU time and RSS
until every stream has had its end event.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from storyteller_core.emulator import Emulator, EmulatorConfig  # noqa: E402
from storyteller_core.intake.samples import make_video  # noqa: E402
from tests.api_server import AUTH, AppServer  # noqa: E402

MB = 1024 * 1024


async def watch(client: httpx.AsyncClient, url: str) -> tuple[int, bool]:
    events, ended = 0, False
    async with client.stream("GET", url, headers=AUTH) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                events += 1
                if line == "event: end":
                    ended = True
                    break
    return events, ended


async def run(server: AppServer, url: str, clients: int) -> list[tuple[int, bool]]:
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        return await asyncio.gather(*(watch(client, url) for _ in range(clients)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--videos", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Emulator(EmulatorConfig(processing_delay_s=3.0, analysis_delay_s=1.0)) as emu:
        allowed = Path(tmp) / "allowed"
        clips = [make_video(allowed / f"clip {n}.mp4", seconds=1, seed=n) for n in range(args.videos)]
        server = AppServer(Path(tmp), emu.base_url, STORYTELLER_API_ROOTS=str(allowed)).start()
        try:
            process = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
            time.sleep(2)
            idle_rss = process.memory_info().rss
            made = httpx.post(server.api + "/batches", json={"paths": [str(c) for c in clips]}, headers=AUTH, timeout=60).json()
            url = f"{server.api}/batches/{made['id']}/events"
            peak, stop = [idle_rss], threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], process.memory_info().rss)
                    time.sleep(0.05)

            threading.Thread(target=sample, daemon=True).start()
            cpu0, wall0 = sum(process.cpu_times()[:2]), time.monotonic()
            results = asyncio.run(run(server, url, args.clients))
            cpu, wall = sum(process.cpu_times()[:2]) - cpu0, time.monotonic() - wall0
            stop.set()
            ended = sum(e for _, e in results)
            counts = sorted({n for n, _ in results})
            print(
                f"{args.clients} SSE clients on a batch of {args.videos} videos: {ended}/{args.clients} got the end "
                f"event; events per client {counts}; {wall:.1f} s wall, server CPU {cpu:.1f} s "
                f"({100 * cpu / wall:.0f} % of a core); server RSS {idle_rss / MB:.0f} MB idle, peak {peak[0] / MB:.0f} MB "
                f"(+{(peak[0] - idle_rss) / MB:.0f} MB, {(peak[0] - idle_rss) / max(1, args.clients) / 1024:.0f} KB per "
                "client)"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
