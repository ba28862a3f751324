"""Files and inputs made to hang or swell the server, and the small holes of issue 17 (items 5 and 6).

The crafted files are made here with PyAV at test time; none is checked in.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storyteller_core.deliverables.webhook import BatchReport, payload, send_report
from storyteller_core.errors import Code, MediaError
from storyteller_core.intake.candidates import check_extension, expand, inspect_path, youtube_url
from storyteller_core.intake.media import ALLOWED_FORMATS, probe, safe_display_name, thumbnail
from storyteller_core.intake.upload_sessions import UploadError, UploadSessions
from storyteller_core.sanitize import plain_data, spreadsheet_cell, terminal_text
from storyteller_core.settings import Settings
from storyteller_ui.uploader import _put


def live_playlist(folder: Path) -> Path:
    """A 100-byte HLS playlist with no #EXT-X-ENDLIST: FFmpeg's hls demuxer reloads it forever."""
    path = folder / "live.m3u8"
    path.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10,\nseg0.ts\n")
    return path


def huge_frame_mov(folder: Path, side: int = 16000) -> Path:
    """A MOV of two PNG frames of side x side pixels (1-bit, so it is made in 0.3 s and a few MB of memory)."""
    path = folder / "huge.mov"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = side, side, "monob"
        frame = av.VideoFrame(side, side, "monob")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for pts in range(2):
            frame.pts = pts
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result, or a failure when it has not returned within ``seconds`` (a hang on the old code)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # noqa: BLE001 (handed back to the test)
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


# -- item 5: files made to hang or blow up the server ----------------------------------------------
def test_a_live_playlist_is_refused_at_once_not_probed_forever(tmp_path: Path) -> None:
    playlist = live_playlist(tmp_path)
    with pytest.raises(MediaError) as refused:
        within(15, lambda: probe(playlist, "live.m3u8", 2**40, 1e9))
    assert refused.value.code == Code.NOT_VIDEO and "m3u8" in refused.value.message
    candidate = within(15, lambda: inspect_path(playlist, Settings(data_dir=tmp_path / "data")))
    assert candidate.error_code == Code.NOT_VIDEO.value or candidate.error_code == Code.NOT_VIDEO


def test_a_probe_that_waits_too_long_is_refused_with_the_reason(tmp_path: Path) -> None:
    """With the hls demuxer let in on purpose, the read time limit still ends the probe."""
    with pytest.raises(MediaError) as refused:
        within(15, lambda: probe(live_playlist(tmp_path), "live.m3u8", 2**40, 1e9, timeout_s=1, formats=(*ALLOWED_FORMATS, "hls")))
    assert "within 1 s" in refused.value.message


