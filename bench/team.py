"""Team mode: throughput with 1, 2, 3 worker processes, takeover time after SIGKILL, Redis commands per job.

    .venv/bin/python bench/team.py                      # all three parts, small
    .venv/bin/python bench/team.py --jobs 200 --files 40 --workers 1,2,3 --kills 5

Starts its own redis-server (Debian's package) on a free loopback port and the
emulator in this process (its counters are read directly). Workers are real
``python -m storyteller_core.team.worker`` processes, 3 threads each, the
global upload cap 2, polls at 5/s across all of them. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storyteller_core.analysis import Analysis, AnalysisState  # noqa: E402
from storyteller_core.batch import Item  # noqa: E402
from storyteller_core.board import rows_of  # noqa: E402
from storyteller_core.commands import Ask  # noqa: E402
from storyteller_core.config import Settings  # noqa: E402
from storyteller_core.emulator import Emulator, EmulatorConfig  # noqa: E402
from storyteller_core.samples import make_batch  # noqa: E402
from storyteller_core.team.client import TeamClient  # noqa: E402
from storyteller_core.team.dispatch import TeamConfig  # noqa: E402
from storyteller_core.video import Video  # noqa: E402

KEY = "bench-key-0123456789"
PROMPTS = ["Tell the story", "List the people", "Where is it?", "What happens at the end?", "Summarise"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    server = shutil.which("redis-server")
    if not server:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Run:
    """One team (client + worker processes) on a fresh key prefix."""

    def __init__(self, redis_url: str, emu: Emulator, work: Path, *, max_uploads: int = 2, threads: int = 3,
                 **config: Any) -> None:
        self.emu = emu
        self.prefix = "b" + uuid.uuid4().hex[:8]
        self.overrides = dict(poll_initial_s=0.2, poll_max_s=2.0, upload_budget_s=120, processing_budget_s=120,
                              analysis_budget_s=60, request_timeout_s=30, polls_per_second=5.0, max_uploads=max_uploads,
                              max_jobs=threads)
        self.settings = Settings(data_dir=work / "data", api_key=KEY, base_url=emu.base_url, **self.overrides)  # type: ignore[arg-type]
        self.config = TeamConfig(url=redis_url, prefix=self.prefix, **config)
        self.client = TeamClient(self.settings, self.config)
        self.env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
        self.env.update({
            "PYTHONPATH": str(ROOT), "STORYTELLER_BROKER_URL": redis_url, "STORYTELLER_TEAM_PREFIX": self.prefix,
            "GEMINI_API_KEY": KEY, "GOOGLE_GEMINI_BASE_URL": emu.base_url, "STORYTELLER_DATA_DIR": str(work / "data"),
            "STORYTELLER_SETTINGS_JSON": json.dumps(self.overrides),
            "STORYTELLER_TEAM_HEARTBEAT_S": str(self.config.heartbeat_timeout_s),
            "STORYTELLER_TEAM_MAINTENANCE_CHANCE": str(self.config.maintenance_chance),
            "STORYTELLER_TEAM_UPLOAD_SLOT_TTL_S": str(self.config.upload_slot_ttl_s),
        })
        self.procs: list[subprocess.Popen] = []
        self.log = (work / f"workers-{self.prefix}.log").open("w")

    def start_workers(self, count: int) -> None:
        for _ in range(count):
            self.procs.append(subprocess.Popen([sys.executable, "-m", "storyteller_core.team.worker"], env=self.env, cwd=ROOT,
                                               stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while len(self.client.workers()) < len(self.alive()):
            if time.monotonic() > deadline:
                raise SystemExit("workers did not start; see " + self.log.name)
            time.sleep(0.1)

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def submit(self, paths: list[Path], prompts: int, jobs: int) -> list[Item]:
        """``jobs`` rows: the files in turn, each asked the prompts in turn."""
        groups: dict[str, list[Path]] = {}
        for n in range(jobs):
            groups.setdefault(PROMPTS[(n // len(paths)) % prompts], []).append(paths[n % len(paths)])
        items: list[Item] = []
        for prompt, group in groups.items():
            items += self.client.commands.submit_paths(group, Ask(prompt=prompt, model=self.settings.model))
        return items

    def wait(self, items: list[Item], timeout: float = 900) -> list[Any]:
        deadline = time.monotonic() + timeout
        ids = [i.id for i in items]
        while True:
            rows = rows_of(self.client.store, self.client.store.many(Item, ids))
            if all(r.ended for r in rows):
                return rows
            if time.monotonic() > deadline or not self.alive():
                raise SystemExit(f"not done after {timeout} s; see {self.log.name}")
            time.sleep(0.25)

    def holders(self, kind: str) -> dict[str, int]:
        out = {}
        for key in self.client.client.scan_iter(f"{self.prefix}:lease:{kind}:*"):
            value = self.client.client.get(key)
            if value:
                out[key.split(":lease:", 1)[1]] = int(value.split(":")[1])
        return out

    def close(self) -> None:
        for proc in self.alive():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.client.close()
        self.log.close()


def commands_processed(client: Any) -> int:
    return int(client.info("stats")["total_commands_processed"])


def phases(run: Run, rows: list[Any]) -> dict[str, float]:
    """Median seconds of each phase over the videos and analyses of a run."""
    store = run.client.store
    videos = store.many(Video, {r.item.video_id for r in rows if r.item.video_id})
    analyses = store.many(Analysis, {r.item.analysis_id for r in rows if r.item.analysis_id})
    out = {}
    spans = {"wait for a slot": ("CREATED", "UPLOADING"), "upload": ("UPLOADING", "UPLOADED"),
             "processing": ("UPLOADED", "FILE_ACTIVE")}
    for label, (a, b) in spans.items():
        values = [v.state_entered_at[b] - v.state_entered_at[a] for v in videos if a in v.state_entered_at and b in v.state_entered_at]
        out[label] = statistics.median(values) if values else float("nan")
    active = {v.id: v.state_entered_at.get("FILE_ACTIVE", 0.0) for v in videos}
    starts = [a.state_entered_at["ANALYZING"] - active[a.video_id] for a in analyses if "ANALYZING" in a.state_entered_at]
    out["active -> analyzing"] = statistics.median(starts) if starts else float("nan")
    answers = [a.state_entered_at["COMPLETED"] - a.state_entered_at["ANALYZING"] for a in analyses if "COMPLETED" in a.state_entered_at]
    out["analysis"] = statistics.median(answers) if answers else float("nan")
    return out


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def throughput(redis_url: str, work: Path, files: list[Path], workers: int, jobs: int, prompts: int, limits: bool) -> dict[str, Any]:
    emu = Emulator(EmulatorConfig(processing_delay_s=1.0, analysis_delay_s=0.5, chunk_delay_s=0.2)).start()
    try:
        run = Run(redis_url, emu, work, max_uploads=2 if limits else 100)
        if not limits:
            run.overrides["polls_per_second"] = 1000.0
            run.env["STORYTELLER_SETTINGS_JSON"] = json.dumps(run.overrides)
        try:
            run.start_workers(workers)
            before = commands_processed(run.client.client)
            started = time.monotonic()
            items = run.submit(files, prompts, jobs)
            rows = run.wait(items)
            elapsed = time.monotonic() - started
            redis_calls = commands_processed(run.client.client) - before
            done = sum(1 for r in rows if r.analysis and r.analysis.state is AnalysisState.COMPLETED)
            distinct = len({r.item.analysis_id for r in rows})
            return {"workers": workers, "limits": limits, "jobs": len(items), "done": done, "seconds": elapsed,
                    "jobs_per_min": len(items) / elapsed * 60, "analyses": distinct,
                    "uploads": sum(emu.stats.uploads_finished.values()), "generates": sum(emu.stats.generates.values()),
                    "max_uploads_at_once": emu.stats.max_uploads_at_once, "redis_per_job": redis_calls / len(items),
                    "polls_1s": max_in_window(emu.stats.poll_times + emu.stats.list_times, 1.0),
                    "polls_10s": max_in_window(emu.stats.poll_times + emu.stats.list_times, 10.0),
                    "phases": phases(run, rows)}
        finally:
            run.close()
    finally:
        emu.stop()


def takeover(redis_url: str, work: Path, files: list[Path], kills: int) -> list[float]:
    """SIGKILL the worker holding an analysis mid-call; seconds until another worker holds that analysis."""
    emu = Emulator(EmulatorConfig(processing_delay_s=0.2, analysis_delay_s=4.0)).start()
    times: list[float] = []
    try:
        run = Run(redis_url, emu, work, heartbeat_timeout_s=10.0, maintenance_chance=200_000)
        try:
            run.start_workers(2)
            for n in range(kills):
                items = run.client.commands.submit_paths(files[:1], Ask(prompt=f"kill {n}", model=run.settings.model))
                task = f"analysis:{items[0].analysis_id}"
                deadline = time.monotonic() + 60
                while True:
                    pid = run.holders("analysis").get(task)
                    analysis = run.client.store.get(Analysis, items[0].analysis_id or "")
                    if pid and analysis and analysis.state is AnalysisState.ANALYZING:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit("the analysis never started")
                    time.sleep(0.02)
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
                while (holder := run.holders("analysis").get(task)) in (None, pid):
                    if time.monotonic() - killed_at > 300:
                        raise SystemExit("no takeover within 300 s")
                    time.sleep(0.05)
                times.append(time.monotonic() - killed_at)
                print(f"  kill {n + 1}: taken over by pid {holder} after {times[-1]:.1f} s", flush=True)
                run.wait(items)
                run.start_workers(1)  # back to two workers
        finally:
            run.close()
    finally:
        emu.stop()
    return times


def board_read(redis_url: str, jobs: int) -> tuple[float, float]:
    """Median ms to read a batch of ``jobs`` rows (items, their analyses and videos) from Redis, and from diskcache."""
    from storyteller_core.analysis import analysis_key
    from storyteller_core.batch import Batch
    from storyteller_core.store import Store
    from storyteller_core.team.store import RedisStore, connect

    def fill(store: Store) -> list[float]:
        store.add_batch(Batch(id="b1", name="bench"))
        for n in range(jobs):
            sha = f"{n:064x}"
            store.add_video(Video(id=sha, sha256=sha, display_name=f"v{n}.mp4", sources=[f"/x/v{n}.mp4"]))
            analysis, _ = store.add_analysis(Analysis(id=analysis_key(sha, "m", "p", {}, "b"), video_id=sha, model="m",
                                                      prompt="p", backend="b"))
            store.add_item(Item(id=f"i{n:06d}", batch_id="b1", display_name=f"v{n}.mp4", video_id=sha,
                                analysis_id=analysis.id))
        times = []
        for _ in range(11):
            started = time.perf_counter()
            rows = rows_of(store, store.items("b1"))
            times.append((time.perf_counter() - started) * 1000)
            assert len(rows) == jobs
        return times[1:]

    client = connect(redis_url)
    redis_ms = statistics.median(fill(RedisStore(client, "board" + uuid.uuid4().hex[:6])))
    client.close()
    with tempfile.TemporaryDirectory() as folder:
        disk = Store(Path(folder))
        disk_ms = statistics.median(fill(disk))
        disk.close()
    return redis_ms, disk_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--no-limits", action="store_true", help="also run with the upload cap and poll rate lifted")
    parser.add_argument("--board", type=int, default=2000, help="rows for the board read time (0: skip)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    redis_proc, url = start_redis(work)
    try:
        files = make_batch(work / "videos", args.files)
        print(f"{args.jobs} jobs over {args.files} files x {args.prompts} prompts; emulator: upload 0.2 s per request, "
              "processing 1.0 s, analysis 0.5 s; 3 threads per worker; upload cap 2, polls 5/s (limits on)")
        print("| workers | limits | jobs | seconds | jobs/min | uploads | generates | max uploads at once | "
              "max status calls in 1 s / 10 s | Redis commands per job |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        results = []
        for workers in (int(w) for w in args.workers.split(",")):
            for limits in ((True, False) if args.no_limits else (True,)):
                r = throughput(url, work, files, workers, args.jobs, args.prompts, limits)
                results.append(r)
                print(f"| {r['workers']} | {'on' if limits else 'off'} | {r['jobs']} | {r['seconds']:.1f} | "
                      f"{r['jobs_per_min']:.0f} | {r['uploads']} | {r['generates']} | {r['max_uploads_at_once']} | "
                      f"{r['polls_1s']} / {r['polls_10s']} | {r['redis_per_job']:.0f} |", flush=True)
        print("\nmedian seconds per phase:")
        for r in results:
            print(f"  {r['workers']} workers, limits {'on' if r['limits'] else 'off'}: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()))
        if args.board:
            redis_ms, disk_ms = board_read(url, args.board)
            print(f"\nboard read of {args.board} rows (items + analyses + videos, median of 10): "
                  f"Redis {redis_ms:.0f} ms, diskcache {disk_ms:.0f} ms")
        if args.kills:
            print(f"\ntakeover after SIGKILL mid-analysis (heartbeat timeout 10 s, maintenance 20 %), {args.kills} kills:")
            times = takeover(url, work, files, args.kills)
            print(f"takeover seconds: median {statistics.median(times):.1f}, max {max(times):.1f}")
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
