"""Rows as a pandas DataFrame, as CSV that Excel opens with accents intact, and stories as Markdown.

Every text cell is neutralised against formula injection (sanitize.py): a
file name or a story can come from anyone. Each row says where it came from
(its source path and its batch's name), and the CLI's CSV also holds one row
per input that was refused before it became a row ("Not added").
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from storyteller_core.deliverables.subtitles import to_vtt
from storyteller_core.records.story import Story
from storyteller_core.sanitize import neutralize_frame, plain_data, plain_text, scrub, spreadsheet_cell
from storyteller_core.views.board import Row

if TYPE_CHECKING:
    import pandas as pd

    from storyteller_core.intake.candidates import NotAdded
    from storyteller_core.storage.store_protocol import Store

COLUMNS = [  # where a row came from sits together: source_path, batch_name, batch_id, video_sha256
    "file_name",
    "status",
    "prompt",
    "model",
    "title",
    "story",
    "key_moments",
    "tags",
    "error",
    "duration_s",
    "prompt_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "reused",
    "source_path",
    "batch_name",
    "batch_id",
    "video_sha256",
    "created_at",
    "completed_at",
]
NOT_ADDED = "Not added"  # the status of an input refused before it became a row (CLI CSV only; never in the store)


def batch_names(store: Store, rows: Iterable[Row]) -> dict[str, str]:
    """{batch id: its name} for the batches of these rows (one read), for the batch_name column."""
    from storyteller_core.records.batch import Batch

    ids = list(dict.fromkeys(row.item.batch_id for row in rows))
    return {batch_id: batch.name for batch_id, batch in store.by_id(Batch, ids).items()}


def row_records(rows: Iterable[Row], batch_names: Mapping[str, str] | None = None) -> list[dict[str, object]]:
    """One dict per row with the export's columns (text as stored: neutralize before a spreadsheet sees it).

    ``batch_names`` ({batch id: name}, see ``batch_names()``) fills the batch_name column; without it the cell is empty.
    """
    names = batch_names or {}
    records: list[dict[str, object]] = []
    for row in rows:
        analysis, video, story = row.analysis, row.video, story_of(row)
        records.append(
            {
                "file_name": row.name,
                "source_path": row.item.source_path,
                "status": row.status.value,
                "prompt": analysis.prompt_label if analysis else "",
                "model": analysis.model if analysis else "",
                "title": story.title or "" if story else "",
                "story": scrub(row.story or ""),
                "key_moments": "; ".join(f"{m.time} {m.description}" for m in story.moments) if story else "",
                "tags": ", ".join(story.tags) if story else "",
                "error": scrub(row.error or ""),
                "duration_s": round(video.duration_s, 2) if video and video.duration_s is not None else None,
                "prompt_tokens": analysis.prompt_tokens if row.story and analysis else None,
                "output_tokens": analysis.output_tokens if row.story and analysis else None,
                "total_tokens": analysis.total_tokens if row.story and analysis else None,
                "cost_usd": round(row.cost_usd, 6) if row.cost_usd is not None else None,
                "reused": row.item.reused,
                "batch_name": names.get(row.item.batch_id, ""),
                "batch_id": row.item.batch_id,
                "video_sha256": video.sha256 if video else "",
                "created_at": _time(row.item.created_at),
                "completed_at": _time(row.finished_at),
            }
        )
    return records


def not_added_records(refused: Iterable[NotAdded], batch_name: str = "") -> list[dict[str, object]]:
    """One dict per refused input, with the export's columns: its name, source, "Not added" and the reason."""
    return [
        {
            **dict.fromkeys(COLUMNS, None),
            "file_name": r.display_name,
            "source_path": r.source,
            "status": NOT_ADDED,
            "error": scrub(r.reason),
            "batch_name": batch_name,
            "reused": False,
        }
        for r in refused
    ]


