"""Helpers shared by the benchmarks: a sample video padded to any size, RSS sampling, an external emulator."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storyteller_core.intake.samples import make_video  # noqa: E402


def previous_code(revision: str, folder: Path) -> Path:
    """``storyteller_core`` as it was at ``revision``, unpacked into ``folder`` (put it first on sys.path)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "storyteller_core"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


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


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when the bench process dies, even by SIGKILL, so the emulator
    still stops cleanly and deletes its storage instead of running on with gigabytes in the temp folder."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the atexit hook and the context manager still stop it


class ExternalEmulator:
    """``python -m storyteller_core.emulator`` in its own process, so it does not count in this process's memory.

    Use it as a context manager: on exit it sends SIGTERM, waits for the
    emulator to stop (it deletes its storage on SIGTERM), then deletes the
    folder its storage lived in and checks nothing was left (gigabytes per
    bench run otherwise). An atexit hook does the same for a bench that forgets
    the ``with``, and the emulator gets SIGTERM if the bench itself is killed.
    """

    def __init__(self, processing_delay: float = 0.5, analysis_delay: float = 0.2, stream_chunk_delay: float = 0.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench-emulator-"))  # the emulator's storage dir goes in here
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (the emulator's stderr, kept as long as it runs)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storyteller_core.emulator",
                "--port",
                str(port),
                "--processing-delay",
                str(processing_delay),
                "--analysis-delay",
                str(analysis_delay),
                "--stream-chunk-delay",
                str(stream_chunk_delay),
                "--storage-root",
                str(self.root),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509 - no threads yet
        )
        atexit.register(self.stop)  # even a bench that forgets the ``with`` cleans up
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url + "/v1beta/files", timeout=1)
            except urllib.error.HTTPError:
                return  # it answered (400: no key), so it is up
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self._log.seek(0)
        said = self._log.read().decode(errors="replace")[-2000:]
        self.stop(check=False)
        raise RuntimeError("emulator did not start: " + said)

    def stop(self, check: bool = True) -> None:
        """SIGTERM, wait (SIGKILL after 30 s), then make sure no storage is left behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        left = [p for p in self.root.rglob("*") if p.is_file()] if self.root.exists() else []
        shutil.rmtree(self.root, ignore_errors=True)
        if not self._log.closed:
            self._log.close()
        if left and check:
            raise RuntimeError(f"the emulator left its storage behind (exit code {self.proc.returncode}): {left}")

    def __enter__(self) -> ExternalEmulator:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop(check=exc_type is None)

    def __iter__(self) -> Iterator[subprocess.Popen | str]:
        """Old callers: ``proc, url = external_emulator()``; prefer ``with external_emulator() as emu:``."""
        return iter((self.proc, self.url))


def external_emulator(processing_delay: float = 0.5, analysis_delay: float = 0.2, stream_chunk_delay: float = 0.0) -> ExternalEmulator:
    """``with external_emulator() as emu:`` use ``emu.url``; stopped with SIGTERM and checked on exit.

    An analysis takes ``analysis_delay`` plus ``stream_chunk_delay`` between its streamed pieces (0: none).
    """
    return ExternalEmulator(processing_delay, analysis_delay, stream_chunk_delay)


def spread(values: list[float], fmt: str = ".1f") -> str:
    """min / median / max of a few runs, e.g. "1.02 / 1.10 / 1.31"."""
    import statistics

    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def load_line(loads: list[tuple[float, float, float]]) -> str:
    """The machine's load while the bench ran (os.getloadavg() samples: 1-minute average, lowest and highest)."""
    ones = [load[0] for load in loads]
    return f"load average (1 min) during the runs: {min(ones):.2f} .. {max(ones):.2f} on {os.cpu_count()} cores"
