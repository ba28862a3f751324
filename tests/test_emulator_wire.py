"""The emulator speaks what the app sends: the real google-genai SDK against it over loopback.

Structured output (response_json_schema and response_schema), clips / fps / media resolution and the usage
they change, YouTube URIs, streaming (and a stream cut half-way), countTokens, models.list, the Batch API and
the flex service tier. Each test asserts on what the SDK got back and on what the emulator saw on the wire.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel, Field, ValidationError

from storyteller_core.emulator import Emulator
from storyteller_core.emulator.config import EMBEDDING_MODEL
from storyteller_core.emulator.story_writer import LABEL
from storyteller_core.intake.samples import make_video
from storyteller_core.settings import API_VERSION

from .helpers import TEST_KEY

MODEL = "gemini-3.8-flash"
PROMPT = "Tell the story of this video"
YOUTUBE = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
# what a stream dropped half-way raises: the HTTP client's protocol error (httpx or httpx2), or the SDK's
STREAM_ERRORS: tuple[type[BaseException], ...] = (errors.APIError, OSError)
for _module in ("httpx", "httpx2"):
    with contextlib.suppress(ImportError):
        STREAM_ERRORS += (importlib.import_module(_module).HTTPError,)


class Moment(BaseModel):
    time: str = Field(description="MM:SS or H:MM:SS")
    description: str


class StoryAnswer(BaseModel):
    title: str
    story: str
    key_moments: list[Moment]
    people: list[str]
    places: list[str]
    tags: list[str]


def seconds_of(stamp: str) -> int:
    pieces = [int(p) for p in stamp.split(":")]
    assert len(pieces) in (2, 3) and all(p < 60 for p in pieces[1:]), stamp
    return sum(p * 60**i for i, p in enumerate(reversed(pieces)))


@pytest.fixture
def client(emulator: Emulator) -> genai.Client:
    emulator.config.processing_delay_s = 0.0
    emulator.config.analysis_delay_s = 0.0
    return genai.Client(api_key=TEST_KEY, http_options=types.HttpOptions(base_url=emulator.base_url, api_version=API_VERSION))


@pytest.fixture(scope="module")
def video_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[float, bool], Path]:
    """Real videos, made once per length: tiny frames at 2 fps; sound only when asked (AAC is the slow part)."""
    folder, made = tmp_path_factory.mktemp("wire-videos"), {}

    def get(seconds: float, audio: bool) -> Path:
        if (seconds, audio) not in made:
            made[seconds, audio] = make_video(folder / f"{seconds:g}-{audio}.mp4", seconds=seconds, size=(32, 24), fps=2, audio=audio)
        return made[seconds, audio]

    return get


@pytest.fixture
def upload(client: genai.Client, video_of: Callable[[float, bool], Path]) -> Callable[..., types.File]:
    def make(name: str = "clip.mp4", seconds: float = 75.0, audio: bool = False) -> types.File:
        path = video_of(seconds, audio)
        f = client.files.upload(file=path, config=types.UploadFileConfig(display_name=name, mime_type="video/mp4"))
        while f.state and f.state.name == "PROCESSING":
            time.sleep(0.05)
            f = client.files.get(name=f.name or "")
        assert f.state and f.state.name == "ACTIVE"
        return f

    return make


def video_part(f: types.File | str, **clip: Any) -> types.Part:
    uri = f if isinstance(f, str) else f.uri
    mime = None if isinstance(f, str) else f.mime_type
    metadata = types.VideoMetadata(**clip) if clip else None
    return types.Part(file_data=types.FileData(file_uri=uri, mime_type=mime), video_metadata=metadata)


def structured(**extra: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=StoryAnswer.model_json_schema(), **extra)


# -- 1. structured output -------------------------------------------------------------------
def test_json_schema_answer_describes_the_real_video(client: genai.Client, upload: Callable[..., types.File]) -> None:
    f = upload("talk.mp4", seconds=75)
    response = client.models.generate_content(model=MODEL, contents=[video_part(f), PROMPT], config=structured())
    answer = StoryAnswer.model_validate_json(response.text or "")
    assert LABEL in answer.story and "75.0-second video" in answer.story and "32x24" in answer.story and "without an audio" in answer.story
    assert "talk" in answer.title and answer.people and answer.places and "demo" in answer.tags
    assert 3 <= len(answer.key_moments) <= 5
    times = [seconds_of(m.time) for m in answer.key_moments]
    assert times == sorted(times) and all(0 <= t <= 75 for t in times) and len(set(times)) == len(times)
    assert all(m.description for m in answer.key_moments)


def test_response_schema_class_gives_parsed_answer(client: genai.Client, upload: Callable[..., types.File], emulator: Emulator) -> None:
    f = upload("talk.mp4", seconds=20)
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=StoryAnswer)
    response = client.models.generate_content(model=MODEL, contents=[video_part(f), PROMPT], config=config)
    assert isinstance(response.parsed, StoryAnswer)
    assert all(0 <= seconds_of(m.time) <= 20 for m in response.parsed.key_moments)
    assert emulator.stats.wire[-1].schema_field == "responseSchema"


@pytest.mark.slow
def test_nested_schema_shapes_are_filled(client: genai.Client, upload: Callable[..., types.File]) -> None:
    """$defs/$ref, Optional (anyOf null), enums, numbers with bounds, min/max items, moments as strings."""

    class Person(BaseModel):
        name: str
        role: str | None = None

    class Report(BaseModel):
        headline: str
        summary: str
        mood: str = Field(json_schema_extra={"enum": ["calm", "tense"]})
        duration_seconds: float
        confidence: float = Field(ge=0, le=1)
        has_audio: bool
        people: list[Person] = Field(min_length=1, max_length=1)
        chapters: list[str]
        timeline: list[Moment] = Field(max_length=3)

    f = upload("report.mp4", seconds=30, audio=True)
    config = types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=Report.model_json_schema())
    report = Report.model_validate_json(client.models.generate_content(model=MODEL, contents=[video_part(f)], config=config).text or "")
    assert report.mood == "calm" and 29 <= report.duration_seconds <= 31 and report.has_audio
    assert len(report.people) == 1 and len(report.timeline) == 3 and LABEL in report.summary
    assert all(0 <= seconds_of(c.split(" ", 1)[0]) <= 30 for c in report.chapters)


def test_markers_break_the_schema_and_put_a_moment_past_the_end(client: genai.Client, upload: Callable[..., types.File]) -> None:
    bad = upload("BADJSON.mp4", seconds=10)
    text = client.models.generate_content(model=MODEL, contents=[video_part(bad), PROMPT], config=structured()).text or ""
    json.loads(text)  # still JSON
    with pytest.raises(ValidationError):
        StoryAnswer.model_validate_json(text)

    late = upload("LATEMOMENT.mp4", seconds=10)
    response = client.models.generate_content(model=MODEL, contents=[video_part(late), PROMPT], config=structured())
    times = [seconds_of(m.time) for m in StoryAnswer.model_validate_json(response.text or "").key_moments]
    assert sum(t > 11 for t in times) == 1 and all(t <= 10 for t in times if t <= 11)


# -- 2. clips, fps, media resolution ------------------------------------------------------------
def test_clip_fps_and_resolution_change_usage_and_are_recorded(
    client: genai.Client, upload: Callable[..., types.File], emulator: Emulator
) -> None:
    f = upload("long.mp4", seconds=100)
    prompt_tokens = len(PROMPT) // 4
    whole = client.models.generate_content(model=MODEL, contents=[video_part(f), PROMPT])
    assert whole.usage_metadata and whole.usage_metadata.prompt_token_count == int(100 * (258 + 32)) + prompt_tokens

    config = structured(media_resolution=types.MediaResolution.MEDIA_RESOLUTION_LOW)
    clip = client.models.generate_content(
        model=MODEL, contents=[video_part(f, start_offset="40s", end_offset="70s", fps=0.5), PROMPT], config=config
    )
    assert clip.usage_metadata and clip.usage_metadata.prompt_token_count == int(30 * (0.5 * 66 + 32)) + prompt_tokens
    details = {d.modality.name: d.token_count for d in clip.usage_metadata.prompt_tokens_details or [] if d.modality}
    assert details == {"TEXT": prompt_tokens, "VIDEO": int(30 * (0.5 * 66 + 32)) - 30 * 32, "AUDIO": 30 * 32}
    moments = StoryAnswer.model_validate_json(clip.text or "").key_moments
    assert all(40 <= seconds_of(m.time) <= 70 for m in moments)

    call = emulator.stats.wire[-1]
    assert call.video_metadata == {"start_offset": "40s", "end_offset": "70s", "fps": 0.5}
    assert call.media_resolution == "MEDIA_RESOLUTION_LOW" and call.method == "generate" and call.display_name == "long.mp4"
    assert emulator.stats.last_body["generationConfig"]["mediaResolution"] == "MEDIA_RESOLUTION_LOW"

    medium = client.models.generate_content(
        model=MODEL,
        contents=[video_part(f, start_offset="1.5s", fps=2), PROMPT],
        config=types.GenerateContentConfig(media_resolution="MEDIA_RESOLUTION_MEDIUM"),
    )
    assert medium.usage_metadata and medium.usage_metadata.prompt_token_count == int(98.5 * (2 * 258 + 32)) + prompt_tokens
    assert "sampled at 2 frames per second" in (medium.text or "")


def test_bad_clip_values_answer_400(client: genai.Client, upload: Callable[..., types.File]) -> None:
    f = upload("x.mp4", seconds=5)
    for clip in ({"fps": 30}, {"start_offset": "4s", "end_offset": "2s"}, {"start_offset": "4 seconds"}):
        with pytest.raises(errors.ClientError) as caught:
            client.models.generate_content(model=MODEL, contents=[video_part(f, **clip)])
        assert caught.value.code == 400


def test_snake_case_body_is_read_like_the_sdk_body(emulator: Emulator, client: genai.Client, upload: Callable[..., types.File]) -> None:
    f = upload("snake.mp4", seconds=50)
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {
                        "file_data": {"file_uri": f.uri, "mime_type": "video/mp4"},
                        "video_metadata": {"startOffset": "10s", "endOffset": "20s", "fps": 1},
                    },
                    {"text": PROMPT},
                ],
            }
        ],
        "generation_config": {
            "response_mime_type": "application/json",
            "response_json_schema": StoryAnswer.model_json_schema(),
            "media_resolution": "MEDIA_RESOLUTION_LOW",
        },
        "service_tier": "flex",
    }
    answer = _post(emulator, f"/v1beta/models/{MODEL}:generateContent", body)
    story = StoryAnswer.model_validate_json(answer["candidates"][0]["content"]["parts"][0]["text"])
    assert all(10 <= seconds_of(m.time) <= 20 for m in story.key_moments)
    assert answer["usageMetadata"]["promptTokenCount"] == 10 * (66 + 32) + len(PROMPT) // 4
    assert emulator.stats.wire[-1].service_tier == "flex"


# -- 3. YouTube ----------------------------------------------------------------------------------
def test_youtube_uri_needs_no_upload(client: genai.Client, emulator: Emulator) -> None:
    emulator.config.youtube_durations["dQw4w9WgXcQ"] = 212
    response = client.models.generate_content(model=MODEL, contents=[video_part(YOUTUBE, start_offset="60s"), PROMPT], config=structured())
    answer = StoryAnswer.model_validate_json(response.text or "")
    assert LABEL in answer.story and "dQw4w9WgXcQ" in answer.story and "youtube" in answer.tags
    assert all(60 <= seconds_of(m.time) <= 212 for m in answer.key_moments)
    assert response.usage_metadata and response.usage_metadata.prompt_token_count == 152 * 290 + len(PROMPT) // 4
    plain = client.models.generate_content(model=MODEL, contents=[video_part("https://youtu.be/dQw4w9WgXcQ"), PROMPT])
    assert LABEL in (plain.text or "")
    assert emulator.stats.uploads_started == 0 and emulator.stats.youtube["dQw4w9WgXcQ"] == 2
    assert emulator.stats.generates["youtube:dQw4w9WgXcQ"] == 2


def test_private_youtube_video_fails_as_gemini_says(client: genai.Client, emulator: Emulator) -> None:
    emulator.config.private_youtube_ids.add("privateVid1")
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=MODEL, contents=[video_part("https://www.youtube.com/watch?v=privateVid1"), PROMPT])
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"


# -- 4. streaming --------------------------------------------------------------------------------
@pytest.mark.slow
def test_stream_yields_several_chunks_with_usage_on_the_last(
    client: genai.Client, upload: Callable[..., types.File], emulator: Emulator
) -> None:
    f = upload("streamed.mp4", seconds=40)
    emulator.config.stream_events = 5
    emulator.config.stream_chunk_delay_s = 0.2
    whole = client.models.generate_content(model=MODEL, contents=[video_part(f), PROMPT], config=structured())
    arrivals, chunks = [], []
    for chunk in client.models.generate_content_stream(model=MODEL, contents=[video_part(f), PROMPT], config=structured()):
        arrivals.append(time.monotonic())
        chunks.append(chunk)
    assert len(chunks) == 5 and arrivals[-1] - arrivals[0] >= 0.6  # the text arrives piece by piece
    text = "".join(c.text or "" for c in chunks)
    assert json.loads(text) and StoryAnswer.model_validate_json(text).title == StoryAnswer.model_validate_json(whole.text or "").title
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata and last.usage_metadata.prompt_token_count == 40 * 290 + len(PROMPT) // 4
    assert last.usage_metadata.candidates_token_count == len(text) // 4
    assert emulator.stats.streams["streamed.mp4"] == 1 and emulator.stats.generates["streamed.mp4"] == 2


def test_cut_stream_raises_on_the_client_and_the_retry_is_whole(
    client: genai.Client, upload: Callable[..., types.File], emulator: Emulator
) -> None:
    f = upload("CUTME.mp4", seconds=10)
    got: list[str] = []
    with pytest.raises(STREAM_ERRORS):
        for chunk in client.models.generate_content_stream(model=MODEL, contents=[video_part(f), PROMPT]):
            got.append(chunk.text or "")
    assert got and LABEL.startswith("".join(got)[:10])  # some text came before the cut
    again = "".join(c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents=[video_part(f), PROMPT]))
    assert again.startswith(LABEL) and again.endswith("real stories.")
    assert emulator.stats.stream_cuts["CUTME.mp4"] == 1 and emulator.stats.streams["CUTME.mp4"] == 2


def test_stream_cut_rate_and_faults_apply_to_streams(client: genai.Client, upload: Callable[..., types.File], emulator: Emulator) -> None:
    f = upload("faulty.mp4", seconds=5)
    emulator.config.stream_cut_rate = 1.0
    with pytest.raises(STREAM_ERRORS):
        list(client.models.generate_content_stream(model=MODEL, contents=[video_part(f), PROMPT]))
    emulator.config.stream_cut_rate = 0.0
    emulator.config.rate_503 = 1.0
    with pytest.raises(errors.ServerError) as caught:
        list(client.models.generate_content_stream(model=MODEL, contents=[video_part(f), PROMPT]))
    assert caught.value.code == 503 and emulator.stats.faults["503"] == 1
    emulator.config.rate_503, emulator.config.bad_body_rate = 0.0, 1.0
    with pytest.raises(errors.UnknownApiResponseError):
        list(client.models.generate_content_stream(model=MODEL, contents=[video_part(f), PROMPT]))
    assert emulator.stats.faults["bad_body"] == 1


# -- 5. countTokens ------------------------------------------------------------------------------
def test_count_tokens_matches_usage(client: genai.Client, upload: Callable[..., types.File], emulator: Emulator) -> None:
    f = upload("counted.mp4", seconds=60)
    contents = [video_part(f, start_offset="10s", end_offset="40s", fps=0.5), PROMPT]
    counted = client.models.count_tokens(model=MODEL, contents=contents)
    used = client.models.generate_content(model=MODEL, contents=contents)
    assert counted.total_tokens == int(30 * (0.5 * 258 + 32)) + len(PROMPT) // 4
    assert used.usage_metadata and counted.total_tokens == used.usage_metadata.prompt_token_count
    assert emulator.stats.token_counts["counted.mp4"] == 1 and emulator.stats.generates["counted.mp4"] == 1
    youtube = client.models.count_tokens(model=MODEL, contents=[video_part(YOUTUBE)])
    assert youtube.total_tokens == 300 * 290

    with pytest.raises(urllib.error.HTTPError) as caught:  # the SDK refuses this itself; the API answers 400
        _post(
            emulator,
            f"/v1beta/models/{MODEL}:countTokens",
            {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"mediaResolution": "MEDIA_RESOLUTION_LOW"}},
        )
    assert caught.value.code == 400 and "generationConfig" in json.loads(caught.value.read())["error"]["message"]
    low = _post(
        emulator,
        f"/v1beta/models/{MODEL}:countTokens",
        {
            "generateContentRequest": {
                "model": f"models/{MODEL}",
                "contents": [{"parts": [{"fileData": {"fileUri": f.uri}}]}],
                "generationConfig": {"mediaResolution": "MEDIA_RESOLUTION_LOW"},
            }
        },
    )
    assert low["totalTokens"] == 60 * (66 + 32)


# -- 6. models.list ------------------------------------------------------------------------------
def test_models_list_offers_several_models_with_their_methods(
    client: genai.Client, emulator: Emulator, upload: Callable[..., types.File]
) -> None:
    emulator.config.extra_models = [
        EMBEDDING_MODEL,
        {"name": "gemini-9-flash", "displayName": "Gemini 9 Flash", "supportedGenerationMethods": ["generateContent", "countTokens"]},
    ]
    models = list(client.models.list(config={"page_size": 2}))
    names = [m.name for m in models]
    assert len(names) == len(emulator.config.models) + 2 and len(set(names)) == len(names)
    assert all(m.display_name and m.supported_actions for m in models)
    generating = {m.name for m in models if "generateContent" in (m.supported_actions or [])}
    assert "models/gemini-embedding-001" not in generating and "models/gemini-9-flash" in generating
    assert f"models/{MODEL}" in generating and client.models.get(model=MODEL).display_name

    f = upload("m.mp4", seconds=3)
    assert client.models.generate_content(model="gemini-9-flash", contents=[video_part(f), PROMPT]).text
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-embedding-001", contents=[video_part(f), PROMPT])
    assert caught.value.code == 404 and "not supported for generateContent" in str(caught.value)


# -- 7. Batch API ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_batch_runs_inlined_requests_in_order(client: genai.Client, upload: Callable[..., types.File], emulator: Emulator) -> None:
    emulator.config.batch_pending_s, emulator.config.batch_running_s = 0.3, 0.3
    a, b = upload("a.mp4", seconds=12), upload("b.mp4", seconds=30)
    src = [
        types.InlinedRequest(contents=[video_part(a), PROMPT], config=structured(), metadata={"key": "analysis-a"}),
        types.InlinedRequest(contents=[video_part(b, start_offset="5s", end_offset="15s"), PROMPT], metadata={"key": "analysis-b"}),
        types.InlinedRequest(contents=[video_part("https://www.youtube.com/watch?v=privateVid1"), PROMPT], metadata={"key": "yt"}),
    ]
    emulator.config.private_youtube_ids.add("privateVid1")
    job = client.batches.create(model=MODEL, src=src, config=types.CreateBatchJobConfig(display_name="night run"))
    assert job.name and job.name.startswith("batches/") and job.state == types.JobState.JOB_STATE_PENDING
    assert job.display_name == "night run" and job.model == f"models/{MODEL}"
    seen = set()
    while True:
        job = client.batches.get(name=job.name or "")
        seen.add(job.state)
        if job.state == types.JobState.JOB_STATE_SUCCEEDED:
            break
        time.sleep(0.05)
    assert types.JobState.JOB_STATE_RUNNING in seen and job.end_time
    responses = job.dest.inlined_responses if job.dest else None
    assert responses and [r.metadata for r in responses] == [{"key": "analysis-a"}, {"key": "analysis-b"}, {"key": "yt"}]
    first = StoryAnswer.model_validate_json(responses[0].response.text or "") if responses[0].response else None
    assert first and all(0 <= seconds_of(m.time) <= 12 for m in first.key_moments)
    second = responses[1].response
    assert second and second.usage_metadata and second.usage_metadata.prompt_token_count == 10 * 290 + len(PROMPT) // 4
    assert responses[2].response is None and responses[2].error and responses[2].error.code == 3
    assert emulator.stats.generates["a.mp4"] == 1 and emulator.stats.wire[1].method == "batch"

    again = client.batches.create(model=MODEL, src=src[:1], config=types.CreateBatchJobConfig(display_name="night run"))
    assert again.name != job.name and emulator.stats.batches_created["night run"] == 2
    assert {j.name for j in client.batches.list()} == {job.name, again.name}
    client.batches.cancel(name=again.name or "")
    assert client.batches.get(name=again.name or "").state == types.JobState.JOB_STATE_CANCELLED
    assert emulator.stats.batch_polls[job.name or ""] >= 2


def test_batch_failure_and_unknown_batch(client: genai.Client, emulator: Emulator) -> None:
    emulator.config.batch_pending_s = emulator.config.batch_running_s = 0.0
    job = client.batches.create(
        model=MODEL, src=[types.InlinedRequest(contents=[PROMPT])], config=types.CreateBatchJobConfig(display_name="FAILBATCH")
    )
    assert client.batches.get(name=job.name or "").state == types.JobState.JOB_STATE_FAILED
    with pytest.raises(errors.ClientError) as caught:
        client.batches.get(name="batches/nosuchbatch")
    assert caught.value.code == 404


# -- 8. flex ----------------------------------------------------------------------------------------
def test_flex_service_tier_is_accepted_and_recorded(client: genai.Client, upload: Callable[..., types.File], emulator: Emulator) -> None:
    f = upload("flex.mp4", seconds=3)
    response = client.models.generate_content(
        model=MODEL, contents=[video_part(f), PROMPT], config=types.GenerateContentConfig(service_tier="flex")
    )
    assert LABEL in (response.text or "")
    assert emulator.stats.service_tiers["flex"] == 1 and emulator.stats.wire[-1].service_tier == "flex"
    assert emulator.stats.last_body["serviceTier"] == "flex"
    with pytest.raises(urllib.error.HTTPError) as caught:
        _post(emulator, f"/v1beta/models/{MODEL}:generateContent", {"contents": [], "serviceTier": "cheapest"})
    assert caught.value.code == 400


def _post(emulator: Emulator, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        emulator.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "x-goog-api-key": TEST_KEY},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())
