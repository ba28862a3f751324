"""A Batch groups Items; an Item is one row: a source the person added, and the analysis it asks for.

Several items can share one analysis (three copies of a video in a batch, or
two batches asking the same question): the analysis runs once and every item
shows its result. An item has no state of its own beyond "cancelled": its
status is read from its analysis and video (see board.py). A file refused at
intake is an item with no analysis, carrying the reason; an item whose file is
still being checked after Start carries what is known of it in ``intake``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from storyteller_core.records.record import Record, now


@dataclass
class Batch(Record):
    KIND: ClassVar[str] = "batch"

    name: str = ""
    created_at: float = field(default_factory=now)
    intake: dict[str, Any] | None = None  # the question, while rows are still being checked (background_intake.py)


@dataclass
class Item(Record):
    KIND: ClassVar[str] = "item"

    batch_id: str = ""
    display_name: str = ""
    source_path: str = ""
    video_id: str | None = None
    analysis_id: str | None = None
    reused: bool = False  # the analysis had already completed when this row was added: no new call, no cost
    cancelled: bool = False
    error_code: str | None = None  # refused at intake (no analysis)
    error_message: str | None = None
    created_at: float = field(default_factory=now)
    intake: dict[str, Any] | None = None  # the file as added, until it is checked (background_intake.py)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def new_batch_id() -> str:
    """Batch ids start with their creation time, so they sort newest first."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


def default_batch_name(first_file: str | None) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return f"{stamp} · {first_file}" if first_file else stamp
