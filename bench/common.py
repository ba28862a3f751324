"""Helpers shared by the benchmarks: a sample video padded to any size, RSS sampling, an external emulator."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storyteller_core.samples import make_video  # noqa: E402


def padded_video(path: Path, size_bytes: int) -> Path:
    """A real MP4 followed by an MP4 'free' box, so the file is a valid video of the given size."""
    make_video(path, seconds=2, size=(160, 120))
    pad = size_bytes - path.stat().st_size
    with path.open("ab") as out:
        out.write(struct.pack(">I4sQ", 1, b"free", pad))  # 64-bit box size
        out.truncate(size_bytes)  # sparse zeros; read back as real bytes
    return path


class RssSampler:
    """Peak resident memory of this process, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def external_emulator(processing_delay: float = 0.5, analysis_delay: float = 0.2) -> tuple[subprocess.Popen, str]:
    """The emulator in its own process, so it does not count in this process's memory."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "storyteller_core.emulator", "--port", str(port),
                             "--processing-delay", str(processing_delay), "--analysis-delay", str(analysis_delay)],
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/v1beta/files", timeout=1)
        except urllib.error.HTTPError:
            return proc, url  # it answered (400: no key), so it is up
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("emulator did not start")
