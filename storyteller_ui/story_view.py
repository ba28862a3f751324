"""A story shown as formatted text, safely: only headings, lists and bold are kept; everything else is text.

Gemini writes Markdown (``## Title``, ``**People:**``, ``- 00:12 …``). Shown raw it is hard to read; rendered
as it is, a link or an image in it would make the browser fetch what a model or a file name chose. So each
line's structure is rebuilt by us and every piece of its text goes through ``plain()``.
"""

from __future__ import annotations

import re

WORD_JOINER = "\u2060"  # invisible, and keeps the text as it reads
_AUTOLINK = re.compile(r"(?i)(www|https?|ftp|mailto|xmpp)(?=[.:])|@")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$&=^\"'])")


def plain(text: str | None) -> str:
    """``text`` escaped so Streamlit's Markdown shows it literally: no links, images, HTML, icons or maths."""
    if not text:
        return ""
    flat = " ".join(text.split())  # no line breaks that would start a list, a heading or a quote
    # GFM turns www.x, http(s):// and a@b.c into links after escapes are read: a word joiner breaks each pattern.
    flat = _AUTOLINK.sub(lambda m: m.group(0) + WORD_JOINER, flat)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


_HEADING = re.compile(r"^\s*(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*+•]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*(\d{1,4})[.)]\s+(.*)$")


def inline(text: str) -> str:
    """``**bold**`` kept as bold; every other character shown as itself."""
    parts = text.split("**")
    if len(parts) % 2 == 0:  # an unpaired ** is text
        parts = [*parts[:-2], parts[-2] + "**" + parts[-1]]
    return "".join(f"**{plain(p)}**" if n % 2 and p.strip() else _spaced(p) for n, p in enumerate(parts))


def _spaced(text: str) -> str:
    """``plain(text)`` with the space at either end kept (it separates the text from bold beside it)."""
    if not text.strip():
        return " " if text else ""
    return (" " if text[0].isspace() else "") + plain(text) + (" " if text[-1].isspace() else "")


def safe_markdown(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if heading := _HEADING.match(line):
            lines.append(f"{'#' * max(4, min(6, len(heading.group(1)) + 2))} {inline(heading.group(2))}")
        elif bullet := _BULLET.match(line):
            lines.append(f"- {inline(bullet.group(1))}")
        elif numbered := _NUMBERED.match(line):
            lines.append(f"{numbered.group(1)}. {inline(numbered.group(2))}")
        else:  # a hard line break: "People:", "Places:" and "Tags:" stay on lines of their own
            lines.append(inline(line) + "  " if line.strip() else "")
    return "\n".join(lines)
