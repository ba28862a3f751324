"""What stops every worker from asking Gemini: a rejected key, a model that is not offered, an exhausted quota.

One place holds these in memory, so one refusal stops all the calls that
would be refused the same way, instead of each video spending its own budget.
"""

from __future__ import annotations

import threading
import time

from storyteller_core.errors import KEY_REJECTED_MESSAGE, Code, StepFailed, quota_paused_message
from storyteller_core.settings import RETIRED, replacement_in, retired_sentence
from storyteller_core.work.cooldown import Cooldown


class Gate:
    def __init__(self, cooldown: Cooldown) -> None:
        self.cooldown = cooldown
        self.key_rejected = False
        self._missing_models: dict[str, str] = {}
        self._lock = threading.Lock()

    def check(self, model: str | None = None) -> float:
        """Raise StepFailed when calls are known to be refused; else seconds to hold off (quota pause)."""
        if self.key_rejected:
            raise StepFailed(Code.API_KEY_REJECTED, KEY_REJECTED_MESSAGE)
        with self._lock:
            missing = self._missing_models.get(model or "")
        if missing:
            raise StepFailed(Code.MODEL_NOT_FOUND, missing)
        paused = self.cooldown.active_pause()
        return max(0.0, paused - time.time()) if paused else 0.0

    def reject_key(self) -> None:
        self.key_rejected = True

    def model_missing(self, model: str, gemini_says: str) -> str:
        if "no longer available" in gemini_says or model in RETIRED:  # retired: one sentence naming the model to use
            message = retired_sentence(model, replacement_in(gemini_says))
        else:
            message = (
                f"The model {model} is not offered by Gemini for this key ({gemini_says[:200]}). "
                "Pick another model on the Batch page (or set STORYTELLER_MODEL), then retry."
            )
        with self._lock:
            self._missing_models[model] = message
        return message

    def clear(self) -> None:
        """A new key: forget what the old one was refused."""
        self.key_rejected = False
        with self._lock:
            self._missing_models.clear()
        self.cooldown.resume()

    @property
    def message(self) -> str | None:
        """One sentence for a banner, or None when nothing stops the work."""
        if self.key_rejected:
            return KEY_REJECTED_MESSAGE
        paused = self.cooldown.active_pause()
        return quota_paused_message(paused) if paused else None
