"""Unit tests of pure pieces: transitions, error kinds, backoff, names, the scheduler, the store, exports."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from google.genai import errors as genai_errors

from storyteller_core.errors import DataDirError, Kind
from storyteller_core.gemini.gateway import _translate, file_name_for
from storyteller_core.gemini.retry import poll_delay
from storyteller_core.records.analysis import Analysis, AnalysisState, analysis_key
from storyteller_core.records.batch import Item
from storyteller_core.records.record import TransitionError
from storyteller_core.records.video import Video, VideoState
from storyteller_core.settings import Settings
from storyteller_core.storage.disk_store import DiskStore
from storyteller_core.views.board import Status, row_of, totals
from storyteller_core.views.export import rows_frame, to_csv_bytes
from storyteller_core.work.leases import Leases
from storyteller_core.work.scheduler import Scheduler

from .helpers import make_analysis, make_video


def test_video_transitions_allow_its_life_and_refuse_skips(tmp_path):
    store = DiskStore(tmp_path)
    video = store.add_video(make_video())
    store.transition(Video, video.id, VideoState.UPLOADING)
    store.transition(Video, video.id, VideoState.UPLOADING)  # resumed after a crash
    store.transition(Video, video.id, VideoState.UPLOADED)
    with pytest.raises(TransitionError):
        store.transition(Video, video.id, VideoState.UPLOADING)
    store.transition(Video, video.id, VideoState.FILE_PROCESSING)
    store.transition(Video, video.id, VideoState.FILE_ACTIVE)
    store.transition(Video, video.id, VideoState.CREATED)  # expired: upload again
    assert store.require(Video, video.id).state_entered_at.keys() >= {"UPLOADING", "UPLOADED", "FILE_ACTIVE"}


def test_analysis_transitions_and_the_unfinished_index(tmp_path):
    store = DiskStore(tmp_path)
    analysis, created = store.add_analysis(make_analysis())
    twin, again = store.add_analysis(make_analysis())
    assert created and not again and twin.id == analysis.id  # one record per key
    assert [a.id for a in store.unfinished()] == [analysis.id]
    with pytest.raises(TransitionError):
        store.transition(Analysis, analysis.id, AnalysisState.COMPLETED)  # never without asking
    store.transition(Analysis, analysis.id, AnalysisState.ANALYZING)
    store.transition(Analysis, analysis.id, AnalysisState.FAILED)
    assert store.unfinished() == []
    store.transition(Analysis, analysis.id, AnalysisState.WAITING)  # a retry
    assert [a.id for a in store.unfinished()] == [analysis.id]
    store.transition(Analysis, analysis.id, AnalysisState.ANALYZING)
    store.transition(Analysis, analysis.id, AnalysisState.COMPLETED)
    with pytest.raises(TransitionError):
        store.transition(Analysis, analysis.id, AnalysisState.WAITING)
    assert store.unfinished() == []


def test_the_analysis_key_names_everything_that_makes_the_answer():
    base = analysis_key("v", "m", "p", {}, "demo")
    assert base == analysis_key("v", "m", "p", {}, "demo")
    assert (
        len(
            {
                base,
                analysis_key("w", "m", "p", {}, "demo"),
                analysis_key("v", "n", "p", {}, "demo"),
                analysis_key("v", "m", "q", {}, "demo"),
                analysis_key("v", "m", "p", {"fps": 1}, "demo"),
                analysis_key("v", "m", "p", {}, "https://x"),
            }
        )
        == 6
    )


def test_store_values_are_json_text_and_sources_merge(tmp_path):
    store = DiskStore(tmp_path)
    store.add_video(make_video())
    merged = store.add_video(make_video(sources=["/y/copy.mp4"]))
    assert merged.sources == ["/y/copy.mp4", "/x/café.mp4"]
    raw = store.cache.get("video:" + "ab" * 32)
    assert isinstance(raw, str) and '"state":"CREATED"' in raw


@pytest.mark.parametrize(
    ("code", "body", "kind"),
    [
        (429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}}, Kind.TRANSIENT),
        (503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "busy"}}, Kind.TRANSIENT),
        (400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "API key not valid."}}, Kind.AUTH),
        (401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "no"}}, Kind.AUTH),
        (403, {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "File gone"}}, Kind.GONE),
        (400, {"error": {"code": 400, "status": "FAILED_PRECONDITION", "message": "not ACTIVE"}}, Kind.NOT_READY),
        (400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad prompt"}}, Kind.FATAL),
        (409, {"error": {"code": 409, "status": "ALREADY_EXISTS", "message": "exists"}}, Kind.EXISTS),
    ],
)
def test_sdk_errors_map_to_kinds(code, body, kind):
    assert _translate(genai_errors.APIError(code, body)).kind is kind


def test_429_retry_delay_is_read_from_retry_info():
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}],
        }
    }
    assert _translate(genai_errors.APIError(429, body)).retry_after_s == 17.0


def test_poll_backoff_grows_by_half_and_caps_at_ten_seconds():
    settings = Settings(poll_jitter=0.0)
    assert [round(poll_delay(n, settings), 2) for n in (1, 2, 3, 4)] == [1.0, 1.5, 2.25, 3.38]
    assert poll_delay(30, settings) == 10.0
    jittered = [poll_delay(1, Settings()) for _ in range(200)]
    assert min(jittered) >= 0.8 and max(jittered) <= 1.2


def test_deterministic_file_names_fit_the_api_rules():
    name = file_name_for("f" * 64)
    assert len(name) <= 40 and name == name.lower() and set(name) <= set("abcdef0123456789-vs")


def test_scheduler_takes_priority_then_fifo_and_respects_the_upload_cap():
    s = Scheduler(max_uploads=1)
    s.put("video:low", 2, uploads=True)
    s.put("video:n1", 1, uploads=True)
    s.put("video:n2", 1, uploads=True)
    s.put("analysis:high", 0, uploads=False)
    order = [s.take(0.1).task for _ in range(2)]
    assert order == ["analysis:high", "video:n1"]
    assert s.take(0.05) is None  # n2 needs an upload slot; n1 holds the only one
    s.done("video:n1")
    assert s.take(0.1).task == "video:n2"


def test_a_lease_of_a_dead_process_is_taken_over_at_once(tmp_path):
    store = DiskStore(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_owner = f"{socket.gethostname()}:{dead.stdout.strip()}:x"
    assert store.claim("analysis:a1", dead_owner, ttl=600)
    assert store.claim("analysis:a1", "other-host:1:y", ttl=600)  # owner process is gone
    assert not store.claim("analysis:a1", "third:2:z", ttl=600)  # a live (or remote) owner keeps it


def test_one_heartbeat_keeps_all_leases_of_a_holder_and_a_late_one_learns_what_it_lost(tmp_path):
    store = DiskStore(tmp_path)
    holder = Leases(store, "far-host:1:a", ttl_s=1.0)
    assert all(holder.claim(f"video:v{i}") for i in range(3))
    writes = []
    store.renew = lambda *a, **k: writes.append(a) or []  # type: ignore[method-assign]  # the per-lease rewrite
    for _ in range(6):  # 1.2 s: past every lease's own expiry, kept alive by the beat alone
        time.sleep(0.2)
        holder.renew()
    assert not store.claim("video:v0", "far-host:2:b", ttl=1.0)
    assert len(writes) <= 2, "on time, a beat writes one key, not one per lease"  # the first beat, and a slow sleep
    del store.renew
    time.sleep(1.1)  # the holder stalls: its beat runs out and another engine takes a video over
    assert store.claim("video:v0", "far-host:2:b", ttl=1.0)
    assert holder.renew() == ["video:v0"]
    assert not holder.holds("video:v0") and holder.holds("video:v1")


def done_row(name: str = "café.mp4", story: str = "Le café était plein — fin 🎬", reused: bool = False):
    analysis = make_analysis(state=AnalysisState.COMPLETED, story=story, total_tokens=12, cost_usd=0.001)
    return row_of(
        Item(
            id="i-" + name, batch_id="b1", display_name=name, source_path="/x", video_id="ab" * 32, analysis_id=analysis.id, reused=reused
        ),
        analysis,
        make_video(display_name=name),
    )


def test_csv_has_bom_keeps_accents_and_names_the_prompt_and_content():
    raw = to_csv_bytes([done_row()])
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert "café.mp4" in text and "Le café était plein — fin 🎬" in text and "ab" * 32 in text
    frame = rows_frame([done_row()])
    assert list(frame.columns)[:4] == ["file_name", "status", "prompt", "model"] and frame["status"][0] == "Done"


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x","click").mp4', "+cmd|calc.webm", "@SUM(1+1).mov", "-2+3.mkv"])
def test_csv_cells_that_could_run_as_formulas_are_neutralised(name):
    text = to_csv_bytes([done_row(name, story="=1+1 and more")]).decode("utf-8-sig")
    assert f"'{name}" in text.replace('""', '"') and "'=1+1 and more" in text


def test_totals_count_a_shared_analysis_once_and_a_reused_one_not_at_all():
    first, twin, reused = done_row("a.mp4"), done_row("b.mp4"), done_row("c.mp4", reused=True)
    t = totals([first, twin, reused])
    assert (t.rows, t.done, t.tokens, t.cost_usd) == (3, 3, 12, 0.001)
    assert reused.cost_usd == 0.0 and first.status is Status.DONE


def test_a_damaged_store_is_kept_aside_and_never_overwritten(tmp_path):
    (tmp_path / "cache.db").write_bytes(b"")
    with pytest.raises(DataDirError, match="is damaged \\(the file is empty"):
        DiskStore(tmp_path)
    assert (tmp_path / "cache.db").read_bytes() == b""  # untouched
    assert len(list(tmp_path.glob("cache.db.damaged-*"))) == 1

    good = tmp_path / "good"
    DiskStore(good).add_video(make_video())
    db = (good / "cache.db").read_bytes()
    (good / "cache.db").write_bytes(db[: len(db) // 2])
    with pytest.raises(DataDirError, match="damaged"):
        DiskStore(good)
    assert (good / "cache.db").stat().st_size == len(db) // 2


def test_time_per_stage_follows_a_videos_life_from_waiting_to_writing():
    from storyteller_core.views.reports import time_per_status

    t = 1000.0
    video = make_video(
        state=VideoState.FILE_ACTIVE,
        state_entered_at={"CREATED": t, "UPLOADING": t + 4, "UPLOADED": t + 10, "FILE_PROCESSING": t + 11, "FILE_ACTIVE": t + 30},
    )
    analysis = make_analysis(
        state=AnalysisState.COMPLETED,
        created_at=t,
        completed_at=t + 45,
        state_entered_at={"WAITING": t, "ANALYZING": t + 33, "COMPLETED": t + 45},
    )
    row = row_of(Item(id="i1", batch_id="b1", display_name="a.mp4", video_id=video.id, analysis_id=analysis.id), analysis, video)
    stats = time_per_status(None, [row])  # type: ignore[arg-type]
    assert list(stats.index) == ["Waiting", "Uploading", "Gemini is processing", "Ready to analyze", "Writing story"]
    assert list(stats["median"]) == [4.0, 6.0, 20.0, 3.0, 12.0]


def test_a_question_in_a_gemini_batch_job_says_so_instead_of_writing():
    video = make_video(state=VideoState.FILE_ACTIVE)
    analysis = make_analysis(state=AnalysisState.ANALYZING, tier="batch", batch_job="batches/123")
    item = Item(id="i1", batch_id="b1", display_name="a.mp4", video_id=video.id, analysis_id=analysis.id)
    assert row_of(item, analysis, video).label == "In a Gemini batch job"
    analysis.batch_job = None  # still being collected into a job: it is being written, as far as anyone can tell
    assert row_of(item, analysis, video).label == "Writing story"
