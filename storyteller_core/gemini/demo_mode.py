"""Which Gemini answers: the real service (or GOOGLE_GEMINI_BASE_URL) with a key, else a local emulator.

Demo mode: with no API key, one local emulator per process stands in for
Gemini, and its answers live under the demo backend (Settings.backend), so
they are never handed out as real stories once a key is set.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from storyteller_core.sanitize import register_secret
from storyteller_core.settings import Settings

if TYPE_CHECKING:
    from storyteller_core.emulator import Emulator
    from storyteller_core.gemini.gateway import Gateway

DEMO_KEY = "demo-mode-no-key"
_lock = threading.Lock()
_emulator: Emulator | None = None


def emulator(data_dir: Path) -> Emulator:
    """The process's demo emulator, started on a free loopback port on first use.

    What it is sent lives under the data dir (``demo-gemini/<pid>-*``), deleted when the process exits; a folder
    left by a killed process is deleted by the next one, so demo runs never pile copies of videos up in /tmp.
    """
    global _emulator
    from storyteller_core.emulator import Emulator, EmulatorConfig

    with _lock:
        if _emulator is None:
            root = data_dir / "demo-gemini"
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            _sweep(root)
            _emulator = Emulator(
                EmulatorConfig(processing_delay_s=1.5, analysis_delay_s=1.0, stream_chunk_delay_s=0.4),
                storage_root=root,
                storage_prefix=f"{os.getpid()}-",
            ).start()
            atexit.register(_emulator.stop)
        return _emulator


def stop() -> None:
    """Stop the process's demo emulator and delete what it was sent (the server stopping; atexit does it otherwise)."""
    global _emulator
    with _lock:
        if _emulator is not None:
            _emulator.stop()
            _emulator = None


def _sweep(root: Path) -> None:
    for folder in root.iterdir():
        pid = folder.name.partition("-")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def gateway_for(settings: Settings) -> Gateway:
    from storyteller_core.gemini.gateway import Gateway

    if settings.api_key:
        register_secret(settings.api_key)
        return Gateway(settings.api_key, settings.base_url, settings.request_timeout_s, api_version=settings.api_version)
    return Gateway(DEMO_KEY, emulator(settings.data_dir).base_url, settings.request_timeout_s, api_version=settings.api_version)
