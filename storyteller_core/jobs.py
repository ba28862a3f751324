"""The job record, its states, and the one table of allowed transitions."""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    CREATED = "CREATED"
    UPLOADING = "UPLOADING"
    UPLOADED = "UPLOADED"
    FILE_PROCESSING = "FILE_PROCESSING"
    FILE_ACTIVE = "FILE_ACTIVE"
    ANALYZING = "ANALYZING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})
S = State

# Every allowed move. Going back to CREATED means "upload again" (the Gemini
# file expired or was deleted, or a retry must start over). UPLOADING and
# ANALYZING may be entered again: that is a step resumed after a crash.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.CREATED: frozenset({S.UPLOADING, S.UPLOADED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.UPLOADING: frozenset({S.UPLOADING, S.UPLOADED, S.CREATED, S.FAILED, S.CANCELLED}),
    S.UPLOADED: frozenset({S.FILE_PROCESSING, S.CREATED, S.FAILED, S.CANCELLED}),
    S.FILE_PROCESSING: frozenset({S.FILE_ACTIVE, S.CREATED, S.FAILED, S.CANCELLED}),
    S.FILE_ACTIVE: frozenset({S.ANALYZING, S.CREATED, S.FAILED, S.CANCELLED}),
    S.ANALYZING: frozenset({S.ANALYZING, S.COMPLETED, S.FILE_ACTIVE, S.CREATED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    # Retry: back to the furthest durable state (see Engine.retry).
    S.FAILED: frozenset({S.CREATED, S.UPLOADED, S.FILE_ACTIVE}),
    S.CANCELLED: frozenset({S.CREATED, S.UPLOADED, S.FILE_ACTIVE}),
}

# Progress shown when a state is entered; UPLOADING moves from 5 to 60 by bytes sent.
STAGE_PROGRESS: dict[State, int] = {
    S.CREATED: 0, S.UPLOADING: 5, S.UPLOADED: 60, S.FILE_PROCESSING: 65,
    S.FILE_ACTIVE: 80, S.ANALYZING: 85, S.COMPLETED: 100,
}
UPLOAD_PROGRESS_SPAN = (5, 60)

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


class TransitionError(ValueError):
    pass


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"a job cannot move from {old.value} to {new.value}")


@dataclass
class Job:
    display_name: str
    source_path: str
    size_bytes: int
    sha256: str
    mime_type: str
    model: str
    prompt: str
    batch_id: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    priority: str = "normal"
    state: State = State.CREATED
    progress: int = 0
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    thumbnail_path: str | None = None
    gemini_name: str | None = None
    gemini_uri: str | None = None
    gemini_state: str | None = None
    gemini_expires_at: float | None = None
    story: str | None = None
    finish_reason: str | None = None
    model_version: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    estimated_cost_usd: float | None = None
    cost_usd: float | None = None
    reused_from: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    failed_step: str | None = None
    poll_attempts: int = 0
    upload_count: int = 0
    cancel_requested: bool = False
    demo: bool = False
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    completed_at: float | None = None
    state_entered_at: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = State(values["state"])
        return cls(**values)

    @property
    def in_stage_s(self) -> float:
        entered = self.state_entered_at.get(self.state.value, self.created_at)
        end = self.completed_at if self.state.terminal and self.completed_at else time.time()
        return max(0.0, end - entered)

    def file_usable(self, now: float | None = None) -> bool:
        """True when the job's Gemini file is known and not expired."""
        if not self.gemini_name or self.gemini_expires_at is None:
            return False
        return (now or time.time()) < self.gemini_expires_at - 60
