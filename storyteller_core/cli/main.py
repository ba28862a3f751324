"""Headless command line on the same engine and data dir as the app.

Heavy modules (the engine, google.genai, pandas, PyAV) are imported inside
the commands that use them, so `status` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from storyteller_core.cli.support import batches_named as _batches_named
from storyteller_core.cli.support import error as _error
from storyteller_core.cli.support import follow as _follow
from storyteller_core.cli.support import no_such_batch as _no_such_batch
from storyteller_core.cli.support import open_store as _open_store
from storyteller_core.cli.support import writable as _writable
from storyteller_core.errors import DataDirError
from storyteller_core.records.options import PROCESSING_MODES, RESOLUTIONS, VideoOptions, parse_clip
from storyteller_core.sanitize import terminal_text
from storyteller_core.settings import PRIORITIES, PROMPT_PRESETS, TIERS, VIDEO_EXTENSIONS, Settings

if TYPE_CHECKING:
    from storyteller_core.storage.disk_store import Store
    from storyteller_core.views.board import Row


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Log records go to the log file once a command sets it up, never to the terminal unless --verbose:
    # without a handler, Python's last-resort handler would print them (tracebacks included) on stderr.
    package_log = logging.getLogger("storyteller_core")
    if not package_log.handlers:
        package_log.addHandler(logging.NullHandler())
    settings = Settings.from_env(**({"model": args.model} if getattr(args, "model", None) else {}))
    try:
        return args.run(args, settings)
    except DataDirError as exc:
        _error(exc.message)
        return 2
    except BrokenPipeError:  # `status | head`: the reader left; nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _error("interrupted. Nothing finished is lost: run the same command again to carry on.")
        return 130
    except (OSError, sqlite3.Error) as exc:
        _log_failure(settings)
        _error(
            f"could not read or write the data folder {settings.data_dir} ({terminal_text(str(exc))}). "
            "Check that it is a folder of yours on a disk with space (or set STORYTELLER_DATA_DIR to another folder), "
            "then run the same command again: finished work is kept."
        )
        return 2
    except Exception as exc:  # a bug: one sentence on the terminal, the traceback in the log file only
        log_file = _log_failure(settings)
        _error(
            f"something unexpected went wrong ({type(exc).__name__}: {terminal_text(str(exc))[:300]}). Finished work "
            "is kept. Run the same command again; if it fails the same way, report it with "
            + (f"the log file {log_file}." if log_file else "this message.")
        )
        return 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storyteller", description="Turn videos into written stories with Gemini.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    process = sub.add_parser("process", help="process videos or folders of videos and wait for their stories")
    process.add_argument("paths", nargs="+", metavar="PATH", help="video files, folders of videos, or public YouTube links")
    process.add_argument("--csv", type=Path, help="write this run's rows to a CSV file")
    process.add_argument("--json", type=Path, help="write this run's rows, with the full structured stories, to a JSON file")
    ask = process.add_mutually_exclusive_group()
    ask.add_argument("--preset", choices=list(PROMPT_PRESETS), help="a named prompt (default: Story)")
    ask.add_argument("--prompt", help="your own question to ask of each video")
    process.add_argument("--model", help="Gemini model (default: STORYTELLER_MODEL or the app's default)")
    process.add_argument("--priority", choices=PRIORITIES, default="normal")
    process.add_argument("--clip", type=_clip, metavar="START-END", help="only this part of each video, e.g. 00:30-02:00")
    process.add_argument("--fps", type=float, help="frames per second Gemini looks at (above 0, at most 24; default 1)")
    process.add_argument("--resolution", choices=RESOLUTIONS, help="media resolution (low costs about a third)")
    process.add_argument(
        "--processing",
        choices=PROCESSING_MODES,
        help="Gemini 3 video processing mode: agentic (preview) uses far fewer tokens on long videos",
    )
    process.add_argument(
        "--tier",
        choices=TIERS,
        default="standard",
        help="flex: half price, but each answer can take minutes (Gemini's Flex tier, preview); "
        "batch: about half price, results within hours (one Gemini batch job; stopped or killed, "
        "the same command waits on the same job again)",
    )
    process.add_argument("--batch-name", help="a name for this batch (default: date and the first file)")
    process.add_argument("-v", "--verbose", action="store_true", help="print JSON log lines to stderr")
    process.set_defaults(run=cmd_process)

    status = sub.add_parser("status", help="list the rows in the data folder")
    status.add_argument("--batch", help="only this batch (its id or its name)")
    status.set_defaults(run=cmd_status)

    export = sub.add_parser("export", help="export rows to CSV and/or JSON")
    export.add_argument("--csv", type=Path)
    export.add_argument("--json", type=Path, help="one object per row with the full structured story")
    export.add_argument("--docx", type=Path, help="a Word report: title page, then each story with its key moments' frames")
    export.add_argument("--pdf", type=Path, help="the same report as a PDF")
    export.add_argument("--srt", type=Path, metavar="DIR", help="key moments as one SRT file per video in DIR")
    export.add_argument("--vtt", type=Path, metavar="DIR", help="key moments as one WebVTT file per video in DIR")
    export.add_argument("--batch", help="only this batch (its id or its name)")
    export.set_defaults(run=cmd_export)

    worker = sub.add_parser("worker", help="team mode: run a worker process (needs STORYTELLER_BROKER_URL and a key)")
    worker.add_argument("--threads", type=int, help="steps at once in this process (default STORYTELLER_MAX_WORKERS)")
    worker.set_defaults(run=cmd_worker)

    resume = sub.add_parser("resume", help="team mode: send a step again for every unfinished video (after a Redis restore)")
    resume.add_argument("--force", action="store_true", help="every unfinished one, even those with a live message")
    resume.set_defaults(run=cmd_resume)

    samples = sub.add_parser("samples", help="write small sample videos to try the tool")
    samples.add_argument("folder", type=Path)
    samples.add_argument("--count", type=int, default=5)
    samples.set_defaults(run=cmd_samples)

    from storyteller_core.cli import ask_command as ask_cli
    from storyteller_core.cli import search_command as search_cli
    from storyteller_core.cli import table_command as table_cli

    for command in (ask_cli, table_cli, search_cli):
        command.add_parser(sub)
    return parser


def cmd_process(args: argparse.Namespace, settings: Settings) -> int:
    from storyteller_core.assembly import open_engine
    from storyteller_core.commands import Ask
    from storyteller_core.intake.candidates import expand, inspect_path, inspect_url, split_refused
    from storyteller_core.views.export import batch_names, not_added_records

    if any(out and not _writable(out) for out in (args.csv, args.json)):
        return 2
    try:
        options = VideoOptions(
            start_s=args.clip[0] if args.clip else None,
            end_s=args.clip[1] if args.clip else None,
            fps=args.fps,
            resolution=args.resolution,
            processing=args.processing,
        )
    except ValueError as exc:
        _error(f"{exc}.")
        return 2
    links = [p for p in args.paths if "://" in p or p.startswith(("youtube.com", "www.youtube.com", "youtu.be"))]
    files, skipped = expand([Path(p) for p in args.paths if p not in links])
    for item in skipped:
        print(f"- {terminal_text(item.reason)}")
    if not files and not links:
        _error(
            "no video files found in the paths given. Give video files or folders that hold videos "
            f"({', '.join(sorted(VIDEO_EXTENSIONS))}), or public YouTube links."
        )
        return 1
    print(f"Checking {len(files) + len(links)} file(s)...", flush=True)
    try:  # checked before the engine starts: a refused input never becomes a row (nor a Failed one on a re-run)
        candidates, refused = split_refused([inspect_path(p, settings) for p in files] + [inspect_url(link) for link in links])
    except KeyboardInterrupt:
        print("Interrupted before anything was added.")
        return 130
    for entry in refused:
        print(f"Not added {terminal_text(entry.display_name)}: {terminal_text(entry.reason)}", file=sys.stderr)
    not_added = not_added_records(refused, (args.batch_name or "").strip())
    if not candidates:
        _write_outputs(args, [], {}, not_added)
        _error(
            f"nothing to process: the {len(refused)} input(s) given were not added (reasons above). Fix the paths "
            "or files and run the same command again."
        )
        return 1
    engine = open_engine(settings, stderr_log_level=logging.INFO if args.verbose else logging.CRITICAL + 1).start()
    if engine.demo:
        print("Demo mode (no GEMINI_API_KEY): stories come from the local emulator, not Gemini.")
    if args.tier == "batch":
        print(
            "Batch tier: about half price; stories arrive within hours (one Gemini batch job). Stopped, the same "
            "command waits on the same job again."
        )
    if not args.model and not settings.model_pinned:
        engine.catalog.refresh()  # the default comes from the models this key is offered
    preset = args.preset or (None if args.prompt else "Story")
    try:
        ask = Ask(
            prompt=args.prompt or PROMPT_PRESETS[preset or "Story"],
            model=args.model or engine.catalog.default,
            preset=preset,
            priority=args.priority,
            options=options,
            tier=args.tier,
        )
        warning = engine.catalog.warning(ask.model)
        if warning:
            print(f"Warning: {terminal_text(warning)}")
        items = engine.commands.submit(candidates, ask, batch_name=args.batch_name, resume=True)
        rows = _follow(engine, list(dict.fromkeys(item.id for item in items)), sys.stdout)
        names = batch_names(engine.store, rows)
    except KeyboardInterrupt:
        print("Interrupted. Unfinished videos are kept: run the same command again to resume.")
        return 130
    finally:
        engine.shutdown()
    _mail(settings, rows, demo=engine.demo)
    _left_for_others(rows, engine.settings)
    _write_outputs(args, rows, names, not_added)
    code = _summary(rows, engine.settings)
    if refused:
        print(f"{len(refused)} input(s) not added (reasons on stderr).")
    return 1 if refused else code


def _write_outputs(args: argparse.Namespace, rows: list[Row], names: dict[str, str], not_added: list[dict[str, object]]) -> None:
    """--csv (the rows, then one per input not added) and --json (the rows)."""
    from storyteller_core.views.export import write_csv, write_json

    if args.csv:
        write_csv(rows, args.csv, names, not_added)
        print(f"Wrote {len(rows) + len(not_added)} row(s) to {args.csv}" + (f" ({len(not_added)} not added)" if not_added else ""))
    if args.json:
        write_json(rows, args.json, names)
        print(f"Wrote {len(rows)} row(s) to {args.json}")


def _mail(settings: Settings, rows: list[Row], *, demo: bool) -> None:
    """The batch-done e-mail, as the app sends it (one per completion whoever sees it first); never fails the run."""
    from storyteller_core.deliverables import mail
    from storyteller_core.deliverables.webhook import BatchReport
    from storyteller_core.records.batch import Batch
    from storyteller_core.views.board import batch_rows, totals

    for batch_id in sorted({row.item.batch_id for row in rows}):
        store = _open_store(settings)
        try:
            found = store.many(Batch, [batch_id])
            own = batch_rows(store, batch_id)  # the whole batch: a resumed run may have named only some of its files
        finally:
            store.close()
        if not own or not all(row.ended for row in own):
            continue
        t = totals(own)
        report = BatchReport(batch_id, found[0].name if found else batch_id, t.rows, t.done, t.failed, t.cancelled)
        if mail.mail_once(settings.data_dir, report, own, mail.completion_of(batch_id, own), demo=demo, background=False):
            outcome = mail.last_outcome(settings.data_dir)
            if outcome and not outcome.ok:
                print(f"Warning: {terminal_text(outcome.message)}. The batch is not affected.")


def _left_for_others(rows: list[Row], settings: Settings) -> int:
    """Say on stderr which rows wait for another Gemini, and what to do; how many."""
    from storyteller_core.views.rows import waiting_for

    left = [(row, sentence) for row in rows if (sentence := waiting_for(row, settings))]
    for row, sentence in left:
        print(f"Left {terminal_text(row.name)}: {terminal_text(sentence)}", file=sys.stderr)
    if left:
        _error(
            f"{len(left)} video(s) were asked of another Gemini than this command's and are left for the app or CLI "
            "that has that key (never failed here). Run this command with that key (GEMINI_API_KEY), or press "
            "Retry on those rows in the app to ask its Gemini. Processes that share a data folder should share the key."
        )
    return len(left)


def _summary(rows: list[Row], settings: Settings | None = None) -> int:
    from storyteller_core.views.board import Status
    from storyteller_core.views.rows import waiting_for

    done = [row for row in rows if row.status is Status.DONE]
    print(f"{len(done)} of {len(rows)} video(s) done.")
    for row in rows:
        if row.status is Status.FAILED:
            print(f"Failed {terminal_text(row.name)}: {terminal_text(row.error or '')}")
        elif row.status is Status.CANCELLED:
            print(f"Cancelled {terminal_text(row.name)}")
        elif settings is not None and waiting_for(row, settings):
            print(f"Waiting {terminal_text(row.name)}: left for another Gemini (see above)")
    return 0 if len(done) == len(rows) else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from storyteller_core.records.batch import Batch
    from storyteller_core.views.board import Status, set_aside_note, totals

    store = _open_store(settings)
    try:
        batch_ids = store.batch_ids()
        if not args.batch and sum(store.row_count(b) for b in batch_ids) > STATUS_ROWS_AT_MOST:
            return _batch_summaries(store, batch_ids)
        rows = _rows_named(store, args.batch)
        if rows is None:
            return _no_such_batch(store, args.batch, settings)
        names = {
            batch_id: (store.get(Batch, batch_id) or Batch(id=batch_id, name=batch_id)).name
            for batch_id in {row.item.batch_id for row in rows}
        }
        set_aside = set_aside_note(store)
    finally:
        store.close()
    if set_aside:
        print(terminal_text(set_aside), file=sys.stderr)
    if not rows:
        print(
            f"No videos in {settings.data_dir}. Add some with: python -m storyteller_core process <folder or files>"
            if not args.batch
            else f"No videos in batch {terminal_text(args.batch)}."
        )
        return 0
    _print_rows(rows, names, settings)
    t = totals(rows)
    waiting = sum(row.status is Status.WAITING for row in rows)
    print(
        f"{t.rows} row(s): {t.done} done, {t.failed} failed, {t.cancelled} cancelled, {t.in_flight - waiting} in flight, {waiting} waiting."
    )
    return 0


def _print_rows(rows: list[Row], names: dict[str, str], settings: Settings) -> None:
    """Rows grouped by batch: a line naming the batch in full with the id --batch takes, a header, then its rows."""
    from storyteller_core.views.rows import waiting_for

    by_batch: dict[str, list[Row]] = {}
    for row in rows:
        by_batch.setdefault(row.item.batch_id, []).append(row)
    width = max(len("STATUS"), *(len(row.label) for row in rows)) if rows else len("STATUS")
    width = min(width, 48)  # a longer label (a retry note) pushes its line, never cuts a word
    for batch_id, own in by_batch.items():
        print(f"Batch {batch_id}  {terminal_text(names.get(batch_id, batch_id))}  ({len(own)} row(s); --batch {batch_id})")
        print(f"  {'STATUS':<{width}}  {'%':>4}  FILE")
        for row in own:
            extra = waiting_for(row, settings) or row.error
            note = f"  {terminal_text(extra)}" if extra else ""
            print(f"  {row.label:<{width}}  {row.progress:3d}%  {terminal_text(row.name)}{note}")


STATUS_ROWS_AT_MOST = 500  # `status` without --batch lists rows up to this many, else one line per batch


def _batch_summaries(store: Store, batch_ids: list[str]) -> int:
    """`status` of a large data dir: one line per batch from the store's kept counts (no row is read)."""
    from storyteller_core.records.batch import Batch
    from storyteller_core.views.board import kept_totals, set_aside_note

    note = set_aside_note(store)
    if note:
        print(terminal_text(note), file=sys.stderr)
    batches = store.by_id(Batch, batch_ids)
    names = {b: terminal_text(batches[b].name if b in batches else b) for b in batch_ids}
    print(f"{'BATCH ID':<22}  {'ROWS':>7}  {'DONE':>7}  {'FAILED':>7}  {'CANCELLED':>9}  {'IN FLIGHT':>9}  NAME")
    for batch_id in batch_ids:
        t = kept_totals(store, batch_id)
        print(
            f"{batch_id:<22}  {t.rows:>7,}  {t.done:>7,}  {t.failed:>7,}  {t.cancelled:>9,}  {t.in_flight:>9,}  {names[batch_id]}"
        )  # last, in full: never cut
    print(f"{len(batch_ids)} batch(es). List one batch's rows with: python -m storyteller_core status --batch ID")
    return 0


