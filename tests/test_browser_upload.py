"""Browser uploads straight to disk over tus: the uploader on the Batch page and its endpoint, in a real server and chromium."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from storyteller_core.intake.samples import make_video
from storyteller_core.storage.disk_store import DiskStore

from .conftest import CHROMIUM, _free_port

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
INPUT = '[data-testid="storyteller-uploader-input"]'
HEADER = {"X-Storyteller-Upload": "1"}
TUS = {"Tus-Resumable": "1.0.0"}
MB = 1024**2
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]
wired = pytest.mark.skipif(
    "render_uploader" not in (ROOT / "pages" / "batch.py").read_text(),
    reason="pages/batch.py does not call storyteller_ui.uploader.render_uploader yet",
)


def padded_video(path: Path, size_bytes: int) -> Path:
    """A real MP4 and a sparse 'free' box after it (as bench/common.py makes them): a valid video of any size."""
    import struct

    make_video(path, seconds=2, size=(160, 120))
    with path.open("ab") as out:
        out.write(struct.pack(">I4sQ", 1, b"free", size_bytes - path.stat().st_size))
        out.truncate(size_bytes)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def call(
    url: str, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict, dict[str, str]]:
    """One request to the page's tus endpoint (/upload/tus + path): status, JSON body, headers (lower-case)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request(method, "/upload/tus" + path, body=body, headers=headers or {})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    answered = {k.lower(): v for k, v in response.getheaders()}
    try:
        return response.status, json.loads(raw) if raw else {}, answered
    except ValueError:
        return response.status, {"html": raw.decode(errors="replace")}, answered


def partials(data_dir: Path) -> list[Path]:
    """Unfinished tus uploads (<data dir>/uploads/<id>.part) and the old protocol's partial files."""
    found = sorted((data_dir / "uploads").glob("*.part")) if (data_dir / "uploads").exists() else []
    return found + (sorted((data_dir / "spool").glob(".incoming-*")) if (data_dir / "spool").exists() else [])


def creation(name: str, size: int) -> dict[str, str]:
    return {**TUS, "Upload-Length": str(size), "Upload-Metadata": "filename " + base64.b64encode(name.encode()).decode()}


def upload_id(headers: dict[str, str]) -> str:
    return headers["location"].rstrip("/").rsplit("/", 1)[-1]


def head_offset(url: str, upload: str) -> int:
    status, _, headers = call(url, "HEAD", f"/{upload}", None, {**HEADER, **TUS})
    assert status == 200, status
    return int(headers["upload-offset"])


@pytest.fixture
def data_dir(app_env: dict[str, str]) -> Path:
    return Path(app_env["STORYTELLER_DATA_DIR"])


@pytest.fixture
def spool(data_dir: Path) -> Path:
    return data_dir / "spool"


