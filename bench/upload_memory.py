"""Peak RSS of the Streamlit server while a large file arrives through file_uploader, and after.

    python bench/upload_memory.py             # 300 MB, needs Debian's chromium

Starts `streamlit run app.py` (demo mode), drops the file in headless chromium,
samples the server's RSS every 50 ms until the file is spooled and the widget
cleared, then reads RSS again after a few seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from common import ROOT, free_port, padded_video


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=300)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        video = padded_video(Path(tmp) / "big-upload.mp4", args.mb * 1024**2)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
        env["STORYTELLER_DATA_DIR"] = str(Path(tmp) / "data")
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
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://localhost:{port}"
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            proc = psutil.Process(server.pid)
            peak = [0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.05):
                    peak[0] = max(peak[0], proc.memory_info().rss)

            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    headless=True,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                page = browser.new_page()
                page.goto(url)
                page.get_by_text("Drop videos here").wait_for(timeout=60_000)
                time.sleep(2)
                idle = proc.memory_info().rss
                threading.Thread(target=sample, daemon=True).start()
                started = time.monotonic()
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(video))
                page.get_by_role("button", name="Start batch (1 video(s))").wait_for(timeout=300_000)
                spooled_s = time.monotonic() - started
                time.sleep(5)
                stop.set()
                after = proc.memory_info().rss
                browser.close()
        finally:
            server.terminate()
            server.wait(15)
    mb = 1024**2
    print(f"{'file MB':>7} | {'idle MB':>7} | {'peak MB':>7} | {'peak - idle':>11} | {'after MB':>8} | {'spooled in s':>12}")
    print(f"{args.mb:>7} | {idle / mb:7.0f} | {peak[0] / mb:7.0f} | {(peak[0] - idle) / mb:11.0f} | {after / mb:8.0f} | {spooled_s:12.1f}")


if __name__ == "__main__":
    main()
