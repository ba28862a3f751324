"""A row (storyteller_core.views.rows) as the API's job: the seed notes' status words, progress, error and result.

The mapping from our row Status (and, where one Status covers two seed states, the video's state):

    row Status            video state         job status
    Waiting               (checking the file,
                           none, CREATED)     CREATED
    Uploading             UPLOADING           UPLOADING
    Gemini is processing  UPLOADED            UPLOADED
    Gemini is processing  FILE_PROCESSING     FILE_PROCESSING
    Ready to analyze      FILE_ACTIVE         FILE_ACTIVE
    Writing story         -                   ANALYZING
    Done                  -                   COMPLETED
    Failed                -                   FAILED
    Cancelled             -                   CANCELLED

``history`` reads the states a job went through from the records' ``state_entered_at`` times, so an event
stream that looks every fraction of a second still tells every state in order (UPLOADED lasts milliseconds).
"""

from __future__ import annotations

from datetime import UTC, datetime

from storyteller_core.records.analysis import AnalysisState
from storyteller_core.records.video import VideoState
from storyteller_core.sanitize import scrub
from storyteller_core.views.rows import Row, Status
from storyteller_ui.api.models import ErrorInfo, Job, JobEvent, JobResult, JobStatus, Usage

ORDER = list(JobStatus)  # the order of a job's life; FAILED and CANCELLED may follow any state
_BY_ROW = {
    Status.UPLOADING: JobStatus.UPLOADING,
    Status.READY: JobStatus.FILE_ACTIVE,
    Status.WRITING: JobStatus.ANALYZING,
    Status.DONE: JobStatus.COMPLETED,
    Status.FAILED: JobStatus.FAILED,
    Status.CANCELLED: JobStatus.CANCELLED,
}
_VIDEO_STEPS = (JobStatus.UPLOADING, JobStatus.UPLOADED, JobStatus.FILE_PROCESSING, JobStatus.FILE_ACTIVE)


def iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_status(row: Row) -> JobStatus:
    if row.status is Status.WAITING:
        return JobStatus.CREATED
    if row.status is Status.PROCESSING:
        uploaded = row.video is not None and row.video.state is VideoState.UPLOADED
        return JobStatus.UPLOADED if uploaded else JobStatus.FILE_PROCESSING
    return _BY_ROW[row.status]


def entered_at(row: Row, status: JobStatus) -> float | None:
    """When the row's records last entered ``status`` (None: not known to have)."""
    if status is JobStatus.CREATED:
        return row.item.created_at
    if status in _VIDEO_STEPS:
        return row.video.state_entered_at.get(status.value) if row.video else None
    if row.analysis is None:
        return None
    if status is JobStatus.ANALYZING:
        return row.analysis.state_entered_at.get(AnalysisState.ANALYZING.value)
    return row.analysis.state_entered_at.get(status.value) or row.analysis.updated_at


def since(row: Row) -> float:
    return entered_at(row, job_status(row)) or row.since


def passed(row: Row, after: float, last: JobStatus | None) -> list[JobStatus]:
    """The states between ``last`` (told before) and the current one (both left out) that the records say were
    entered after ``after`` and since the row was made, in the order of a job's life: what a look every fraction
    of a second missed. Gone back (a retry, a re-upload): nothing between."""
    now = job_status(row)
    low = ORDER.index(last) + 1 if last is not None and not last.ended else 0
    high = ORDER.index(JobStatus.COMPLETED) if now.ended else ORDER.index(now)
    if last is not None and not last.ended and low > high:
        return []
    current_since = since(row)
    floor = max(after, row.item.created_at)
    out = []
    for status in ORDER[low:high]:
        at = entered_at(row, status)
        if at is not None and floor <= at <= current_since:
            out.append(status)
    return out


def progress(row: Row) -> int:
    return max(0, min(100, int(row.progress)))


def event_of(row: Row, status: JobStatus | None = None) -> JobEvent:
    """The event for this row's current state (or for ``status`` it passed through)."""
    if status is None or status is job_status(row):
        return JobEvent(job_id=row.item.id, status=job_status(row), progress=progress(row), updated_at=iso(since(row)))
    from storyteller_core.records.video import VIDEO_PROGRESS

    step = {JobStatus.CREATED: 0, JobStatus.ANALYZING: 85}.get(status)
    if step is None:
        step = VIDEO_PROGRESS.get(VideoState(status.value), 0)
    return JobEvent(job_id=row.item.id, status=status, progress=step, updated_at=iso(entered_at(row, status)))


def error_of(row: Row) -> ErrorInfo | None:
    if row.status is not Status.FAILED:
        return None
    code = (
        row.item.error_code
        or (row.analysis.error_code if row.analysis else None)
        or (row.video.error_code if row.video else None)
        or "failed"
    )
    return ErrorInfo(code=str(code), message=scrub(row.error or "This job failed; retry it."))


def result_of(row: Row) -> JobResult | None:
    analysis = row.analysis
    if row.status is not Status.DONE or analysis is None or row.story is None:
        return None
    return JobResult(
        story=row.story,
        structured=analysis.structured,
        model=analysis.model,
        model_version=analysis.model_version,
        cost_usd=row.cost_usd,
        reused=row.item.reused,
        usage=Usage(
            prompt_tokens=analysis.prompt_tokens,
            output_tokens=analysis.output_tokens,
            total_tokens=analysis.total_tokens,
            cached_tokens=analysis.cached_tokens,
        ),
    )


def job_of(row: Row) -> Job:
    return Job(
        id=row.item.id,
        batch_id=row.item.batch_id,
        file_name=row.name,
        source=row.item.source_path,
        status=job_status(row),
        progress=progress(row),
        error=error_of(row),
        result=result_of(row),
        created_at=iso(row.item.created_at),
        updated_at=iso(since(row)),
    )
