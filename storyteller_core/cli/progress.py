"""How `process` shows its rows while it waits for them.

On a terminal: one live display (rich), redrawn in place about four times a
second and never taller than the terminal. With more rows than fit it shows a
summary line (counts and an overall bar), the rows in flight (the most recent
change first) and "... and N more". Anywhere else (a pipe, a file, CI): one
plain line per row each time its status changes, with no escape sequences.

rich is imported only by the live display, so `status`, `export` and piped
runs never pay for it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from storyteller_core.sanitize import terminal_text
from storyteller_core.views.board import Row, Status

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

REFRESH_PER_SECOND = 4
BAR_WIDTH = 20
KEEP_BELOW = 4  # terminal lines left free under the display: the closing summary and the shell prompt
_STYLE = {Status.DONE: "green", Status.FAILED: "red", Status.CANCELLED: "yellow", Status.WAITING: "dim"}


class Display(Protocol):
    def show(self, rows: Sequence[Row], note: str | None = None) -> None: ...

    def __enter__(self) -> Display: ...

    def __exit__(self, *exc: object) -> None: ...


def display_for(out: TextIO, live: bool | None = None) -> Display:
    """The live display when ``out`` is a terminal that can redraw in place, plain lines otherwise."""
    if live is None:
        live = _is_terminal(out)
    return LiveDisplay(out) if live else PlainLines(out)


def _is_terminal(out: TextIO) -> bool:
    import os

    try:
        return out.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


def shown_name(row: Row) -> str:
    return terminal_text(row.name) + (" (reused)" if row.item.reused else "")


# -- not a terminal: one line per event ------------------------------------------------------
class PlainLines:
    """One line per row each time its status changes (and one per new note); nothing is ever repeated."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._seen: dict[str, Status] = {}
        self._note: str | None = None

    def __enter__(self) -> PlainLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def show(self, rows: Sequence[Row], note: str | None = None) -> None:
        lines = []
        if note != self._note:
            self._note = note
            if note:
                lines.append(terminal_text(note))
        for row in rows:
            if self._seen.get(row.item.id) is not row.status:
                self._seen[row.item.id] = row.status
                lines.append(plain_line(row))
        if lines:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()


def plain_line(row: Row) -> str:
    error = f": {terminal_text(row.error)}" if row.error else ""
    return f"{shown_name(row)}  {row.status.value}{error}"


# -- a terminal: one live display ------------------------------------------------------------
class LiveDisplay:
    """A rich Live display that re-reads the latest rows on each refresh (4/s)."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out, highlight=False, emoji=False, markup=False)
        self._rows: list[Row] = []
        self._note: str | None = None
        self._started = time.monotonic()
        self._live = Live(
            console=self.console,
            get_renderable=self._render,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=False,
            vertical_overflow="crop",
        )

    def __enter__(self) -> LiveDisplay:
        self._started = time.monotonic()
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()  # draws the last rows once more and leaves them on screen

    def show(self, rows: Sequence[Row], note: str | None = None) -> None:
        self._rows, self._note = list(rows), note  # the refresh thread reads them; one assignment each

    def _render(self) -> RenderableType:
        return render(self._rows, self.console, elapsed_s=time.monotonic() - self._started, note=self._note)


@dataclass(frozen=True)
class Counts:
    done: int
    failed: int
    cancelled: int
    in_flight: int
    waiting: int
    percent: int

    @classmethod
    def of(cls, rows: Sequence[Row]) -> Counts:
        ended = [row for row in rows if row.ended]
        return cls(
            done=sum(row.status is Status.DONE for row in ended),
            failed=sum(row.status is Status.FAILED for row in ended),
            cancelled=sum(row.status is Status.CANCELLED for row in ended),
            in_flight=sum(not row.ended and row.status is not Status.WAITING for row in rows),
            waiting=sum(row.status is Status.WAITING for row in rows),
            # an ended row, failed or not, is as far as it will go
            percent=(sum(100 if row.ended else row.progress for row in rows) // len(rows)) if rows else 0,
        )

    def words(self) -> str:
        parts = [f"{self.done} done", f"{self.failed} failed"]
        if self.cancelled:
            parts.append(f"{self.cancelled} cancelled")
        parts += [f"{self.in_flight} in flight", f"{self.waiting} waiting"]
        return " · ".join(parts)


def pick_rows(rows: Sequence[Row], slots: int) -> list[Row]:
    """What fits in ``slots`` lines: rows in flight, most recent change first; then ended rows, failures first."""
    in_flight = sorted((r for r in rows if not r.ended and r.status is not Status.WAITING), key=lambda r: r.since, reverse=True)
    ended = sorted((r for r in rows if r.ended), key=lambda r: r.since, reverse=True)
    ended.sort(key=lambda r: r.status is Status.DONE)  # stable: failures and cancels first, each most recent first
    return (in_flight + ended)[: max(0, slots)]


def render(rows: Sequence[Row], console: Console, *, elapsed_s: float = 0.0, note: str | None = None) -> RenderableType:
    """The whole display for a terminal of ``console.size``; never more lines than the terminal minus KEEP_BELOW."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    width, height = console.size
    budget = max(3, height - KEEP_BELOW)
    counts = Counts.of(rows)
    minutes, seconds = divmod(int(elapsed_s), 60)

    summary = Table.grid(padding=(0, 1), expand=True)
    summary.add_column(no_wrap=True, overflow="ellipsis")
    summary.add_column(ratio=1, min_width=5)
    summary.add_column(no_wrap=True, justify="right")
    summary.add_row(
        Text(counts.words()), ProgressBar(total=100, completed=counts.percent), Text(f"{counts.percent:3d} % {minutes}:{seconds:02d}")
    )
    parts: list[RenderableType] = [summary]

    if note:
        text = Text(terminal_text(note), style="bold yellow")
        lines = text.wrap(console, width)
        parts.append(text)
        budget -= len(lines)

    if 1 + len(rows) <= budget:
        shown, more = list(rows), 0
    else:
        shown = pick_rows(rows, budget - 2)  # the summary and the "... and N more" line
        more = len(rows) - len(shown)

    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    show_bar = width >= 60
    if show_bar:
        table.add_column(width=BAR_WIDTH, no_wrap=True)
    table.add_column(
        no_wrap=True, overflow="ellipsis", min_width=len(Status.PROCESSING.value) if show_bar else None, max_width=max(10, width // 3)
    )  # the bars stay put as the words change
    for row in shown:
        cells: list[RenderableType] = [Text(shown_name(row))]
        if show_bar:
            cells.append(ProgressBar(total=100, completed=100 if row.status is Status.DONE else row.progress, width=BAR_WIDTH))
        cells.append(Text(row.label, style=_STYLE.get(row.status, "")))
        table.add_row(*cells)
    if shown:
        parts.append(table)
    if more:
        on_screen = {id(row) for row in shown}
        left = Counts.of([row for row in rows if id(row) not in on_screen])
        detail = ", ".join(
            f"{n} {word}"
            for n, word in (
                (left.done, "done"),
                (left.failed, "failed"),
                (left.cancelled, "cancelled"),
                (left.in_flight, "in flight"),
                (left.waiting, "waiting"),
            )
            if n
        )
        parts.append(Text(f"... and {more} more ({detail})", style="dim", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)
