"""Team mode: throughput with 1, 2, 3 worker processes, takeover time after SIGKILL, Redis commands per job.

    .venv/bin/python bench/team.py                      # all parts, small
    .venv/bin/python bench/team.py --jobs 200 --files 40 --prompts 5 --workers 1,2,3 --no-limits --runs 3 --kills 5

Starts its own redis-server (Debian's package) on a free loopback port and the
emulator in this process (its counters are read directly). Workers are real
``python -m storyteller_core.team.worker`` processes, 3 threads each. Limits on:
the global upload cap 2, status calls at 5/s, 1,000 generate requests a minute
and the 20 GB storage budget across all of them; off: cap 100, 1,000/s, no
generate cap. Every job is submitted first, then the workers start (files are
deleted after their last analysis); a run's time counts from the workers' start.
Nothing leaves loopback; the redis-server, the emulator's storage and the work
folder are stopped and deleted at the end, even after an error or SIGTERM.
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

from storyteller_core.commands import Ask  # noqa: E402
from storyteller_core.emulator import Emulator, EmulatorConfig  # noqa: E402
from storyteller_core.intake.samples import make_batch  # noqa: E402
from storyteller_core.records.analysis import Analysis, AnalysisState  # noqa: E402
from storyteller_core.records.batch import Item  # noqa: E402
from storyteller_core.records.video import Video  # noqa: E402
from storyteller_core.settings import Settings  # noqa: E402
from storyteller_core.team.client import TeamClient  # noqa: E402
from storyteller_core.views.board import rows_of  # noqa: E402
from storyteller_core.work.redis_dispatch import TeamConfig  # noqa: E402

KEY = "bench-key-0123456789"
PROMPTS = ["Tell the story", "List the people", "Where is it?", "What happens at the end?", "Summarise"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_sigterm(*_: object) -> None:
    raise SystemExit("stopped (SIGTERM)")  # runs the finally blocks: workers, redis-server and folders cleaned up


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    server = shutil.which("redis-server")
    if not server:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "bench-password",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://:bench-password@127.0.0.1:{port}/0"  # team mode refuses a broker with no password
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Run:
    """One team (client + worker processes) on a fresh key prefix."""

    def __init__(
        self,
        redis_url: str,
        emu: Emulator,
        work: Path,
        *,
        max_uploads: int = 2,
        threads: int = 3,
        polls_per_second: float = 5.0,
        **config: Any,
    ) -> None:
        self.emu = emu
        self.prefix = "b" + uuid.uuid4().hex[:8]
        self.overrides = dict(
            poll_initial_s=0.2,
            poll_max_s=2.0,
            upload_budget_s=120,
            processing_budget_s=120,
            analysis_budget_s=60,
            request_timeout_s=30,
            polls_per_second=polls_per_second,
            max_uploads=max_uploads,
            max_workers=threads,
        )
        self.settings = Settings(data_dir=work / "data", api_key=KEY, base_url=emu.base_url, **self.overrides)  # type: ignore[arg-type]
        self.config = TeamConfig(url=redis_url, prefix=self.prefix, **config)
        self.client = TeamClient(self.settings, self.config)
        self.env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
        self.env.update(
            {
                "PYTHONPATH": str(ROOT),
                "STORYTELLER_BROKER_URL": redis_url,
                "STORYTELLER_TEAM_PREFIX": self.prefix,
                "GEMINI_API_KEY": KEY,
                "GOOGLE_GEMINI_BASE_URL": emu.base_url,
                "STORYTELLER_DATA_DIR": str(work / "data"),
                "STORYTELLER_SETTINGS_JSON": json.dumps(self.overrides),
                "STORYTELLER_TEAM_HEARTBEAT_S": str(self.config.heartbeat_timeout_s),
                "STORYTELLER_TEAM_MAINTENANCE_CHANCE": str(self.config.maintenance_chance),
                "STORYTELLER_TEAM_UPLOAD_SLOT_TTL_S": str(self.config.upload_slot_ttl_s),
                "STORYTELLER_TEAM_GENERATE_RPM": str(self.config.generate_per_minute),
                "STORYTELLER_TEAM_STORAGE_GB": str(self.config.storage_bytes / 1e9),
            }
        )
        self.procs: list[subprocess.Popen] = []
        self.log = (work / f"workers-{self.prefix}.log").open("w")

    def start_workers(self, count: int) -> None:
        for _ in range(count):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "storyteller_core.team.worker"],
                    env=self.env,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=self.log,
                    stderr=subprocess.STDOUT,
                )
            )
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

    def wait(self, items: list[Item], timeout: float = 900, every_s: float = 0.25) -> tuple[list[Any], int]:
        """Read the board until every row has ended: (the rows, the board reads made)."""
        deadline = time.monotonic() + timeout
        ids = [i.id for i in items]
        reads = 0
        while True:
            rows = rows_of(self.client.store, self.client.store.many(Item, ids))
            reads += 1
            if all(r.ended for r in rows):
                return rows, reads
            if time.monotonic() > deadline or not self.alive():
                raise SystemExit(f"not done after {timeout} s; see {self.log.name}")
            time.sleep(every_s)

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


def phases(run: Run, rows: list[Any], t0: float) -> dict[str, float]:
    """Median seconds of each phase over the videos and analyses of a run (``t0``: the workers' start, wall clock)."""
    store = run.client.store
    videos = store.many(Video, {r.item.video_id for r in rows if r.item.video_id})
    analyses = store.many(Analysis, {r.item.analysis_id for r in rows if r.item.analysis_id})
    out = {}
    waits = [v.state_entered_at["UPLOADING"] - t0 for v in videos if "UPLOADING" in v.state_entered_at]
    out["workers' start -> upload start"] = statistics.median(waits) if waits else float("nan")
    spans = {"upload": ("UPLOADING", "UPLOADED"), "processing": ("UPLOADED", "FILE_ACTIVE")}
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
    emu = Emulator(EmulatorConfig(processing_delay_s=1.0, analysis_delay_s=0.5, chunk_delay_s=0.2), storage_root=work).start()
    try:
        if limits:
            run = Run(redis_url, emu, work, max_uploads=2, polls_per_second=5.0, generate_per_minute=1000.0)
        else:
            run = Run(redis_url, emu, work, max_uploads=100, polls_per_second=1000.0, generate_per_minute=0.0)
        try:
            items = run.submit(files, prompts, jobs)
            ids = [i.id for i in items]
            before = commands_processed(run.client.client)
            rows_of(run.client.store, run.client.store.many(Item, ids))
            per_read = commands_processed(run.client.client) - before - 1  # what one board read of the bench costs
            before = commands_processed(run.client.client)
            started, t0 = time.monotonic(), time.time()
            run.start_workers(workers)
            booted = time.monotonic() - started
            rows, reads = run.wait(items)
            elapsed = time.monotonic() - started
            redis_calls = commands_processed(run.client.client) - before - 1 - reads * per_read
            done = sum(1 for r in rows if r.analysis and r.analysis.state is AnalysisState.COMPLETED)
            distinct = len({r.item.analysis_id for r in rows})
            status_calls = emu.stats.poll_times + emu.stats.list_times
            return {
                "workers": workers,
                "limits": limits,
                "jobs": len(items),
                "done": done,
                "seconds": elapsed,
                "boot": booted,
                "jobs_per_min": len(items) / elapsed * 60,
                "analyses": distinct,
                "uploads": sum(emu.stats.uploads_finished.values()),
                "generates": sum(emu.stats.generates.values()),
                "max_uploads_at_once": emu.stats.max_uploads_at_once,
                "redis_per_job": redis_calls / len(items),
                "gets": len(emu.stats.poll_times),
                "lists": len(emu.stats.list_times),
                "polls_1s": max_in_window(status_calls, 1.0),
                "polls_10s": max_in_window(status_calls, 10.0),
                "load": os.getloadavg()[0],
                "phases": phases(run, rows, t0),
            }
        finally:
            run.close()
    finally:
        emu.stop()


def takeover(redis_url: str, work: Path, files: list[Path], kills: int) -> list[float]:
    """SIGKILL the worker holding an analysis mid-call; seconds until another worker holds that analysis."""
    emu = Emulator(EmulatorConfig(processing_delay_s=0.2, analysis_delay_s=4.0), storage_root=work).start()
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
                run.wait(items, every_s=0.5)
                run.start_workers(1)  # back to two workers
        finally:
            run.close()
    finally:
        emu.stop()
    return times


def board_read(redis_url: str, jobs: int, runs: int) -> tuple[list[float], list[float]]:
    """Median ms (of 10 reads) to read a batch of ``jobs`` rows (items, analyses, videos), per run: Redis, diskcache."""
    from storyteller_core.records.analysis import analysis_key
    from storyteller_core.records.batch import Batch
    from storyteller_core.storage.disk_store import DiskStore, Store
    from storyteller_core.storage.redis_store import RedisStore, connect

    def fill(store: Store) -> float:
        store.add_batch(Batch(id="b1", name="bench"))
        for n in range(jobs):
            sha = f"{n:064x}"
            store.add_video(Video(id=sha, sha256=sha, display_name=f"v{n}.mp4", sources=[f"/x/v{n}.mp4"]))
            analysis, _ = store.add_analysis(
                Analysis(id=analysis_key(sha, "m", "p", {}, "b"), video_id=sha, model="m", prompt="p", backend="b")
            )
            store.add_item(Item(id=f"i{n:06d}", batch_id="b1", display_name=f"v{n}.mp4", video_id=sha, analysis_id=analysis.id))
        times = []
        for _ in range(11):
            started = time.perf_counter()
            rows = rows_of(store, store.items("b1"))
            times.append((time.perf_counter() - started) * 1000)
            assert len(rows) == jobs
        return statistics.median(times[1:])

    redis_ms, disk_ms = [], []
    for _ in range(runs):
        client = connect(redis_url)
        prefix = "board" + uuid.uuid4().hex[:6]
        redis_ms.append(fill(RedisStore(client, prefix)))
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
        with tempfile.TemporaryDirectory() as folder:
            disk = DiskStore(Path(folder))
            disk_ms.append(fill(disk))
            disk.close()
    return redis_ms, disk_ms


def spread(values: list[float], fmt: str = ".1f") -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--runs", type=int, default=1, help="runs of each throughput configuration (min / median / max)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--no-limits", action="store_true", help="also run with the limits lifted")
    parser.add_argument("--board", type=int, default=2000, help="rows for the board read time (0: skip)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    redis_proc, url = start_redis(work)
    try:
        files = make_batch(work / "videos", args.files)
        print(f"start: {uptime()}")
        print(
            f"{args.jobs} jobs over {args.files} files x {args.prompts} prompts; emulator: upload 0.2 s per request, "
            "processing 1.0 s, analysis 0.5 s; 3 threads per worker; limits on: upload cap 2, status calls 5/s, "
            "1,000 generates/min, 20 GB; off: cap 100, 1,000/s, no generate cap"
        )
        print(
            "| workers | limits | runs | seconds min / median / max | jobs/min (median) | uploads | generates | "
            "max uploads at once | busiest 1 s / 10 s of status calls | files.get / files.list | "
            "Redis commands per job | load (1 min) |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        results: list[list[dict[str, Any]]] = []
        for workers in [] if args.skip_throughput else [int(w) for w in args.workers.split(",")]:
            for limits in (True, False) if args.no_limits else (True,):
                runs = [throughput(url, work, files, workers, args.jobs, args.prompts, limits) for _ in range(args.runs)]
                results.append(runs)
                mid = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
                print(
                    f"| {workers} | {'on' if limits else 'off'} | {len(runs)} | "
                    f"{spread([r['seconds'] for r in runs])} | {mid['jobs_per_min']:.0f} | "
                    f"{'/'.join(str(r['uploads']) for r in runs)} | {'/'.join(str(r['generates']) for r in runs)} | "
                    f"{max(r['max_uploads_at_once'] for r in runs)} | "
                    f"{max(r['polls_1s'] for r in runs)} / {max(r['polls_10s'] for r in runs)} | "
                    f"{mid['gets']} / {mid['lists']} | {spread([r['redis_per_job'] for r in runs], '.0f')} | "
                    f"{spread([r['load'] for r in runs], '.1f')} |",
                    flush=True,
                )
        if results:
            print("\nworker start (s, submit to all heartbeats) and median seconds per phase (median run):")
            for runs in results:
                mid = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
                print(
                    f"  {mid['workers']} workers, limits {'on' if mid['limits'] else 'off'}: start {mid['boot']:.1f}; "
                    + ", ".join(f"{k} {v:.2f}" for k, v in mid["phases"].items())
                )
        if args.board:
            redis_ms, disk_ms = board_read(url, args.board, max(3, args.runs))
            print(
                f"\nboard read of {args.board} rows (items + analyses + videos), median of 10 reads per run, "
                f"min / median / max of {len(redis_ms)} runs: Redis {spread(redis_ms, '.0f')} ms, "
                f"diskcache {spread(disk_ms, '.0f')} ms; {uptime()}",
                flush=True,
            )
        if args.kills:
            print(f"\ntakeover after SIGKILL mid-analysis (heartbeat timeout 10 s, maintenance 20 %), {args.kills} kills:")
            times = takeover(url, work, files, args.kills)
            print(f"takeover seconds: min / median / max {spread(times)}; {uptime()}")
        print(f"end: {uptime()}")
    finally:
        redis_proc.terminate()
        try:
            redis_proc.wait(10)
        except subprocess.TimeoutExpired:
            redis_proc.kill()
            redis_proc.wait(5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
