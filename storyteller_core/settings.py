"""Settings from the environment, the table of models and prices (prices.json), and the prompt presets."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from storyteller_core.records.options import VideoOptions


@dataclass(frozen=True)
class ModelInfo:
    name: str
    label: str
    usd_per_m_input: float
    usd_per_m_output: float
    batch_discount: float = 0.5
    usd_per_m_cached: float | None = None  # cached input tokens (explicit context caching), about a tenth of input
    usd_per_m_hour_storage: float = 1.0  # a cache's storage, per million tokens per hour
    min_cache_tokens: int = 4096  # below this Gemini refuses to create a cache
    estimated: bool = False  # priced from its family (not in prices.json): shown as an estimate


def _info(name: str, label: str, m: dict[str, object], *, estimated: bool = False) -> ModelInfo:
    def num(key: str, default: float) -> float:
        value = m.get(key, default)
        return float(value) if isinstance(value, (int, float, str)) else default

    return ModelInfo(
        name,
        label,
        num("input", 0),
        num("output", 0),
        num("batch_discount", 0.5),
        num("cached", num("input", 0) / 10),
        num("storage", 1.0),
        int(num("min_cache_tokens", 4096)),
        estimated,
    )


log = logging.getLogger(__name__)
_PRICES = json.loads((Path(__file__).parent / "gemini" / "prices.json").read_text(encoding="utf-8"))


def _load_prices() -> tuple[dict[str, ModelInfo], str]:
    """The dated price table shipped with the package: data, not code."""
    models = {name: _info(name, m["label"], m) for name, m in _PRICES["models"].items()}
    return models, str(_PRICES["checked"])


# Model names change fast: the key's models.list decides what is offered (catalog.py); this table prices the
# ones we know, and a model it lacks is priced from its family (model_info) and labelled an estimate.
MODELS, PRICES_CHECKED = _load_prices()
FAMILIES: dict[str, dict[str, object]] = dict(_PRICES.get("families", {}))
# Retired models (Google's deprecations page) and the model Google names instead.
RETIRED: dict[str, str] = dict(_PRICES.get("retired", {}))
DEFAULT_MODEL = "gemini-3.8-flash"  # only until models.list answers; STORYTELLER_MODEL pins a model
# The Gemini API surface the gateway talks to (and the emulator answers): v1beta, because Google's published v1
# messages (google-ai-generativelanguage 0.12.1) lack the Files API, fileData, cachedContents, responseJsonSchema,
# mediaResolution and serviceTier, all of which we send. google-genai 3.x would default to v1.
API_VERSION = "v1beta"


def family_of(model: str) -> str:
    """flash-lite, flash or pro from a model's name; flash when the name says none of them."""
    name = model.removeprefix("models/")
    if "flash-lite" in name:
        return "flash-lite"
    return "pro" if "-pro" in name else "flash"


def model_info(model: str) -> ModelInfo:
    """The model's prices: from the table, else its family's (estimated=True); never missing."""
    info = MODELS.get(model)
    if info is not None:
        return info
    family = family_of(model)
    return _info(model, f"{model} (price estimated from {family})", FAMILIES.get(family, {"input": 0.75, "output": 4.5}), estimated=True)


def replacement_in(message: str) -> str | None:
    """The model Gemini's 404 names instead ("... Please update your code to use gemini-3.5-flash-lite.")."""
    match = re.search(r"update your code to use (?:models/)?(gemini-[\w.-]*\w)", message or "")
    return match.group(1) if match else None


def retired_sentence(model: str, instead: str | None = None) -> str:
    """One sentence naming the retired model and the one to use instead."""
    use = instead or RETIRED.get(model)
    if use:
        return (
            f"The model {model} is retired by Google and no longer answers; use {use} instead "
            f"(pick it on the Batch page or set STORYTELLER_MODEL={use})."
        )
    return f"The model {model} is not available to this key; pick another model on the Batch page or set STORYTELLER_MODEL."


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
        "Summarise this video in one paragraph of at most 120 words for a report: the subject, the main events and anything notable."
    ),
}
DEFAULT_PROMPT = PROMPT_PRESETS["Story"]
# Presets whose answer is the structured story (title, prose, key moments, people, places, tags): see story.py.
STRUCTURED_PRESETS = frozenset({"Story"})

