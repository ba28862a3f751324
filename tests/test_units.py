"""Pure functions and small pieces: transitions, error mapping, backoff, scheduler, leases, export."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.genai import errors as genai_errors

from storyteller_core.config import Settings
from storyteller_core.errors import Kind
from storyteller_core.export import jobs_frame, to_csv_bytes
from storyteller_core.gemini import _translate, file_name_for
from storyteller_core.jobs import Job, State, TransitionError, check_transition
from storyteller_core.pipeline import poll_delay
from storyteller_core.scheduler import Scheduler
from storyteller_core.store import JobStore


def make_job(**kw) -> Job:
    values = dict(display_name="café.mp4", source_path="/x", size_bytes=1, sha256="ab" * 32, mime_type="video/mp4",
                  model="gemini-2.5-flash", prompt="p", batch_id="b1")
    values.update(kw)
    return Job(**values)


def test_transitions_allow_the_pipeline_and_refuse_skips():
    check_transition(State.CREATED, State.UPLOADING)
    check_transition(State.ANALYZING, State.CREATED)  # file vanished: upload again
    with pytest.raises(TransitionError):
        check_transition(State.CREATED, State.ANALYZING)
    with pytest.raises(TransitionError):
        check_transition(State.COMPLETED, State.CREATED)


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
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}}
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
    s.put("low", 2, uploads=True)
    s.put("n1", 1, uploads=True)
    s.put("n2", 1, uploads=True)
    s.put("high-poll", 0, uploads=False)
    order = [s.take(0.1).job_id for _ in range(2)]
    assert order == ["high-poll", "n1"]
    assert s.take(0.05) is None  # n2 needs an upload slot; n1 holds the only one
    s.done("n1")
    assert s.take(0.1).job_id == "n2"


def test_a_lease_of_a_dead_process_is_taken_over_at_once(tmp_path):
    store = JobStore(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    dead_owner = f"{socket.gethostname()}:{dead.stdout.strip()}:x"
    assert store.claim("j1", dead_owner, ttl=600)
    assert store.claim("j1", "other-host:1:y", ttl=600)  # owner process is gone
    assert not store.claim("j1", "third:2:z", ttl=600)  # a live (or remote) owner keeps it


def test_store_round_trips_plain_dicts_and_indexes(tmp_path):
    store = JobStore(tmp_path)
    job = store.create(make_job())
    store.transition(job.id, State.UPLOADING, upload_count=1)
    raw = store.cache.get("job:" + job.id)
    assert isinstance(raw, dict) and raw["state"] == "UPLOADING"
    assert [j.id for j in store.jobs_by_sha("ab" * 32)] == [job.id]
    assert [j.id for j in store.jobs_in_batch("b1")] == [job.id]
    store.delete(job.id)
    assert store.get(job.id) is None and store.job_ids() == []


def test_csv_has_bom_and_keeps_accents():
    job = make_job(state=State.COMPLETED, story="Le café était plein — fin 🎬", total_tokens=12, cost_usd=0.001)
    raw = to_csv_bytes([job])
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert "café.mp4" in text and "Le café était plein — fin 🎬" in text
    assert list(jobs_frame([job]).columns)[:4] == ["file_name", "status", "story", "error"]


def test_the_unfinished_index_follows_every_state_change(tmp_path):
    store = JobStore(tmp_path)
    running = store.create(make_job())
    done = store.create(make_job(state=State.COMPLETED))
    assert [j.id for j in store.unfinished()] == [running.id]
    store.transition(running.id, State.FAILED)
    assert store.unfinished() == []
    store.transition(running.id, State.CREATED)  # a retry
    assert [j.id for j in store.unfinished()] == [running.id]
    store.delete(running.id)
    assert store.unfinished() == [] and store.get(done.id) is not None


def test_a_store_without_the_unfinished_index_rebuilds_it(tmp_path):
    store = JobStore(tmp_path)
    job = store.create(make_job())
    store.cache.delete("index:unfinished")  # as a data dir written before the index existed
    assert [j.id for j in store.unfinished()] == [job.id]


def test_steps_resumed_after_a_crash_may_enter_their_state_again():
    check_transition(State.UPLOADING, State.UPLOADING)
    check_transition(State.ANALYZING, State.ANALYZING)
