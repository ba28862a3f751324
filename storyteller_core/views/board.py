"""What a person sees: one row per item, its status in plain words, and a batch's totals.

A row's status is read from its item, its analysis and its video; it is
never stored. The pages, the CLI and the exports all read rows from here, so
the words and the figures are the same everywhere.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from storyteller_core.gemini.reach import RetryNote
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.video import Video
from storyteller_core.storage.disk_store import Store, busy_elapsed
from storyteller_core.views.rows import LIFE_ORDER, Row, Status, row_of

__all__ = [
    "LIFE_ORDER",
    "Row",
    "Status",
    "Totals",
    "batch_labels",
    "batch_rows",
    "kept_totals",
    "live_rows",
    "page_rows",
    "row_of",
    "rows_of",
    "set_aside_note",
    "totals",
    "with_videos",
]


def rows_of(store: Store, items: Iterable[Item], *, videos_of_done: bool = True) -> list[Row]:
    """Rows for these items, reading each shared analysis and video once (all of them in a few queries).

    A finished story's status does not depend on its video: with ``videos_of_done=False`` those rows are read
    without it (a third fewer records for a finished batch) and ``with_videos`` adds it to the few rows shown.
    """
    items = list(items)
    analyses = store.by_id(Analysis, (item.analysis_id for item in items if item.analysis_id))

    def done(item: Item) -> bool:
        analysis = analyses.get(item.analysis_id or "")
        return analysis is not None and analysis.state is AnalysisState.COMPLETED

    videos = store.by_id(Video, (item.video_id for item in items if item.video_id and (videos_of_done or not done(item))))
    rows = [row_of(item, analyses.get(item.analysis_id or ""), videos.get(item.video_id or "")) for item in items]
    return with_notes(store, rows)


def with_notes(store: Store, rows: list[Row]) -> list[Row]:
    """These rows, each in flight with the retry note the store keeps for its step (written by whichever process
    works on it: the app, the CLI, a team worker); one read, and none when every row has ended."""
    if all(row.ended for row in rows):
        return rows
    kept = store.retry_notes()
    if not kept:
        return rows
    out = []
    for row in rows:
        fields = (
            None
            if row.ended
            else kept.get(f"analysis:{row.analysis.id}" if row.analysis else "")
            or kept.get(f"video:{row.video.id}" if row.video else (f"video:{row.item.video_id}" if row.item.video_id else ""))
        )
        note = RetryNote.stored(fields) if fields else None
        out.append(replace(row, note=note) if note is not None else row)
    return out


def with_videos(store: Store, rows: Iterable[Row]) -> list[Row]:
    """These rows, each with its video (rows read with ``videos_of_done=False`` lack it when their story is done)."""
    rows = list(rows)
    videos = store.by_id(Video, (row.item.video_id for row in rows if row.video is None and row.item.video_id))
    return [replace(row, video=videos[row.item.video_id]) if row.item.video_id in videos and row.video is None else row for row in rows]


def batch_rows(store: Store, batch_id: str | None = None, *, videos_of_done: bool = True) -> list[Row]:
    return rows_of(store, store.items(batch_id), videos_of_done=videos_of_done)


def batch_labels(store: Store, batch_ids: list[str]) -> dict[str, str]:
    """{batch id: name} for a picker, each label unique: two batches started in the same minute from the same first
    file share their default name, and a picker that told its options apart by label would show the wrong one."""
    found = store.by_id(Batch, batch_ids)  # one query, not one per batch: the pages ask on every rerun
    names = {b: found[b].name if b in found else b for b in batch_ids}
    shared = {name for name, count in Counter(names.values()).items() if count > 1}
    return {b: f"{name} ({b})" if name in shared else name for b, name in names.items()}


@dataclass(frozen=True)
class Totals:
    rows: int
    done: int
    failed: int
    cancelled: int
    in_flight: int
    tokens: int
    cost_usd: float | None  # None: nothing priced (demo mode, or unknown prices)
    estimated_cost_usd: float | None
    estimated_done_usd: float | None  # the estimate of just the analyses that have a cost: compare with cost_usd
    elapsed_s: float
    last_finished: float | None = None  # when the last row that ended did (names a completion of the batch)


def totals(rows: list[Row]) -> Totals:
    """A batch's figures; an analysis shared by several rows is counted once, a reused one not at all."""
    counted: dict[str, Analysis] = {}
    for row in rows:
        if row.analysis and not row.item.reused:
            counted.setdefault(row.analysis.id, row.analysis)
    costs = [a.cost_usd for a in counted.values() if a.cost_usd is not None]
    estimates = [a.estimated_cost_usd for a in counted.values() if a.estimated_cost_usd is not None]
    done_estimates = [a.estimated_cost_usd for a in counted.values() if a.estimated_cost_usd is not None and a.cost_usd is not None]
    started = min((row.item.created_at for row in rows), default=time.time())
    live = [row for row in rows if not row.ended]
    ended = time.time() if live else max((row.finished_at or started for row in rows), default=started)
    return Totals(
        rows=len(rows),
        done=sum(row.status is Status.DONE for row in rows),
        failed=sum(row.status is Status.FAILED for row in rows),
        cancelled=sum(row.status is Status.CANCELLED for row in rows),
        in_flight=len(live),
        tokens=sum(a.total_tokens or 0 for a in counted.values()),
        cost_usd=sum(costs) if costs else None,
        estimated_cost_usd=sum(estimates) if estimates else None,
        estimated_done_usd=sum(done_estimates) if done_estimates else None,
        elapsed_s=max(0.0, ended - started),
        last_finished=max((row.finished_at or row.item.created_at for row in rows if row.ended), default=None),
    )


