"""Stories analysts can check: structured answers, moments, clips and their costs, exports."""

from __future__ import annotations

import json

import pytest

from storyteller_core.intake.candidates import inspect_url, youtube_url
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Item
from storyteller_core.records.options import VideoOptions, parse_clip
from storyteller_core.records.story_answer import STORY_SCHEMA, parse_answer
from storyteller_core.records.timecode import seconds_of, timestamp
from storyteller_core.records.video import Video
from storyteller_core.settings import estimate_tokens
from storyteller_core.views.board import Status, row_of
from storyteller_core.views.export import chapters_vtt, copy_text, rows_frame, stories_markdown, to_json_bytes

ANSWER = {
    "title": "Harbour at dawn",
    "story": "Boats leave the harbour as the sun rises.",
    "key_moments": [
        {"time": "00:05", "description": "The first boat leaves"},
        {"time": "1:02:03", "description": "Past the end of a 90 s video"},
        {"time": "01:15", "description": "Gulls over the pier"},
    ],
    "people": ["a fisherman"],
    "places": ["the harbour"],
    "tags": ["boats", "dawn"],
}


def test_a_structured_answer_becomes_moments_and_one_outside_the_video_is_dropped():
    story = parse_answer(json.dumps(ANSWER), end_s=90.0)

    assert story.title == "Harbour at dawn" and story.note is None
    assert [(m.time, m.description) for m in story.moments] == [("00:05", "The first boat leaves"), ("01:15", "Gulls over the pier")]
    assert story.dropped_moments == 1
    assert "- 00:05 The first boat leaves" in story.markdown()


def test_moments_outside_the_clip_are_dropped_too():
    story = parse_answer(json.dumps(ANSWER), start_s=10.0, end_s=60.0)
    assert story.moments == [] and story.dropped_moments == 3


@pytest.mark.parametrize("raw", ['{"title": "only a title"}', "Once upon a time, not JSON.", "[1, 2]"])
def test_an_answer_off_the_schema_keeps_the_raw_text_and_says_so(raw):
    story = parse_answer(raw, end_s=90.0)
    assert story.text == raw and story.moments == []
    assert story.note and "did not match the story format" in story.note


def test_the_schema_asks_for_every_field():
    assert set(STORY_SCHEMA["required"]) == {"title", "story", "key_moments", "people", "places", "tags"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:05", 5.0), ("1:15", 75.0), ("1:02:03", 3723.0), ("02:60", None), ("1:60:00", None), ("soon", None), ("", None)],
)
def test_timestamps_as_people_write_them(text, seconds):
    assert seconds_of(text) == seconds


def test_timestamps_print_with_hours_only_past_an_hour():
    assert (timestamp(75), timestamp(3723)) == ("01:15", "1:02:03")


def test_clip_fps_and_resolution_are_checked_and_change_the_estimate():
    assert parse_clip("00:30-02:00") == (30.0, 120.0) and parse_clip("-01:00") == (None, 60.0)
    with pytest.raises(ValueError):
        parse_clip("00:30")
    with pytest.raises(ValueError):
        VideoOptions(fps=0)
    with pytest.raises(ValueError):
        VideoOptions(fps=30)
    with pytest.raises(ValueError):
        VideoOptions(resolution="ultra")
    with pytest.raises(ValueError):
        VideoOptions(start_s=60, end_s=30)
    full = estimate_tokens(600, "")
    clip = estimate_tokens(600, "", VideoOptions(start_s=30, end_s=120))
    low = estimate_tokens(600, "", VideoOptions(resolution="low"))
    slow = estimate_tokens(600, "", VideoOptions(fps=0.5))
    assert full - 800 == 600 * (258 + 32)  # 258 tokens per frame at 1 fps, 32 per second of audio
    assert clip - 800 == 90 * (258 + 32) and low - 800 == 600 * (66 + 32) and slow - 800 == 600 * (129 + 32)
    assert VideoOptions().to_key() == {} and VideoOptions(fps=0.5).to_key() == {"fps": 0.5}


def test_youtube_links_are_recognised_and_other_links_refused():
    assert youtube_url("https://youtu.be/dQw4w9WgXcQ?t=3") == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert youtube_url("youtube.com/watch?v=dQw4w9WgXcQ&list=x") == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert youtube_url("https://vimeo.com/123") is None
    candidate = inspect_url("https://www.youtube.com/shorts/dQw4w9WgXcQ")
    assert candidate.ok and candidate.url and candidate.source == candidate.url and len(candidate.sha256) == 64
    refused = inspect_url("https://vimeo.com/123")
    assert not refused.ok and "YouTube" in refused.error_message


