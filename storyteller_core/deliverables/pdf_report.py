"""The PDF report (fpdf2: pure Python, no system libraries), the same content as the Word one.

A Unicode TrueType font (DejaVu Sans when the system has it) keeps names and
stories in any script; without it the core Helvetica is used and characters it
cannot show become "?". multi_cell gets markdown=False: a story's "**" stays text.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from storyteller_core.deliverables.content import Cover, Entry, Progress, cover, entries, report_title
from storyteller_core.views.board import Row

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
PICTURE_WIDTH_MM = 90.0


def build(rows: list[Row], out: Path | io.BytesIO, *, batch_name: str | None = None, progress: Progress | None = None) -> int:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    family = _font(pdf)
    pdf.set_title(cover(rows, report_title(rows, batch_name)).title)
    _cover(pdf, family, cover(rows, report_title(rows, batch_name)))
    count, listed = 0, [row for row in rows if row.story]
    for count, entry in enumerate(entries(listed), start=1):
        _entry(pdf, family, entry)
        if progress:
            progress(count, len(listed))
    data = bytes(pdf.output())
    if isinstance(out, io.BytesIO):
        out.write(data)
    else:
        out.write_bytes(data)
    return count


def build_bytes(rows: list[Row], **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    build(rows, buffer, **kwargs)
    return buffer.getvalue()


def _font(pdf: Any) -> str:
    regular, bold = FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf"
    if regular.is_file() and bold.is_file():
        pdf.add_font("DejaVu", "", str(regular))
        pdf.add_font("DejaVu", "B", str(bold))
        oblique = FONT_DIR / "DejaVuSans-Oblique.ttf"
        pdf.add_font("DejaVu", "I", str(oblique if oblique.is_file() else regular))
        return "DejaVu"
    return "Helvetica"


def _text(pdf: Any, family: str, text: str) -> str:
    return text if family == "DejaVu" else text.encode("latin-1", "replace").decode("latin-1")


def _line(pdf: Any, family: str, text: str, *, size: float = 11, style: str = "", height: float = 6) -> None:
    pdf.set_font(family, style, size)
    pdf.multi_cell(0, height, _text(pdf, family, text), markdown=False, new_x="LMARGIN", new_y="NEXT")


def _cover(pdf: Any, family: str, c: Cover) -> None:
    pdf.add_page()
    pdf.ln(50)
    _line(pdf, family, c.title, size=24, style="B", height=12)
    pdf.ln(8)
    for label, value in (("Date", c.date), ("Model", c.model), ("Videos", c.counts), ("Total cost", c.cost)):
        _line(pdf, family, f"{label}: {value}", size=12, height=8)


def _entry(pdf: Any, family: str, entry: Entry) -> None:
    pdf.add_page()
    _line(pdf, family, entry.title, size=18, style="B", height=9)
    if entry.title != entry.name:
        _line(pdf, family, entry.name, size=10, style="I")
    pdf.ln(2)
    for text in entry.paragraphs:
        _line(pdf, family, text)
        pdf.ln(2)
    if entry.moments:
        _line(pdf, family, "Key moments", size=14, style="B", height=8)
    for moment, jpeg in entry.frames():
        _line(pdf, family, f"{moment.time}  {moment.description}", style="B")
        if jpeg:
            if pdf.get_y() + PICTURE_WIDTH_MM * 0.75 > pdf.h - pdf.b_margin:
                pdf.add_page()
            pdf.image(io.BytesIO(jpeg), w=PICTURE_WIDTH_MM)
        else:
            _line(pdf, family, f"[{entry.placeholder}]", size=10, style="I")
        pdf.ln(2)
    for label, values in (("People", entry.people), ("Places", entry.places), ("Tags", entry.tags)):
        if values:
            _line(pdf, family, f"{label}: {', '.join(values)}")