def test_other_extensions_are_refused_on_upload(tmp_path: Path) -> None:
    sessions = UploadSessions(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(UploadError) as refused:
        sessions.start("live.m3u8", 100)
    assert refused.value.status == 400 and ".m3u8" in refused.value.message
    assert sessions.start("fine.mp4", 100)["id"]


@pytest.mark.parametrize("name", ["ñandú ☃ " * 40 + ".mp4", "x" * 500 + ".webm"])
def test_a_long_name_is_cut_before_its_extension_so_it_is_still_accepted(name: str) -> None:
    shown = safe_display_name(name)
    assert len(shown) <= 200 and shown.endswith(name.rsplit(".", 1)[1])
    check_extension(shown)  # accepted: cutting the name once dropped ".mp4" and refused the video


def test_only_a_name_with_another_extension_is_refused_before_the_probe() -> None:
    check_extension("video")  # no extension (".." becomes "video"): the probe's demuxer whitelist decides
    with pytest.raises(MediaError, match=r"\.txt"):
        check_extension("notes.txt")


def test_a_huge_frame_is_refused_from_the_header_with_the_limit(tmp_path: Path) -> None:
    huge = huge_frame_mov(tmp_path)
    with pytest.raises(MediaError) as refused:
        within(15, lambda: probe(huge, "huge.mov", 2**40, 1e9))
    assert "16000x16000" in refused.value.message and "8192" in refused.value.message
    assert within(15, lambda: thumbnail(huge, tmp_path / "thumb.jpg")) is None
    assert not (tmp_path / "thumb.jpg").exists()


def test_thumbnails_are_decoded_scaled_down(one_video: Callable[..., Path], tmp_path: Path) -> None:
    from PIL import Image

    out = thumbnail(one_video("clip.mp4"), tmp_path / "t.jpg", width=64)
    assert out is not None
    with Image.open(out) as image:
        assert image.width <= 64


# -- item 6: smaller holes ---------------------------------------------------------------------------
def _put_status(content_range: str) -> tuple[int, dict[str, Any]]:
    """One PUT through the uploader's real handler, driven as ASGI (no server, no session behind it)."""

    async def handler(request: Request) -> Response:
        return await _put(request, None, "x")  # type: ignore[arg-type]  # refused before the sessions are used

    app = Starlette(routes=[Route("/upload/{upload_id}", handler, methods=["PUT"])])
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/upload/x",
        "raw_path": b"/upload/x",
        "query_string": b"",
        "headers": [(b"content-range", content_range.encode()), (b"content-length", b"1")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 1),
        "client": ("127.0.0.1", 2),
        "root_path": "",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def test_a_content_range_of_thousands_of_digits_answers_400(capsys: pytest.CaptureFixture[str]) -> None:
    status, body = _put_status(f"bytes 0-0/{'9' * 4300}")
    assert status == 400 and "Content-Range" in body["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_the_youtube_pattern_is_linear_and_capped() -> None:
    assert youtube_url("https://www.youtube.com/watch?feature=share&v=dQw4w9WgXcQ&t=3") == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert within(5, lambda: youtube_url("https://www.youtube.com/watch?" + "&" * 300_000)) is None
    assert within(5, lambda: youtube_url("youtube.com/watch?v=dQw4w9WgXcQ&" + "a" * 112_000)) is None


@pytest.mark.parametrize("text", ["exe.txt\u202e", "a\u2066b\u2069", "\u200fx\u200e", "\x1b]0;title\x07x", "\x1b[31mred"])
def test_escape_and_bidi_characters_never_leave_us(text: str) -> None:
    for out in (spreadsheet_cell(text), plain_data({"name": [text]})["name"][0], terminal_text(text)):
        assert not any(ch in out for ch in "\x1b\x07\u202e\u2066\u2069\u200e\u200f")


def test_a_folder_link_to_outside_is_skipped_and_named(tmp_path: Path, one_video: Callable[..., Path]) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    secret = one_video("secret.mp4").rename(outside / "secret.mp4")
    folder = tmp_path / "footage"
    folder.mkdir()
    one_video("own.mp4").rename(folder / "own.mp4")
    (folder / "link.mp4").symlink_to(secret)
    (folder / "elsewhere").symlink_to(outside, target_is_directory=True)
    files, skipped = expand([folder])
    assert [f.name for f in files] == ["own.mp4"]
    assert sorted(s.path.name for s in skipped) == ["elsewhere", "link.mp4"]
    assert all("link" in s.reason for s in skipped)


class _Hook(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []
    location = ""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.hits.append(f"POST {self.path}")
        self.send_response(302 if self.path == "/hook" else 200)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


@pytest.mark.parametrize("target", ["{base}/elsewhere", "ftp://127.0.0.1:1/x"])
def test_the_webhook_follows_no_redirect(hook: tuple[str, type[_Hook]], tmp_path: Path, target: str) -> None:
    base, handler = hook
    handler.location = target.format(base=base)
    outcome = send_report(tmp_path, f"{base}/hook", BatchReport("b1", "batch", 1, 1, 0, 0), attempts=1)
    assert not outcome.ok and "302" in outcome.message and "redirect" in outcome.message
    assert handler.hits == ["POST /hook"]


def test_the_webhook_text_escapes_link_syntax() -> None:
    text = payload(BatchReport("b1", "[click](https://evil.example) <https://evil.example|x>\u202e", 1, 1, 0, 0))["text"]
    assert "[click](" not in text and "](https://" not in text and "<https://" not in text and "\u202e" not in text
