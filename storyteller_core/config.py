"""Settings from the environment, the table of models and prices (prices.json), and the prompt presets."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .options import VideoOptions


@dataclass(frozen=True)
class ModelInfo:
    name: str
    label: str
    usd_per_m_input: float
    usd_per_m_output: float
    batch_discount: float = 0.5


def _load_prices() -> tuple[dict[str, ModelInfo], str]:
    """The dated price table shipped with the package: data, not code."""
    data = json.loads((Path(__file__).with_name("prices.json")).read_text(encoding="utf-8"))
    models = {name: ModelInfo(name, m["label"], float(m["input"]), float(m["output"]), float(m.get("batch_discount", 0.5)))
              for name, m in data["models"].items()}
    return models, str(data["checked"])


# Model names change fast (gemini-3-pro-preview was shut down in 2026-03): the key's models.list decides
# what is offered (catalog.py); this table only prices the ones we know.
MODELS, PRICES_CHECKED = _load_prices()
DEFAULT_MODEL = "gemini-2.5-flash"  # only until models.list answers; STORYTELLER_MODEL pins a model

# Where a Gemini file and an answer live: demo answers never stand in for real ones.
DEMO_BACKEND = "demo"
GOOGLE_BACKEND = "https://generativelanguage.googleapis.com"

EXPECTED_OUTPUT_TOKENS = 800

PROMPT_PRESETS: dict[str, str] = {
    "Story": (
        "Watch this video and write its story: a clear narrative in plain prose of "
        "what happens, who is involved, where it takes place and how it ends. "
        "Write for an analyst who will paste it into a report."
    ),
    "Key moments with timestamps": (
        "List the key moments of this video as bullet points, each starting with "
        "its timestamp (mm:ss), followed by one sentence on what happens."
    ),
    "Summary for a report": (
        "Summarise this video in one paragraph of at most 120 words for a report: "
        "the subject, the main events and anything notable."
    ),
}
DEFAULT_PROMPT = PROMPT_PRESETS["Story"]
# Presets whose answer is the structured story (title, prose, key moments, people, places, tags): see story.py.
STRUCTURED_PRESETS = frozenset({"Story"})

PRIORITIES = ("high", "normal", "low")

VIDEO_EXTENSIONS = {
    ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpeg", ".mpg", ".3gp", ".flv", ".wmv",
}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def default_data_dir() -> Path:
    raw = os.environ.get("STORYTELLER_DATA_DIR", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".video-storyteller"


def api_key_from_env() -> str | None:
    return os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    model: str = DEFAULT_MODEL
    model_pinned: bool = False  # STORYTELLER_MODEL: use it even when models.list would choose another
    max_jobs: int = 3
    max_uploads: int = 2
    max_polls: int = 10
    polls_per_second: float = 5.0
    poll_initial_s: float = 1.0
    poll_factor: float = 1.5
    poll_max_s: float = 10.0
    poll_jitter: float = 0.2
    upload_budget_s: float = 15 * 60
    processing_budget_s: float = 10 * 60
    analysis_budget_s: float = 5 * 60
    flex_budget_s: float = 20 * 60  # the Flex tier answers in minutes, not seconds
    # the Batch tier (Gemini's Batch API): answers within hours (target 24 h, a job expires after 48 h)
    batch_collect_s: float = 60.0  # a ready analysis waits this long at most for others of its model to join its job
    batch_poll_initial_s: float = 10.0  # a job is looked at every age/10 seconds, at least this and at most the next
    batch_poll_max_s: float = 300.0
    request_timeout_s: float = 60.0
    max_file_bytes: int = 2 * 1024**3
    max_duration_s: float = 6 * 3600
    file_ttl_s: float = 48 * 3600
    lease_ttl_s: float = 20.0
    quota_pause_after_s: float = 120.0  # quota exhausted this long: pause instead of failing videos

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        base = cls(
            api_key=api_key_from_env(),
            base_url=os.environ.get("GOOGLE_GEMINI_BASE_URL") or None,
            model=os.environ.get("STORYTELLER_MODEL") or DEFAULT_MODEL,
            model_pinned=bool(os.environ.get("STORYTELLER_MODEL")),
            max_jobs=_env_int("STORYTELLER_MAX_JOBS", 3),
            max_uploads=_env_int("STORYTELLER_MAX_UPLOADS", 2),
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @property
    def demo(self) -> bool:
        return not self.api_key

    @property
    def backend(self) -> str:
        return DEMO_BACKEND if self.demo else (self.base_url or GOOGLE_BACKEND).rstrip("/")

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"


def estimate_tokens(duration_s: float | None, prompt: str, options: VideoOptions | None = None) -> int:
    """Input and expected output tokens for one video, from its duration and what of it is looked at."""
    video = (options or VideoOptions()).video_tokens(duration_s)
    return video + len(prompt) // 4 + EXPECTED_OUTPUT_TOKENS


# standard: answers in seconds; flex: Gemini's Flex service tier, half price, minutes of latency (preview);
# batch: Gemini's Batch API, about half price, results within hours (target 24 h)
TIERS = ("standard", "flex", "batch")
DISCOUNTED_TIERS = frozenset({"flex", "batch"})  # priced at the model's batch_discount (prices.json)


def cost_usd(model: str, input_tokens: int, output_tokens: int, tier: str = "standard") -> float | None:
    """USD for these tokens at this tier; None when the model is not in our price table ("price unknown")."""
    info = MODELS.get(model)
    if info is None:
        return None
    full = (input_tokens * info.usd_per_m_input + output_tokens * info.usd_per_m_output) / 1e6
    return full * (1 - info.batch_discount) if tier in DISCOUNTED_TIERS else full


def estimate_cost(model: str, duration_s: float | None, prompt: str, options: VideoOptions | None = None,
                  tier: str = "standard") -> float | None:
    tokens = estimate_tokens(duration_s, prompt, options)
    return cost_usd(model, tokens - EXPECTED_OUTPUT_TOKENS, EXPECTED_OUTPUT_TOKENS, tier)
