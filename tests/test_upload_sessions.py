"""Resumable browser uploads, the core half (storyteller_core.intake.upload_sessions): no server, no browser."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from storyteller_core import Settings
from storyteller_core.intake.media import PARTIAL_PREFIX
from storyteller_core.intake.samples import make_video
from storyteller_core.intake.spool import sweep
from storyteller_core.intake.upload_sessions import UploadError, UploadSessions
from storyteller_core.storage.disk_store import DiskStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_file_bytes=64 * 1024**2)


@pytest.fixture
def sessions(settings: Settings, clock: Clock) -> UploadSessions:
    return UploadSessions(settings, clock=clock, disk_margin=0)


@pytest.fixture
def video(tmp_path: Path) -> bytes:
    return make_video(tmp_path / "src" / "clip.mp4", seconds=2, seed=5).read_bytes()


def send(sessions: UploadSessions, upload_id: str, data: bytes, start: int, end: int | None = None, piece: int = 4096) -> int:
    """Pieces of ``piece`` bytes of ``data`` from ``start`` to ``end``, one receiver each (one PUT each)."""
    offset, end = start, len(data) if end is None else end
    while offset < end:
        with sessions.receive(upload_id, offset, len(data)) as receiver:
            offset = receiver.write(data[offset : min(end, offset + piece)])
    return offset


def partials(settings: Settings) -> list[Path]:
    return sorted(settings.spool_dir.glob(PARTIAL_PREFIX + "*"))


def test_pieces_in_order_make_the_file_named_by_its_sha256(sessions: UploadSessions, settings: Settings, video: bytes) -> None:
    started = sessions.start("clip.MP4", len(video))
    assert started["received"] == 0 and started["size"] == len(video)
    assert [p.name for p in partials(settings)] == [f"{PARTIAL_PREFIX}upload-{started['id']}"]  # the sweep's prefix
    assert send(sessions, started["id"], video, 0, piece=1000) == len(video)
    accepted = []
    candidate = sessions.finish(started["id"], accepted.append)
    sha = hashlib.sha256(video).hexdigest()
    assert candidate.ok, candidate.error_message
    assert candidate.sha256 == sha and candidate.size_bytes == len(video)
    assert candidate.path == settings.spool_dir / f"{sha}.mp4"
    assert hashlib.sha256(candidate.path.read_bytes()).hexdigest() == sha
    assert candidate.probe is not None and candidate.probe.duration_s > 1
    assert accepted == [candidate]
    assert partials(settings) == []
    # a repeated finish (the answer was lost) gives the same result and does not list the file twice
    assert sessions.finish(started["id"], accepted.append) is candidate
    assert accepted == [candidate]
    assert sessions.status(started["id"])["state"] == "finished"


def test_resume_from_the_received_offset_after_a_dropped_connection(sessions: UploadSessions, video: bytes) -> None:
    upload_id = sessions.start("clip.mp4", len(video))["id"]
    receiver = sessions.receive(upload_id, 0, len(video))
    receiver.write(video[:3000])
    receiver.write(video[3000:5000])
    receiver.close()  # the connection dropped half way through a piece: what arrived is kept
    status = sessions.status(upload_id)
    assert status["received"] == 5000 and not status["busy"]
    with pytest.raises(UploadError) as early:
        sessions.finish(upload_id)
    assert early.value.status == 409 and early.value.received == 5000
    send(sessions, upload_id, video, status["received"])
    assert sessions.finish(upload_id).sha256 == hashlib.sha256(video).hexdigest()


@pytest.mark.parametrize("offset", [0, 100, 5001])
def test_a_piece_at_any_other_offset_is_refused_with_where_to_resume(sessions: UploadSessions, video: bytes, offset: int) -> None:
    upload_id = sessions.start("clip.mp4", len(video))["id"]
    send(sessions, upload_id, video, 0, 5000)  # 5000 bytes in
    with pytest.raises(UploadError) as refused:
        sessions.receive(upload_id, offset, len(video))
    assert refused.value.status == 409 and refused.value.code == "wrong_offset" and refused.value.received == 5000
    send(sessions, upload_id, video, 5000)
    assert sessions.finish(upload_id).sha256 == hashlib.sha256(video).hexdigest()  # nothing written twice


def test_too_large_files_and_extra_bytes_are_refused(sessions: UploadSessions, settings: Settings, video: bytes) -> None:
    with pytest.raises(UploadError) as big:
        sessions.start("huge.mp4", settings.max_file_bytes + 1)
    assert big.value.status == 413 and "limit" in big.value.message
    with pytest.raises(UploadError) as empty:
        sessions.start("empty.mp4", 0)
    assert empty.value.status == 400 and "empty" in empty.value.message
    for bad in (-1, "12", 1.5, None, True):
        with pytest.raises(UploadError) as wrong:
            sessions.start("x.mp4", bad)  # type: ignore[arg-type]
        assert wrong.value.status == 400
    assert partials(settings) == []
    upload_id = sessions.start("clip.mp4", 100)["id"]
    with pytest.raises(UploadError) as total:
        sessions.receive(upload_id, 0, 101)
    assert total.value.status == 400
    with sessions.receive(upload_id, 0, 100) as receiver:
        receiver.write(video[:60])
        with pytest.raises(UploadError) as extra:
            receiver.write(video[60:160])
    assert extra.value.status == 413 and sessions.status(upload_id)["received"] == 60


def test_no_room_on_disk_is_refused_before_any_byte(settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = UploadSessions(settings, clock=clock, disk_margin=1000)

    class Usage:
        free = 5000

    monkeypatch.setattr("storyteller_core.intake.upload_sessions.shutil.disk_usage", lambda _path: Usage)
    first = sessions.start("a.mp4", 3000)  # 3000 + 1000 margin fit in 5000
    with pytest.raises(UploadError) as full:
        sessions.start("b.mp4", 3000)  # the first one still needs its 3000
    assert full.value.status == 507 and "STORYTELLER_DATA_DIR" in full.value.message
    sessions.cancel(first["id"])
    sessions.start("b.mp4", 3000)


def test_names_are_sanitized(sessions: UploadSessions, settings: Settings, video: bytes) -> None:
    started = sessions.start("../../etc/\x00evil\u202e\nname.MOV", len(video))
    assert started["name"] == "evilname.MOV"
    send(sessions, started["id"], video, 0)
    candidate = sessions.finish(started["id"])
    assert candidate.display_name == "evilname.MOV"
    assert candidate.path.parent == settings.spool_dir and candidate.path.name == f"{candidate.sha256}.mov"
    assert sorted(p.name for p in settings.spool_dir.iterdir()) == [candidate.path.name]


def test_a_refused_file_is_not_kept(sessions: UploadSessions, settings: Settings) -> None:
    junk = b"not a video at all " * 100
    upload_id = sessions.start("notes.mp4", len(junk))["id"]
    send(sessions, upload_id, junk, 0)
    accepted = []
    candidate = sessions.finish(upload_id, accepted.append)
    assert not candidate.ok and candidate.error_code in ("not_video", "unreadable") and "notes.mp4" in candidate.error_message
    assert accepted == [candidate]  # listed with its reason, like any refused intake
    assert list(settings.spool_dir.iterdir()) == []


def test_partials_are_cleaned(sessions: UploadSessions, settings: Settings, clock: Clock, video: bytes) -> None:
    cancelled = sessions.start("a.mp4", len(video))["id"]
    send(sessions, cancelled, video, 0, 2000)
    idle = sessions.start("b.mp4", len(video))["id"]
    send(sessions, idle, video, 0, 2000)
    assert len(partials(settings)) == 2
    sessions.cancel(cancelled)
    assert len(partials(settings)) == 1
    with pytest.raises(UploadError) as unknown:
        sessions.status(cancelled)
    assert unknown.value.status == 404
    clock.now += sessions.idle_s - 1
    assert sessions.expire() == []
    clock.now += 2
    assert sessions.expire() == [idle] and partials(settings) == [] and len(sessions) == 0
    # a crash leaves a partial behind: the spool sweep at engine start removes it once it is old enough
    left = sessions.start("c.mp4", len(video))["id"]
    send(sessions, left, video, 0, 2000)
    store = DiskStore(settings.data_dir / "store")
    try:
        sweep(store, settings.spool_dir)
        assert len(partials(settings)) == 1  # fresh: may be an upload under way
        sweep(store, settings.spool_dir, grace_s=-1)
        assert partials(settings) == []
    finally:
        store.close()
    with pytest.raises(UploadError) as gone:
        sessions.receive(left, 2000, len(video))
    assert gone.value.status == 410 and len(sessions) == 0


def test_a_finished_session_is_forgotten_later_but_its_file_stays(sessions: UploadSessions, clock: Clock, video: bytes) -> None:
    upload_id = sessions.start("clip.mp4", len(video))["id"]
    send(sessions, upload_id, video, 0)
    candidate = sessions.finish(upload_id)
    clock.now += sessions.finished_keep_s + 1
    assert sessions.expire() == [upload_id]
    assert candidate.path.exists()  # the checked list owns it now; the spool's rules delete it


def test_one_writer_at_a_time_and_a_stale_one_is_replaced(sessions: UploadSessions, clock: Clock, video: bytes) -> None:
    upload_id = sessions.start("clip.mp4", len(video))["id"]
    old = sessions.receive(upload_id, 0, len(video))
    old.write(video[:1000])
    with pytest.raises(UploadError) as busy:
        sessions.receive(upload_id, 1000, len(video))
    assert busy.value.status == 409 and busy.value.code == "busy" and busy.value.received == 1000
    with pytest.raises(UploadError):
        sessions.finish(upload_id)
    clock.now += sessions.stale_writer_s + 1  # a half-open connection that sends nothing more
    new = sessions.receive(upload_id, 1000, len(video))
    with pytest.raises(UploadError) as superseded:
        old.write(video[1000:2000])
    assert superseded.value.code == "superseded"
    old.close()  # the old request ending does not free the new writer's claim
    assert sessions.status(upload_id)["busy"]
    new.write(video[1000:])
    new.close()
    assert sessions.finish(upload_id).sha256 == hashlib.sha256(video).hexdigest()


def test_concurrent_uploads_do_not_mix(sessions: UploadSessions, tmp_path: Path) -> None:
    files = [make_video(tmp_path / "many" / f"v{i}.mp4", seconds=1, seed=20 + i).read_bytes() for i in range(4)]
    results: dict[int, str] = {}

    def one(i: int) -> None:
        upload_id = sessions.start(f"v{i}.mp4", len(files[i]))["id"]
        send(sessions, upload_id, files[i], 0, piece=777)
        results[i] = sessions.finish(upload_id).sha256

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: hashlib.sha256(data).hexdigest() for i, data in enumerate(files)}


def test_a_partial_longer_than_what_was_hashed_is_cut_back(sessions: UploadSessions, video: bytes) -> None:
    upload_id = sessions.start("clip.mp4", len(video))["id"]
    send(sessions, upload_id, video, 0, 3000)
    partial = next(p for p in sessions.spool_dir.iterdir() if upload_id in p.name)
    with partial.open("ab") as out:
        out.write(b"\0" * 500)  # a write that failed half way, after the bytes reached the disk
    send(sessions, upload_id, video, 3000)
    assert sessions.finish(upload_id).sha256 == hashlib.sha256(video).hexdigest()


def test_a_checked_list_that_cannot_be_written_is_tried_again_on_the_next_finish(sessions: UploadSessions, video: bytes) -> None:
    upload_id = sessions.start("clip.mp4", len(video))["id"]
    send(sessions, upload_id, video, 0)
    calls = []

    def accept(candidate) -> None:  # type: ignore[no-untyped-def]
        calls.append(candidate)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        sessions.finish(upload_id, accept)
    assert sessions.status(upload_id)["state"] == "complete"
    candidate = sessions.finish(upload_id, accept)  # no second rename or probe: the same checked file is listed
    assert calls == [candidate, candidate] and candidate.path.exists()
    assert sessions.finish(upload_id, accept) is candidate and len(calls) == 2