# The board's filters: which statuses each shows.
FILTERS: dict[str, tuple[Status, ...] | None] = {
    "All": None,
    "In flight": tuple(s for s in LIFE_ORDER if not s.ended),
    "Done": (Status.DONE,),
    "Failed": (Status.FAILED,),
    "Cancelled": (Status.CANCELLED,),
}


def page_rows(
    store: Store, batch_id: str, shown: str = "All", order: str = "Added", *, offset: int = 0, limit: int = 25
) -> tuple[list[Row], int]:
    """(one page of a batch's rows with their videos, how many rows match): reads the page's records only, from
    the store's kept indexes, for the orders "Added" and "Status"; "Name" reads the matching rows' items."""
    statuses = FILTERS.get(shown)
    counts = store.status_counts(batch_id)
    matching = sum(counts.values()) if statuses is None else sum(counts[s] for s in statuses)
    if order == "Name":
        items = store.many(Item, store.item_page(batch_id, statuses))
        items.sort(key=lambda item: item.display_name.lower())
        page = items[offset : offset + limit]
    else:
        page = store.many(Item, store.item_page(batch_id, statuses, by_status=order == "Status", offset=offset, limit=limit))
    return with_videos(store, rows_of(store, page, videos_of_done=False)), matching


def kept_totals(store: Store, batch_id: str) -> Totals:
    """A batch's figures from the store's kept counts and sums: the same as ``totals(batch_rows(...))``, no row read."""
    counts = store.status_counts(batch_id)
    sums = store.batch_sums(batch_id)
    in_flight = sum(n for status, n in counts.items() if not status.ended)
    now = time.time()
    started = sums["first_added"] if sums["first_added"] is not None else now
    ended = now if in_flight else (sums["last_finished"] or started)
    busy = busy_elapsed(sums, now)  # the time something was in flight: not the idle hour before a retry
    return Totals(
        rows=sum(counts.values()),
        done=counts[Status.DONE],
        failed=counts[Status.FAILED],
        cancelled=counts[Status.CANCELLED],
        in_flight=in_flight,
        tokens=int(sums["tokens"]),
        cost_usd=sums["cost_usd"] if sums["costed"] else None,
        estimated_cost_usd=sums["estimated_cost_usd"] if sums["estimated"] else None,
        estimated_done_usd=sums["estimated_done_usd"] if sums["estimated_done"] else None,
        elapsed_s=max(0.0, ended - started) if busy is None else busy,
        last_finished=sums["last_finished"],
    )


def set_aside_note(store: Store) -> str | None:
    """One sentence naming the records that could not be read and were set aside, or None (for Queue and status)."""
    count, shown = store.set_aside(limit=5)
    if not count:
        return None
    keys = ", ".join(s["key"] for s in shown) + (", ..." if count > len(shown) else "")
    return (
        f"{count} record{'s' if count > 1 else ''} could not be read and {'were' if count > 1 else 'was'} set aside "
        f"(kept in the job store under aside:<key>; every other row works): {keys}. "
        "The log names the reason of each; Retry on an affected row asks again."
    )


def live_rows(store: Store, failures: int = 10) -> tuple[list[Row], Totals]:
    """For Queue: the rows in flight and each batch's latest ``failures`` failed rows, read from the kept indexes
    (not every row of every batch), and the totals of the batches with work in flight."""
    moving = FILTERS["In flight"]
    item_ids: list[str] = []
    running: list[Totals] = []
    for batch_id in store.batch_ids():
        counts = store.status_counts(batch_id)
        if any(counts[s] for s in moving or ()):
            item_ids += store.item_page(batch_id, moving)
            running.append(kept_totals(store, batch_id))
        if counts[Status.FAILED]:
            item_ids += store.item_page(batch_id, [Status.FAILED], offset=max(0, counts[Status.FAILED] - failures))
    rows = rows_of(store, store.many(Item, item_ids))
    combined = Totals(
        rows=sum(t.rows for t in running),
        done=sum(t.done for t in running),
        failed=sum(t.failed for t in running),
        cancelled=sum(t.cancelled for t in running),
        in_flight=sum(t.in_flight for t in running),
        tokens=sum(t.tokens for t in running),
        cost_usd=None,
        estimated_cost_usd=None,
        estimated_done_usd=None,
        elapsed_s=max((t.elapsed_s for t in running), default=0.0),
    )
    return rows, combined
