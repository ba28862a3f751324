"""Server RSS while a large file arrives over tus (/api/v1/uploads), and the cost of resuming after a restart.

    python bench/api_tus.py              # 2048 MB
    python bench/api_tus.py --mb 300

Starts `streamlit run app.py` (demo mode) with an access token, uploads a padded MP4 with tuspy in 8 MiB
pieces, sampling the server's RSS every 50 ms; stops half way, restarts the server, resumes (the first
PATCH after a restart re-hashes the partial file), and checks the sha256 the server reports.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from tusclient import client as tus_client  # noqa: E402

from tests.api_server import AUTH, AppServer, padded_video, sha256_of  # noqa: E402

MB = 1024 * 1024


class Peak:
    def __init__(self, server: AppServer) -> None:
        self.server, self.peak, self._stop = server, 0, threading.Event()

    def __enter__(self) -> Peak:
        self.base = self.server.rss_bytes()
        self.peak = self.base
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.server.rss_bytes())
            except psutil.Error:
                return
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=2048)
    parser.add_argument("--chunk-mb", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = padded_video(Path(tmp) / "big.mp4", args.mb * MB)
        expected = sha256_of(video)
        server = AppServer(Path(tmp), None).start()
        try:
            client = tus_client.TusClient(server.api + "/uploads", headers=AUTH)
            uploader = client.uploader(str(video), chunk_size=args.chunk_mb * MB, metadata={"filename": video.name})
            half = (args.mb // 2) * MB
            started = time.monotonic()
            with Peak(server) as first:
                uploader.upload(stop_at=half)
            first_s = time.monotonic() - started
            print(
                f"first half: {half / MB:.0f} MB in {first_s:.1f} s ({half / MB / first_s:.0f} MB/s); server RSS "
                f"{first.base / MB:.0f} MB before, peak {first.peak / MB:.0f} MB (+{(first.peak - first.base) / MB:.0f})"
            )
            server.restart()
            resumed = client.uploader(str(video), url=uploader.url, chunk_size=args.chunk_mb * MB)
            started = time.monotonic()
            with Peak(server) as second:
                resumed.upload_chunk()  # the first PATCH after a restart re-hashes the partial file
                rehash_s = time.monotonic() - started
                resumed.upload()
            second_s = time.monotonic() - started
            rest = args.mb * MB - half
            print(
                f"after restart: first piece (re-hash of {half / MB:.0f} MB) {rehash_s:.1f} s; the rest "
                f"{rest / MB:.0f} MB in {second_s:.1f} s; server RSS {second.base / MB:.0f} MB before, peak "
                f"{second.peak / MB:.0f} MB (+{(second.peak - second.base) / MB:.0f})"
            )
            info = httpx.get(uploader.url, headers=AUTH, timeout=60).json()
            print(f"sha256 {'matches' if info['sha256'] == expected else 'DIFFERS'}; state {info['state']}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