def _rows_named(store: Store, wanted: str | None) -> list[Row] | None:
    """The rows of the batch(es) named ``wanted`` (of every batch when None); None when no batch is so named."""
    from storyteller_core.views.board import batch_rows

    batch_ids: list[str | None] = list(_batches_named(store, wanted)) if wanted else [None]
    return [row for batch_id in batch_ids for row in batch_rows(store, batch_id)] if batch_ids else None


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from storyteller_core.views.export import batch_names, write_csv, write_json

    if not any((args.csv, args.json, args.docx, args.pdf, args.srt, args.vtt)):
        _error("say where to write: --csv FILE, --json FILE, --docx FILE, --pdf FILE, --srt DIR and/or --vtt DIR.")
        return 2
    if any(out and not _writable(out) for out in (args.csv, args.json, args.docx, args.pdf)):
        return 2
    store = _open_store(settings)
    try:
        batch_ids = store.batch_ids()
        if not args.batch and sum(store.row_count(b) for b in batch_ids) > STATUS_ROWS_AT_MOST:
            return _batch_summaries(store, batch_ids)
        rows = _rows_named(store, args.batch)
        if rows is None:
            return _no_such_batch(store, args.batch, settings)
        names = batch_names(store, rows)
    finally:
        store.close()
    if args.csv:
        write_csv(rows, args.csv, names)
        print(f"Wrote {len(rows)} row(s) to {args.csv}")
    if args.json:
        write_json(rows, args.json, names)
        print(f"Wrote {len(rows)} row(s) to {args.json}")
    from storyteller_core.cli.export_command import write_deliverables

    return write_deliverables(args, rows, _batch_name(settings, args.batch))


