"""Build time and peak memory of a 100-video Word and PDF report (each video 3 key moments, frames from local files)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storyteller_core.deliverables import docx_report, pdf_report  # noqa: E402
from storyteller_core.intake.samples import make_video  # noqa: E402
from storyteller_core.records.story import Moment  # noqa: E402
from tests.test_deliverables import story_row  # noqa: E402


def main(folder: Path = Path("/tmp/bench-reports"), count: int = 100) -> None:
    source = make_video(folder / "src.mp4", seconds=3.0, size=(640, 360), seed=1)
    rows = [story_row(n, str(source), moments=[Moment(0.2, "a"), Moment(1.2, "b"), Moment(2.2, "c")]) for n in range(count)]
    process = psutil.Process()
    for label, module in (("docx", docx_report), ("pdf", pdf_report)):
        start, peak = time.monotonic(), process.memory_info().rss

        def progress(done: int, total: int) -> None:
            nonlocal peak
            peak = max(peak, process.memory_info().rss)

        module.build(rows, folder / f"report.{label}", progress=progress)  # type: ignore[attr-defined]
        size = (folder / f"report.{label}").stat().st_size
        print(f"{label}: {count} videos in {time.monotonic() - start:.1f} s, peak RSS {peak / 2**20:.0f} MiB, {size / 2**20:.1f} MiB file")


if __name__ == "__main__":
    main()
