"""Server RSS while a large file arrives through the uploader's tus endpoint (what the Batch page's drop zone uses).

    python bench/browser_upload_memory.py                 # 2 GB, 8 MiB pieces, one dropped connection
    python bench/browser_upload_memory.py --mb 331 --runs 3

Starts `streamlit run app.py` (demo mode, with an access token: the client signs in like a browser and
sends the cookie), warms the server up with one small upload, then streams a sparse padded video of
--mb MB in pieces over tus at /upload/tus (creation POST, PATCH at Upload-Offset: what uploader.js
sends) while sampling the Streamlit process's RSS every 20 ms. With --drop (default), the connection
is cut half way through a piece in the middle of the file and the client resumes from the offset the
server answers to HEAD, as the component does. Then POST /upload/tus/{id}/list (the checked list): the
server's sha256 must equal hashlib's, the file must be in the spool and in the checked list. "after" is
RSS 5 s after that. Before this endpoint, dropping a 331 MB file
through st.file_uploader measured +641 MB at peak and +361 MB after (bench/upload_memory.py).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, BinaryIO

import psutil
from common import ROOT, free_port, padded_video

from storyteller_core.intake.samples import make_video
from storyteller_core.storage.disk_store import DiskStore

MB = 1024**2
HEADER = {"X-Storyteller-Upload": "1"}
TUS = {"Tus-Resumable": "1.0.0"}


class Client:
    """tus over http.client on the page's mount, with the page's cookie: what uploader.js does."""

    def __init__(self, port: int, cookie: str) -> None:
        self.port = port
        self.headers = {**HEADER, **TUS, "Cookie": cookie}

    def call(
        self, method: str, path: str, body: bytes | str | _Piece | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict, dict[str, str]]:
        conn = http.client.HTTPConnection("localhost", self.port, timeout=600, blocksize=MB)
        conn.request(method, "/upload/tus" + path, body=body, headers={**self.headers, **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        return response.status, (json.loads(raw) if raw else {}), {k.lower(): v for k, v in response.getheaders()}

    def offset(self, upload_id: str) -> int:
        status, answer, headers = self.call("HEAD", f"/{upload_id}")
        assert status == 200, (status, answer)
        return int(headers["upload-offset"])

    def upload(self, path: Path, piece: int, drop_at: int | None = None) -> tuple[dict, str, int]:
        """(the list's answer, local sha256, dropped connections) for ``path`` sent in pieces of ``piece`` bytes."""
        size = path.stat().st_size
        status, answer, headers = self.call(
            "POST", "", None, {"Upload-Length": str(size), "Upload-Metadata": "filename " + base64.b64encode(path.name.encode()).decode()}
        )
        assert status == 201, (status, answer)
        upload_id = headers["location"].rstrip("/").rsplit("/", 1)[-1]
        received, digest, drops = 0, hashlib.sha256(), 0
        with path.open("rb") as src:
            while received < size:
                end = min(size, received + piece)
                src.seek(received)
                if drop_at is not None and received <= drop_at < end:
                    drop_at = None
                    self._cut(upload_id, src, received, end)
                    drops += 1
                else:
                    status, answer, _ = self.call(
                        "PATCH",
                        f"/{upload_id}",
                        _Piece(src, end - received),
                        {
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": str(received),
                            "Content-Length": str(end - received),
                        },
                    )
                    assert status in (204, 423), (status, answer)  # 423: the cut request still lets go
                now = self.offset(upload_id)  # where to go on, as after a failure
                src.seek(received)
                _hash_range(src, now - received, digest)
                received = now
        status, answer, _ = self.call("POST", f"/{upload_id}/list")
        assert status == 200, (status, answer)
        return answer, digest.hexdigest(), drops

    def _cut(self, upload_id: str, src: BinaryIO, start: int, end: int) -> None:
        """Send the headers and half the piece, then close the socket: a dropped connection."""
        half = (end - start) // 2
        head = (
            f"PATCH /upload/tus/{upload_id} HTTP/1.1\r\nHost: localhost:{self.port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
            + f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {start}\r\n"
            f"Content-Length: {end - start}\r\n\r\n"
        )
        with socket.create_connection(("localhost", self.port)) as sock:
            sock.sendall(head.encode())
            left = half
            while left:
                chunk = src.read(min(MB, left))
                sock.sendall(chunk)
                left -= len(chunk)
            time.sleep(0.3)
        time.sleep(0.5)  # the server notices the disconnect and writes what arrived


class _Piece:
    """A file-like view of the next ``length`` bytes of ``src`` (http.client reads it in blocksize chunks)."""

    def __init__(self, src: BinaryIO, length: int) -> None:
        self.src, self.left = src, length

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.src.read(n)
        self.left -= len(data)
        return data


def _hash_range(src: BinaryIO, length: int, digest: Any) -> None:
    while length > 0:
        chunk = src.read(min(MB, length))
        digest.update(chunk)
        length -= len(chunk)


def sign_in(port: int, token: str) -> str:
    """The cookie a browser gets from the printed link."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"http://localhost:{port}/?token={token}", timeout=10)
    except urllib.error.HTTPError as exc:  # the 303 with the cookie
        cookie = SimpleCookie(exc.headers["Set-Cookie"])
        return "; ".join(f"{k}={v.value}" for k, v in cookie.items())
    raise RuntimeError("no cookie")


def run_once(size_mb: int, piece_mb: int, drop: bool, tmp: Path) -> dict[str, float]:
    video = padded_video(tmp / f"big-{size_mb}.mp4", size_mb * MB)  # sparse: no disk used for the padding
    warm = make_video(tmp / "warm-up.mp4", seconds=1, seed=7)
    data_dir = tmp / "data"
    port, token = free_port(), "bench-token"
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env.update(STORYTELLER_DATA_DIR=str(data_dir), STORYTELLER_TOKEN=token)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        client = Client(port, sign_in(port, token))
        client.upload(warm, piece_mb * MB)  # imports, the engine's first checked-list write, thread pool
        proc = psutil.Process(server.pid)
        time.sleep(2)
        idle = proc.memory_info().rss
        peak = [idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], proc.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        answer, local_sha, drops = client.upload(video, piece_mb * MB, drop_at=video.stat().st_size // 2 if drop else None)
        seconds = time.monotonic() - started
        time.sleep(5)
        stop.set()
        sampler.join()
        after = proc.memory_info().rss
        assert answer["ok"] and answer["sha256"] == local_sha, (answer, local_sha)
        spool = data_dir / "spool"
        assert (spool / f"{local_sha}.mp4").stat().st_size == video.stat().st_size
        assert not list(spool.glob(".incoming-*")) and not list((data_dir / "uploads").glob("*.part")), "a partial file was left behind"
    finally:
        server.terminate()
        server.wait(30)
    store = DiskStore(data_dir / "store")  # the checked list before Start, as the Batch page reads it
    listed = any(entry.get("sha256") == local_sha for entry in store.pending())
    store.close()
    return {"idle": idle / MB, "peak": peak[0] / MB, "after": after / MB, "seconds": seconds, "drops": drops, "listed": float(listed)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=2048, help="file size in MB (default 2048: 2 GB)")
    parser.add_argument("--piece-mb", type=int, default=8, help="bytes per PATCH, as uploader.js sends")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-drop", dest="drop", action="store_false", help="no dropped connection half way")
    args = parser.parse_args()
    rows = []
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(
        f"{'file MB':>7} | {'idle MB':>7} | {'peak MB':>7} | {'peak - idle':>11} | {'after MB':>8} | "
        f"{'after - idle':>12} | {'s':>5} | {'MB/s':>5} | drops | in list"
    )
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-browser-upload-") as tmp:
            r = run_once(args.mb, args.piece_mb, args.drop, Path(tmp))
        rows.append(r)
        print(
            f"{args.mb:>7} | {r['idle']:7.0f} | {r['peak']:7.0f} | {r['peak'] - r['idle']:11.0f} | {r['after']:8.0f} | "
            f"{r['after'] - r['idle']:12.0f} | {r['seconds']:5.1f} | {args.mb / r['seconds']:5.0f} | "
            f"{r['drops']:5.0f} | {'yes' if r['listed'] == 1 else 'no'}",
            flush=True,
        )
    if len(rows) > 1:
        rise = [r["peak"] - r["idle"] for r in rows]
        kept = [r["after"] - r["idle"] for r in rows]
        print(
            f"peak - idle MB min/median/max: {min(rise):.0f} / {statistics.median(rise):.0f} / {max(rise):.0f}; "
            f"after - idle: {min(kept):.0f} / {statistics.median(kept):.0f} / {max(kept):.0f}"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
