"""What the emulator does: delays and faults, changeable while it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import MODELS


@dataclass
class EmulatorConfig:
    processing_delay_s: float | Callable[[str], float] = 0.5  # seconds, or by display name
    analysis_delay_s: float = 0.2
    chunk_delay_s: float = 0.0  # per upload request, to make uploads overlap in tests
    rate_429: float = 0.0  # share of API calls answered 429
    retry_delay_s: float | None = None  # RetryInfo sent with a 429 (0.0 sends "0s"); None sends none
    rate_503: float = 0.0
    bad_body_rate: float = 0.0  # share answered 200 with an HTML page or truncated JSON instead of Gemini's JSON
    # where faults strike: upload_start, poll (files.get), generate, models (models.list);
    # upload_final takes bad bodies only (the file is stored, its answer is garbled)
    fault_on: set[str] = field(default_factory=lambda: {"upload_start", "poll", "generate"})
    models: set[str] = field(default_factory=lambda: set(MODELS))  # what models.list offers; others answer 404
    fail_every_nth_chunk: int = 0  # every n-th upload chunk is answered 500 (the SDK resends it)
    fail_marker: str = "FAILME"  # display name containing it -> file ends FAILED
    blocked_marker: str = "BLOCKME"  # -> answer blocked for safety
    empty_marker: str = "EMPTYME"  # -> answer with no text
    echo_key_marker: str = "ECHOKEY"  # -> generateContent refuses with the caller's key and a link in the message
    vanish_marker: str = "VANISHME"  # -> the file is deleted just before its first analysis (403)
    hang_generate_s: float = 0.0  # generateContent waits this long before answering
    expire_after_s: float | None = None  # files vanish this long after upload
    rejected_keys: set[str] = field(default_factory=set)
    valid_keys: set[str] | None = None  # None: any key not rejected is valid
    seed: int = 7

    def processing_delay(self, display_name: str) -> float:
        delay = self.processing_delay_s
        return delay(display_name) if callable(delay) else delay
