"""What the CLI's commands share: opening the store, checking an output path, finding batches, errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from storyteller_core.sanitize import terminal_text
from storyteller_core.settings import Settings

if TYPE_CHECKING:
    from storyteller_core.engine import Engine
    from storyteller_core.storage.store_protocol import Store
    from storyteller_core.views.board import Row


def batches_named(store: Store, wanted: str) -> list[str]:
    """The batch with this id, else every batch with this name (a person remembers names, not ids)."""
    from storyteller_core.records.batch import Batch

    ids = store.batch_ids()
    if wanted in ids:
        return [wanted]
    return [batch.id for batch in store.many(Batch, ids) if batch.name == wanted]


def no_such_batch(store: Store, wanted: str, settings: Settings) -> int:
    from storyteller_core.records.batch import Batch

    batches = store.many(Batch, store.batch_ids())
    error(
        f"no batch with the id or name '{terminal_text(wanted)}' in {settings.data_dir}. "
        + (
            "Give one of these to --batch (id, then name), or leave --batch out to see every row:"
            if batches
            else "There are no batches yet: run process first."
        )
    )
    for batch in batches[:10]:
        print(f"  {batch.id}  {terminal_text(batch.name)}", file=sys.stderr)
    if len(batches) > 10:
        print(f"  ... and {len(batches) - 10} older batch(es)", file=sys.stderr)
    return 1


def follow(engine: Engine, item_ids: list[str], out: TextIO, poll_s: float = 0.25) -> list[Row]:
    """Show the rows until every one has ended or waits for another Gemini: live on a terminal, one line per
    status change otherwise. A row asked of another backend (demo mode, another key's server) is never this
    engine's to do (runner.py): waiting for it would never end, so it is reported (``_left_for_others``)."""
    from storyteller_core.cli.progress import display_for
    from storyteller_core.records.batch import Item
    from storyteller_core.views.rows import waiting_for

    display = display_for(out)
    rows = engine.rows(engine.store.many(Item, item_ids))
    display.show(rows, note(engine))
    with display:
        while not all(row.ended or waiting_for(row, engine.settings) for row in rows):
            time.sleep(poll_s)
            rows = engine.rows(engine.store.many(Item, item_ids))
            display.show(rows, note(engine))
    return rows


def note(engine: Engine) -> str | None:
    """The banner line: a stop for every worker (key, quota), else Gemini out of reach."""
    from storyteller_core.gemini.reach import banner

    return engine.gate.message or banner()


def open_store(settings: Settings) -> Store:
    """This machine's store, or in team mode (STORYTELLER_BROKER_URL) the team's store in Redis."""
    from storyteller_core.storage.datadir import ensure_data_dir, store_dir
    from storyteller_core.storage.disk_store import DiskStore
    from storyteller_core.team import broker_url, key_prefix

    url = broker_url()
    if url:
        from storyteller_core.intake.shared_root import SharedPaths
        from storyteller_core.storage.redis_store import RedisStore, connect

        return RedisStore(connect(url), key_prefix(), SharedPaths.from_env())

    ensure_data_dir(settings.data_dir)
    return DiskStore(store_dir(settings.data_dir))


def writable(path: Path) -> bool:
    """Check an output path before any work is done, so a typo does not cost a whole batch."""
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        error(f"cannot write the CSV file {path} ({exc.strerror or exc}). Give a path in a folder you can write to.")
        return False
    if not existed:
        path.unlink(missing_ok=True)
    return True


def error(message: str) -> None:
    print(f"error: {terminal_text(message)}", file=sys.stderr)
