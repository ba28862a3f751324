"""Jobs as a pandas DataFrame, and as CSV that Excel opens with accents intact."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

from .jobs import Job

COLUMNS = [
    "file_name", "status", "story", "error", "model", "duration_s", "prompt_tokens", "output_tokens",
    "total_tokens", "cost_usd", "reused", "batch_id", "created_at", "completed_at",
]


def jobs_frame(jobs: Iterable[Job]) -> pd.DataFrame:
    rows = [
        {
            "file_name": job.display_name,
            "status": job.state.value,
            "story": job.story or "",
            "error": job.error_message or "",
            "model": job.model,
            "duration_s": round(job.duration_s, 2) if job.duration_s is not None else None,
            "prompt_tokens": job.prompt_tokens,
            "output_tokens": job.output_tokens,
            "total_tokens": job.total_tokens,
            "cost_usd": round(job.cost_usd, 6) if job.cost_usd is not None else None,
            "reused": bool(job.reused_from),
            "batch_id": job.batch_id,
            "created_at": _time(job.created_at),
            "completed_at": _time(job.completed_at),
        }
        for job in jobs
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("prompt_tokens", "output_tokens", "total_tokens"):
        frame[column] = frame[column].astype("Int64")
    return frame


def to_csv_bytes(jobs: Iterable[Job]) -> bytes:
    """UTF-8 with a BOM, so Excel reads accents and emoji correctly."""
    return jobs_frame(jobs).to_csv(index=False).encode("utf-8-sig")


def write_csv(jobs: Iterable[Job], path: Path) -> Path:
    path.write_bytes(to_csv_bytes(jobs))
    return path


def stories_markdown(jobs: Iterable[Job]) -> str:
    parts = [f"## {job.display_name}\n\n{job.story}\n" for job in jobs if job.story]
    return "\n".join(parts)


def _time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""
