"""The job API's bodies as pydantic models: what the routes answer and read, and what the OpenAPI document says."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobStatus(StrEnum):
    """A job's status in the seed notes' words (see status.py for how each is read from a row)."""

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
    def ended(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class ErrorInfo(BaseModel):
    code: str = Field(description="A stable, machine-readable reason, e.g. not_video, too_large, unauthorized.")
    message: str = Field(description="What happened and what to do, for a person.")


class ErrorAnswer(BaseModel):
    error: ErrorInfo


class Usage(BaseModel):
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None


class JobResult(BaseModel):
    story: str = Field(description="The story as prose.")
    structured: dict[str, Any] | None = Field(
        None, description="The checked structured answer (title, key moments, tags), when a structured preset was asked."
    )
    model: str
    model_version: str | None = None
    usage: Usage
    cost_usd: float | None = Field(
        None, description="What this job cost; 0 when it reused an earlier answer, null in demo mode or when the model's price is unknown."
    )
    reused: bool = False


class Job(BaseModel):
    id: str
    batch_id: str
    file_name: str
    source: str = Field(description="The path, link or upload the job was made from.")
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    error: ErrorInfo | None = None
    result: JobResult | None = None
    created_at: str = Field(description="ISO 8601, UTC.")
    updated_at: str = Field(description="When the current status began (ISO 8601, UTC).")


class JobRef(BaseModel):
    id: str
    file_name: str


class BatchCreate(BaseModel):
    """A new batch: any of the three source lists (at least one source), and the question."""

    model_config = ConfigDict(extra="forbid")

    uploads: list[str] = Field(default_factory=list, max_length=10_000, description="Finished tus uploads: their URLs (Location) or ids.")
    paths: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Files or folders on this server, under an allowed root (STORYTELLER_API_ROOTS).",
    )
    urls: list[str] = Field(default_factory=list, max_length=10_000, description="Public YouTube links.")
    preset: str | None = Field(None, description="A prompt preset's name (GET /api/v1/presets); or give prompt.")
    prompt: str | None = Field(None, max_length=20_000, description="The question; overrides preset.")
    model: str | None = Field(None, description="A Gemini model; the server's default when left out.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Video options as stored with an analysis (fps, start/end offsets, media resolution...)."
    )
    priority: Literal["high", "normal", "low"] = "normal"
    tier: Literal["standard", "flex", "batch"] = "standard"
    name: str | None = Field(None, max_length=200)


class BatchCreated(BaseModel):
    id: str
    jobs: list[JobRef]


class Batch(BaseModel):
    id: str
    name: str
    created_at: str
    status: Literal["running", "ended"]
    counts: dict[str, int] = Field(description="Jobs by status.")
    jobs: list[Job]


class BatchSummary(BaseModel):
    id: str
    name: str
    created_at: str


class BatchList(BaseModel):
    batches: list[BatchSummary] = Field(description="Newest first.")


class Ask(BaseModel):
    """Ask again: another question of the same video(s); the Gemini file is reused while it lives."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None
    prompt: str | None = Field(None, max_length=20_000)
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["high", "normal", "low"] = "normal"
    tier: Literal["standard", "flex", "batch"] = "standard"
    name: str | None = Field(None, max_length=200)


class JobEvent(BaseModel):
    """The data of one SSE ``status`` event (the final ``end`` event carries an EndEvent)."""

    job_id: str
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    updated_at: str


class EndEvent(BaseModel):
    batch_id: str
    counts: dict[str, int]


class Upload(BaseModel):
    """A tus upload as JSON (GET /api/v1/uploads/{id}); tus clients use HEAD/PATCH instead."""

    id: str
    file_name: str
    size: int
    offset: int
    state: Literal["receiving", "complete", "refused"]
    sha256: str | None = None
    error: ErrorInfo | None = None


class Health(BaseModel):
    ok: bool
    engine: ErrorInfo | None = Field(None, description="Null when the engine answers; else why not.")
    gemini: ErrorInfo | None = Field(None, description="Null when Gemini (or demo mode's emulator) answers.")
    demo: bool | None = None
