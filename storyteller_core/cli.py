"""Headless command line on the same engine and data dir as the app."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import TextIO

from .config import DEFAULT_PROMPT, PRIORITIES, Settings
from .engine import Engine
from .export import write_csv
from .intake import expand, inspect_path
from .jobs import Job, State
from .samples import make_batch
from .store import JobStore

BAR = 20


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env(**({"model": args.model} if getattr(args, "model", None) else {}))
    try:
        _check_data_dir(settings.data_dir)
        return args.run(args, settings)
    except DataDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        logging.getLogger("storyteller_core").exception("command failed")
        print(f"error: could not read or write the data dir {settings.data_dir} ({exc}). Free some disk space or "
              "check the folder, then run the same command again: finished work is kept.", file=sys.stderr)
        return 2


class DataDirError(Exception):
    pass


def _check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(
            f"the data dir {path} is not writable ({exc.strerror or exc}). "
            "Set STORYTELLER_DATA_DIR to a folder you can write to."
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m storyteller_core", description="Turn videos into written stories with Gemini.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    process = sub.add_parser("process", help="process videos or folders of videos and wait for their stories")
    process.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    process.add_argument("--csv", type=Path, help="write this run's results to a CSV file")
    process.add_argument("--prompt", default=DEFAULT_PROMPT, help="what to ask Gemini about each video")
    process.add_argument("--model", help="Gemini model (default: STORYTELLER_MODEL or gemini-2.5-flash)")
    process.add_argument("--priority", choices=PRIORITIES, default="normal")
    process.add_argument("-v", "--verbose", action="store_true", help="print JSON log lines to stderr")
    process.set_defaults(run=cmd_process)

    status = sub.add_parser("status", help="list every job in the data dir")
    status.set_defaults(run=cmd_status)

    export = sub.add_parser("export", help="export every job to CSV")
    export.add_argument("--csv", type=Path, required=True)
    export.add_argument("--batch", help="only this batch id")
    export.set_defaults(run=cmd_export)

    samples = sub.add_parser("samples", help="write small sample videos to try the tool")
    samples.add_argument("folder", type=Path)
    samples.add_argument("--count", type=int, default=5)
    samples.set_defaults(run=cmd_samples)
    return parser


def cmd_process(args: argparse.Namespace, settings: Settings) -> int:
    files, skipped = expand(args.paths)
    for item in skipped:
        print(f"- {item.reason}")
    if not files:
        print("error: no video files found in the paths given.", file=sys.stderr)
        return 1
    engine = Engine(settings, stderr_log_level=logging.INFO if args.verbose else logging.CRITICAL + 1).start()
    if engine.demo:
        print("Demo mode: no GEMINI_API_KEY is set, so stories come from the local emulator, not Gemini.")
    try:
        print(f"Checking {len(files)} file(s)...")
        jobs = engine.submit([inspect_path(p, settings) for p in files], prompt=args.prompt,
                             model=args.model, priority=args.priority)
        jobs = _follow(engine, [job.id for job in jobs], sys.stdout)
    except KeyboardInterrupt:
        print("\nInterrupted. Unfinished videos stay in the data dir: run the same command again to resume.")
        return 130
    finally:
        engine.shutdown()
    if args.csv:
        write_csv(jobs, args.csv)
        print(f"Wrote {len(jobs)} row(s) to {args.csv}")
    return _summary(jobs)


def _follow(engine: Engine, job_ids: list[str], out: TextIO) -> list[Job]:
    """Show a progress bar per video until every job has ended."""
    live = out.isatty()
    seen: dict[str, str] = {}
    drawn = 0
    while True:
        jobs = engine.store.jobs(job_ids)
        if live:
            if drawn:
                out.write(f"\x1b[{drawn}F")
            for job in jobs:
                out.write("\x1b[2K" + _line(job) + "\n")
            drawn = len(jobs)
        else:
            for job in jobs:
                key = f"{job.state.value}"
                if seen.get(job.id) != key:
                    seen[job.id] = key
                    out.write(_line(job) + "\n")
        out.flush()
        if all(job.state.terminal for job in jobs):
            return jobs
        time.sleep(0.5)


def _line(job: Job) -> str:
    filled = job.progress * BAR // 100
    name = job.display_name if len(job.display_name) <= 32 else job.display_name[:29] + "..."
    note = " (reused)" if job.reused_from else ""
    return f"{name:<32} [{'#' * filled}{'.' * (BAR - filled)}] {job.progress:3d}% {job.state.value}{note}"


def _summary(jobs: list[Job]) -> int:
    done = [j for j in jobs if j.state is State.COMPLETED]
    print(f"{len(done)} of {len(jobs)} video(s) completed.")
    for job in jobs:
        if job.state is State.FAILED:
            print(f"FAILED {job.display_name}: {job.error_message}")
        elif job.state is State.CANCELLED:
            print(f"CANCELLED {job.display_name}")
    return 0 if len(done) == len(jobs) else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    store = JobStore(settings.data_dir / "jobs")
    jobs = store.jobs()
    if not jobs:
        print(f"No jobs in {settings.data_dir}.")
    for job in jobs:
        error = f"  {job.error_message}" if job.error_message else ""
        print(f"{job.id}  {job.batch_id}  {job.state.value:<15} {job.progress:3d}%  {job.display_name}{error}")
    store.close()
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    store = JobStore(settings.data_dir / "jobs")
    jobs = store.jobs_in_batch(args.batch) if args.batch else store.jobs()
    write_csv(jobs, args.csv)
    store.close()
    print(f"Wrote {len(jobs)} row(s) to {args.csv}")
    return 0


def cmd_samples(args: argparse.Namespace, settings: Settings) -> int:
    paths = make_batch(args.folder, args.count, seconds=3)
    print(f"Wrote {len(paths)} sample video(s) to {os.fspath(args.folder)}")
    return 0