def structured_row(name: str = "harbour.mp4"):
    story = parse_answer(json.dumps(ANSWER), end_s=90.0)
    video = Video(id="v" * 64, sha256="v" * 64, display_name=name, duration_s=90.0)
    analysis = Analysis(
        id="a1",
        video_id=video.id,
        model="gemini-3.8-flash",
        prompt="Tell",
        preset="Story",
        backend="b",
        state=AnalysisState.COMPLETED,
        story=story.text,
        structured=story.to_dict(),
        total_tokens=10,
    )
    item = Item(id="i1", batch_id="b1", display_name=name, source_path="/x", video_id=video.id, analysis_id="a1")
    return row_of(item, analysis, video)


def test_exports_carry_the_structure():
    row = structured_row()
    frame = rows_frame([row])
    assert frame["title"][0] == "Harbour at dawn" and frame["tags"][0] == "boats, dawn"
    assert frame["key_moments"][0] == "00:05 The first boat leaves; 01:15 Gulls over the pier"
    [obj] = json.loads(to_json_bytes([row]))
    assert obj["story"]["key_moments"][1] == {"time": "01:15", "seconds": 75.0, "description": "Gulls over the pier"}
    assert obj["story"]["dropped_moments"] == 1
    assert copy_text(row).startswith("## Harbour at dawn\n\nBoats leave") and "- 01:15 Gulls over the pier" in copy_text(row)
    assert stories_markdown([row]).startswith("# harbour.mp4\n")
    vtt = chapters_vtt(row)
    assert vtt.startswith("WEBVTT\n\n1\n00:00:05.000 --> 00:01:15.000\nThe first boat leaves")
    assert "00:01:15.000 --> 00:01:30.000\nGulls over the pier" in vtt


# -- against the emulator, with the real SDK ------------------------------------------------------------


def story_ask(engine, **kw):
    from storyteller_core.settings import PROMPT_PRESETS

    from .helpers import ask

    return ask(engine, PROMPT_PRESETS["Story"], preset="Story", **kw)


@pytest.mark.slow
def test_the_story_preset_returns_a_structured_story_with_real_moments(make_engine, emulator, one_video):
    engine = make_engine()
    path = one_video("harbour.mp4", seconds=6.0)

    [row] = engine.wait([i.id for i in engine.commands.submit_paths([path], story_ask(engine))], timeout=60)

    assert row.status is Status.DONE and row.analysis.structured
    story = row.analysis.structured
    assert story["title"] and story["story"] == row.story and story["note"] is None
    assert story["key_moments"] and all(0 <= m["seconds"] <= 6.0 for m in story["key_moments"])
    [call] = emulator.stats.wire
    assert call.method == "stream" and call.schema_field and call.response_mime_type == "application/json"


@pytest.mark.slow
def test_a_moment_past_the_end_is_dropped_and_counted(make_engine, emulator, one_video):
    engine = make_engine()
    path = one_video("pier-LATEMOMENT.mp4", seconds=4.0)

    [row] = engine.wait([i.id for i in engine.commands.submit_paths([path], story_ask(engine))], timeout=60)

    assert row.status is Status.DONE
    assert row.analysis.structured["dropped_moments"] == 1
    assert all(m["seconds"] <= 4.0 for m in row.analysis.structured["key_moments"])


@pytest.mark.slow
def test_an_answer_off_the_schema_keeps_the_raw_text(make_engine, emulator, one_video):
    engine = make_engine()
    [row] = engine.wait([i.id for i in engine.commands.submit_paths([one_video("x-BADJSON.mp4")], story_ask(engine))], timeout=60)

    assert row.status is Status.DONE and "did not match the story format" in row.analysis.structured["note"]
    assert row.story and row.analysis.structured["key_moments"] == []


