"""The `ask` command of the CLI (registered by storyteller_core.cli.main).

    python -m storyteller_core ask "QUESTION" [--batch ID ...] [--model M] [--json FILE]

Answers from the stored stories of the batches named (every analyzed video when none is), prints the answer
and each citation with its status, and writes the JSON the issue names. Exit 0 when answered (every citation
checked, whatever its verdict), 1 when some checks could not run (ask again to finish them), 2 when nothing
could be asked (no such batch, no story yet, a bad output path).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storyteller_core.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add this command to the CLI's subcommands (imports nothing heavy: `status` must answer at once)."""
    ask = sub.add_parser("ask", help="ask one question of a whole batch or library; each citation is checked on its clip")
    ask.add_argument("question", metavar="QUESTION", help="the question, in quotes")
    ask.add_argument(
        "--batch", action="append", metavar="ID", help="a batch to ask (its id or its name; repeat for several); default: the whole library"
    )
    ask.add_argument("--model", help="Gemini model (default: STORYTELLER_MODEL or the app's default)")
    ask.add_argument("--json", type=Path, metavar="FILE", help="write the answer and its citations as JSON")
    ask.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import json
    import logging
    from datetime import datetime

    from storyteller_core.cli.support import batches_named as _batches_named
    from storyteller_core.cli.support import error as _error
    from storyteller_core.cli.support import open_store as _open_store
    from storyteller_core.cli.support import writable as _writable
    from storyteller_core.collection.ask import AskError, Scope, open_asker
    from storyteller_core.collection.material import ScopeError
    from storyteller_core.errors import GeminiError, Kind, QuotaPaused
    from storyteller_core.logs import setup_logging
    from storyteller_core.sanitize import plain_data, terminal_text
    from storyteller_core.settings import retired_sentence

    if args.json and not _writable(args.json):
        return 2
    setup_logging(settings.data_dir, logging.CRITICAL + 1)  # log lines to the log file, never the terminal
    store = _open_store(settings)
    try:
        batch_ids: list[str] = []
        for wanted in args.batch or []:
            found = _batches_named(store, wanted)
            if not found:
                _error(
                    f"no batch with the id or name '{wanted}' in {settings.data_dir}; "
                    "`python -m storyteller_core status` lists the batches."
                )
                return 2
            batch_ids += found
        scope = Scope(tuple(dict.fromkeys(batch_ids)) if args.batch else None)
        asker = open_asker(settings, store)
        try:
            model = args.model or settings.model
            estimate = asker.estimate(args.question, scope, model)
            print(f"Estimate: {terminal_text(estimate.describe())}", flush=True)
            result = asker.ask(args.question, scope, model, on_progress=lambda text: print(terminal_text(text), flush=True))
        finally:
            asker.close()
    except (ScopeError, AskError) as exc:
        _error(str(exc) if isinstance(exc, ScopeError) else exc.message)
        return 2
    except QuotaPaused as exc:
        _error(
            f"the Gemini quota is exhausted until about {datetime.fromtimestamp(exc.resume_at):%H:%M}; ask the same "
            "question again then (what was answered and checked so far is kept)."
        )
        return 2
    except GeminiError as exc:
        if exc.kind is Kind.MODEL:
            _error(retired_sentence(args.model or settings.model))
        elif exc.kind is Kind.AUTH:
            _error("Gemini refused the API key; set a valid GEMINI_API_KEY and ask again.")
        else:
            _error(f"Gemini could not answer ({exc.label}: {exc.message[:200]}); nothing was stored, ask again later.")
        return 2
    finally:
        store.close()

    if settings.demo:
        print("Demo mode (no GEMINI_API_KEY): the answer and its checks come from the local emulator, not Gemini.")
    print()
    print(terminal_text(result.answer))
    print()
    for n, cited in enumerate(result.citations, 1):
        c, o = cited.citation, cited.outcome
        status = cited.status.upper()
        where = f"{c.start_s:.1f}-{c.end_s:.1f} s"
        if o and o.status == "corrected":
            where += f" -> {o.corrected_start_s:.1f}-{o.corrected_end_s:.1f} s"
        print(f'[{n}] {status:<11} {terminal_text(c.file_name or c.video_label)}  {where}  "{terminal_text(c.quote)[:120]}"')
        if o and o.status != "confirmed":
            print(f"    {terminal_text(o.reason)[:200]}")
    counts = {s: sum(c.status == s for c in result.citations) for s in ("confirmed", "corrected", "unsupported")}
    cost = "no cost (answered before)" if result.reused else "nothing charged (demo mode)" if settings.demo else f"${result.cost_usd:.4f}"
    print(
        f"{len(result.citations)} citation(s): {counts['confirmed']} confirmed, {counts['corrected']} corrected, "
        f"{counts['unsupported']} unsupported (not shown as fact). Cost: {cost}."
    )
    uncited = sum(1 for claim in result.claims if not claim.get("citations"))
    if uncited:
        print(f"{uncited} claim(s) of the answer came with no citation: they are not checked facts.")
    for problem in result.problems:
        print(f"Warning: {terminal_text(problem)}")
    if args.json:
        # model text and file names leave us neutralized, as every other export does
        args.json.write_text(json.dumps(plain_data(result.to_json()), ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"Wrote the answer to {args.json}")
    return 0 if result.complete else 1