PRIORITIES = ("high", "normal", "low")

VIDEO_EXTENSIONS = {
    ".mp4",
    ".mov",
    ".m4v",
    ".mkv",
    ".webm",
    ".avi",
    ".mpeg",
    ".mpg",
    ".3gp",
    ".flv",
    ".wmv",
}


# settings renamed so that one word names one idea; the old names still work, with a warning
RENAMED_ENV = {"STORYTELLER_MAX_WORKERS": "STORYTELLER_MAX_JOBS"}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    old = RENAMED_ENV.get(name)
    if not raw and old and os.environ.get(old, "").strip():
        raw = os.environ[old].strip()
        log.warning(f"{old} is now called {name}: rename it in your environment (the old name still works for now)")
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
    max_workers: int = 3
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
    api_version: str = API_VERSION  # STORYTELLER_API_VERSION: the Gemini API surface (see API_VERSION)
    cache_ttl_s: float = 3600.0  # an explicit context cache lives this long unless deleted first (Gemini's default 1 h)
    context_cache: bool = True  # STORYTELLER_CONTEXT_CACHE=0: never make one (steps/caching.py has the rule)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        base = cls(
            api_key=api_key_from_env(),
            base_url=os.environ.get("GOOGLE_GEMINI_BASE_URL") or None,
            model=os.environ.get("STORYTELLER_MODEL") or DEFAULT_MODEL,
            model_pinned=bool(os.environ.get("STORYTELLER_MODEL")),
            max_workers=_env_int("STORYTELLER_MAX_WORKERS", 3),
            max_uploads=_env_int("STORYTELLER_MAX_UPLOADS", 2),
            api_version=os.environ.get("STORYTELLER_API_VERSION") or API_VERSION,
            context_cache=os.environ.get("STORYTELLER_CONTEXT_CACHE", "1").strip() not in ("0", "false", "no"),
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


def cost_usd(model: str, input_tokens: int, output_tokens: int, tier: str = "standard", cached_tokens: int = 0) -> float | None:
    """USD for these tokens at this tier; ``cached_tokens`` (part of ``input_tokens``) at the cached price.

    A model missing from the table is priced from its family (model_info(model).estimated says so).
    """
    info = model_info(model)
    cached = min(max(cached_tokens, 0), input_tokens)
    cached_price = info.usd_per_m_cached if info.usd_per_m_cached is not None else info.usd_per_m_input / 10
    full = ((input_tokens - cached) * info.usd_per_m_input + cached * cached_price + output_tokens * info.usd_per_m_output) / 1e6
    return full * (1 - info.batch_discount) if tier in DISCOUNTED_TIERS else full


def cache_storage_usd(model: str, tokens: int, seconds: float) -> float:
    """What keeping ``tokens`` in an explicit cache for ``seconds`` costs."""
    return tokens / 1e6 * model_info(model).usd_per_m_hour_storage * seconds / 3600


def estimate_cost(
    model: str, duration_s: float | None, prompt: str, options: VideoOptions | None = None, tier: str = "standard"
) -> float | None:
    tokens = estimate_tokens(duration_s, prompt, options)
    return cost_usd(model, tokens - EXPECTED_OUTPUT_TOKENS, EXPECTED_OUTPUT_TOKENS, tier)


def estimate_questions_cost(
    model: str,
    duration_s: float | None,
    prompts: list[str],
    options: VideoOptions | None = None,
    tier: str = "standard",
    *,
    cached: bool,
    held_s: float = 600.0,
) -> float:
    """USD for asking ``prompts`` of one video: each with the video at full price, or (``cached``) the video read
    from one explicit cache at the cached price plus its storage for ``held_s`` seconds (an estimate of how
    long the questions take; the cache is deleted after the last)."""
    options = options or VideoOptions()
    video = options.video_tokens(duration_s)
    if not cached or len(prompts) < 2 or video < model_info(model).min_cache_tokens:
        return sum(estimate_cost(model, duration_s, p, options, tier) or 0.0 for p in prompts)
    calls = sum(cost_usd(model, video + len(p) // 4, EXPECTED_OUTPUT_TOKENS, tier, cached_tokens=video) or 0.0 for p in prompts)
    return calls + cache_storage_usd(model, video, held_s)