@pytest.mark.slow
def test_clip_fps_and_resolution_reach_the_wire_and_the_estimate(make_engine, emulator, one_video):
    engine = make_engine()
    path = one_video("talk.mp4", seconds=8.0)
    options = VideoOptions(start_s=2.0, end_s=6.0, fps=0.5, resolution="low")

    [row] = engine.wait([i.id for i in engine.commands.submit_paths([path], story_ask(engine, options=options))], timeout=60)

    assert row.status is Status.DONE
    [call] = emulator.stats.wire
    assert call.video_metadata == {"start_offset": "2s", "end_offset": "6s", "fps": 0.5}
    assert call.media_resolution == "MEDIA_RESOLUTION_LOW"
    assert all(2.0 <= m["seconds"] <= 6.0 for m in row.analysis.structured["key_moments"])
    full_input = estimate_tokens(8.0, "p") - 800  # 800: the expected answer
    assert estimate_tokens(8.0, "p", options) - 800 < full_input / 5  # 4 s at 0.5 fps and low resolution
    assert row.analysis.options == {"start_s": 2.0, "end_s": 6.0, "fps": 0.5, "resolution": "low", "structured": True}


def test_a_youtube_link_is_analyzed_with_no_upload(make_engine, emulator):
    engine = make_engine()
    [item] = engine.commands.submit([inspect_url("https://youtu.be/dQw4w9WgXcQ")], story_ask(engine))

    [row] = engine.wait([item.id], timeout=60)

    assert row.status is Status.DONE and row.story
    assert emulator.stats.uploads_started == 0 and emulator.stats.youtube["dQw4w9WgXcQ"] == 1


def test_a_private_youtube_video_fails_with_geminis_reason(make_engine, emulator):
    emulator.config.private_youtube_ids = {"aaaaaaaaaaa"}
    engine = make_engine()
    [item] = engine.commands.submit([inspect_url("https://www.youtube.com/watch?v=aaaaaaaaaaa")], story_ask(engine))

    [row] = engine.wait([item.id], timeout=60)

    assert row.status is Status.FAILED and "Gemini refused" in row.error
    assert emulator.stats.uploads_started == 0


@pytest.mark.slow
def test_the_story_is_visible_while_it_is_written(make_engine, emulator, one_video):
    from .helpers import ask, wait_until

    emulator.config.stream_chunk_delay_s = 0.6
    engine = make_engine(analysis_budget_s=60)
    [item] = engine.commands.submit_paths([one_video("slow.mp4")], ask(engine, "Tell the story"))

    wait_until(lambda: bool(engine.store.require(Analysis, item.analysis_id).partial_story), timeout=60, what="partial text")
    partial = engine.store.require(Analysis, item.analysis_id)
    [row] = engine.wait([item.id], timeout=60)

    assert partial.state is AnalysisState.ANALYZING and row.story.startswith(partial.partial_story[:20])
    assert len(partial.partial_story) < len(row.story)
    assert engine.store.require(Analysis, item.analysis_id).partial_story is None


@pytest.mark.slow
def test_a_stream_cut_half_way_is_retried_whole(make_engine, emulator, one_video):
    engine = make_engine()
    [row] = engine.wait([i.id for i in engine.commands.submit_paths([one_video("x-CUTME.mp4")], story_ask(engine))], timeout=60)

    assert row.status is Status.DONE and row.analysis.structured["note"] is None
    assert emulator.stats.streams["x-CUTME.mp4"] == 2


def test_models_list_drives_the_default_and_a_missing_model_is_warned(make_engine, emulator):
    emulator.config.models = {"gemini-3.1-pro-preview", "gemini-9-flash"}
    engine = make_engine()

    engine.catalog.refresh()

    assert engine.catalog.default == "gemini-9-flash"  # offered, newest flash; our table has no price for it
    assert engine.catalog.warning("gemini-3.8-flash") and "not offered" in engine.catalog.warning("gemini-3.8-flash")
    assert engine.catalog.warning("gemini-3.1-pro-preview") is None


@pytest.mark.slow
def test_the_flex_tier_is_asked_for_and_costs_half(make_engine, emulator, videos):
    from .helpers import ask, run_all

    engine = make_engine()
    [standard] = run_all(engine, [videos[0]], prompt="P")
    [flex] = engine.wait([i.id for i in engine.commands.submit_paths([videos[1]], ask(engine, "P", tier="flex"))], timeout=60)

    assert flex.status is Status.DONE and flex.analysis.tier == "flex"
    assert [c.service_tier for c in emulator.stats.wire] == [None, "flex"]
    per_token = (standard.cost_usd / standard.analysis.total_tokens, flex.cost_usd / flex.analysis.total_tokens)
    assert per_token[1] < per_token[0] * 0.75  # half price (token mixes differ a little between the two videos)
