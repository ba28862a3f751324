"""A real redis-server for team-mode tests: one per test session, on a free loopback port, in a temp dir.

Each test gets its own key prefix (and Dramatiq namespace), so tests share the
server without seeing each other's keys. Tests that use it are skipped when
Debian's redis-server is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "team-test-password"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = Path(__file__).resolve().parents[1]
needs_redis = pytest.mark.skipif(
    not Path(REDIS_SERVER).exists() or importlib.util.find_spec("redis") is None or importlib.util.find_spec("dramatiq") is None,
    reason="team mode needs Debian's redis-server and the redis and dramatiq[redis] packages",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"  # team mode refuses a broker with no password


def start_redis(directory: Path) -> RedisServer:
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--protected-mode",
            "yes",
            "--requirepass",
            PASSWORD,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=(directory / "redis.log").open("w"),
        stderr=subprocess.STDOUT,
        cwd=directory,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
                seen = b""
                while b"+PONG" not in seen and b"-" not in seen and (chunk := s.recv(64)):
                    seen += chunk
                if b"+PONG" in seen:
                    return RedisServer(port, proc)
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start: {(directory / 'redis.log').read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("Debian's redis-server is not installed")
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()


@pytest.fixture
def team_prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def redis_client(redis_server: RedisServer):  # type: ignore[no-untyped-def]
    from storyteller_core.storage.redis_store import connect

    client = connect(redis_server.url)
    yield client
    client.close()


class Workers:
    """Worker processes (python -m storyteller_core.team.worker), stopped at the end of the test."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, count: int = 1, **extra_env: str) -> list[subprocess.Popen]:
        started = []
        for _ in range(count):
            n = len(self.procs)
            env = {**self.env, **extra_env}
            log = (self.log_dir / f"worker-{n}.log").open("w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "storyteller_core.team.worker"],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.procs.append(proc)
            started.append(proc)
        return started

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            if proc.pid == pid:
                proc.wait(10)

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.log_dir.glob("worker-*.log")))

    def stop(self) -> None:
        for proc in self.alive():
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(params=["diskcache", "redis"])
def either_store(request, tmp_path):  # type: ignore[no-untyped-def]
    """The same test against both stores of the contract: DiskStore, then RedisStore on the test redis."""
    if request.param == "diskcache":
        from storyteller_core.storage.disk_store import DiskStore

        store = DiskStore(tmp_path / "store")
        yield store
        store.close()
    else:
        from storyteller_core.storage.redis_store import RedisStore

        yield RedisStore(request.getfixturevalue("redis_client"), prefix=request.getfixturevalue("team_prefix"))
