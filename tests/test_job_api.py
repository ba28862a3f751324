"""The job API in a real server against the emulator: access, batches and jobs, SSE, the OpenAPI document."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from tusclient import client as tus_client

from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.intake.samples import make_video

from .api_server import AUTH, TOKEN, AppServer, padded_video
from .helpers import read_csv, wait_until

pytestmark = pytest.mark.slow
LIFE = ["CREATED", "UPLOADING", "UPLOADED", "FILE_PROCESSING", "FILE_ACTIVE", "ANALYZING", "COMPLETED"]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(processing_delay_s=1.5, analysis_delay_s=0.3)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, emu: Emulator) -> Iterator[AppServer]:
    tmp = tmp_path_factory.mktemp("api")
    (tmp / "allowed").mkdir()
    app = AppServer(tmp, emu.base_url, STORYTELLER_API_ROOTS=str(tmp / "allowed"), STORYTELLER_SSE_KEEPALIVE_S="0.4")
    app.start()
    yield app
    app.stop()


def upload(server: AppServer, path: Path) -> str:
    uploader = tus_client.TusClient(server.api + "/uploads", headers=AUTH).uploader(
        str(path), chunk_size=256 * 1024, metadata={"filename": path.name}, retries=0
    )
    uploader.upload()
    assert uploader.url
    return uploader.url


def new_batch(server: AppServer, body: dict) -> dict:
    answer = httpx.post(server.api + "/batches", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()


def ended(server: AppServer, batch_id: str) -> dict:
    state: dict = {}

    def done() -> bool:
        state.update(httpx.get(f"{server.api}/batches/{batch_id}", headers=AUTH).json())
        return state["status"] == "ended"

    wait_until(done, timeout=90, what=f"batch {batch_id} to end")
    return state


class Events:
    """An SSE client on httpx: frames as dicts, comments counted; stops after ``stop_after`` status events."""

    def __init__(self, url: str, last_id: str | None = None) -> None:
        self.url, self.last_id = url, last_id
        self.frames: list[dict] = []
        self.comments = 0

    def read(self, stop_after: int | None = None, timeout: float = 90) -> Events:
        headers = {**AUTH, **({"Last-Event-ID": self.last_id} if self.last_id else {})}
        seen = 0
        with httpx.stream("GET", self.url, headers=headers, timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            frame: dict = {}
            for line in response.iter_lines():
                if line.startswith(":"):
                    self.comments += 1
                elif line == "":
                    if "data" in frame:
                        frame["data"] = json.loads(frame["data"])
                        self.frames.append(frame)
                        self.last_id = frame.get("id", self.last_id)
                        seen += frame["event"] == "status"
                        if frame["event"] == "end" or (stop_after is not None and seen >= stop_after):
                            return self
                    frame = {}
                else:
                    key, _, value = line.partition(":")
                    frame[key] = value.removeprefix(" ")
        return self

    def statuses(self, job_id: str) -> list[str]:
        return [f["data"]["status"] for f in self.frames if f["event"] == "status" and f["data"]["job_id"] == job_id]


# -- access -----------------------------------------------------------------------------------------
def test_every_api_route_needs_the_bearer_token_and_health_does_not(server: AppServer) -> None:
    routes = [
        ("GET", "/batches/x"),
        ("POST", "/batches"),
        ("GET", "/jobs/x"),
        ("POST", "/jobs/x/cancel"),
        ("GET", "/batches/x/events"),
        ("GET", "/batches/x/export.csv"),
        ("POST", "/uploads"),
        ("OPTIONS", "/uploads"),
        ("HEAD", "/uploads/x"),
        ("GET", "/openapi.json"),
        ("GET", "/presets"),
        ("GET", ""),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
        for method, path in routes:
            answer = httpx.request(method, server.api + path, headers=headers)
            assert answer.status_code == 401, (headers, method, path, answer.status_code)
            if method != "HEAD":
                assert answer.json()["error"]["code"] == "unauthorized"
                assert "Authorization: Bearer" in answer.json()["error"]["message"]
            assert answer.headers["www-authenticate"].startswith("Bearer")
    # the page's ways in do not open the API: the token in the address, the session cookie
    assert httpx.get(f"{server.api}/presets?token={TOKEN}").status_code == 401
    entered = httpx.get(f"{server.url}/?token={TOKEN}")
    assert entered.status_code == 303
    assert httpx.get(server.api + "/presets", cookies=entered.cookies).status_code == 401
    assert httpx.get(server.api + "/presets", headers=AUTH).status_code == 200
    # the same Host and Origin rules as the pages
    assert httpx.get(server.api + "/presets", headers={**AUTH, "Host": "evil.example"}).status_code == 400
    hostile = httpx.get(server.api + "/presets", headers={**AUTH, "Origin": "http://evil.example"})
    assert hostile.status_code == 403 and "access-control-allow-origin" not in hostile.headers
    preflight = httpx.options(server.api + "/batches", headers={"Origin": server.url, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers  # CORS off

    # a path or method the API does not have answers JSON, never the app's page
    missing = httpx.get(server.api + "/nothing/here", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "no_such_route"
    wrong = httpx.delete(server.api + "/batches/x", headers=AUTH)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD" and wrong.json()["error"]["message"]

    health = httpx.get(server.url + "/health")
    assert health.status_code == 200, health.text
    assert health.json() == {"ok": True, "engine": None, "gemini": None, "demo": False}


def test_api_tokens_are_made_with_the_app_token_stored_hashed_and_revocable(server: AppServer) -> None:
    made = httpx.post(server.api + "/tokens", json={"name": "nightly script"}, headers=AUTH)
    assert made.status_code == 201, made.text
    secret, token_id = made.json()["token"], made.json()["id"]
    assert secret.startswith("vst_") and len(secret) > 40
    mine = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(server.api + "/presets", headers=mine).status_code == 200
    assert httpx.post(server.api + "/tokens", json={"name": "another"}, headers=mine).status_code == 403
    assert httpx.get(server.api + "/tokens", headers=mine).status_code == 403
    listed = httpx.get(server.api + "/tokens", headers=AUTH).json()["tokens"]
    assert [t["name"] for t in listed] == ["nightly script"] and set(listed[0]) == {"id", "name", "created_at", "last_used_at"}
    stored = server.data_dir / "api-tokens.json"
    assert secret not in stored.read_text() and stored.stat().st_mode & 0o077 == 0
    assert httpx.get(server.url + "/?token=" + secret).status_code == 401  # an API token opens no page
    assert httpx.delete(f"{server.api}/tokens/{token_id}", headers=AUTH).status_code == 204
    assert httpx.get(server.api + "/presets", headers=mine).status_code == 401
    assert httpx.delete(f"{server.api}/tokens/{token_id}", headers=AUTH).status_code == 404
    assert httpx.post(server.api + "/tokens", json={}, headers=AUTH).status_code == 400


def test_the_openapi_document_validates(server: AppServer) -> None:
    document = httpx.get(server.api + "/openapi.json", headers=AUTH).json()
    validate(document)
    assert document["servers"] == [{"url": "/api/v1"}]
    assert {"/batches", "/jobs/{job_id}", "/uploads", "/batches/{batch_id}/events"} <= set(document["paths"])
    statuses = document["components"]["schemas"]["JobStatus"]["enum"]
    assert statuses == [*LIFE[:-1], "COMPLETED", "FAILED", "CANCELLED"]


# -- batches and jobs -------------------------------------------------------------------------------
def test_a_batch_from_two_uploads_and_a_path_completes_and_exports(server: AppServer, tmp_path: Path) -> None:
    first = upload(server, padded_video(tmp_path / "first.mp4", 1024 * 1024, seed=11))
    second = upload(server, make_video(tmp_path / "second clip.mp4", seconds=1, seed=12))
    local = make_video(server.tmp / "allowed" / "on disk.mp4", seconds=1, seed=13)
    made = new_batch(
        server,
        {
            "uploads": [first, second.rsplit("/", 1)[1]],
            "paths": [str(local)],
            "preset": "Story",
            "name": "From a script",
            "priority": "high",
        },
    )
    assert [j["file_name"] for j in made["jobs"]] == ["first.mp4", "second clip.mp4", "on disk.mp4"]
    listed = httpx.get(server.api + "/batches?limit=3", headers=AUTH).json()["batches"]
    assert listed[0] == {"id": made["id"], "name": "From a script", "created_at": listed[0]["created_at"]}
    assert len(listed) <= 3
    assert httpx.get(server.api + "/batches?limit=0", headers=AUTH).status_code == 400
    batch = ended(server, made["id"])
    assert batch["name"] == "From a script" and batch["counts"] == {"COMPLETED": 3}
    for job in batch["jobs"]:
        assert job["status"] == "COMPLETED" and job["progress"] == 100 and job["error"] is None
        assert job["result"]["story"] and job["result"]["usage"]["total_tokens"] > 0
        assert job["result"]["model"]
    one = httpx.get(f"{server.api}/jobs/{made['jobs'][2]['id']}", headers=AUTH).json()
    assert one["source"] == str(local.resolve()) and one["status"] == "COMPLETED"

    csv_answer = httpx.get(f"{server.api}/batches/{made['id']}/export.csv", headers=AUTH)
    assert csv_answer.headers["content-type"].startswith("text/csv")
    (tmp_path / "out.csv").write_bytes(csv_answer.content)
    rows = read_csv(tmp_path / "out.csv")
    assert sorted(r["file_name"] for r in rows) == ["first.mp4", "on disk.mp4", "second clip.mp4"]
    assert all(r["status"] == "Done" and r["story"] for r in rows)
    exported = httpx.get(f"{server.api}/batches/{made['id']}/export.json", headers=AUTH).json()
    assert len(exported) == 3 and all(e["story"] for e in exported)

    again = httpx.post(f"{server.api}/jobs/{made['jobs'][0]['id']}/ask", headers=AUTH, json={"prompt": "List the colours you see."})
    assert again.status_code == 201, again.text
    asked = ended(server, again.json()["id"])
    assert asked["counts"] == {"COMPLETED": 1}
    assert asked["jobs"][0]["result"]["story"] != batch["jobs"][0]["result"]["story"]


def test_refusals_say_what_happened(server: AppServer, tmp_path: Path) -> None:
    outside = make_video(tmp_path / "elsewhere.mp4", seconds=1)
    cases = [
        ({"paths": [str(outside)]}, 403, "outside_roots"),
        ({"paths": [str(server.tmp / "allowed" / ".." / ".." / "x.mp4")]}, 403, "outside_roots"),
        ({"uploads": ["0" * 32]}, 404, "unknown_upload"),
        ({}, 400, "no_sources"),
        ({"urls": ["https://www.youtube.com/watch?v=dQw4w9WgXcQ"], "preset": "Nope"}, 400, "unknown_preset"),
        ({"urls": ["x"], "priority": "urgent"}, 400, "bad_request"),
        ({"urls": ["x"], "surprise": 1}, 400, "bad_request"),
    ]
    for body, status, code in cases:
        answer = httpx.post(server.api + "/batches", json=body, headers=AUTH)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (body, answer.text)
        assert answer.json()["error"]["message"]
    assert httpx.post(server.api + "/batches", content=b"{", headers={**AUTH, "Content-Type": "application/json"}).status_code == 400
    assert httpx.get(server.api + "/jobs/nope", headers=AUTH).status_code == 404
    assert httpx.get(server.api + "/batches/nope/events", headers=AUTH).status_code == 404

    # a refused file and a link that is no YouTube link are rows with their reason, like on the Batch page
    made = new_batch(server, {"urls": ["https://example.com/video.mp4"]})
    [job] = ended(server, made["id"])["jobs"]
    assert job["status"] == "FAILED" and job["error"]["code"] and "YouTube" in job["error"]["message"]


def test_cancel_and_retry(server: AppServer, emu: Emulator, tmp_path: Path) -> None:
    local = make_video(server.tmp / "allowed" / "slow.mp4", seconds=1, seed=21)
    emu.config.processing_delay_s = 30.0
    try:
        made = new_batch(server, {"paths": [str(local)]})
        job_id = made["jobs"][0]["id"]
        wait_until(
            lambda: httpx.get(f"{server.api}/jobs/{job_id}", headers=AUTH).json()["status"] == "FILE_PROCESSING",
            timeout=30,
            what="the job to reach FILE_PROCESSING",
        )
        cancelled = httpx.post(f"{server.api}/jobs/{job_id}/cancel", headers=AUTH).json()
        assert cancelled["id"] == job_id
        wait_until(
            lambda: httpx.get(f"{server.api}/jobs/{job_id}", headers=AUTH).json()["status"] == "CANCELLED",
            timeout=30,
            what="the job to be cancelled",
        )
    finally:
        emu.config.processing_delay_s = 1.5
    retried = httpx.post(f"{server.api}/batches/{made['id']}/retry", headers=AUTH)
    assert retried.status_code == 200 and retried.json()["jobs"][0]["status"] != "CANCELLED"
    assert ended(server, made["id"])["counts"] == {"COMPLETED": 1}


# -- live events ------------------------------------------------------------------------------------
def test_sse_tells_every_status_in_order_and_resumes_after_a_disconnect(server: AppServer, tmp_path: Path) -> None:
    clips = [make_video(server.tmp / "allowed" / f"live {n}.mp4", seconds=1, seed=30 + n) for n in range(2)]
    made = new_batch(server, {"paths": [str(c) for c in clips], "prompt": "What happens?"})
    url = f"{server.api}/batches/{made['id']}/events"
    whole = Events(url)
    import threading

    reader = threading.Thread(target=whole.read)
    reader.start()
    cut = Events(url).read(stop_after=5)  # disconnects after five status events
    assert len([f for f in cut.frames if f["event"] == "status"]) == 5
    resumed = Events(url, last_id=cut.last_id).read()
    reader.join(120)

    assert whole.frames[-1]["event"] == "end"
    assert whole.frames[-1]["data"] == {"batch_id": made["id"], "counts": {"COMPLETED": 2}}
    for job in made["jobs"]:
        assert whole.statuses(job["id"]) == LIFE, whole.frames  # every status, in order, once
    # the interrupted client, resumed with Last-Event-ID, saw exactly what the other one saw: no gap, no repeat
    assert cut.frames + resumed.frames == whole.frames
    ids = [f["id"] for f in whole.frames]
    assert len(set(ids)) == len(ids)
    for frame in whole.frames[:-1]:
        assert set(frame["data"]) == {"job_id", "status", "progress", "updated_at"}
        assert 0 <= frame["data"]["progress"] <= 100
    assert whole.comments > 0  # keep-alive comments while Gemini processed the files

    # a client arriving after the end gets the story so far and the end; one job's stream ends with that job
    late = Events(url).read(timeout=10)
    assert late.frames[-1]["event"] == "end"
    assert late.statuses(made["jobs"][0]["id"])[-1] == "COMPLETED"
    one = Events(f"{server.api}/jobs/{made['jobs'][1]['id']}/events").read(timeout=10)
    assert {f["data"].get("job_id") for f in one.frames if f["event"] == "status"} == {made["jobs"][1]["id"]}
    assert one.frames[-1]["event"] == "end" and one.frames[-1]["data"]["counts"] == {"COMPLETED": 1}
    # an id from another server's life: the state of every job now, then the end
    stale = Events(url, last_id="deadbeef-3").read(timeout=10)
    assert [f["data"]["status"] for f in stale.frames if f["event"] == "status"] == ["COMPLETED", "COMPLETED"]


def test_the_server_stops_with_event_streams_open(emu: Emulator, tmp_path: Path) -> None:
    """uvicorn waits for every open response before it stops: a stream of a batch still running must end."""
    import signal
    import threading

    (tmp_path / "allowed").mkdir()
    app = AppServer(tmp_path, emu.base_url, STORYTELLER_API_ROOTS=str(tmp_path / "allowed")).start()
    emu.config.processing_delay_s = 120.0
    try:
        clip = make_video(tmp_path / "allowed" / "long.mp4", seconds=1, seed=40)
        made = new_batch(app, {"paths": [str(clip)]})
        streams = [Events(f"{app.api}/batches/{made['id']}/events"), Events(f"{app.api}/jobs/{made['jobs'][0]['id']}/events")]
        readers = [threading.Thread(target=s.read, kwargs={"timeout": 60}, daemon=True) for s in streams]
        for reader in readers:
            reader.start()
        wait_until(
            lambda: all(any(f["data"].get("status") == "FILE_PROCESSING" for f in s.frames) for s in streams),
            timeout=30,
            what="both streams to tell FILE_PROCESSING",
        )
        started = time.monotonic()
        app.stop(signal.SIGTERM)
        assert time.monotonic() - started < 15
        for reader in readers:
            reader.join(10)
            assert not reader.is_alive()
    finally:
        emu.config.processing_delay_s = 1.5
        app.stop()
