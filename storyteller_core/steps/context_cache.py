"""Explicit context caching: one video asked several questions pays the video's input tokens once.

The rule: an analysis on the standard or Flex tier uses a cache of its video
part when another question of the same video, model and part options is still
to be asked (presets run together, Ask again, a batch asked again), or when a
live cache for that part is already stored, and the part is at least the
model's minimum cache size. The cache's name and expiry are stored on the
video the moment it is created, so a restart reuses it; the last question of
the part deletes it (storage is billed per hour), and a cache nobody deletes
ends with its TTL (Settings.cache_ttl_s, 1 h).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from storyteller_core.errors import GeminiError
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.options import VideoOptions
from storyteller_core.records.video import Video
from storyteller_core.settings import cache_storage_usd, model_info

if TYPE_CHECKING:
    from collections.abc import Callable

    from storyteller_core.gemini.gateway import VideoPart
    from storyteller_core.steps.step_context import StepContext

log = logging.getLogger(__name__)
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()
REUSE_MARGIN_S = 120.0  # a cache this close to its expiry is not asked through (the answer may take longer)
_OPEN = (AnalysisState.WAITING, AnalysisState.ANALYZING)


def part_key(analysis: Analysis) -> str:
    """What makes the cached part: the model and the options that shape the video part (not the prompt)."""
    return part_key_of(analysis.model, analysis.video_options)


def part_key_of(model: str, o: VideoOptions) -> str:
    return json.dumps([model, o.start_s, o.end_s, o.fps, o.resolution, o.processing])


def _others_open(ctx: StepContext, analysis: Analysis) -> list[Analysis]:
    key = part_key(analysis)
    return [
        a
        for a in ctx.store.analyses_of(analysis.video_id)
        if a.id != analysis.id and a.state in _OPEN and a.tier != "batch" and part_key(a) == key
    ]


def cache_for(ctx: StepContext, analysis: Analysis, video: Video, part: VideoPart, should_stop: Callable[[], bool]) -> str | None:
    """The cachedContents name to ask through, creating the cache when the rule says so; None: ask without one.

    Questions of one part asked at once wait for each other here, so one of them creates the cache and the
    others use it (across processes the store decides: a second cache is deleted at once, see _create).
    """
    if analysis.tier == "batch" or not ctx.settings.context_cache:
        return None
    key = part_key(analysis)
    with _locks_lock:
        lock = _locks.setdefault(f"{analysis.video_id}:{key}", threading.Lock())
    with lock:
        return _cache_for(ctx, analysis, ctx.store.get(Video, video.id) or video, part, key, should_stop)


def _cache_for(
    ctx: StepContext, analysis: Analysis, video: Video, part: VideoPart, key: str, should_stop: Callable[[], bool]
) -> str | None:
    stored = video.caches.get(key)
    if stored and float(stored.get("expires_at") or 0) - time.time() > REUSE_MARGIN_S:
        return str(stored["name"])
    if not _others_open(ctx, analysis):
        return None
    tokens = analysis.video_options.video_tokens(video.duration_s)
    if tokens < model_info(analysis.model).min_cache_tokens:
        return None
    try:
        made = ctx.call(
            lambda: ctx.gateway.create_cache(
                model=analysis.model,
                video=part,
                ttl_s=ctx.settings.cache_ttl_s,
                display_name=f"vs-{video.id[:16]}",
                resolution=analysis.video_options.resolution,
            ),
            ctx.settings.analysis_budget_s,
            should_stop,
        )
    except GeminiError as exc:  # no cache is no harm: the question is asked with the video, at full price
        log.warning("could not create a context cache; asking without one", extra={"analysis_id": analysis.id, "error": exc.label})
        return None
    entry = {
        "name": made.name,
        "expires_at": made.expires_at or time.time() + ctx.settings.cache_ttl_s,
        "tokens": made.tokens or tokens,
        "created_at": time.time(),
        "model": analysis.model,
    }
    kept: dict[str, str] = {}

    def store_it(v: Video) -> None:
        current = v.caches.get(key)
        if current and float(current.get("expires_at") or 0) - time.time() > REUSE_MARGIN_S:
            kept["name"] = str(current["name"])  # another worker stored one first: use it, drop ours
        else:
            v.caches = {**v.caches, key: entry}

    ctx.store.mutate(Video, video.id, store_it)
    if kept:
        _delete(ctx, made.name)
        return kept["name"]
    log.info("context cache created", extra={"analysis_id": analysis.id, "cache": made.name, "tokens": entry["tokens"]})
    return made.name


def forget(ctx: StepContext, video_id: str, name: str) -> None:
    """The cache is gone at Gemini (expired, deleted): stop naming it."""
    ctx.store.mutate(Video, video_id, lambda v: setattr(v, "caches", {k: e for k, e in v.caches.items() if e.get("name") != name}))


def release(ctx: StepContext, analysis: Analysis) -> float:
    """After an answer is stored: delete the part's cache when no question of it is left; the storage it cost, in USD.

    Each question stores its answer first and then looks here under the part's lock, so of two finishing
    together the later one sees both done and deletes the cache (neither leaves it behind).
    """
    key = part_key(analysis)
    with _locks_lock:
        lock = _locks.setdefault(f"{analysis.video_id}:{key}", threading.Lock())
    with lock:
        return _release(ctx, analysis, key)


def _release(ctx: StepContext, analysis: Analysis, key: str) -> float:
    if _others_open(ctx, analysis):
        return 0.0
    video = ctx.store.get(Video, analysis.video_id)
    entry = video.caches.get(key) if video else None
    if not entry:
        return 0.0
    _delete(ctx, str(entry["name"]))
    ctx.store.mutate(Video, analysis.video_id, lambda v: setattr(v, "caches", {k: e for k, e in v.caches.items() if k != key}))
    held = max(0.0, time.time() - float(entry.get("created_at") or time.time()))
    return cache_storage_usd(analysis.model, int(entry.get("tokens") or 0), held)


def _delete(ctx: StepContext, name: str) -> None:
    try:
        ctx.gateway.delete_cache(name)
    except GeminiError as exc:  # its TTL ends it anyway
        log.warning("could not delete a context cache; its TTL will end it", extra={"cache": name, "error": exc.label})