# -- the endpoint's guards ---------------------------------------------------------------------------
@pytest.fixture
def locked_url(app_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    """The app with an access token, as people run it."""
    app_env["STORYTELLER_TOKEN"] = "upload-test-token"
    return request.getfixturevalue("app_server")[0]


def cookie_for(url: str, token: str) -> str:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", f"/?token={token}")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 303
    return response.getheader("Set-Cookie").split(";", 1)[0]


def test_without_the_access_cookie_the_endpoint_answers_401(locked_url: str, data_dir: Path) -> None:
    tus = {**HEADER, **creation("a.mp4", 10)}
    for method, path in [
        ("POST", ""),
        ("OPTIONS", ""),
        ("HEAD", "/" + "a" * 32),
        ("PATCH", "/" + "a" * 32),
        ("GET", "/" + "a" * 32),
        ("DELETE", "/" + "a" * 32),
        ("POST", f"/{'a' * 32}/list"),
    ]:
        status, answer, _ = call(
            locked_url,
            method,
            path,
            b"x" if method == "PATCH" else None,
            {**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
        assert status == 401, (method, path, status, answer)
    status, _, _ = call(locked_url, "POST", "", None, {**tus, "Cookie": "storyteller_access_1=forged"})
    assert status == 401
    assert partials(data_dir) == []

    cookie = {"Cookie": cookie_for(locked_url, "upload-test-token")}
    status, answer, _ = call(locked_url, "POST", "", None, {**cookie, **creation("a.mp4", 10)})
    assert status == 403 and "X-Storyteller-Upload" in answer["error"]["message"]  # the cookie alone is not enough
    for hostile in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):  # same-site: another port on this machine
        status, answer, _ = call(locked_url, "POST", "", None, {**cookie, **tus, **hostile})
        assert status == 403, hostile
    assert partials(data_dir) == []
    port = urlsplit(locked_url).port
    status, _, headers = call(
        locked_url, "POST", "", None, {**cookie, **tus, "Origin": f"http://localhost:{port}", "Sec-Fetch-Site": "same-origin"}
    )
    assert status == 201 and headers["upload-offset"] == "0" and headers["location"].endswith("/upload/tus/" + upload_id(headers))
    assert len(partials(data_dir)) == 1

    # the page's cookie opens the page's uploads only: /api/v1 stays Bearer-only
    conn = http.client.HTTPConnection("localhost", port, timeout=30)
    conn.request("POST", "/api/v1/uploads", headers={**cookie, **tus})
    response = conn.getresponse()
    assert response.status == 401 and json.loads(response.read())["error"]["code"] == "unauthorized"
    conn.close()


def test_the_protocol_over_http(app_url: str, data_dir: Path, spool: Path, tmp_path: Path) -> None:
    """tus on the page's mount: creation, a refused offset, a connection cut mid-piece and the resume from HEAD,
    the list before and after the last byte, the limits, termination."""
    video = make_video(tmp_path / "clip.mp4", seconds=2, seed=11)
    data = video.read_bytes()
    size = len(data)
    status, _, headers = call(app_url, "POST", "", None, {**HEADER, **creation("../clip.mp4", size)})
    assert status == 201 and headers["tus-resumable"] == "1.0.0"
    upload = upload_id(headers)
    octets = {**HEADER, **TUS, "Content-Type": "application/offset+octet-stream"}
    status, answer, headers = call(app_url, "PATCH", f"/{upload}", data[100:200], {**octets, "Upload-Offset": "100"})
    assert status == 409 and headers["upload-offset"] == "0"
    assert answer["error"]["message"] == "clip.mp4: this piece starts at byte 100, but 0 bytes have arrived; send from there."
    # a connection cut half way through a piece: what arrived is kept, and HEAD says where to resume
    parts = urlsplit(app_url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(
            (
                f"PATCH /upload/tus/{upload} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-Storyteller-Upload: 1\r\n"
                "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                f"Content-Length: {size}\r\n\r\n"
            ).encode()
            + data[:5000]
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while head_offset(app_url, upload) != 5000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert head_offset(app_url, upload) == 5000
    status, answer, _ = call(app_url, "POST", f"/{upload}/list", None, HEADER)
    assert status == 409 and answer["error"]["code"] == "incomplete"
    deadline = time.monotonic() + 10  # the cut request lets go of the upload (423 until it does)
    while (answer := call(app_url, "PATCH", f"/{upload}", data[5000:], {**octets, "Upload-Offset": "5000"}))[0] == 423:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert answer[0] == 204 and answer[2]["upload-offset"] == str(size) and "upload-refused" not in answer[2]
    status, listed, _ = call(app_url, "POST", f"/{upload}/list", None, HEADER)
    sha = hashlib.sha256(data).hexdigest()
    assert status == 200 and listed["ok"] and listed["sha256"] == sha and listed["name"] == "clip.mp4"
    assert "path" not in listed
    assert sha256_of(spool / f"{sha}.mp4") == sha
    assert call(app_url, "POST", f"/{upload}/list", None, HEADER)[1] == listed  # asked again: same answer
    store = DiskStore(data_dir / "store")  # the checked list before Start, which the Batch page shows
    try:
        assert [(e["display_name"], e["sha256"]) for e in store.pending()] == [("clip.mp4", sha)]  # listed once
    finally:
        store.close()
    assert partials(data_dir) == []

    # every byte arrives, but it is no video: the last piece says so, and the list keeps it with its reason
    junk = b"this is not a video at all" * 100
    status, _, headers = call(app_url, "POST", "", None, {**HEADER, **creation("fake.mp4", len(junk))})
    fake = upload_id(headers)
    status, _, headers = call(app_url, "PATCH", f"/{fake}", junk, {**octets, "Upload-Offset": "0"})
    assert status == 204 and headers["upload-refused"]
    status, refused, _ = call(app_url, "POST", f"/{fake}/list", None, HEADER)
    assert status == 200 and not refused["ok"] and "fake.mp4" in refused["error"], refused
    store = DiskStore(data_dir / "store")
    try:
        assert {e["display_name"]: e.get("error_message") for e in store.pending()} == {"clip.mp4": None, "fake.mp4": refused["error"]}
    finally:
        store.close()
    assert partials(data_dir) == []

    status, answer, _ = call(app_url, "POST", "", None, {**HEADER, **creation("huge.mp4", 2 * 1024**3 + 1)})
    assert status == 413 and "limit" in answer["error"]["message"]
    status, answer, _ = call(app_url, "POST", "", None, {**HEADER, **creation("notes.txt", 10)})
    assert status == 400 and "is not a video file" in answer["error"]["message"]
    status, answer, _ = call(app_url, "POST", "", None, {**HEADER, "Upload-Length": "10"})  # no Tus-Resumable
    assert status == 412
    status, _, headers = call(app_url, "POST", "", None, {**HEADER, **creation("gone.mp4", 10)})
    assert len(partials(data_dir)) == 1
    assert call(app_url, "DELETE", f"/{upload_id(headers)}", None, {**HEADER, **TUS})[0] == 204
    assert partials(data_dir) == []
    assert call(app_url, "HEAD", f"/{upload_id(headers)}", None, {**HEADER, **TUS})[0] == 404


class _EvilPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802
        page = f"""<!doctype html><title>evil</title><body>
<form id="f" method="POST" action="{self.target}/upload/tus" enctype="text/plain">
<input name='{{"name":"x.mp4","size":10,"pad":"' value='"}}'></form>
<script>
window.fetchResult = fetch("{self.target}/upload/tus", {{method: "POST", credentials: "include",
  headers: {{"X-Storyteller-Upload": "1", "Tus-Resumable": "1.0.0", "Upload-Length": "10",
             "Upload-Metadata": "filename eC5tcDQ="}}}}).then(r => "answered " + r.status, e => "blocked: " + e.message);
</script></body>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def evil_origin(app_url: str) -> Iterator[str]:
    """A page on another port of this machine (same site, other origin) that tries to upload."""
    _EvilPage.target = app_url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), _EvilPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"  # same site as the app: a SameSite cookie would go along
    server.shutdown()


def test_a_cross_site_page_cannot_start_an_upload(page, app_url: str, evil_origin: str, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Even with STORYTELLER_TOKEN=none: fetch() with the headers is stopped by CORS, a plain form by the header check."""
    page.goto(evil_origin)
    assert page.evaluate("window.fetchResult").startswith("blocked")
    with page.expect_response(lambda r: r.url.endswith("/upload/tus")) as answer:
        page.evaluate("document.getElementById('f').submit()")
    assert answer.value.status == 403
    assert partials(data_dir) == []


# -- the uploader on the Batch page --------------------------------------------------------------
class Traffic:
    """The uploader's tus requests as the browser sends them (page.on("request"): nothing intercepted)."""

    def __init__(self, page, size: int) -> None:  # type: ignore[no-untyped-def]
        self.size, self.upload, self.seen = size, "", []  # seen: (method, Upload-Offset) for this file's upload
        page.on("request", self._request)
        page.on("response", self._response)

    def _request(self, request) -> None:  # type: ignore[no-untyped-def]
        if self.upload and request.url.split("?")[0].endswith("/upload/tus/" + self.upload):
            self.seen.append((request.method, request.headers.get("upload-offset")))

    def _response(self, response) -> None:  # type: ignore[no-untyped-def]
        request = response.request
        if (
            request.method == "POST"
            and request.url.endswith("/upload/tus")
            and request.headers.get("upload-length") == str(self.size)
            and response.status == 201
        ):
            self.upload = response.headers["location"].rstrip("/").rsplit("/", 1)[-1]

    def patches(self) -> list[int]:
        return [int(offset) for method, offset in self.seen if method == "PATCH"]


@wired
@pytest.mark.timeout(300)
def test_drop_a_large_file_and_it_lands_on_disk_and_in_the_checked_list(page, data_dir: Path, spool: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    OUTPUT.mkdir(exist_ok=True)
    big = padded_video(tmp_path / "field footage 120MB.mp4", 120 * MB)
    small = make_video(tmp_path / "short clip.mp4", seconds=1, seed=3)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    expected = sha256_of(big)
    traffic = Traffic(page, big.stat().st_size)

    # Cut the connection of one piece before it reaches the server: the uploader must retry and resume.
    patches: list[int] = []

    def flaky(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.method == "PATCH" and traffic.upload and route.request.url.endswith(traffic.upload):
            patches.append(int(route.request.headers["upload-offset"]))
            if len(patches) == 2:
                route.abort("connectionreset")
                return
        route.fallback()

    page.route("**/upload/tus/*", flaky, times=12)
    page.locator(INPUT).wait_for(state="attached", timeout=60_000)
    page.locator(INPUT).set_input_files([str(big), str(small), str(notes)])

    row = page.locator('.stu-row[data-name="field footage 120MB.mp4"]')
    expect(row).to_have_attribute("data-state", "retrying", timeout=60_000)
    expect(row).to_contain_text("Connection lost at")
    page.screenshot(path=str(OUTPUT / "upload-mid.png"))
    expect(page.locator('.stu-row[data-name="notes.txt"]')).to_have_attribute("data-state", "skipped")
    expect(page.locator('.stu-row[data-name="notes.txt"]')).to_contain_text("not a video file extension")

    expect(row).to_have_attribute("data-state", "added", timeout=240_000)
    expect(page.locator('.stu-row[data-name="short clip.mp4"]')).to_have_attribute("data-state", "added")
    page.get_by_text("Ready: 2 video(s)").wait_for(timeout=60_000)  # the page reran and lists both
    listed = page.locator('[data-testid="stMarkdownContainer"]', has_text="field footage 120MB.mp4")
    expect(listed).to_have_count(1)
    listed.scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "upload-after.png"))

    assert patches[1] == patches[2] == 8 * MB, "the aborted piece was sent again from the same offset"
    assert traffic.patches() == [0, 8 * MB, *(i * 8 * MB for i in range(1, 15))]  # 0, the cut 8 MB, 8 MB again...
    assert ("HEAD", None) in traffic.seen, "after the failure the uploader asked the server where it is"
    on_disk = spool / f"{expected}.mp4"
    assert on_disk.stat().st_size == big.stat().st_size
    assert sha256_of(on_disk) == expected
    assert partials(data_dir) == []


@wired
@pytest.mark.timeout(300)
def test_a_connection_dropped_mid_piece_resumes_from_the_servers_offset(
    page,
    app_url: str,
    data_dir: Path,  # type: ignore[no-untyped-def]
    spool: Path,
    tmp_path: Path,
) -> None:
    """Part of a piece reached the server before the connection went: the uploader asks (HEAD) and goes on from
    the server's offset, neither from zero nor from the start of the piece it was sending."""
    video = padded_video(tmp_path / "cut mid piece.mp4", 40 * MB)
    data = video.read_bytes()
    expected = hashlib.sha256(data).hexdigest()
    traffic = Traffic(page, len(data))
    arrived = 8 * MB + 3 * MB + 12345  # what the server keeps of the second piece
    parts = urlsplit(app_url)

    def cut(route) -> None:  # type: ignore[no-untyped-def]
        request = route.request
        if (
            request.method != "PATCH"
            or not traffic.upload
            or not request.url.endswith(traffic.upload)
            or request.headers.get("upload-offset") != str(8 * MB)
            or arrived in traffic.patches()
        ):
            route.fallback()
            return
        # The second piece: its first 3 MB and a bit reach the server, then the connection drops.
        with socket.create_connection((parts.hostname, parts.port)) as sock:
            sock.sendall(
                (
                    f"PATCH /upload/tus/{traffic.upload} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                    "X-Storyteller-Upload: 1\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                    f"Upload-Offset: {8 * MB}\r\nContent-Length: {8 * MB}\r\n\r\n"
                ).encode()
                + data[8 * MB : arrived]
            )
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while head_offset(app_url, traffic.upload) != arrived:
            assert time.monotonic() < deadline, "the server did not keep what arrived of the cut piece"
            time.sleep(0.1)
        route.abort("connectionreset")

    page.route("**/upload/tus/*", cut, times=4)
    page.locator(INPUT).wait_for(state="attached", timeout=60_000)
    page.locator(INPUT).set_input_files([str(video)])
    row = page.locator('.stu-row[data-name="cut mid piece.mp4"]')
    expect(row).to_have_attribute("data-state", "added", timeout=240_000)

    offsets = traffic.patches()
    assert offsets[:2] == [0, 8 * MB], offsets
    after_cut = traffic.seen[traffic.seen.index(("PATCH", str(8 * MB))) + 1 :]
    assert after_cut[0] == ("HEAD", None), traffic.seen  # asked where the server is
    assert offsets[2] == arrived, offsets  # and went on from there
    assert offsets[3:] == list(range(arrived + 8 * MB, len(data), 8 * MB)), offsets
    on_disk = spool / f"{expected}.mp4"
    assert sha256_of(on_disk) == expected
    assert partials(data_dir) == []
    page.get_by_text("Ready: 1 video(s)").wait_for(timeout=60_000)


@wired
@pytest.mark.timeout(300)
def test_the_same_file_dropped_again_after_a_reload_goes_on_where_the_server_is(
    page,
    app_url: str,
    data_dir: Path,  # type: ignore[no-untyped-def]
    spool: Path,
    tmp_path: Path,
) -> None:
    video = padded_video(tmp_path / "reloaded.mp4", 40 * MB)
    expected = sha256_of(video)
    traffic = Traffic(page, video.stat().st_size)

    def stall(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.method == "PATCH" and route.request.headers.get("upload-offset") == str(16 * MB):
            route.abort("connectionreset")  # the third piece never gets through: the person reloads the page
        else:
            route.fallback()

    page.route("**/upload/tus/*", stall)
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" while an upload is under way
    page.locator(INPUT).wait_for(state="attached", timeout=60_000)
    page.locator(INPUT).set_input_files([str(video)])
    row = page.locator('.stu-row[data-name="reloaded.mp4"]')
    expect(row).to_have_attribute("data-state", "retrying", timeout=60_000)
    assert traffic.upload and head_offset(app_url, traffic.upload) == 16 * MB
    first = traffic.upload

    page.unroute("**/upload/tus/*", stall)
    page.reload()
    before = len(traffic.seen)
    page.locator(INPUT).wait_for(state="attached", timeout=60_000)
    expect(page.locator('.stu-row[data-name="reloaded.mp4"]')).to_have_count(0)  # a new page: no uploads in it
    page.locator(INPUT).set_input_files([str(video)])
    expect(page.locator('.stu-row[data-name="reloaded.mp4"]')).to_have_attribute("data-state", "added", timeout=240_000)

    assert traffic.upload == first, "no new upload was created for the same file"
    again = traffic.seen[before:]
    assert again[0] == ("HEAD", None), again
    assert [int(o) for m, o in again if m == "PATCH"] == [16 * MB, 24 * MB, 32 * MB], again
    assert sha256_of(spool / f"{expected}.mp4") == expected
    assert partials(data_dir) == []
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('videoStorytellerTus:'))") == []


@wired
@pytest.mark.timeout(300)
def test_cancel_deletes_the_upload_retry_starts_anew_and_a_fake_video_is_refused(
    page,
    app_url: str,
    data_dir: Path,  # type: ignore[no-untyped-def]
    spool: Path,
    tmp_path: Path,
) -> None:
    video = padded_video(tmp_path / "cancel me.mp4", 40 * MB)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video at all" * 1000)
    traffic = Traffic(page, video.stat().st_size)

    def stall(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.method == "PATCH" and route.request.headers.get("upload-offset") == str(16 * MB):
            route.abort("connectionreset")
        else:
            route.fallback()

    page.route("**/upload/tus/*", stall)
    page.locator(INPUT).wait_for(state="attached", timeout=60_000)
    page.locator(INPUT).set_input_files([str(video), str(fake)])
    row = page.locator('.stu-row[data-name="cancel me.mp4"]')
    expect(row).to_have_attribute("data-state", "retrying", timeout=60_000)
    first = traffic.upload
    assert head_offset(app_url, first) == 16 * MB

    refused = page.locator('.stu-row[data-name="fake.mp4"]')  # every byte arrived; the check says no
    expect(refused).to_have_attribute("data-state", "refused", timeout=60_000)
    expect(refused).to_contain_text("fake.mp4")

    row.get_by_role("button", name="Cancel this upload: cancel me.mp4").click()
    expect(row).to_have_attribute("data-state", "cancelled")
    expect(row).to_contain_text("Cancelled")
    deadline = time.monotonic() + 30
    while call(app_url, "HEAD", f"/{first}", None, {**HEADER, **TUS})[0] != 404:  # DELETE: the partial file is gone
        assert time.monotonic() < deadline, "the cancelled upload is still on the server"
        time.sleep(0.1)
    assert ("DELETE", None) in traffic.seen
    assert partials(data_dir) == []
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('videoStorytellerTus:'))") == []

    page.unroute("**/upload/tus/*", stall)
    before = len(traffic.seen)
    row.get_by_role("button", name="Try this file again: cancel me.mp4").click()
    expect(row).to_have_attribute("data-state", "added", timeout=240_000)
    assert traffic.upload != first, "after a cancel, Retry creates a new upload"
    offsets = [int(o) for m, o in traffic.seen[before:] if m == "PATCH"]
    # From byte 0, piece by piece, never back: a piece cut on a loaded machine goes on from the server's offset (HEAD)
    assert offsets[0] == 0 and offsets == sorted(set(offsets)), offsets
    assert {0, 8 * MB, 16 * MB, 24 * MB, 32 * MB} <= set(offsets), offsets
    expected = sha256_of(video)
    assert sha256_of(spool / f"{expected}.mp4") == expected
    assert partials(data_dir) == []
