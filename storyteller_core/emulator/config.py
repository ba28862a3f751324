"""What the emulator does: delays and faults, changeable while it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storyteller_core.settings import API_VERSION, MODELS, RETIRED

# An extra model as models.list shows it: one that cannot generateContent, so a client filtering by
# supportedGenerationMethods can be tested (EmulatorConfig(extra_models=[EMBEDDING_MODEL])).
EMBEDDING_MODEL: dict[str, Any] = {
    "name": "gemini-embedding-001",
    "displayName": "Gemini Embedding 001",
    "supportedGenerationMethods": ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"],
}


@dataclass
class EmulatorConfig:
    processing_delay_s: float | Callable[[str], float] = 0.5  # seconds, or by display name
    analysis_delay_s: float = 0.2
    chunk_delay_s: float = 0.0  # per upload request, to make uploads overlap in tests
    rate_429: float = 0.0  # share of API calls answered 429
    retry_delay_s: float | None = None  # RetryInfo sent with a 429 (0.0 sends "0s"); None sends none
    rate_503: float = 0.0
    bad_body_rate: float = 0.0  # share answered 200 with an HTML page or truncated JSON instead of Gemini's JSON
    # where faults strike: upload_start, poll (files.get), generate (generateContent and streamGenerateContent),
    # models (models.list), count_tokens, batch (batchGenerateContent and batches get/list/cancel);
    # upload_final takes bad bodies only (the file is stored, its answer is garbled)
    fault_on: set[str] = field(default_factory=lambda: {"upload_start", "poll", "generate"})
    models: set[str] = field(default_factory=lambda: set(MODELS))  # what models.list offers; others answer 404
    # retired models (Google's deprecations page) and their replacement: 404 "... is no longer available to new users"
    retired: dict[str, str] = field(default_factory=lambda: dict(RETIRED))
    api_version: str = API_VERSION  # the only API version answered (the gateway pins the same): drift is a 404
    # more models.list entries, as on the wire: {"name", "displayName", "supportedGenerationMethods"};
    # one without "generateContent" answers 404 to generateContent
    extra_models: list[dict[str, Any]] = field(default_factory=list)
    fail_every_nth_chunk: int = 0  # every n-th upload chunk is answered 500 (the SDK resends it)
    fail_marker: str = "FAILME"  # display name containing it -> file ends FAILED
    blocked_marker: str = "BLOCKME"  # -> answer blocked for safety
    empty_marker: str = "EMPTYME"  # -> answer with no text
    echo_key_marker: str = "ECHOKEY"  # -> generateContent refuses with the caller's key and a link in the message
    vanish_marker: str = "VANISHME"  # -> the file is deleted just before its first analysis (403)
    bad_json_marker: str = "BADJSON"  # -> a structured answer that is valid JSON but misses required fields
    late_moment_marker: str = "LATEMOMENT"  # -> a structured answer with one key moment past the end of the video
    cut_marker: str = "CUTME"  # -> the first stream of that video is cut half-way (later ones are whole)
    hang_generate_s: float = 0.0  # generateContent waits this long before answering
    expire_after_s: float | None = None  # files vanish this long after upload
    rejected_keys: set[str] = field(default_factory=set)
    valid_keys: set[str] | None = None  # None: any key not rejected is valid
    seed: int = 7
    # streamGenerateContent: the answer's text is split over this many events, this far apart
    stream_events: int = 4
    stream_chunk_delay_s: float = 0.0
    stream_cut_rate: float = 0.0  # share of streams cut half-way (the connection drops mid-event)
    # YouTube file_uri: no upload; the emulator does not fetch YouTube, it assumes a duration
    youtube_duration_s: float = 300.0
    youtube_durations: dict[str, float] = field(default_factory=dict)  # by video id
    youtube_titles: dict[str, str] = field(default_factory=dict)  # by video id, used in structured titles
    private_youtube_ids: set[str] = field(default_factory=set)  # -> 400 INVALID_ARGUMENT, as Gemini answers them
    flex_delay_s: float = 0.0  # extra wait for serviceTier "flex"
    # Batch API: a batch is PENDING this long, then RUNNING this long, then SUCCEEDED
    batch_pending_s: float = 0.2
    batch_running_s: float = 0.8
    batch_fail_marker: str = "FAILBATCH"  # batch display name or a request's prompt containing it -> BATCH_STATE_FAILED
    batch_expire_marker: str = "EXPIREBATCH"  # -> BATCH_STATE_EXPIRED

    def processing_delay(self, display_name: str) -> float:
        delay = self.processing_delay_s
        return delay(display_name) if callable(delay) else delay
