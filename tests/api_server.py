"""A real app server for the job API tests: started on a port with the emulator's base URL and a token, restartable."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from storyteller_core.intake.samples import make_video

from .helpers import TEST_KEY

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "api-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``streamlit run app.py`` with this data dir; ``restart()`` stops it and starts it again on the same port."""

    def __init__(self, tmp: Path, base_url: str | None, **env: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.api = self.url + "/api/v1"
        self.data_dir = tmp / "data"
        drop = {"GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "DISPLAY", "WAYLAND_DISPLAY"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("STREAMLIT_")}
        self.env |= {"STORYTELLER_DATA_DIR": str(self.data_dir), "STORYTELLER_TOKEN": TOKEN, "HOME": str(tmp)}
        if base_url:
            self.env |= {"GEMINI_API_KEY": TEST_KEY, "GOOGLE_GEMINI_BASE_URL": base_url}
        self.env |= env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 180) -> AppServer:
        self.starts += 1
        log = (self.tmp / f"server-{self.starts}.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.headless",
                "true",
                "--server.port",
                str(self.port),
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=2).read() == b"ok":
                    return self
            except OSError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.2)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("server-*.log")))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def rss_bytes(self) -> int:
        import psutil

        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)


def padded_video(path: Path, size_bytes: int, seed: int = 1) -> Path:
    """A real MP4 followed by a sparse 'free' box (as bench/common.py makes them): a valid video of any size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    make_video(path, seconds=1, size=(160, 120), seed=seed)
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
