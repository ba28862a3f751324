"""Rows as a pandas DataFrame, as CSV that Excel opens with accents intact, and stories as Markdown.

Every text cell is neutralised against formula injection (sanitize.py): a
file name or a story can come from anyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .board import Row
from .sanitize import neutralize_frame, scrub

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = [
    "file_name", "status", "prompt", "model", "story", "error", "duration_s", "prompt_tokens", "output_tokens",
    "total_tokens", "cost_usd", "reused", "batch_id", "video_sha256", "created_at", "completed_at",
]


def rows_frame(rows: Iterable[Row]) -> pd.DataFrame:
    import pandas as pd

    records = []
    for row in rows:
        analysis, video = row.analysis, row.video
        records.append({
            "file_name": row.name,
            "status": row.status.value,
            "prompt": analysis.prompt_label if analysis else "",
            "model": analysis.model if analysis else "",
            "story": scrub(row.story or ""),
            "error": scrub(row.error or ""),
            "duration_s": round(video.duration_s, 2) if video and video.duration_s is not None else None,
            "prompt_tokens": analysis.prompt_tokens if row.story and analysis else None,
            "output_tokens": analysis.output_tokens if row.story and analysis else None,
            "total_tokens": analysis.total_tokens if row.story and analysis else None,
            "cost_usd": round(row.cost_usd, 6) if row.cost_usd is not None else None,
            "reused": row.item.reused,
            "batch_id": row.item.batch_id,
            "video_sha256": video.sha256 if video else "",
            "created_at": _time(row.item.created_at),
            "completed_at": _time(row.finished_at),
        })
    frame = pd.DataFrame(records, columns=COLUMNS)
    for column in ("prompt_tokens", "output_tokens", "total_tokens"):
        frame[column] = frame[column].astype("Int64")
    return neutralize_frame(frame)


def to_csv_bytes(rows: Iterable[Row]) -> bytes:
    """UTF-8 with a BOM, so Excel reads accents and emoji correctly."""
    return rows_frame(rows).to_csv(index=False).encode("utf-8-sig")


def write_csv(rows: Iterable[Row], path: Path) -> Path:
    path.write_bytes(to_csv_bytes(rows))
    return path


def stories_markdown(rows: Iterable[Row]) -> str:
    parts = [f"## {row.name}\n\n{row.story}\n" for row in rows if row.story]
    return "\n".join(parts)


def _time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""
