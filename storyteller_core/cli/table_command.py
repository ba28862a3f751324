"""The `table` command of the CLI (registered by storyteller_core.cli.main): one table from the videos of a batch.

    python -m storyteller_core table --batch ID --field "mentions price:yes/no:does anyone say a price?" \\
        --field "people:number" --field "first product shot:span" --csv table.csv [--json table.json]

Asks each video of the batch for the fields (answers given before are reused at no cost), waits for the answers as
`process` does, writes the table and prints a summary of each column. Exit 0 when every video has its answer, 1
when some failed (the table is written with their status), 2 when the fields or the output files are unusable.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storyteller_core.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add this command to the CLI's subcommands (imports nothing heavy: `status` must answer at once)."""
    table = sub.add_parser("table", help="ask every video of a batch for the same fields and write one table")
    table.add_argument("--batch", required=True, help="the batch (its id or its name)")
    table.add_argument(
        "--field",
        action="append",
        required=True,
        metavar="NAME:TYPE[:INSTRUCTION]",
        help="a column: TYPE is text, number, yes/no, span or list; the instruction says what to look for (repeat --field for each column)",
    )
    table.add_argument("--csv", type=Path, required=True, help="write the table to this CSV file")
    table.add_argument("--json", type=Path, help="also write it, with each column's summary, to this JSON file")
    table.add_argument("--model", help="Gemini model (default: STORYTELLER_MODEL or the app's default)")
    table.add_argument(
        "--tier", choices=("standard", "flex"), default="standard", help="flex: half price, but each answer can take minutes"
    )
    table.add_argument(
        "--check-spans",
        action="store_true",
        help="check each span field against its clip of the footage, like a collection answer's citations "
        "(one short clip request per span; a span not supported is never shown as a time)",
    )
    table.add_argument("-v", "--verbose", action="store_true", help="print JSON log lines to stderr")
    table.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import logging
    import sys

    from storyteller_core.assembly import open_engine
    from storyteller_core.cli.support import batches_named as _batches_named
    from storyteller_core.cli.support import error as _error
    from storyteller_core.cli.support import follow as _follow
    from storyteller_core.cli.support import no_such_batch as _no_such_batch
    from storyteller_core.cli.support import writable as _writable
    from storyteller_core.collection.table import Field, ask_table, fields_of
    from storyteller_core.sanitize import terminal_text

    try:
        fields = fields_of(Field.parse(text) for text in args.field)
    except ValueError as exc:
        _error(f"{exc}.")
        return 2
    if any(out and not _writable(out) for out in (args.csv, args.json)):
        return 2
    engine = open_engine(settings, stderr_log_level=logging.INFO if args.verbose else logging.CRITICAL + 1).start()
    try:
        found = _batches_named(engine.store, args.batch)
        if not found:
            return _no_such_batch(engine.store, args.batch, settings)
        if len(found) > 1:
            _error(
                f"{len(found)} batches are named '{terminal_text(args.batch)}': give one of their ids to --batch ({', '.join(found[:5])})."
            )
            return 2
        if engine.demo:
            print("Demo mode (no GEMINI_API_KEY): answers come from the local emulator, not Gemini.")
        if not args.model and not settings.model_pinned:
            engine.catalog.refresh()
        model = args.model or engine.catalog.default
        asked = ask_table(engine.commands, found[0], fields, model, tier=args.tier)
        print(
            f"{asked.videos} video(s): {asked.already} answered or being answered before (reused, no new cost), "
            f"{asked.videos - asked.already} to ask"
            + (f", estimated ${asked.estimated_usd:.4f}" if asked.estimated_usd is not None and asked.batch_id else "")
            + ".",
            flush=True,
        )
        if asked.item_ids:
            _follow(engine, asked.item_ids, sys.stdout)
        table = _build(engine, found[0], fields, model, check_spans=args.check_spans)
    except KeyboardInterrupt:
        print(
            "Interrupted. Answers given so far are kept: run the same command again to carry on at no extra cost "
            "for them (span checks, with --check-spans, are asked again)."
        )
        return 130
    finally:
        engine.shutdown()
    args.csv.write_bytes(table.csv_bytes())
    print(f"Wrote {len(table.rows)} row(s) to {args.csv}")
    if args.json:
        args.json.write_bytes(table.json_bytes())
        print(f"Wrote {len(table.rows)} row(s) to {args.json}")
    _print_summaries(table.summaries(), terminal_text)
    for row in table.rows:
        if row.status != "answered":
            print(f"{terminal_text(row.file_name)}: {terminal_text(row.status)}")
        for problem in row.problems:
            print(f"{terminal_text(row.file_name)}: {terminal_text(problem)}")
    cost = (
        "demo answers cost nothing"
        if engine.demo
        else f"the answers cost ${table.cost_usd:.4f} in all"
        + (f" ({asked.already} of them given before this run, at no new cost)" if asked.already else "")
        if table.cost_usd is not None
        else "the answers are not priced"
    )
    print(f"{table.answered} of {len(table.rows)} video(s) answered; {cost}.")
    return 0 if table.answered == len(table.rows) else 1


def _build(engine: Any, batch_id: str, fields: Any, model: str, *, check_spans: bool) -> Any:
    """The table; with ``check_spans`` each span value is checked against its clip (issue 21: spans like citations)."""
    from storyteller_core.collection.table import build_table

    if not check_spans or not any(f.type == "span" for f in fields):
        return build_table(engine.store, batch_id, fields, model, engine.settings.backend)
    from storyteller_core.collection.ask import open_asker, span_checker

    asker = open_asker(engine.settings, engine.store)
    try:
        return build_table(engine.store, batch_id, fields, model, engine.settings.backend, check_span=span_checker(asker, model))
    finally:
        asker.close()


def _print_summaries(summaries: dict[str, dict[str, Any]], clean: Any) -> None:
    for name, s in summaries.items():
        line = f"{clean(name)} ({s['type']}): {s['count']} of {s['rows']} with a value"
        if s["type"] == "number" and s["mean"] is not None:
            line += f", mean {s['mean']:.4g} (min {s['min']:.4g}, max {s['max']:.4g})"
        elif s["type"] == "yes/no" and s["share_yes"] is not None:
            line += f", yes {s['yes']} ({s['share_yes']:.0%}), no {s['no']}"
        elif s["type"] == "list" and s["mean_items"] is not None:
            line += f", {s['mean_items']:.2g} items each; most common: " + ", ".join(f"{clean(item)[:30]} ({n})" for item, n in s["top"])
        elif s["type"] == "span":
            line += f", {s['left_out']} left out (outside the video); checks: " + (
                ", ".join(f"{k} {v}" for k, v in s["checks"].items()) or "none"
            )
        elif s["type"] == "text":
            line += f", {s['distinct']} distinct"
        print(line)
