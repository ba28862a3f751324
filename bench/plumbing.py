"""Throughput of the plumbing: our upload vs a raw HTTP upload, our spool+sha256 vs cp.

    python bench/plumbing.py --mb 500

The emulator runs in its own process. The raw upload speaks the same resumable
protocol with http.client and 8 MiB chunks to the same server, so the ratio is
the cost of our path (SDK, progress reader, retries off). Each step runs twice
and the second run counts (warm page cache for both sides).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from common import external_emulator, padded_video

from storyteller_core.gemini.gateway import Gateway
from storyteller_core.intake.media import spool_stream

CHUNK = 8 * 1024 * 1024


def raw_upload(base_url: str, path: Path, name: str) -> None:
    size = path.stat().st_size
    host = urlparse(base_url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
    body = json.dumps({"file": {"display_name": path.name, "name": f"files/{name}"}})
    conn.request(
        "POST",
        "/upload/v1beta/files",
        body,
        {
            "x-goog-api-key": "bench-key",
            "Content-Type": "application/json",
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(size),
            "X-Goog-Upload-Header-Content-Type": "video/mp4",
        },
    )
    response = conn.getresponse()
    response.read()
    upload_path = urlparse(response.headers["x-goog-upload-url"]).path
    offset = 0
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            last = offset + len(chunk) >= size
            conn.request(
                "POST",
                upload_path,
                chunk,
                {"X-Goog-Upload-Command": "upload, finalize" if last else "upload", "X-Goog-Upload-Offset": str(offset)},
            )
            conn.getresponse().read()
            offset += len(chunk)
    conn.close()


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    fn()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    counter = iter(range(100))
    with external_emulator() as emu, tempfile.TemporaryDirectory() as tmp_name:  # stopped and checked on exit
        url = emu.url
        tmp = Path(tmp_name)
        video = padded_video(tmp / "plumbing.mp4", args.mb * 1024**2)
        gateway = Gateway("bench-key", url, 120)
        ours_up = timed(
            lambda: (
                gateway.upload(
                    video, name=f"ours-{next(counter)}", display_name=video.name, mime_type="video/mp4", on_progress=lambda _: None
                ).file
            )
        )
        raw_up = timed(lambda: raw_upload(url, video, f"raw-{next(counter)}"))

        def spool() -> None:
            shutil.rmtree(tmp / "spool", ignore_errors=True)
            with video.open("rb") as src:
                spool_stream(src, tmp / "spool", video.name)

        ours_spool = timed(spool)
        plain_cp = timed(lambda: subprocess.run(["cp", "--sparse=never", str(video), str(tmp / "copy.mp4")], check=True))
    mb = args.mb
    print(f"{'step':<26} | {'ours s':>6} | {'MB/s':>6} | {'baseline':<10} | {'base s':>6} | {'ratio':>5}")
    print(
        f"{'upload ' + str(mb) + ' MB':<26} | {ours_up:6.2f} | {mb / ours_up:6.0f} | {'raw HTTP':<10} | {raw_up:6.2f} | "
        f"{ours_up / raw_up:5.2f}"
    )
    print(
        f"{'spool + sha256 ' + str(mb) + ' MB':<26} | {ours_spool:6.2f} | {mb / ours_spool:6.0f} | {'cp (dense)':<10} | "
        f"{plain_cp:6.2f} | {ours_spool / plain_cp:5.2f}"
    )


if __name__ == "__main__":
    main()
