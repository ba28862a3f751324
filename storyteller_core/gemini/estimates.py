"""What a question will cost before it is asked, and what the context cache saved after.

A question of a video whose part is already cached, or whose part another open question will cache with it
(steps/caching.py has the rule), is estimated at the cached price for the video's tokens; the first such
question also pays an estimate of the cache's storage. Everything else is estimated at full price.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.settings import EXPECTED_OUTPUT_TOKENS, Settings, cache_storage_usd, cost_usd, estimate_cost, model_info
from storyteller_core.steps.context_cache import REUSE_MARGIN_S, part_key_of

if TYPE_CHECKING:
    from storyteller_core.records.analysis import Ask
    from storyteller_core.records.video import Video
    from storyteller_core.storage.store_protocol import Store

HELD_S = 600.0  # how long a cache made for the questions asked together is expected to be kept before its deletion
_OPEN = (AnalysisState.WAITING, AnalysisState.ANALYZING)


@dataclass(frozen=True)
class Estimate:
    """The cost of one or more questions before they are asked: at full price, and with the context caches used."""

    videos: int
    full_usd: float | None  # None: a price is unknown
    usd: float | None

    @property
    def saving_usd(self) -> float:
        return max(0.0, (self.full_usd or 0.0) - (self.usd or 0.0)) if self.full_usd is not None else 0.0

    def __add__(self, other: Estimate) -> Estimate:
        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        return Estimate(self.videos + other.videos, add(self.full_usd, other.full_usd), add(self.usd, other.usd))


NOTHING = Estimate(0, 0.0, 0.0)


def question_estimate(store: Store, settings: Settings, video: Video, ask: Ask) -> Estimate:
    """One question of one video, as the pipeline will ask it (through a cache when the caching rule says so)."""
    full = estimate_cost(ask.model, video.duration_s, ask.prompt, ask.options, ask.tier)
    if full is None or not settings.context_cache or ask.tier == "batch":
        return Estimate(1, full, full)
    tokens = ask.options.video_tokens(video.duration_s)
    if tokens < model_info(ask.model).min_cache_tokens:
        return Estimate(1, full, full)
    key = part_key_of(ask.model, ask.options)
    stored = video.caches.get(key)
    live = stored is not None and float(stored.get("expires_at") or 0) - time.time() > REUSE_MARGIN_S
    others = any(a.state in _OPEN and a.tier != "batch" and a.prompt != ask.prompt and _part(a) == key for a in store.analyses_of(video.id))
    if not live and not others:
        return Estimate(1, full, full)
    prompt_tokens = tokens + len(ask.prompt) // 4
    cached = cost_usd(ask.model, prompt_tokens, EXPECTED_OUTPUT_TOKENS, ask.tier, cached_tokens=tokens) or 0.0
    storage = 0.0 if live else cache_storage_usd(ask.model, tokens, HELD_S)
    return Estimate(1, full, min(full, cached + storage))


def questions_estimate(store: Store, settings: Settings, videos: Iterable[Video], ask: Ask) -> Estimate:
    total = NOTHING
    for video in videos:
        total = total + question_estimate(store, settings, video, ask)
    return total


def cache_saving_usd(analysis: Analysis) -> float:
    """What reading the video from a context cache saved on this answer (0 without a cache or a price)."""
    if not analysis.cached_tokens or analysis.cost_usd is None:
        return 0.0
    prompt, output = analysis.prompt_tokens or 0, analysis.output_tokens or 0
    full = cost_usd(analysis.model, prompt, output, analysis.tier)
    cached = cost_usd(analysis.model, prompt, output, analysis.tier, cached_tokens=analysis.cached_tokens)
    return max(0.0, (full or 0.0) - (cached or 0.0))


def _part(analysis: Analysis) -> str:
    return part_key_of(analysis.model, analysis.video_options)
