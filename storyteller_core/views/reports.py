"""Figures for the Queue page: recent problems and time spent in each stage of a video's life."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storyteller_core.records.video import VideoState
from storyteller_core.views.board import Row, Status

if TYPE_CHECKING:
    import pandas as pd

    from storyteller_core.storage.disk_store import Store

# (label, where the stage starts, where it ends) in the order of a video's life
_STAGES = [
    (Status.WAITING.value, VideoState.CREATED.value, VideoState.UPLOADING.value),
    (Status.UPLOADING.value, VideoState.UPLOADING.value, VideoState.UPLOADED.value),
    (Status.PROCESSING.value, VideoState.UPLOADED.value, VideoState.FILE_ACTIVE.value),
]


def recent_failures(rows: list[Row], limit: int = 10) -> list[Row]:
    failed = [row for row in rows if row.status is Status.FAILED]
    return sorted(failed, key=lambda row: row.finished_at or row.item.created_at, reverse=True)[:limit]


def time_per_status(store: Store, rows: list[Row]) -> pd.DataFrame | None:
    """Median and 90th percentile seconds per stage, over the videos and analyses that finished; None if none did."""
    import pandas as pd

    spans: list[dict[str, object]] = []
    seen_videos: set[str] = set()
    seen_analyses: set[str] = set()
    for row in rows:
        if row.status is not Status.DONE or row.item.reused or not row.analysis:
            continue
        video = row.video
        if video and video.id not in seen_videos:
            seen_videos.add(video.id)
            for label, start, end in _STAGES:
                began, ended = video.state_entered_at.get(start), video.state_entered_at.get(end)
                if began and ended and ended >= began:
                    spans.append({"stage": label, "seconds": ended - began})
        analysis = row.analysis
        if analysis.id not in seen_analyses:
            seen_analyses.add(analysis.id)
            began, ended = analysis.state_entered_at.get("ANALYZING"), analysis.completed_at
            ready = max(analysis.created_at, (video.state_entered_at.get(VideoState.FILE_ACTIVE.value) or 0) if video else 0)
            if began and began >= ready:  # the file was ready; the analysis waited for a worker
                spans.append({"stage": Status.READY.value, "seconds": began - ready})
            if began and ended and ended >= began:
                spans.append({"stage": Status.WRITING.value, "seconds": ended - began})
    if not spans:
        return None
    order = [label for label, _, _ in _STAGES] + [Status.READY.value, Status.WRITING.value]
    stats = pd.DataFrame(spans).groupby("stage")["seconds"].describe(percentiles=[0.5, 0.9])
    stats = stats.reindex([s for s in order if s in stats.index])
    return stats.rename(columns={"50%": "median", "90%": "p90"})[["count", "median", "p90", "max"]]
