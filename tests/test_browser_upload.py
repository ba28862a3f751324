"""Browser uploads straight to disk: the uploader on the Batch page and its endpoint, in a real server and chromium."""

from __future__ import annotations

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

from storyteller_core.samples import make_video
from storyteller_core.store import DiskStore

from .conftest import CHROMIUM, _free_port

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
INPUT = '[data-testid="storyteller-uploader-input"]'
HEADER = {"X-Storyteller-Upload": "1"}
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]
wired = pytest.mark.skipif("render_uploader" not in (ROOT / "pages" / "batch.py").read_text(),
                           reason="pages/batch.py does not call storyteller_ui.uploader.render_uploader yet")


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


def call(url: str, method: str, path: str, body: bytes | str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request(method, "/upload" + path, body=body, headers=headers or {})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        return response.status, json.loads(raw) if raw else {}
    except ValueError:
        return response.status, {"html": raw.decode(errors="replace")}


def partials(spool: Path) -> list[Path]:
    return sorted(spool.glob(".incoming-*")) if spool.exists() else []


def start_json(name: str, size: int) -> str:
    return json.dumps({"name": name, "size": size})


JSON = {"Content-Type": "application/json"}


@pytest.fixture
def spool(app_env: dict[str, str]) -> Path:
    return Path(app_env["STORYTELLER_DATA_DIR"]) / "spool"


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


def test_without_the_access_cookie_the_endpoint_answers_401(locked_url: str, spool: Path) -> None:
    for method, path, body in [("POST", "/start", start_json("a.mp4", 10)), ("GET", "/abc", None),
                               ("PUT", "/abc", b"x"), ("POST", "/abc/finish", None), ("DELETE", "/abc", None)]:
        status, answer = call(locked_url, method, path, body, {**HEADER, **JSON, "Content-Range": "bytes 0-0/10"})
        assert status == 401, (method, path, status, answer)
    status, _ = call(locked_url, "POST", "/start", start_json("a.mp4", 10), {**HEADER, **JSON,
                                                                              "Cookie": "storyteller_access_1=forged"})
    assert status == 401
    assert partials(spool) == []

    cookie = {"Cookie": cookie_for(locked_url, "upload-test-token")}
    status, answer = call(locked_url, "POST", "/start", start_json("a.mp4", 10), {**cookie, **JSON})
    assert status == 403 and "X-Storyteller-Upload" in answer["error"]  # the cookie alone is not enough
    for hostile in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}):  # same-site: another port on this machine
        status, answer = call(locked_url, "POST", "/start", start_json("a.mp4", 10), {**cookie, **HEADER, **JSON, **hostile})
        assert status == 403, hostile
    assert partials(spool) == []
    port = urlsplit(locked_url).port
    status, answer = call(locked_url, "POST", "/start", start_json("a.mp4", 10), {
        **cookie, **HEADER, **JSON, "Origin": f"http://localhost:{port}", "Sec-Fetch-Site": "same-origin"})
    assert status == 201 and answer["received"] == 0


