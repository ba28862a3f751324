"""The export command's reports and subtitles, kept out of cli.py: progress on stderr, one line per file written."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from storyteller_core.records.story import Moment
from storyteller_core.views.board import Row
from storyteller_core.views.export import story_of


def moments_of(rows: list[Row]) -> list[tuple[str, list[Moment], float | None]]:
    """(video name, key moments, duration) per finished row with a structured story."""
    out = []
    for row in rows:
        story = story_of(row)
        if story and story.moments:
            out.append((row.name, story.moments, row.video.duration_s if row.video else None))
    return out


def _progress(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\r{label}: {done}/{total} video(s)", end=end, file=sys.stderr, flush=True)

    return show


def write_deliverables(args: argparse.Namespace, rows: list[Row], batch_name: str | None) -> int:
    """Write what --docx/--pdf/--srt/--vtt asked for; 1 when a file could not be written."""
    from storyteller_core.deliverables import docx_report, pdf_report, subtitles

    try:
        for out, module in ((args.docx, docx_report), (args.pdf, pdf_report)):
            if out:
                count = module.build(rows, out, batch_name=batch_name, progress=_progress(out.name))
                print(f"Wrote a report of {count} stor(ies) to {out}")
        for folder, kind in ((args.srt, "srt"), (args.vtt, "vtt")):
            if folder:
                written = subtitles.write_dir(moments_of(rows), folder, kind)
                print(
                    f"Wrote {len(written)} {kind.upper()} file(s) to {folder}"
                    + ("" if written else " (no row has key moments: ask with the Story preset)")
                )
    except OSError as exc:
        print(f"Error: could not write ({exc.strerror or exc}). Check the path and that the disk has room.", file=sys.stderr)
        return 1
    return 0
