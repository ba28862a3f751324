"""Gemini as of December 2026 (issue 20): current models and prices, retired models, context caching,
Gemini 3 video options, the pinned API version and fractional clip offsets. Real SDK against the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.gemini.catalog import choose_default
from storyteller_core.gemini.gateway import Gateway, VideoPart
from storyteller_core.intake.samples import make_video
from storyteller_core.records.options import VideoOptions, parse_clip
from storyteller_core.records.video import Video
from storyteller_core.settings import API_VERSION, RETIRED, Settings, cost_usd, model_info

from .helpers import TEST_KEY, analyses_in, ask, wait_until


@pytest.fixture
def long_video(tmp_path: Path) -> Path:
    """20 s: about 5,800 video tokens, over the 4,096-token cache minimum of the flash models."""
    return make_video(tmp_path / "long" / "talk.mp4", seconds=20.0, seed=5)


def test_a_key_offered_only_current_models_gets_a_current_default_with_a_cost(make_engine, emulator) -> None:
    engine = make_engine()
    engine.catalog.refresh()
    default = engine.catalog.default
    assert default == "gemini-3.8-flash" and not default.startswith("gemini-2.5")
    assert not model_info(default).estimated and cost_usd(default, 10_000, 800) is not None
    # a model newer than our table still has a figure, labelled as an estimate from its family
    unknown = model_info("gemini-9-flash")
    assert unknown.estimated and "estimated" in unknown.label and (cost_usd("gemini-9-flash", 10_000, 800) or 0) > 0


def test_emulator_answers_a_retired_model_with_googles_404(emulator) -> None:
    gateway = Gateway(TEST_KEY, emulator.base_url, 5)
    assert "gemini-2.5-flash" not in gateway.list_models()
    with pytest.raises(Exception) as caught:
        gateway.generate(model="gemini-2.5-flash", video=VideoPart(uri="https://www.youtube.com/watch?v=abc"), prompt="Tell", timeout_s=5)
    assert "no longer available to new users" in str(caught.value)
    assert "gemini-3.5-flash-lite" in str(caught.value)


def test_a_retired_pinned_model_gives_one_sentence_naming_the_replacement(make_engine, emulator, one_video) -> None:
    engine = make_engine(model="gemini-2.5-flash", model_pinned=True)
    warning = engine.catalog.warning("gemini-2.5-flash")  # known at start, before any call
    assert warning and "use gemini-3.5-flash-lite instead" in warning and warning.count(". ") == 0
    items = engine.commands.submit_paths([one_video("a.mp4")], ask(engine))
    [row] = engine.wait([i.id for i in items], timeout=30)
    assert row.analysis.error_code == "model_not_found"
    assert row.analysis.error_message.startswith("The model gemini-2.5-flash is retired")
    assert "use gemini-3.5-flash-lite instead" in row.analysis.error_message


def test_cli_reports_a_pinned_retired_model_at_start(tmp_path, emulator, one_video) -> None:
    from .helpers import cli_env, run_cli

    env = cli_env(tmp_path / "data", emulator.base_url) | {"STORYTELLER_MODEL": "gemini-2.5-pro"}
    result = run_cli(["process", str(one_video("b.mp4"))], env)
    assert "The model gemini-2.5-pro is retired by Google and no longer answers; use gemini-3.8-flash instead" in result.stdout


def _three_questions(engine, video: Path) -> list[str]:
    ids = []
    for prompt in ("Tell the story", "List the key moments", "Summarise it"):
        ids += [i.id for i in engine.commands.submit_paths([video], ask(engine, prompt), resume=True)]
    return ids


def test_three_questions_of_one_long_video_share_one_cache_that_is_gone_afterwards(make_engine, emulator, long_video) -> None:
    engine = make_engine(start=False)
    ids = _three_questions(engine, long_video)
    engine.start()
    rows = engine.wait(ids, timeout=60)
    assert all(r.analysis.state == "COMPLETED" for r in rows)
    assert sum(emulator.stats.caches_created.values()) == 1
    assert sum(emulator.stats.cached_generates.values()) == 3
    # the last question deletes the cache just after its answer is stored (a row reads Done in between)
    wait_until(lambda: not engine.store.require(Video, rows[0].video.id).caches, timeout=10)
    assert emulator.live_caches() == [] and emulator.stats.caches_deleted == 1
    for analysis in analyses_in(engine.store):
        assert analysis.cached_tokens and analysis.cached_tokens > 4096 and analysis.cache_name
        full = cost_usd(analysis.model, analysis.prompt_tokens, analysis.output_tokens)
        assert analysis.cost_usd is not None and full is not None and analysis.cost_usd < full / 2  # the saving
    cached_calls = [c for c in emulator.stats.wire if c.cached_content]
    assert len(cached_calls) == 3 and all(c.cached_tokens == cached_calls[0].cached_tokens for c in cached_calls)


def test_one_question_of_a_long_video_makes_no_cache(make_engine, emulator, long_video) -> None:
    engine = make_engine()
    items = engine.commands.submit_paths([long_video], ask(engine))
    engine.wait([i.id for i in items], timeout=30)
    assert not emulator.stats.caches_created and not emulator.stats.cached_generates


def test_a_restart_mid_way_reuses_the_stored_cache(make_engine, emulator, long_video, tmp_path) -> None:
    emulator.config.analysis_delay_s = 0.5
    first = make_engine(start=False, max_workers=1, data_dir=tmp_path / "d")
    ids = _three_questions(first, long_video)
    first.start()
    wait_until(lambda: any(a.state == "COMPLETED" for a in analyses_in(first.store)), timeout=30)
    first.shutdown(timeout=5)
    assert len(emulator.live_caches()) == 1  # not deleted: two questions are left
    second = make_engine(data_dir=tmp_path / "d", max_workers=1)
    rows = second.wait(ids, timeout=60)
    assert all(r.analysis.state == "COMPLETED" for r in rows)
    assert sum(emulator.stats.caches_created.values()) == 1  # reused after the restart, not made again
    # every question was answered through it (one stopped mid-answer by the shutdown is asked again, also through it)
    assert all(a.cache_name and a.cached_tokens for a in analyses_in(second.store))
    assert sum(emulator.stats.cached_generates.values()) >= 3
    wait_until(lambda: not second.store.require(Video, rows[0].video.id).caches, timeout=10)
    assert emulator.live_caches() == []


def test_an_expired_cache_is_forgotten_and_the_question_asked_again(make_engine, emulator, long_video, tmp_path) -> None:
    emulator.config.analysis_delay_s = 0.5
    first = make_engine(start=False, max_workers=1, data_dir=tmp_path / "d")
    ids = _three_questions(first, long_video)
    first.start()
    wait_until(lambda: any(a.state == "COMPLETED" for a in analyses_in(first.store)), timeout=30)
    first.shutdown(timeout=5)
    [name] = emulator.live_caches()
    emulator.expire_cache(name)  # its TTL ends while the app is stopped
    second = make_engine(data_dir=tmp_path / "d", max_workers=1)
    rows = second.wait(ids, timeout=60)
    assert all(r.analysis.state == "COMPLETED" for r in rows), [r.analysis.error_message for r in rows]
    wait_until(lambda: not second.store.require(Video, rows[0].video.id).caches, timeout=10)
    assert emulator.live_caches() == [], (
        emulator.stats.caches_created,
        emulator.stats.caches_deleted,
        [(a.state, a.cache_name) for a in analyses_in(second.store)],
        [v.caches for v in second.store.many(Video, [rows[0].video.id])],
    )


def test_agentic_processing_and_per_part_resolution_reach_the_request(make_engine, emulator, one_video) -> None:
    engine = make_engine()
    options = VideoOptions(resolution="low", processing="agentic")
    items = engine.commands.submit_paths([one_video("c.mp4")], ask(engine, options=options))
    [row] = engine.wait([i.id for i in items], timeout=30)
    assert row.analysis.state == "COMPLETED"
    body = emulator.stats.last_body
    part = body["contents"][0]["parts"][0]
    assert part["mediaProcessing"] == "AGENTIC" and part["mediaResolution"] == {"level": "MEDIA_RESOLUTION_LOW"}
    assert "mediaResolution" not in body.get("generationConfig", {})  # Gemini 3: on the part, not the config
    plain = engine.commands.submit_paths([one_video("c.mp4")], ask(engine, options=VideoOptions(resolution="low")))
    assert plain[0].analysis_id != items[0].analysis_id  # a different processing mode is a different analysis
    assert VideoOptions(processing="agentic").video_tokens(600) < VideoOptions().video_tokens(600)


def test_an_older_model_still_gets_resolution_in_the_generation_config(emulator, one_video) -> None:
    gateway = Gateway(TEST_KEY, emulator.base_url, 5)
    remote = gateway.upload(
        one_video("d.mp4"), name="vs-older", display_name="d.mp4", mime_type="video/mp4", on_progress=lambda n: None
    ).file
    wait_until(lambda: gateway.get_file(remote.name).state == "ACTIVE", timeout=10)  # type: ignore[union-attr]
    gateway.generate(
        model="gemini-2.5-flash-lite", video=VideoPart(uri=remote.uri, mime_type="video/mp4"), prompt="Tell", timeout_s=5, resolution="low"
    )
    body = emulator.stats.last_body
    assert body["generationConfig"]["mediaResolution"] == "MEDIA_RESOLUTION_LOW"
    assert "mediaResolution" not in body["contents"][0]["parts"][0]


def test_fractional_clip_offsets_travel_as_fractional_durations(make_engine, emulator, one_video) -> None:
    start, end = parse_clip("00:00.5-00:01.25")
    assert (start, end) == (0.5, 1.25)
    engine = make_engine()
    items = engine.commands.submit_paths([one_video("e.mp4", seconds=2.0)], ask(engine, options=VideoOptions(start_s=start, end_s=end)))
    engine.wait([i.id for i in items], timeout=30)
    assert emulator.stats.wire[-1].video_metadata == {"start_offset": "0.5s", "end_offset": "1.25s"}


def test_the_gateway_pins_v1beta_and_the_emulator_answers_no_other_version(emulator) -> None:
    assert API_VERSION == "v1beta" and Settings().api_version == "v1beta"
    assert Gateway(TEST_KEY, emulator.base_url, 5).list_models()
    drifted = genai.Client(api_key=TEST_KEY, http_options=types.HttpOptions(base_url=emulator.base_url))  # SDK default: v1
    with pytest.raises(genai_errors.ClientError) as caught:
        list(drifted.models.list())
    assert caught.value.code == 404 and "only API version v1beta" in str(caught.value)


def test_emulator_refuses_fields_the_v1beta_messages_lack(emulator) -> None:
    with Emulator(EmulatorConfig()) as emu:
        client = genai.Client(api_key=TEST_KEY, http_options=types.HttpOptions(base_url=emu.base_url, api_version=API_VERSION))
        with pytest.raises(genai_errors.ClientError) as caught:
            client.models.generate_content(
                model="gemini-3.8-flash",
                contents=[types.Content(role="user", parts=[types.Part(text="hi", audio_metadata=types.AudioMetadata())])],
            )  # type: ignore[call-arg]
        assert caught.value.code == 400 and "Unknown name" in str(caught.value)


def test_the_choice_of_default_prefers_the_newest_flash(tmp_path) -> None:
    offered = ["gemini-3.1-pro-preview", "gemini-3.5-flash", "gemini-3.8-flash", "gemini-3.5-flash-lite"]
    assert choose_default(offered, Settings(data_dir=tmp_path)) == "gemini-3.8-flash"
    assert set(RETIRED) >= {"gemini-2.5-flash", "gemini-2.5-pro"}
