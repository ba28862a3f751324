"""The Word report (python-docx): a title page, then per video its story, key moments with frames, people, places, tags.

Text goes in with add_paragraph / add_run, which store it as text (a "**" or a
field code in a story stays those characters). Frames are added one at a time as
small JPEGs straight from PyAV, so memory grows by the compressed pictures only.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from storyteller_core.deliverables.content import Cover, Entry, Progress, cover, entries, report_title
from storyteller_core.views.board import Row

PICTURE_WIDTH_CM = 9.0


def build(rows: list[Row], out: Path | io.BytesIO, *, batch_name: str | None = None, progress: Progress | None = None) -> int:
    """Write the report to ``out``; the number of videos in it."""
    from docx import Document

    document = Document()
    _cover(document, cover(rows, report_title(rows, batch_name)))
    count, listed = 0, [row for row in rows if row.story]
    for count, entry in enumerate(entries(listed), start=1):
        document.add_page_break()
        _entry(document, entry)
        if progress:
            progress(count, len(listed))
    document.save(str(out) if isinstance(out, Path) else out)
    return count


def build_bytes(rows: list[Row], **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    build(rows, buffer, **kwargs)
    return buffer.getvalue()


def _cover(document: Any, c: Cover) -> None:
    document.add_heading(c.title, level=0)
    for label, value in (("Date", c.date), ("Model", c.model), ("Videos", c.counts), ("Total cost", c.cost)):
        paragraph = document.add_paragraph()
        paragraph.add_run(f"{label}: ").bold = True
        paragraph.add_run(value)


def _entry(document: Any, entry: Entry) -> None:
    from docx.shared import Cm

    document.add_heading(entry.title, level=1)
    if entry.title != entry.name:
        document.add_paragraph().add_run(entry.name).italic = True
    for text in entry.paragraphs:
        document.add_paragraph(text)
    if entry.moments:
        document.add_heading("Key moments", level=2)
    for moment, jpeg in entry.frames():
        paragraph = document.add_paragraph()
        paragraph.add_run(f"{moment.time}  ").bold = True
        paragraph.add_run(moment.description)
        if jpeg:
            document.add_picture(io.BytesIO(jpeg), width=Cm(PICTURE_WIDTH_CM))
        else:
            document.add_paragraph().add_run(f"[{entry.placeholder}]").italic = True
    for label, values in (("People", entry.people), ("Places", entry.places), ("Tags", entry.tags)):
        if values:
            paragraph = document.add_paragraph()
            paragraph.add_run(f"{label}: ").bold = True
            paragraph.add_run(", ".join(values))
