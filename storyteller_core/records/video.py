"""The Video record: one per content (sha256), with its Gemini file and the states of its life.

A video's life: CREATED (on local disk, hashed, probed) -> UPLOADING ->
UPLOADED -> FILE_PROCESSING -> FILE_ACTIVE, or FAILED. Going back to CREATED
means "upload again": the file expired or vanished, lives on another backend,
or an upload was abandoned. Every analysis of the video shares its file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from storyteller_core.records.record import Record, now


class VideoState(StrEnum):
    CREATED = "CREATED"
    UPLOADING = "UPLOADING"
    UPLOADED = "UPLOADED"
    FILE_PROCESSING = "FILE_PROCESSING"
    FILE_ACTIVE = "FILE_ACTIVE"
    FAILED = "FAILED"


V = VideoState
VIDEO_TRANSITIONS: dict[VideoState, frozenset[VideoState]] = {
    V.CREATED: frozenset({V.UPLOADING, V.UPLOADED, V.FAILED}),
    V.UPLOADING: frozenset({V.UPLOADING, V.UPLOADED, V.CREATED, V.FAILED}),  # UPLOADING again: resumed after a crash
    V.UPLOADED: frozenset({V.FILE_PROCESSING, V.FILE_ACTIVE, V.CREATED, V.FAILED}),
    V.FILE_PROCESSING: frozenset({V.FILE_ACTIVE, V.CREATED, V.FAILED}),
    V.FILE_ACTIVE: frozenset({V.CREATED, V.FAILED}),
    V.FAILED: frozenset({V.CREATED}),  # retry
}

# Share of the row's progress bar a video's states stand for; the analysis takes 85..100.
VIDEO_PROGRESS: dict[VideoState, int] = {
    V.CREATED: 0,
    V.UPLOADING: 5,
    V.UPLOADED: 60,
    V.FILE_PROCESSING: 65,
    V.FILE_ACTIVE: 80,
}
UPLOAD_PROGRESS_SPAN = (5, 60)
EXPIRY_MARGIN_S = 60.0


@dataclass
class Video(Record):
    KIND: ClassVar[str] = "video"
    TRANSITIONS: ClassVar = VIDEO_TRANSITIONS
    STATE: ClassVar = VideoState

    sha256: str = ""
    display_name: str = ""
    sources: list[str] = field(default_factory=list)  # local paths holding this content; spooled copies included
    url: str | None = None  # a public web video (YouTube) Gemini reads itself: no upload, no local copy
    size_bytes: int = 0
    mime_type: str = "video/mp4"
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    fps: float | None = None
    thumbnail_path: str | None = None
    state: VideoState = VideoState.CREATED
    progress: int = 0
    backend: str | None = None  # where the Gemini file lives (see demo.backend_of)
    gemini_name: str | None = None
    gemini_uri: str | None = None
    gemini_state: str | None = None
    gemini_expires_at: float | None = None
    poll_attempts: int = 0
    upload_count: int = 0
    error_code: str | None = None
    error_message: str | None = None
    failed_step: str | None = None
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    state_entered_at: dict[str, float] = field(default_factory=dict)
    # explicit context caches of this video's part, by steps.caching.part_key: {"name", "expires_at", "tokens",
    # "created_at"}; stored the moment one is created, so a restart reuses it and the last question deletes it
    caches: dict[str, dict[str, Any]] = field(default_factory=dict)

    def file_usable(self, backend: str, at: float | None = None) -> bool:
        """The Gemini file is ACTIVE on ``backend`` and not about to expire (a web video always is)."""
        if self.url:
            return self.state is VideoState.FILE_ACTIVE
        return (
            self.state is VideoState.FILE_ACTIVE
            and self.backend == backend
            and bool(self.gemini_uri)
            and self.gemini_expires_at is not None
            and (at or now()) < self.gemini_expires_at - EXPIRY_MARGIN_S
        )

    def spooled_sources(self, spool_dir: Path) -> list[Path]:
        return [Path(s) for s in self.sources if Path(s).parent == spool_dir]
