"""The estimate before a question and the figure after it show what the context cache saves (issue 20 item 2)."""

from __future__ import annotations

import time
from pathlib import Path

from storyteller_core.commands import Ask
from storyteller_core.gemini.estimates import cache_saving_usd, question_estimate
from storyteller_core.records.analysis import AnalysisState
from storyteller_core.records.options import VideoOptions
from storyteller_core.settings import DEFAULT_MODEL, Settings, cost_usd, estimate_cost
from storyteller_core.steps.context_cache import part_key_of
from storyteller_core.storage.disk_store import DiskStore
from tests.helpers import make_analysis, make_video

TEN_MINUTES = 600.0


def _store(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path / "store")


def test_a_lone_question_is_estimated_at_full_price(tmp_path: Path) -> None:
    store, video = _store(tmp_path), make_video(duration_s=TEN_MINUTES)
    store.add_video(video)
    ask = Ask("Who speaks first?", DEFAULT_MODEL)

    estimate = question_estimate(store, Settings(data_dir=tmp_path), video, ask)

    assert estimate.usd == estimate.full_usd == estimate_cost(DEFAULT_MODEL, TEN_MINUTES, ask.prompt)
    assert estimate.saving_usd == 0


def test_a_question_beside_an_open_one_of_the_same_part_is_estimated_through_the_cache(tmp_path: Path) -> None:
    store, video = _store(tmp_path), make_video(duration_s=TEN_MINUTES)
    store.add_video(video)
    store.add_analysis(make_analysis(video.id, "Tell the story", model=DEFAULT_MODEL, state=AnalysisState.WAITING))
    ask = Ask("Who speaks first?", DEFAULT_MODEL)

    estimate = question_estimate(store, Settings(data_dir=tmp_path), video, ask)

    assert estimate.full_usd is not None and estimate.usd is not None
    assert estimate.usd < estimate.full_usd / 2  # the video's tokens at about a tenth of the price
    assert estimate.saving_usd > 0
    other_part = Ask("Who speaks first?", DEFAULT_MODEL, options=VideoOptions(resolution="low"))
    assert question_estimate(store, Settings(data_dir=tmp_path), video, other_part).saving_usd == 0  # another part
    off = Settings(data_dir=tmp_path, context_cache=False)
    assert question_estimate(store, off, video, ask).saving_usd == 0


def test_a_live_stored_cache_is_used_without_new_storage(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = part_key_of(DEFAULT_MODEL, VideoOptions())
    video = make_video(duration_s=TEN_MINUTES, caches={key: {"name": "cachedContents/a", "expires_at": time.time() + 3000}})
    store.add_video(video)
    ask = Ask("Who speaks first?", DEFAULT_MODEL)
    tokens = VideoOptions().video_tokens(TEN_MINUTES)

    estimate = question_estimate(store, Settings(data_dir=tmp_path), video, ask)

    assert estimate.usd == cost_usd(DEFAULT_MODEL, tokens + len(ask.prompt) // 4, 800, cached_tokens=tokens)


def test_the_saving_after_is_the_cached_tokens_at_the_difference_in_price() -> None:
    done = make_analysis(
        model=DEFAULT_MODEL, state=AnalysisState.COMPLETED, prompt_tokens=200_000, output_tokens=800, cached_tokens=190_000, cost_usd=0.01
    )
    full = cost_usd(DEFAULT_MODEL, 200_000, 800)
    paid = cost_usd(DEFAULT_MODEL, 200_000, 800, cached_tokens=190_000)
    assert full and paid and cache_saving_usd(done) == full - paid > 0
    assert cache_saving_usd(make_analysis(cost_usd=0.01)) == 0
