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
from enum import StrEnum

from .analysis import Analysis, AnalysisState
from .batch import Batch, Item
from .store import Store
from .video import UPLOAD_PROGRESS_SPAN, Video, VideoState


class Status(StrEnum):
    WAITING = "Waiting"
    UPLOADING = "Uploading"
    PROCESSING = "Gemini is processing"
    READY = "Ready to analyze"
    WRITING = "Writing story"
    DONE = "Done"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def ended(self) -> bool:
        return self in (Status.DONE, Status.FAILED, Status.CANCELLED)


# The order of a video's life, for charts and sorting.
LIFE_ORDER = list(Status)
_BY_VIDEO_STATE = {
    VideoState.CREATED: Status.WAITING, VideoState.UPLOADING: Status.UPLOADING, VideoState.UPLOADED: Status.PROCESSING,
    VideoState.FILE_PROCESSING: Status.PROCESSING, VideoState.FILE_ACTIVE: Status.READY, VideoState.FAILED: Status.FAILED,
}


@dataclass(frozen=True)
class Row:
    item: Item
    analysis: Analysis | None
    video: Video | None
    status: Status
    progress: int  # 0..100 across the video's states and the analysis's

    @property
    def ended(self) -> bool:
        return self.status.ended

    @property
    def label(self) -> str:
        """The status as a person reads it, e.g. "Uploading 43 %"."""
        if self.status is Status.UPLOADING and self.video:
            low, high = UPLOAD_PROGRESS_SPAN
            return f"Uploading {max(0, min(100, (self.video.progress - low) * 100 // (high - low)))} %"
        if self.status is Status.WAITING and self.item.intake is not None:
            return "Checking the file"
        if self.status is Status.WRITING and self.analysis and self.analysis.batch_job:
            return "In a Gemini batch job"  # the Batch tier: hours, not seconds
        return self.status.value

    @property
    def name(self) -> str:
        return self.item.display_name

    @property
    def story(self) -> str | None:
        return self.analysis.story if self.analysis and self.status is Status.DONE else None

    @property
    def error(self) -> str | None:
        if self.status is not Status.FAILED:
            return None
        if self.analysis is None:
            return self.item.error_message
        if self.analysis.error_message:
            return self.analysis.error_message
        return self.video.error_message if self.video else None

    @property
    def cost_usd(self) -> float | None:
        """What this row cost: nothing when it reused an earlier answer."""
        if self.analysis is None or self.analysis.cost_usd is None:
            return None
        return 0.0 if self.item.reused else self.analysis.cost_usd

    @property
    def since(self) -> float:
        """When the current status began (for "time in stage" of work in flight)."""
        video_stage = self.status in (Status.WAITING, Status.UPLOADING, Status.PROCESSING, Status.READY)
        record: Video | Analysis | None = self.video if video_stage and self.video else self.analysis
        if record is None:
            return self.item.created_at
        return record.state_entered_at.get(record.state.value, self.item.created_at)

    @property
    def finished_at(self) -> float | None:
        return self.analysis.completed_at if self.analysis and self.ended else (self.item.created_at if self.ended else None)


def row_of(item: Item, analysis: Analysis | None, video: Video | None) -> Row:
    if item.intake is not None:  # started, its file not checked yet
        return Row(item, None, None, Status.CANCELLED if item.cancelled else Status.WAITING, 0)
    if analysis is None:
        return Row(item, None, video, Status.FAILED, 0)
    state = analysis.state
    if state is AnalysisState.COMPLETED:
        return Row(item, analysis, video, Status.DONE, 100)
    if item.cancelled or state is AnalysisState.CANCELLED:
        return Row(item, analysis, video, Status.CANCELLED, video.progress if video else 0)
    if state is AnalysisState.FAILED:
        return Row(item, analysis, video, Status.FAILED, video.progress if video else 0)
    if state is AnalysisState.ANALYZING:
        return Row(item, analysis, video, Status.WRITING, 85)
    if video is None:
        return Row(item, analysis, None, Status.WAITING, 0)
    return Row(item, analysis, video, _BY_VIDEO_STATE[video.state], video.progress)


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
    return [row_of(item, analyses.get(item.analysis_id or ""), videos.get(item.video_id or "")) for item in items]


def with_videos(store: Store, rows: Iterable[Row]) -> list[Row]:
    """These rows, each with its video (rows read with ``videos_of_done=False`` lack it when their story is done)."""
    rows = list(rows)
    videos = store.by_id(Video, (row.item.video_id for row in rows if row.video is None and row.item.video_id))
    return [replace(row, video=videos[row.item.video_id]) if row.item.video_id in videos and row.video is None else row
            for row in rows]


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


def totals(rows: list[Row]) -> Totals:
    """A batch's figures; an analysis shared by several rows is counted once, a reused one not at all."""
    counted: dict[str, Analysis] = {}
    for row in rows:
        if row.analysis and not row.item.reused:
            counted.setdefault(row.analysis.id, row.analysis)
    costs = [a.cost_usd for a in counted.values() if a.cost_usd is not None]
    estimates = [a.estimated_cost_usd for a in counted.values() if a.estimated_cost_usd is not None]
    done_estimates = [a.estimated_cost_usd for a in counted.values()
                      if a.estimated_cost_usd is not None and a.cost_usd is not None]
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
    )
