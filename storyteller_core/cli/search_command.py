"""The `search` command of the CLI (registered by storyteller_core.cli.main): full-text search over the library.

    python -m storyteller_core search "crowd at night" [--json FILE] [--limit N]

Prints one line per hit (best first): the video, the time, what kind of text matched, and the matching words.
Exit 0 with hits, 1 with none, 2 when the terms or the output file are unusable.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storyteller_core.settings import Settings

DEFAULT_LIMIT = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add this command to the CLI's subcommands (imports nothing heavy: `status` must answer at once)."""
    search = sub.add_parser("search", help="search every story, key moment, person, place and tag of the library")
    search.add_argument("terms", metavar="TERMS", help="words to find (searched as words: no query syntax)")
    search.add_argument(
        "--json", type=Path, help='write the hits to a JSON file: [{"file_name", "video_sha256", "start_s", "kind", "snippet"}]'
    )
    search.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, help=f"at most this many hits (default {DEFAULT_LIMIT})")
    search.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from storyteller_core.cli.support import error as _error
    from storyteller_core.cli.support import open_store as _open_store
    from storyteller_core.cli.support import writable as _writable
    from storyteller_core.collection.search import SearchIndex, sync_all, words_of
    from storyteller_core.sanitize import plain_data, terminal_text

    if not words_of(args.terms):
        _error('nothing to search for: give at least one word with a letter or a digit, e.g. search "pricing".')
        return 2
    if args.json and not _writable(args.json):
        return 2
    store = _open_store(settings)
    try:
        with SearchIndex.of(settings.data_dir) as index:
            sync_all(index, store, settings.data_dir)
            hits = index.search(args.terms, limit=args.limit)
    finally:
        store.close()
    if not hits:
        print(f"No story, key moment, person, place or tag matches {terminal_text(args.terms)!r}.")
    elif hits[0].match == "any":
        print("No text has all these words; showing those with any of them.")
    for hit in hits:
        at = hit.time or "--:--"
        print(f"{terminal_text(hit.file_name)[:40]:<40}  {at:>8}  {hit.kind:<7}  {terminal_text(hit.snippet)}")
    if args.json:
        args.json.write_text(json.dumps(plain_data([hit.to_json() for hit in hits]), ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"Wrote {len(hits)} hit(s) to {args.json}")
    return 0 if hits else 1


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit is a whole number of hits (got {text!r})") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"--limit is between 1 and 1000 (got {value})")
    return value