def test_the_protocol_over_http(app_url: str, spool: Path, tmp_path: Path) -> None:
    """Start, a refused offset, a dropped connection mid-piece and the resume, finish, and the limits."""
    video = make_video(tmp_path / "clip.mp4", seconds=2, seed=11)
    data = video.read_bytes()
    size = len(data)
    status, started = call(app_url, "POST", "/start", start_json("../clip.mp4", size), {**HEADER, **JSON})
    assert status == 201 and started["name"] == "clip.mp4"
    upload_id = started["id"]
    piece = {**HEADER, "Content-Range": f"bytes 100-199/{size}"}
    assert call(app_url, "PUT", f"/{upload_id}", data[100:200], piece) == (
        409, {"error": "clip.mp4: this piece starts at byte 100, but 0 bytes have arrived; send from there.",
              "code": "wrong_offset", "received": 0})
    # a connection cut half way through a piece: what arrived is kept, and the client resumes from there
    parts = urlsplit(app_url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall((f"PUT /upload/{upload_id} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-Storyteller-Upload: 1\r\n"
                      f"Content-Range: bytes 0-{size - 1}/{size}\r\nContent-Length: {size}\r\n\r\n").encode()
                     + data[:5000])
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while (status_now := call(app_url, "GET", f"/{upload_id}", None, HEADER)[1])["busy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status_now["received"] == 5000
    status, answer = call(app_url, "POST", f"/{upload_id}/finish", None, HEADER)
    assert status == 409 and answer["received"] == 5000
    status, answer = call(app_url, "PUT", f"/{upload_id}", data[5000:], {
        **HEADER, "Content-Range": f"bytes 5000-{size - 1}/{size}"})
    assert status == 200 and answer["received"] == size
    status, finished = call(app_url, "POST", f"/{upload_id}/finish", None, HEADER)
    sha = hashlib.sha256(data).hexdigest()
    assert status == 200 and finished["ok"] and finished["sha256"] == sha and "path" not in finished
    assert sha256_of(spool / f"{sha}.mp4") == sha
    assert call(app_url, "POST", f"/{upload_id}/finish", None, HEADER)[1] == finished  # asked again: same answer
    store = DiskStore(spool.parent / "jobs")  # the checked list before Start, which the Batch page shows
    try:
        assert [(e["display_name"], e["sha256"]) for e in store.pending()] == [("clip.mp4", sha)]
    finally:
        store.close()
    assert partials(spool) == []

    status, answer = call(app_url, "POST", "/start", start_json("huge.mp4", 2 * 1024**3 + 1), {**HEADER, **JSON})
    assert status == 413 and "limit" in answer["error"]
    status, answer = call(app_url, "POST", "/start", "name=a.mp4&size=10",
                          {**HEADER, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    status, cancelled = call(app_url, "POST", "/start", start_json("gone.mp4", 10), {**HEADER, **JSON})
    assert len(partials(spool)) == 1
    assert call(app_url, "DELETE", f"/{cancelled['id']}", None, HEADER)[0] == 204
    assert partials(spool) == []
    assert call(app_url, "GET", f"/{cancelled['id']}", None, HEADER)[0] == 404


class _EvilPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802
        page = f"""<!doctype html><title>evil</title><body>
<form id="f" method="POST" action="{self.target}/upload/start" enctype="text/plain">
<input name='{{"name":"x.mp4","size":10,"pad":"' value='"}}'></form>
<script>
window.fetchResult = fetch("{self.target}/upload/start", {{method: "POST", credentials: "include",
  headers: {{"X-Storyteller-Upload": "1", "Content-Type": "application/json"}},
  body: JSON.stringify({{name: "x.mp4", size: 10}})}}).then(r => "answered " + r.status, e => "blocked: " + e.message);
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


def test_a_cross_site_page_cannot_start_an_upload(page, app_url: str, evil_origin: str, spool: Path) -> None:  # type: ignore[no-untyped-def]
    """Even with STORYTELLER_TOKEN=none: fetch() with the header is stopped by CORS, a plain form by the header check."""
    page.goto(evil_origin)
    assert page.evaluate("window.fetchResult").startswith("blocked")
    with page.expect_response(lambda r: "/upload/start" in r.url) as answer:
        page.evaluate("document.getElementById('f').submit()")
    assert answer.value.status == 403
    assert partials(spool) == []


# -- the uploader on the Batch page --------------------------------------------------------------
@wired
@pytest.mark.timeout(300)
def test_drop_a_large_file_and_it_lands_on_disk_and_in_the_checked_list(page, spool: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    OUTPUT.mkdir(exist_ok=True)
    big = padded_video(tmp_path / "field footage 120MB.mp4", 120 * 1024**2)
    small = make_video(tmp_path / "short clip.mp4", seconds=1, seed=3)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    expected = sha256_of(big)

    # Cut the connection of one piece: the uploader must retry and resume where the server is.
    puts: list[str] = []
    whole = f"/{big.stat().st_size}"

    def flaky(route) -> None:  # type: ignore[no-untyped-def]
        content_range = route.request.headers.get("content-range") or ""
        if route.request.method == "PUT" and content_range.endswith(whole):
            puts.append(content_range)
            if len(puts) == 2:
                route.abort("connectionreset")
                return
        route.fallback()

    page.route("**/upload/**", flaky, times=12)
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

    assert puts[1] == puts[2], "the aborted piece was sent again from the same offset"
    on_disk = spool / f"{expected}.mp4"
    assert on_disk.stat().st_size == big.stat().st_size
    assert sha256_of(on_disk) == expected
    assert partials(spool) == []
