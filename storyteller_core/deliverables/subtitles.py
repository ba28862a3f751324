"""Key moments as SRT and WebVTT, one file per video named after it, and a zip of a batch's.

The formats are written by well-kept libraries (``srt``, ``webvtt-py``), and each
moment's text is folded onto one line first: a newline (or a blank line) in a key
moment, which comes from the model, must not end the cue and start one of its own
(issue 17 item 6), and "-->" must not read as a timing line.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from storyteller_core.records.story import Moment

_UNSAFE = re.compile(r"[^\w. -]+")  # letters of any script stay ("Café réunion été"); the rest is "_"


def cue_text(text: str) -> str:
    """One line of plain text: whitespace runs (newlines included) become one space, and "-->" an arrow."""
    return " ".join(text.replace("-->", "→").split()) or "(no description)"


def spans(moments: list[Moment], end_s: float | None) -> list[tuple[float, float, str]]:
    """(start, end, text) per moment: each runs to the next one, the last to the video's end (at least 1 s)."""
    out = []
    for n, moment in enumerate(moments):
        until = moments[n + 1].seconds if n + 1 < len(moments) else max(end_s or 0.0, moment.seconds + 1)
        out.append((moment.seconds, max(until, moment.seconds + 0.001), cue_text(moment.description)))
    return out


def to_srt(moments: list[Moment], end_s: float | None) -> str:
    import srt

    subs = [
        srt.Subtitle(index=n + 1, start=timedelta(seconds=a), end=timedelta(seconds=b), content=text)
        for n, (a, b, text) in enumerate(spans(moments, end_s))
    ]
    return str(srt.compose(subs, reindex=False))


def to_vtt(moments: list[Moment], end_s: float | None) -> str:
    import webvtt

    vtt = webvtt.WebVTT()
    for n, (a, b, text) in enumerate(spans(moments, end_s)):
        caption = webvtt.Caption(_vtt_time(a), _vtt_time(b), text)
        caption.identifier = str(n + 1)
        vtt.captions.append(caption)
    return str(vtt.content)


def _vtt_time(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"


def safe_stem(name: str, taken: set[str] | None = None) -> str:
    """A file name from a video's name: no folders, no odd characters, not empty, unique among ``taken``."""
    stem = Path(name.replace("\\", "/")).name
    stem = stem.rsplit(".", 1)[0] if "." in stem.strip(".") else stem
    stem = _UNSAFE.sub("_", stem).strip(" ._")[:80] or "video"
    if taken is None:
        return stem
    candidate, n = stem, 2
    while candidate.lower() in taken:
        candidate, n = f"{stem} ({n})", n + 1
    taken.add(candidate.lower())
    return candidate


def files_for(videos: Iterable[tuple[str, list[Moment], float | None]], kind: str) -> Iterable[tuple[str, str]]:
    """(file name, text) per video that has key moments; ``kind`` is "srt" or "vtt"."""
    taken: set[str] = set()
    render = to_srt if kind == "srt" else to_vtt
    for name, moments, end_s in videos:
        if moments:
            yield f"{safe_stem(name, taken)}.{kind}", render(moments, end_s)


def write_dir(videos: Iterable[tuple[str, list[Moment], float | None]], folder: Path, kind: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in files_for(videos, kind):
        path = folder / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def zip_bytes(videos: Iterable[tuple[str, list[Moment], float | None]]) -> bytes:
    """A zip with an SRT and a WebVTT file per video (a batch's subtitles in one download)."""
    listed = list(videos)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for kind in ("srt", "vtt"):
            for file_name, text in files_for(listed, kind):
                archive.writestr(f"{kind}/{file_name}", text)
    return buffer.getvalue()