def rows_frame(rows: Iterable[Row], batch_names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The rows as a DataFrame for the Results page, text cells neutralized."""
    import pandas as pd

    frame = pd.DataFrame(row_records(rows, batch_names), columns=COLUMNS)
    for column in ("prompt_tokens", "output_tokens", "total_tokens"):
        frame[column] = frame[column].astype("Int64")
    return neutralize_frame(frame)


def to_csv_bytes(rows: Iterable[Row], batch_names: Mapping[str, str] | None = None, not_added: Iterable[dict[str, object]] = ()) -> bytes:
    """UTF-8 with a BOM, so Excel reads accents and emoji correctly; every text cell neutralized.

    ``not_added`` (``not_added_records``): rows for inputs refused before they became rows, after the others.
    Written with the csv module (what pandas writes, without importing pandas: `export` starts in a moment)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in [*row_records(rows, batch_names), *not_added]:
        writer.writerow({k: spreadsheet_cell(v) if isinstance(v, str) else v for k, v in record.items()})
    return out.getvalue().encode("utf-8-sig")


def write_csv(
    rows: Iterable[Row], path: Path, batch_names: Mapping[str, str] | None = None, not_added: Iterable[dict[str, object]] = ()
) -> Path:
    path.write_bytes(to_csv_bytes(rows, batch_names, not_added))
    return path


def story_of(row: Row) -> Story | None:
    """The checked story of a finished row: structured when it was asked for, else its prose alone."""
    if not row.story or row.analysis is None:
        return None
    if row.analysis.structured:
        return Story.from_dict(row.analysis.structured)
    return Story(text=row.story)


def copy_text(row: Row) -> str:
    """What the copy button gives: clean Markdown with the timestamps."""
    story = story_of(row)
    return plain_text(story.markdown(row.name)) if story else ""


def stories_markdown(rows: Iterable[Row]) -> str:
    """One section per video, each of its stories under it (several questions of one video stay together)."""
    sections: dict[str, list[Row]] = {}
    for row in rows:
        if row.story:
            sections.setdefault(row.item.video_id or row.item.id, []).append(row)
    parts = []
    for same_video in sections.values():
        parts.append(f"# {same_video[0].name}\n")
        for row in same_video:
            story = story_of(row)
            assert story is not None and row.analysis is not None
            parts.append(f"*{row.analysis.prompt_label[:80]}*\n\n" + story.markdown(story.title))
    return plain_text("\n".join(parts))


def to_json_bytes(rows: Iterable[Row], batch_names: Mapping[str, str] | None = None) -> bytes:
    """One object per row, with the full structured story when there is one."""
    names = batch_names or {}
    out = []
    for row in rows:
        analysis, video, story = row.analysis, row.video, story_of(row)
        out.append(
            {
                "file_name": row.name,
                "status": row.status.value,
                "source": row.item.source_path,
                "prompt": analysis.prompt if analysis else None,
                "preset": analysis.preset if analysis else None,
                "model": analysis.model if analysis else None,
                "options": analysis.options if analysis else {},
                "story": story.to_dict() if story else None,
                "error": scrub(row.error) if row.error else None,
                "tokens": {"prompt": analysis.prompt_tokens, "output": analysis.output_tokens, "total": analysis.total_tokens}
                if analysis and row.story
                else None,
                "cost_usd": row.cost_usd,
                "reused": row.item.reused,
                "batch_id": row.item.batch_id,
                "batch_name": names.get(row.item.batch_id),
                "video_sha256": video.sha256 if video else None,
                "duration_s": video.duration_s if video else None,
                "created_at": _time(row.item.created_at),
                "completed_at": _time(row.finished_at),
            }
        )
    return json.dumps(plain_data(out), ensure_ascii=False, indent=2).encode("utf-8")


def write_json(rows: Iterable[Row], path: Path, batch_names: Mapping[str, str] | None = None) -> Path:
    path.write_bytes(to_json_bytes(rows, batch_names))
    return path


def chapters_file_name(row: Row, kind: str = "vtt") -> str:
    """The download name of a row's chapters: the video's name (e.g. "Café réunion été.vtt"), never an id."""
    from storyteller_core.deliverables.subtitles import safe_stem

    return f"{safe_stem(row.name)}.{kind}"


def chapters_vtt(row: Row) -> str | None:
    """WebVTT chapters of a row's key moments, or None when it has none."""
    story = story_of(row)
    if not story or not story.moments:
        return None
    return to_vtt(story.moments, row.video.duration_s if row.video else None)


def _time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""
