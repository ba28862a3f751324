"""The spool: copies of videos dropped in the browser, kept only while an analysis still needs them.

Local-path sources are read in place and never deleted. A spooled copy is
named by its sha256, deleted when no unfinished analysis, no entry of the
checked list before Start and no started row still being checked needs it; a partial copy left by a crash is
removed at start.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from storyteller_core.intake.media import PARTIAL_PREFIX
from storyteller_core.records.batch import Batch
from storyteller_core.records.video import Video
from storyteller_core.storage.disk_store import Store

log = logging.getLogger(__name__)
GRACE_S = 300.0  # a file this fresh may belong to an intake still running in another process


def release_spool(store: Store, video_id: str, spool_dir: Path) -> list[Path]:
    """Delete the video's spooled copies when nothing needs them any more; the paths deleted."""
    video = store.get(Video, video_id)
    if video is not None and not video.spooled_sources(spool_dir):
        return []  # a local file read in place (a folder of 50,000): nothing to delete, nothing else to read
    # The checked list and rows still being checked first: the intake makes a row's analysis before it clears
    # the row, so read in this order nothing in between is missed.
    if video is None or video.sha256 in pending_shas(store) or store.needs_video(video_id):
        return []
    spooled = video.spooled_sources(spool_dir)
    for path in spooled:
        path.unlink(missing_ok=True)
    if spooled:
        gone = {str(p) for p in spooled}
        store.mutate(Video, video_id, lambda v: setattr(v, "sources", [s for s in v.sources if s not in gone]))
        log.info("spooled copy deleted", extra={"video_id": video_id, "files": len(spooled)})
    return spooled


def discard(store: Store, paths: list[Path], spool_dir: Path) -> None:
    """Delete spooled files no video needs (a refused file, a cleared list)."""
    pending = pending_shas(store)
    for path in paths:
        if path.parent != spool_dir:
            continue  # a local source: never ours to delete
        sha = path.name.split(".", 1)[0]
        video = store.get(Video, sha)
        if sha in pending or (video is not None and store.needs_video(sha)):
            continue
        path.unlink(missing_ok=True)
        if video is not None:
            _forget_source(store, sha, str(path))


def sweep(store: Store, spool_dir: Path, grace_s: float = GRACE_S) -> None:
    """At start: remove partial copies from a crash and copies nothing needs, older than ``grace_s``."""
    if not spool_dir.is_dir():
        return
    cutoff = time.time() - grace_s
    stale = []
    for path in spool_dir.iterdir():
        try:
            old = path.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if not old:
            continue
        if path.name.startswith(PARTIAL_PREFIX):
            path.unlink(missing_ok=True)
        else:
            stale.append(path)
    discard(store, stale, spool_dir)


def size_bytes(spool_dir: Path) -> int:
    if not spool_dir.is_dir():
        return 0
    return sum(p.stat().st_size for p in spool_dir.iterdir() if p.is_file())


def pending_shas(store: Store) -> set[str]:
    """Content on the checked list, or in a started batch whose rows are still being checked."""
    shas = {entry.get("sha256", "") for entry in store.pending()}
    for batch in store.many(Batch, store.batch_ids()):
        if batch.intake is not None:
            shas.update((item.intake or {}).get("sha256", "") for item in store.items(batch.id))
    return shas


def _forget_source(store: Store, video_id: str, path: str) -> None:
    store.mutate(Video, video_id, lambda v: setattr(v, "sources", [s for s in v.sources if s != path]))
