"""Which Gemini answers: the real service (or GOOGLE_GEMINI_BASE_URL) with a key, else a local emulator.

Demo mode: with no API key, one local emulator per process stands in for
Gemini, and its answers live under the demo backend (Settings.backend), so
they are never handed out as real stories once a key is set.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .config import Settings
from .sanitize import register_secret

if TYPE_CHECKING:
    from .emulator import Emulator
    from .gemini import Gateway

DEMO_KEY = "demo-mode-no-key"
_lock = threading.Lock()
_emulator: Emulator | None = None


def emulator() -> Emulator:
    """The process's demo emulator, started on a free loopback port on first use."""
    global _emulator
    from .emulator import Emulator, EmulatorConfig

    with _lock:
        if _emulator is None:
            _emulator = Emulator(EmulatorConfig(processing_delay_s=1.5, analysis_delay_s=1.0, stream_chunk_delay_s=0.4)).start()
        return _emulator


def gateway_for(settings: Settings) -> Gateway:
    from .gemini import Gateway

    if settings.api_key:
        register_secret(settings.api_key)
        return Gateway(settings.api_key, settings.base_url, settings.request_timeout_s)
    return Gateway(DEMO_KEY, emulator().base_url, settings.request_timeout_s)