def _batch_name(settings: Settings, wanted: str | None) -> str | None:
    """The name a report's title page shows: the batch's when --batch named one."""
    from storyteller_core.records.batch import Batch

    if not wanted:
        return None
    store = _open_store(settings)
    try:
        found = store.many(Batch, _batches_named(store, wanted))
    finally:
        store.close()
    return found[0].name if found else wanted


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    return _team_worker([] if args.threads is None else ["--threads", str(args.threads)])


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    return _team_worker(["--resume", *(["--force"] if args.force else [])])


def _team_worker(argv: list[str]) -> int:
    from storyteller_core.team import broker_url

    if not broker_url():
        _error(
            "team mode needs STORYTELLER_BROKER_URL=redis://host:port/0 (see docs/TEAM.md); on one machine, "
            "`process` and the app need no worker."
        )
        return 2
    from storyteller_core.team.worker import main as worker_main

    return worker_main(argv)


def cmd_samples(args: argparse.Namespace, settings: Settings) -> int:
    from storyteller_core.intake.samples import make_batch

    paths = make_batch(args.folder, args.count, seconds=3)
    print(f"Wrote {len(paths)} sample video(s) to {os.fspath(args.folder)}")
    return 0


def _clip(text: str) -> tuple[float | None, float | None]:
    try:
        return parse_clip(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log_failure(settings: Settings) -> Path | None:
    """The traceback of the exception being handled, into the log file (never the terminal); None if there is none."""
    try:
        from storyteller_core.logs import setup_logging

        log_file = setup_logging(settings.data_dir, logging.CRITICAL + 1)  # idempotent; adds no stderr handler
    except Exception:  # the data folder itself is the problem: the message on the terminal is all there is
        return None
    logging.getLogger("storyteller_core").exception("command failed")
    return log_file
