"""Fixtures: real small videos (PyAV), a live emulator on loopback, engines against it."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storyteller_core import Engine, Settings
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.samples import make_batch, make_video

TEST_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    make_batch(folder, 12)
    return folder


@pytest.fixture
def videos(video_dir: Path, tmp_path: Path) -> list[Path]:
    """Fresh copies per test, so tests never share paths."""
    out = tmp_path / "in"
    shutil.copytree(video_dir, out)
    return sorted(out.glob("*.mp4"))


@pytest.fixture
def one_video(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str, seed: int = 99, seconds: float = 1.0) -> Path:
        return make_video(tmp_path / "named" / name, seconds=seconds, seed=seed)

    return make


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(processing_delay_s=0.3, analysis_delay_s=0.05)) as emu:
        yield emu


def fast_settings(data_dir: Path, emu: Emulator, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        data_dir=data_dir, api_key=TEST_KEY, base_url=emu.base_url, poll_initial_s=0.1, poll_max_s=0.5,
        upload_budget_s=20, processing_budget_s=20, analysis_budget_s=5, request_timeout_s=5, lease_ttl_s=5,
        polls_per_second=50,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_engine(tmp_path: Path, emulator: Emulator) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make(**overrides: object) -> Engine:
        settings = fast_settings(overrides.pop("data_dir", tmp_path / "data"), emulator, **overrides)
        engine = Engine(settings, stderr_log_level=logging.CRITICAL + 1).start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown(timeout=5)
