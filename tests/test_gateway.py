"""The gateway and the retry policy: the real SDK over loopback against the emulator.

Counts come from the emulator's own counters; time bounds are generous, so a
loaded 2-core box does not make them flake.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from storyteller_core.emulator import Emulator
from storyteller_core.errors import Cancelled, GeminiError, Kind, QuotaPaused
from storyteller_core.gemini.gateway import Gateway, RemoteFile, Uploaded, VideoPart, _HashingReader, file_name_for, normalize_sha256
from storyteller_core.gemini.retry import MIN_WAIT_S, call_with_retry, poll_delay
from storyteller_core.settings import MODELS, Settings
from storyteller_core.work.cooldown import Cooldown
from storyteller_core.work.poll_limits import PollLimits

from .conftest import TEST_KEY

ROOT = Path(__file__).resolve().parents[1]
MODEL = next(iter(MODELS))


@pytest.fixture
def gateway(emulator: Emulator) -> Gateway:
    return Gateway(TEST_KEY, emulator.base_url, request_timeout_s=5)


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    """20 MiB of random bytes: three 8 MiB chunks for the SDK."""
    path = tmp_path / "blob.mp4"
    path.write_bytes(os.urandom(20 * 1024 * 1024 + 12345))
    return path


def upload(gateway: Gateway, path: Path, name: str = "vs-test") -> Uploaded:
    return gateway.upload(path, name=name, display_name=path.name, mime_type="video/mp4", on_progress=lambda _: None)


def active(gateway: Gateway, name: str) -> RemoteFile:
    deadline = time.monotonic() + 20
    while True:
        remote = gateway.get_file(name)
        assert remote is not None
        if remote.state == "ACTIVE" or time.monotonic() > deadline:
            return remote
        time.sleep(0.1)


def generate(gateway: Gateway, uri: str, model: str = MODEL) -> str:
    return gateway.generate(model=model, video=VideoPart(uri, "video/mp4"), prompt="Tell the story", timeout_s=5).text


# -- bad bodies -----------------------------------------------------------------------------------------
CALLS = ["poll", "generate", "upload_start", "upload_final", "models"]


def _call_for(where: str, gateway: Gateway, video: Path, ready: RemoteFile):
    if where == "poll":
        return lambda: gateway.get_file(ready.name)
    if where == "generate":
        return lambda: generate(gateway, ready.uri)
    if where == "models":
        return gateway.list_models
    names = iter(f"vs-{where.replace('_', '-')}-{i}" for i in range(100))
    return lambda: upload(gateway, video, next(names))


@pytest.mark.parametrize("where", CALLS)
@pytest.mark.slow
def test_a_200_that_is_not_json_is_transient_and_retried_to_success(emulator, gateway, one_video, where):
    video = one_video("bad-body.mp4")
    ready = active(gateway, upload(gateway, video, "vs-ready").file.name)
    call = _call_for(where, gateway, video, ready)
    emulator.config.fault_on = {where}
    emulator.config.bad_body_rate = 1.0

    seen = set()
    for _ in range(6):  # both kinds of garbage: a proxy's HTML page and a truncated body
        with pytest.raises(GeminiError) as caught:
            call()
        assert caught.value.kind is Kind.TRANSIENT and caught.value.status == "BAD_RESPONSE"
        assert caught.value.message.startswith("Gemini") and "retrying" in caught.value.message
        seen.add(caught.value.message)
    assert emulator.stats.faults["bad_body"] == 6
    if where != "upload_start":  # an upload start answer is judged by its missing upload header, not its body
        assert any("HTML page" in m for m in seen) and any("truncated JSON" in m for m in seen), seen

    emulator.config.bad_body_rate = 0.5
    result = call_with_retry(call, budget_s=60)
    assert result  # a file, a story, a model list or an upload
    if where == "upload_final":  # the file was stored before its answer got garbled: a retry finds it (409)
        assert isinstance(result, Uploaded) and result.file.name.startswith("files/vs-upload-final")


# -- 429 with "retry in 0s" ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_zero_second_retry_delay_still_waits_the_floor(emulator, gateway, one_video):
    name = upload(gateway, one_video("quota.mp4")).file.name
    emulator.config.fault_on, emulator.config.rate_429, emulator.config.retry_delay_s = {"poll"}, 1.0, 0.0
    budget = 4.0

    with pytest.raises(GeminiError) as caught:
        call_with_retry(lambda: gateway.get_file(name), budget)

    assert caught.value.quota and caught.value.retry_after_s == 0.0
    sent = emulator.stats.faults["429"]
    assert 2 <= sent <= budget / MIN_WAIT_S + 1  # without the floor: hundreds


@pytest.mark.slow
def test_three_callers_share_one_quota_wait(emulator, gateway, one_video):
    name = upload(gateway, one_video("shared.mp4")).file.name
    emulator.config.fault_on, emulator.config.rate_429, emulator.config.retry_delay_s = {"poll"}, 1.0, 3.0
    cooldown = Cooldown()
    waiting = {who: threading.Event() for who in "ABC"}
    results: dict[str, object] = {}
    before = emulator.stats.requests

    def caller(who: str) -> None:
        def should_stop() -> bool:  # called on every slice of a wait: tells the test this caller is waiting
            waiting[who].set()
            return False

        try:
            results[who] = call_with_retry(lambda: gateway.get_file(name), 30, should_stop=should_stop, cooldown=cooldown)
        except Exception as exc:  # reported by the asserts below
            results[who] = exc

    threads = {who: threading.Thread(target=caller, args=(who,)) for who in "ABC"}
    threads["A"].start()
    assert waiting["A"].wait(10)  # A met the 429 and waits
    threads["B"].start()
    threads["C"].start()
    assert waiting["B"].wait(10) and waiting["C"].wait(10)  # B and C wait too, on A's cooldown
    assert emulator.stats.faults["429"] == 1
    emulator.config.rate_429 = 0.0  # the quota comes back
    for thread in threads.values():
        thread.join(30)

    assert all(isinstance(r, RemoteFile) for r in results.values()), results
    assert emulator.stats.faults["429"] == 1  # one 429, one wait; not one per caller
    assert emulator.stats.requests - before == 4  # A's 429, then one success each
    assert cooldown.exhausted_for() == 0 and cooldown.remaining() == 0


@pytest.mark.slow
def test_a_long_exhaustion_pauses_every_caller(emulator, gateway, one_video):
    name = upload(gateway, one_video("pause.mp4")).file.name
    emulator.config.fault_on, emulator.config.rate_429, emulator.config.retry_delay_s = {"poll"}, 1.0, 0.0
    cooldown = Cooldown(pause_after_s=2.0)

    started = time.time()
    with pytest.raises(QuotaPaused) as caught:
        call_with_retry(lambda: gateway.get_file(name), 60, cooldown=cooldown)
    assert time.time() - started < 30  # paused after ~2 s of 429s, not after the 60 s budget
    assert caught.value.resume_at == cooldown.paused_until >= started + 290  # about 5 minutes
    sent = emulator.stats.faults["429"]
    assert 2 <= sent <= 2.0 / MIN_WAIT_S + 2

    with pytest.raises(QuotaPaused):  # everyone else stops at once, without asking Gemini
        call_with_retry(lambda: gateway.get_file(name), 60, cooldown=cooldown)
    assert emulator.stats.faults["429"] == sent

    emulator.config.rate_429 = 0.0
    cooldown.resume()
    assert call_with_retry(lambda: gateway.get_file(name), 60, cooldown=cooldown).name == name
    assert cooldown.paused_until is None and cooldown.exhausted_for() == 0


@pytest.mark.slow
def test_a_budget_spent_on_quota_raises_quota_paused_not_the_429(emulator, gateway, one_video):
    name = upload(gateway, one_video("budget.mp4")).file.name
    emulator.config.fault_on, emulator.config.rate_429, emulator.config.retry_delay_s = {"poll"}, 1.0, 0.0
    cooldown = Cooldown(pause_after_s=120)

    with pytest.raises(QuotaPaused) as caught:
        call_with_retry(lambda: gateway.get_file(name), 2.5, cooldown=cooldown)

    assert caught.value.resume_at < time.time() + 70  # this call waits out the cooldown; the batch is not paused
    assert cooldown.paused_until is None and cooldown.exhausted_for() > 0


# -- cancel -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wait_in", ["backoff", "cooldown"])
def test_cancel_during_a_30_second_wait_lands_within_a_second(emulator, gateway, one_video, wait_in):
    name = upload(gateway, one_video("cancel.mp4")).file.name
    emulator.config.fault_on, emulator.config.rate_429, emulator.config.retry_delay_s = {"poll"}, 1.0, 30.0
    cooldown = Cooldown()
    if wait_in == "cooldown":
        cooldown.note_exhausted(30.0)  # another caller met the 429: this one waits before its first request
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()

    started = time.monotonic()
    with pytest.raises(Cancelled):
        call_with_retry(lambda: gateway.get_file(name), 120, should_stop=stop.is_set, cooldown=cooldown if wait_in == "cooldown" else None)
    assert time.monotonic() - started < 0.5 + 1.5
    assert emulator.stats.faults["429"] == (0 if wait_in == "cooldown" else 1)


# -- what a 403/404 is about ------------------------------------------------------------------------------
def test_a_missing_model_is_kind_model_and_a_missing_file_is_gone(emulator, gateway, one_video):
    ready = active(gateway, upload(gateway, one_video("model.mp4")).file.name)

    with pytest.raises(GeminiError) as caught:
        generate(gateway, ready.uri, model="gemini-0-retired")
    assert caught.value.kind is Kind.MODEL and caught.value.code == 404 and "models/gemini-0-retired" in caught.value.message

    assert gateway.get_file("files/vs-never-uploaded") is None
    gateway.delete_file(ready.name)
    with pytest.raises(GeminiError) as caught:
        generate(gateway, ready.uri)
    assert caught.value.kind is Kind.GONE
    assert sorted(gateway.list_models()) == sorted(emulator.config.models)


# -- sha256 -----------------------------------------------------------------------------------------------
def test_upload_hashes_what_it_sent_and_gemini_agrees(emulator, gateway, blob):
    uploaded = upload(gateway, blob, file_name_for("a" * 64))

    expected = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert uploaded.sha256 == expected
    assert uploaded.file.sha256 == expected
    assert gateway.get_file(uploaded.file.name).sha256 == expected

    again = upload(gateway, blob, file_name_for("a" * 64))  # 409: the existing file, nothing read or hashed
    assert again.file.name == uploaded.file.name and again.sha256 is None and again.file.sha256 == expected


@pytest.mark.slow
def test_a_resent_chunk_is_hashed_once(emulator, gateway, blob):
    emulator.config.fail_every_nth_chunk = 2  # the second chunk is answered 500 once; the SDK sends it again
    uploaded = upload(gateway, blob)

    assert emulator.stats.faults["chunk"] >= 1
    expected = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert uploaded.sha256 == expected == uploaded.file.sha256


def test_the_hashing_reader_skips_rereads_and_refuses_holes(tmp_path):
    data = os.urandom(1000)
    path = tmp_path / "f"
    path.write_bytes(data)
    with path.open("rb") as raw, _HashingReader(raw, lambda _: None) as reader:
        reader.read(400)
        reader.seek(100)  # a resend reads part of it again
        reader.read(500)
        reader.read()
        assert reader.sha256() == hashlib.sha256(data).hexdigest()
    with path.open("rb") as raw, _HashingReader(raw, lambda _: None) as reader:
        reader.read(400)
        reader.seek(500)  # bytes 400..500 never read
        reader.read()
        assert reader.sha256() is None
    with path.open("rb") as raw, _HashingReader(raw, lambda _: None) as reader:
        reader.read(999)  # short of EOF
        assert reader.sha256() is None


def test_sha256_hash_is_normalised_from_every_spelling():
    digest = hashlib.sha256(b"video").digest()
    hexed = digest.hex()
    assert normalize_sha256(base64.b64encode(digest).decode()) == hexed  # what the File resource documents
    assert normalize_sha256(base64.b64encode(hexed.encode()).decode()) == hexed  # what Gemini has been seen to send
    assert normalize_sha256(base64.urlsafe_b64encode(digest).decode().rstrip("=")) == hexed
    assert normalize_sha256(hexed.upper()) == hexed
    for junk in (None, "", "not base64!", base64.b64encode(b"short").decode()):
        assert normalize_sha256(junk) is None


# -- the rest of the policy --------------------------------------------------------------------------------
def test_poll_delay_grows_by_half_and_stays_under_the_cap():
    settings = Settings(poll_initial_s=1.0, poll_factor=1.5, poll_max_s=10.0, poll_jitter=0.2)
    assert 0.8 <= poll_delay(1, settings) <= 1.2
    assert 1.5 * 0.8 <= poll_delay(2, settings) <= 1.5 * 1.2
    assert all(poll_delay(50, settings) <= 12.0 for _ in range(100))


def test_a_poll_slot_is_released_only_when_it_was_taken():
    polls = PollLimits(max_at_once=1, per_second=1000)
    with polls.slot() as first:
        assert first.ok
        with polls.slot() as second:
            assert not second.ok and second.wait_s > 0
    time.sleep(0.01)
    with polls.slot() as third:  # the refused slot released nothing (a BoundedSemaphore would raise)
        assert third.ok


# -- the emulator as its own process ----------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_the_emulator_process_deletes_its_storage_when_stopped(tmp_path, one_video, sig):
    root = tmp_path / "storage"
    root.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "storyteller_core.emulator", "--port", str(port), "--storage-root", str(root)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, proc)
        upload(Gateway(TEST_KEY, url, request_timeout_s=5), one_video("sigterm.mp4"))
        assert any(p.is_file() for p in root.rglob("*"))  # bytes on disk
        proc.send_signal(sig)
        assert proc.wait(15) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(root.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(150):
        try:
            urllib.request.urlopen(url + "/v1beta/files", timeout=1)
        except urllib.error.HTTPError:
            return
        except OSError:
            assert proc.poll() is None, "the emulator exited"
            time.sleep(0.1)
    raise AssertionError("the emulator did not start")
