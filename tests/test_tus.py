"""tus 1.0 at /api/v1/uploads in a real server: tuspy in pieces, a cut connection, a restart mid-way, the sha256."""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from .api_server import AUTH, AppServer, padded_video, sha256_of

pytestmark = pytest.mark.slow
TUS = {"Tus-Resumable": "1.0.0"}
MB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AppServer]:
    app = AppServer(tmp_path, None).start()  # demo mode: uploads do not need Gemini
    yield app
    app.stop()


def meta(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


def create(server: AppServer, name: str, size: int, **headers: str) -> httpx.Response:
    return httpx.post(
        server.api + "/uploads", headers={**AUTH, **TUS, "Upload-Length": str(size), "Upload-Metadata": meta(name), **headers}
    )


def head_offset(url: str) -> int:
    answer = httpx.head(url, headers={**AUTH, **TUS})
    assert answer.status_code == 200, answer.text
    return int(answer.headers["upload-offset"])


def test_tuspy_uploads_in_pieces_survives_a_cut_and_a_restart_and_the_sha256_matches(server: AppServer, tmp_path: Path) -> None:
    video = padded_video(tmp_path / "big one.mp4", 300 * MB)  # the size
    expected = sha256_of(video)
    client = tus_client.TusClient(server.api + "/uploads", headers=AUTH)
    uploader = client.uploader(str(video), chunk_size=4 * MB, metadata={"filename": video.name}, retries=0)
    uploader.upload(stop_at=12 * MB)  # three pieces, then the program stops
    url = uploader.url
    assert url and url.startswith(server.api + "/uploads/")
    assert head_offset(url) == 12 * MB

    # The connection is cut half way through a piece: what arrived is kept and counted.
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        request = (
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {AUTH['Authorization']}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {12 * MB}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {4 * MB}\r\n\r\n"
        ).encode()
        with video.open("rb") as src:
            src.seek(12 * MB)
            sock.sendall(request + src.read(2 * MB))
    cut_at = 0

    def kept() -> bool:
        nonlocal cut_at
        cut_at = head_offset(url)
        return cut_at > 12 * MB

    from .helpers import wait_until

    wait_until(kept, timeout=20, what="bytes of the cut piece to be counted")
    assert 12 * MB < cut_at <= 14 * MB

    server.restart()  # the offset is on disk; the running sha256 is not: it is taken again from the partial file
    assert head_offset(url) == cut_at
    resumed = client.uploader(str(video), url=url, chunk_size=32 * MB, retries=0)
    assert resumed.offset == cut_at  # tuspy asked the server (HEAD) where to go on
    resumed.upload()
    info = httpx.get(url, headers=AUTH).json()
    assert info == {
        "id": url.rsplit("/", 1)[1],
        "file_name": "big one.mp4",
        "size": 300 * MB,
        "offset": 300 * MB,
        "state": "complete",
        "sha256": expected,
        "error": None,
    }
    assert not list((server.data_dir / "spool").glob(".incoming-*"))


def test_tus_protocol_answers(server: AppServer, tmp_path: Path) -> None:
    options = httpx.options(server.api + "/uploads", headers=AUTH)
    assert options.status_code == 204
    assert options.headers["tus-version"] == "1.0.0"
    assert set(options.headers["tus-extension"].split(",")) == {"creation", "termination", "checksum", "expiration"}
    assert int(options.headers["tus-max-size"]) == 2 * 1024**3
    assert "access-control-allow-origin" not in options.headers  # CORS is off

    assert httpx.post(server.api + "/uploads", headers={**AUTH, "Upload-Length": "10", "Upload-Metadata": meta("a.mp4")}).status_code == 412
    refused = create(server, "notes.txt", 100)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "not_video"
    assert "notes.txt is not a video file (.txt)" in refused.json()["error"]["message"]
    too_big = create(server, "huge.mp4", 3 * 1024**3)
    assert too_big.status_code == 413 and "huge.mp4" in too_big.json()["error"]["message"]
    assert create(server, "empty.mp4", 0).status_code == 400

    video = padded_video(tmp_path / "clip.mp4", 2 * MB)
    data = video.read_bytes()
    made = create(server, "clip.mp4", len(data))
    assert made.status_code == 201
    assert made.headers["upload-expires"].endswith(" GMT")
    url = made.headers["location"]
    patch = {**AUTH, **TUS, "Content-Type": "application/offset+octet-stream"}
    wrong = httpx.patch(url, headers={**patch, "Upload-Offset": "5"}, content=data[5:10])
    assert wrong.status_code == 409 and wrong.headers["upload-offset"] == "0"
    assert httpx.patch(url, headers={**patch, "Upload-Offset": "0", "Content-Type": "text/plain"}, content=data[:10]).status_code == 415
    bad_sum = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    mismatch = httpx.patch(url, headers={**patch, "Upload-Offset": "0", "Upload-Checksum": bad_sum}, content=data[:MB])
    assert mismatch.status_code == 460
    assert head_offset(url) == 0  # the piece was dropped
    good_sum = "sha256 " + base64.b64encode(hashlib.sha256(data[:MB]).digest()).decode()
    ok = httpx.patch(url, headers={**patch, "Upload-Offset": "0", "Upload-Checksum": good_sum}, content=data[:MB])
    assert ok.status_code == 204 and ok.headers["upload-offset"] == str(MB)
    over = httpx.patch(url, headers={**patch, "Upload-Offset": str(MB)}, content=data[MB:] + b"extra")
    assert over.status_code == 413 and head_offset(url) == MB
    rest = httpx.patch(url, headers={**patch, "Upload-Offset": str(MB)}, content=data[MB:])
    assert rest.status_code == 204 and rest.headers["upload-offset"] == str(len(data))
    assert httpx.get(url, headers=AUTH).json()["sha256"] == hashlib.sha256(data).hexdigest()

    # a second writer while the first is still sending is told to wait; once the first is gone it goes on
    busy_url = create(server, "busy.mp4", len(data)).headers["location"]
    parts = urlsplit(busy_url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(
            (
                f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {AUTH['Authorization']}\r\n"
                f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            ).encode()
            + data[: MB + 1000]
        )
        from .helpers import wait_until

        wait_until(lambda: head_offset(busy_url) >= MB, timeout=20, what="the first writer's bytes")
        second = httpx.patch(busy_url, headers={**patch, "Upload-Offset": str(head_offset(busy_url))}, content=b"x")
        assert second.status_code == 423 and "still receiving" in second.json()["error"]["message"]
    wait_until(
        lambda: httpx.patch(busy_url, headers={**patch, "Upload-Offset": str(head_offset(busy_url))}, content=b"").status_code == 204,
        timeout=20,
        what="the first writer to be let go",
    )
    at = head_offset(busy_url)
    assert httpx.patch(busy_url, headers={**patch, "Upload-Offset": str(at)}, content=data[at:]).status_code == 204
    assert httpx.get(busy_url, headers=AUTH).json()["sha256"] == hashlib.sha256(data).hexdigest()

    gone = create(server, "gone.mp4", 100).headers["location"]
    assert httpx.delete(gone, headers={**AUTH, **TUS}).status_code == 204
    assert httpx.head(gone, headers={**AUTH, **TUS}).status_code == 404
    assert not list((server.data_dir / "uploads").glob(gone.rsplit("/", 1)[1] + "*"))


def test_a_file_that_is_no_video_is_refused_once_complete(server: AppServer, tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all" * 1000)
    client = tus_client.TusClient(server.api + "/uploads", headers=AUTH)
    uploader = client.uploader(str(fake), chunk_size=MB, metadata={"filename": fake.name}, retries=0, upload_checksum=True)
    uploader.upload()
    info = httpx.get(uploader.url, headers=AUTH).json()
    assert info["state"] == "refused" and info["error"]["code"]
    assert "fake.mp4" in info["error"]["message"]
    assert not list((server.data_dir / "uploads").glob("*.part"))


def test_uploads_need_the_bearer_token(server: AppServer, tmp_path: Path) -> None:
    client = tus_client.TusClient(server.api + "/uploads")  # no token
    video = padded_video(tmp_path / "x.mp4", MB)
    with pytest.raises(TusCommunicationError):
        client.uploader(str(video), chunk_size=MB, metadata={"filename": "x.mp4"}, retries=0).upload()
    assert not (server.data_dir / "uploads").exists() or not list((server.data_dir / "uploads").iterdir())


def test_bytes_that_reached_the_disk_before_a_crash_make_a_whole_upload(server: AppServer, tmp_path: Path) -> None:
    """The server died after the last bytes were written and before the file was checked: a batch still takes it."""
    import signal

    video = padded_video(tmp_path / "crash.mp4", 2 * MB, seed=5)
    data = video.read_bytes()
    url = create(server, video.name, len(data)).headers["location"]
    patch = {**AUTH, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert httpx.patch(url, headers=patch, content=data[:MB]).status_code == 204
    server.stop(signal.SIGKILL)
    with (server.data_dir / "uploads" / f"{url.rsplit('/', 1)[1]}.part").open("ab") as part:
        part.write(data[MB:])  # what the killed server had written of the last piece
    server.start()
    assert head_offset(url) == len(data)  # a tus client sees it complete
    made = httpx.post(server.api + "/batches", json={"uploads": [url]}, headers=AUTH)
    assert made.status_code == 201, made.text
    assert [j["file_name"] for j in made.json()["jobs"]] == ["crash.mp4"]
    info = httpx.get(url, headers=AUTH).json()
    assert info["state"] == "complete" and info["sha256"] == hashlib.sha256(data).hexdigest()
    health = httpx.get(server.url + "/health")  # demo mode: the engine and its emulator answer
    assert health.status_code == 200 and health.json()["demo"] is True
