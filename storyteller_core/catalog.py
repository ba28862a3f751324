"""Which models a key is offered (models.list), which one to use by default, and what each costs.

Never a hard-coded default that may vanish: with a key, the default is the
first offered model in prices.json's preferred order; STORYTELLER_MODEL pins
one. A chosen model that the key is no longer offered gets a warning.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .config import MODELS, Settings
from .errors import GeminiError

log = logging.getLogger(__name__)
REFRESH_S = 600.0


def preferred_order() -> list[str]:
    data = json.loads(Path(__file__).with_name("prices.json").read_text(encoding="utf-8"))
    return list(data.get("preferred", []))


def choose_default(offered: list[str], settings: Settings) -> str:
    """The pinned model, else the best offered one we can price, else the first offered 'flash', else the first."""
    if settings.model_pinned or not offered:
        return settings.model
    priced = [name for name in offered if name in MODELS]
    for kind in preferred_order():  # e.g. flash before pro: fast and cheap is the right default for a batch
        newest = sorted((n for n in priced if n.endswith(f"-{kind}") or n.endswith(f"-{kind}-latest")), reverse=True)
        if newest:
            return newest[0]
    flash = sorted((n for n in offered if "flash" in n and "lite" not in n), reverse=True)
    return (priced or flash or offered)[0]


class Catalog:
    """The models the current key is offered, refreshed now and then; never blocks a page on the network."""

    def __init__(self, list_models: Callable[[], list[str]], settings: Callable[[], Settings]) -> None:
        self._list_models = list_models
        self._settings = settings
        self._offered: list[str] | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def refresh(self, *, quiet: bool = True) -> list[str] | None:
        """Ask models.list now; a failure is logged (or raised when not ``quiet``) and changes nothing."""
        try:
            offered = sorted(self._list_models())
        except GeminiError as exc:
            if not quiet:
                raise
            log.warning("could not list the models offered", extra={"error": exc.label})
            return None
        with self._lock:
            self._offered, self._checked_at = offered, time.monotonic()
        return offered

    def forget(self) -> None:
        with self._lock:
            self._offered, self._checked_at = None, 0.0

    @property
    def offered(self) -> list[str] | None:
        """The models offered to the key (None: not known yet); refreshed in the background when old."""
        with self._lock:
            stale = time.monotonic() - self._checked_at > REFRESH_S
            offered = self._offered
        if stale:
            threading.Thread(target=self.refresh, name="storyteller-models", daemon=True).start()
        return offered

    @property
    def default(self) -> str:
        return choose_default(self.offered or [], self._settings())

    def choices(self) -> list[str]:
        """Models to offer in a picker: the key's (or our table when unknown), the default first."""
        names = self.offered or list(MODELS)
        default = self.default
        return [default, *[n for n in names if n != default]]

    def warning(self, model: str) -> str | None:
        offered = self.offered
        if offered is None or model in offered:
            return None
        return (f"The model {model} is not offered to this key any more (models.list). Pick another model; "
                f"{self.default} is the current default.")
