"""What a report says, read from the rows once and shared by the Word and PDF builders.

The text is kept as text: builders put it in paragraphs and cells, never parse it
as markup, and control characters are dropped (python-docx refuses them, and
they have no place in a report).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from storyteller_core.deliverables.frames import frame_jpeg, local_source
from storyteller_core.records.story import Moment
from storyteller_core.sanitize import scrub
from storyteller_core.views.board import Row, Status, totals
from storyteller_core.views.export import story_of

Progress = Callable[[int, int], None]  # (videos done, videos in all)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean(text: str | None) -> str:
    return _CONTROL.sub("", scrub(text or ""))


@dataclass(frozen=True)
class Cover:
    title: str
    date: str
    model: str
    counts: str
    cost: str


@dataclass(frozen=True)
class Entry:
    """One video of the report; its frames are read while it is written (``frames()``), not kept."""

    name: str
    title: str
    paragraphs: list[str]
    moments: list[Moment]
    people: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    source: str | None = None
    placeholder: str = ""

    def frames(self) -> Iterator[tuple[Moment, bytes | None]]:
        path = local_source(self.source)
        for moment in self.moments:
            yield moment, frame_jpeg(path, moment.seconds) if path else None


def cover(rows: list[Row], title: str) -> Cover:
    t = totals(rows)
    models = sorted({row.analysis.model for row in rows if row.analysis and row.analysis.model})
    counts = f"{t.rows} video(s): {t.done} done, {t.failed} failed, {t.cancelled} cancelled"
    cost = f"${t.cost_usd:.4f}" if t.cost_usd is not None else "not priced (demo mode or unknown prices)"
    return Cover(clean(title), datetime.now().strftime("%Y-%m-%d %H:%M"), clean(", ".join(models) or "-"), counts, cost)


def entries(rows: Iterable[Row]) -> Iterator[Entry]:
    """An entry per finished row with a story; rows without one are counted on the cover only."""
    for row in rows:
        story = story_of(row) if row.status is Status.DONE else None
        if story is None:
            continue
        source = row.item.source_path
        placeholder = (
            "Frame not available: the video is a link, not a local file."
            if source and "://" in source
            else "Frame not available: the source file is gone."
        )
        yield Entry(
            name=clean(row.name),
            title=clean(story.title or row.name),
            paragraphs=[clean(p.strip()) for p in story.text.split("\n\n") if p.strip()],
            moments=[Moment(m.seconds, clean(m.description)) for m in story.moments],
            people=[clean(p) for p in story.people],
            places=[clean(p) for p in story.places],
            tags=[clean(t) for t in story.tags],
            source=source,
            placeholder=placeholder,
        )


def report_title(rows: list[Row], batch_name: str | None) -> str:
    return batch_name or ("Video Storyteller report" if len(rows) != 1 else rows[0].name)
