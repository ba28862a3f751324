"""Demo mode: with no API key, one local emulator per process stands in for Gemini."""

from __future__ import annotations

import threading

from .emulator import Emulator, EmulatorConfig

DEMO_KEY = "demo-mode-no-key"
_lock = threading.Lock()
_emulator: Emulator | None = None


def emulator() -> Emulator:
    """The process's demo emulator, started on a free loopback port on first use."""
    global _emulator
    with _lock:
        if _emulator is None:
            _emulator = Emulator(EmulatorConfig(processing_delay_s=1.5, analysis_delay_s=1.0)).start()
        return _emulator
