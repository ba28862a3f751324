"""A row as a person reads it: its status in plain words, from its item, its analysis and its video.

The status is derived, never stored as truth; the disk store keeps an index by it (see store.py), recomputed
from these same functions whenever one of the three records changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from storyteller_core.gemini.reach import REACH, RetryNote
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Item
from storyteller_core.records.video import UPLOAD_PROGRESS_SPAN, Video, VideoState

if TYPE_CHECKING:
    from storyteller_core.settings import Settings
    from storyteller_core.storage.store_protocol import Store


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
    VideoState.CREATED: Status.WAITING,
    VideoState.UPLOADING: Status.UPLOADING,
    VideoState.UPLOADED: Status.PROCESSING,
    VideoState.FILE_PROCESSING: Status.PROCESSING,
    VideoState.FILE_ACTIVE: Status.READY,
    VideoState.FAILED: Status.FAILED,
}


@dataclass(frozen=True)
class Row:
    item: Item
    analysis: Analysis | None
    video: Video | None
    status: Status
    progress: int  # 0..100 across the video's states and the analysis's
    note: RetryNote | None = None  # the retry note another process kept in the store for this row (board.rows_of)

    @property
    def ended(self) -> bool:
        return self.status.ended

    @property
    def retry_note(self) -> RetryNote | None:
        """Why this row's step waits to call Gemini again (reach.py), whichever process works on it; else None.

        This process's own note first (the freshest), else the one the store holds (``note``, read by rows_of).
        ``note.reason``, ``note.next_at`` (wall clock), ``note.attempt``; ``note.words()`` is the sentence.
        """
        if self.ended:
            return None
        return REACH.note_for(self.analysis.id if self.analysis else None, self.video.id if self.video else None) or self.note

    @property
    def label(self) -> str:
        """The status as a person reads it, e.g. "Uploading 43 %", or "Can't reach Gemini, retrying in 35 s (attempt 4)"."""
        note = self.retry_note
        if note is not None:
            return note.words()
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
            if self.item.analysis_id and not self.item.error_message:
                return "This row's analysis could not be read and was set aside (see Queue). Press Retry to ask again."
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


def waiting_for(row: Row, settings: Settings) -> str | None:
    """When ``row`` waits for another Gemini than this process's: one sentence saying which (never a key); else None.

    E.g. "Waiting for the app or CLI that has the key for Gemini, the key ending …abcd (this one uses demo mode
    (no key: the local emulator))". Such a row is left for that process: never claimed or failed here (runner.py).
    """
    from storyteller_core.gemini.askers import describe, describe_settings

    analysis = row.analysis
    if analysis is None or row.ended or analysis.backend == settings.backend:
        return None
    theirs = describe(analysis.backend, settings.data_dir)
    if analysis.demo:
        return f"Waiting for an app or CLI in {theirs}; this one uses {describe_settings(settings)}"
    return f"Waiting for the app or CLI that has the key for {theirs}; this one uses {describe_settings(settings)}"


def label_for(row: Row, settings: Settings) -> str:
    """The row's label as this process can act on it: ``waiting_for`` when another Gemini's, else ``row.label``."""
    return waiting_for(row, settings) or row.label


def left_for_others(store: Store, settings: Settings) -> dict[str, int]:
    """{which Gemini: unfinished analyses asked of it} for every backend but this process's, e.g.
    {"Gemini, the key ending …abcd": 3}: for one line on Queue ("3 videos wait for the app or CLI that has ...")."""
    from storyteller_core.gemini.askers import describe

    counts: dict[str, int] = {}
    for analysis in store.unfinished():
        if analysis.backend != settings.backend and not analysis.cancel_requested:
            where = describe(analysis.backend, settings.data_dir)
            counts[where] = counts.get(where, 0) + 1
    return counts
