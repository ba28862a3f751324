"""What a collection question is answered from: the stored stories of the videos in its scope.

A scope is some batches, or the whole library (every analyzed video in the data dir). Each video (one per
content, sha256) brings one story: its newest COMPLETED analysis on the current backend, a structured one
(title, prose, key moments, people, places, tags) preferred over prose. Demo stories never stand in for real
ones (and the reverse). Nothing is uploaded or asked here: this only reads the store.

Each video gets a short label (V1, V2, ...) in the order of its first row: the model cites labels, which are
mapped back to file name and sha256, so a citation can only name a video that is in the material.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Item
from storyteller_core.records.timecode import timestamp
from storyteller_core.records.video import Video
from storyteller_core.storage.disk_store import Store

MAX_STORY_CHARS = 8_000  # a longer prose story is cut here (and says so) so that one video cannot fill the context


class ScopeError(ValueError):
    """The scope names nothing to answer from; the message says what to do."""


@dataclass(frozen=True)
class Source:
    label: str  # V1, V2, ...
    video_id: str  # the content's sha256
    file_name: str
    duration_s: float | None
    analysis_id: str
    title: str | None
    story: str
    moments: list[tuple[float, str]] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def text(self) -> str:
        """This video's part of the prompt (the emulator reads the same lines: emulator/collection.py)."""
        duration = f"{self.duration_s:.3f} s" if self.duration_s is not None else "unknown"
        lines = [f"[{self.label}] file: {one_line(self.file_name)} | sha256: {self.video_id} | duration: {duration}"]
        if self.title:
            lines.append(f"title: {one_line(self.title)}")
        story = self.story if len(self.story) <= MAX_STORY_CHARS else self.story[:MAX_STORY_CHARS] + " [story cut here]"
        lines.append(f"story: {one_line(story)}")
        if self.moments:
            lines.append("key moments:")
            lines += [f"  - at {at:.3f} s ({timestamp(at)}): {one_line(what)}" for at, what in self.moments]
        for name, values in (("people", self.people), ("places", self.places), ("tags", self.tags)):
            if values:
                lines.append(f"{name}: {'; '.join(one_line(v) for v in values)}")
        return "\n".join(lines)

    def tokens(self) -> int:
        return len(self.text()) // 4 + 1


def one_line(text: str) -> str:
    """Untrusted text on one line (a newline in a story cannot start a fake "[V9]" block of its own)."""
    return " ".join(str(text).split()).replace("[V", "(V")


@dataclass(frozen=True)
class Scope:
    """Batch ids, or None for the whole library."""

    batch_ids: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return "the library" if self.batch_ids is None else f"{len(self.batch_ids)} batch(es): " + ", ".join(self.batch_ids)

    def to_key(self) -> list[str] | str:
        return "library" if self.batch_ids is None else sorted(set(self.batch_ids))


def gather(store: Store, scope: Scope, backend: str) -> list[Source]:
    """The stories of the videos in ``scope``, one per video, labelled V1.. in row order."""
    if scope.batch_ids is not None:
        known = set(store.batch_ids())
        missing = [b for b in scope.batch_ids if b not in known]
        if missing:
            raise ScopeError(
                f"no batch with the id {', '.join(missing)} in this data folder; `python -m storyteller_core status` lists the batches."
            )
        items: list[Item] = [item for b in dict.fromkeys(scope.batch_ids) for item in store.items(b)]
    else:
        items = store.items()
    video_ids = list(dict.fromkeys(item.video_id for item in items if item.video_id and not item.cancelled))
    videos = store.by_id(Video, video_ids)
    sources: list[Source] = []
    for video_id in video_ids:
        video = videos.get(video_id)
        if video is None:
            continue
        best = _best_analysis(store.analyses_of(video_id), backend)
        if best is None:
            continue
        sources.append(_source(f"V{len(sources) + 1}", video, best))
    return sources


def _best_analysis(analyses: list[Analysis], backend: str) -> Analysis | None:
    done = [a for a in analyses if a.state is AnalysisState.COMPLETED and a.backend == backend and (a.story or a.structured)]
    done.sort(key=lambda a: (a.structured is not None, a.completed_at or 0.0), reverse=True)
    return done[0] if done else None


def _source(label: str, video: Video, analysis: Analysis) -> Source:
    data = analysis.structured or {}
    moments = [
        (float(m["seconds"]), str(m.get("description") or ""))
        for m in data.get("key_moments") or []
        if isinstance(m, dict) and isinstance(m.get("seconds"), (int, float))
    ]
    return Source(
        label=label,
        video_id=video.sha256 or video.id,
        file_name=video.display_name,
        duration_s=video.duration_s,
        analysis_id=analysis.id,
        title=data.get("title"),
        story=str(data.get("story") or analysis.story or ""),
        moments=moments,
        people=[str(p) for p in data.get("people") or []],
        places=[str(p) for p in data.get("places") or []],
        tags=[str(t) for t in data.get("tags") or []],
    )


def fingerprint(sources: list[Source]) -> str:
    """What the answer is made from: the same stories give the same fingerprint (an added video changes it)."""
    raw = json.dumps(sorted((s.video_id, s.analysis_id) for s in sources))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]
