"""Which models a key is offered (models.list), which one to use by default, and what each costs.

Never a hard-coded default that may vanish: with a key, the default is the
first offered model in prices.json's preferred order; STORYTELLER_MODEL pins
one. A chosen model that the key is no longer offered gets a warning.

A failed models.list is not asked again on every read (a page reads the catalog many times a second):
the next try waits 30 s, doubling to 10 min, and the log says so once when it starts failing and once
when it answers again.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from storyteller_core.errors import GeminiError, Kind
from storyteller_core.gemini.reach import REACH
from storyteller_core.settings import MODELS, RETIRED, Settings, retired_sentence

log = logging.getLogger(__name__)
REFRESH_S = 600.0
FAILED_RETRY_S = 30.0  # after a failed models.list, the next try waits this long, doubling ...
FAILED_RETRY_MAX_S = 600.0  # ... up to this


def preferred_order() -> list[str]:
    data = json.loads(Path(__file__).with_name("prices.json").read_text(encoding="utf-8"))
    return list(data.get("preferred", []))


def choose_default(offered: list[str], settings: Settings) -> str:
    """The pinned model, else the newest offered model of the first preferred kind (flash before pro), else the first."""
    if settings.model_pinned or not offered:
        return settings.model
    for kind in preferred_order():  # fast and cheap is the right default for a batch; newest is the most current
        of_kind = [n for n in offered if n.endswith(f"-{kind}") or n.endswith(f"-{kind}-latest")]
        if of_kind:
            return max(of_kind, key=_version)
    return sorted(offered, key=_version)[-1]


def _version(name: str) -> tuple[int, ...]:
    """gemini-10-flash after gemini-2.5-flash (plain string order would say the opposite)."""
    return tuple(int(n) for n in re.findall(r"\d+", name))


class Catalog:
    """The models the current key is offered, refreshed now and then; never blocks a page on the network."""

    def __init__(
        self,
        list_models: Callable[[], list[str]],
        settings: Callable[[], Settings],
        on_key_rejected: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_models = list_models
        self._settings = settings
        self._on_key_rejected = on_key_rejected
        self._clock = clock
        self._offered: list[str] | None = None
        self._next_at = 0.0  # clock time of the next background refresh
        self._failures = 0  # failed refreshes in a row
        self._refreshing = False  # a background refresh is under way: no second one
        self._lock = threading.Lock()

    def refresh(self, *, quiet: bool = True) -> list[str] | None:
        """Ask models.list now; a failure is logged (or raised when not ``quiet``) and changes nothing.

        A failure puts the next background refresh off (30 s, doubling to 10 min); the log says so once per
        change, failing or answering again, never once per try.
        """
        try:
            offered = sorted(self._list_models())
        except GeminiError as exc:
            if exc.kind is Kind.AUTH:
                self._on_key_rejected()  # no worker needs to find out for itself
            REACH.failed(exc)
            with self._lock:
                self._failures += 1
                wait = min(FAILED_RETRY_MAX_S, FAILED_RETRY_S * 2 ** (self._failures - 1))
                self._next_at = self._clock() + wait
                first = self._failures == 1
            if first:
                log.warning(
                    "could not list the models offered; trying again later, less and less often",
                    extra={"error": exc.label, "retry_in_s": wait},
                )
            if not quiet:
                raise
            return None
        REACH.answered()
        with self._lock:
            again = self._failures > 0
            self._offered, self._next_at, self._failures = offered, self._clock() + REFRESH_S, 0
        if again:
            log.warning("the models offered could be listed again", extra={"models": len(offered)})
        return offered

    def forget(self) -> None:
        with self._lock:
            self._offered, self._next_at, self._failures = None, 0.0, 0

    @property
    def failing(self) -> bool:
        """The last models.list failed (the next one is put off)."""
        with self._lock:
            return self._failures > 0

    @property
    def offered(self) -> list[str] | None:
        """The models offered to the key (None: not known yet); refreshed in the background when old."""
        with self._lock:
            due = self._clock() >= self._next_at and not self._refreshing
            if due:
                self._refreshing = True
            offered = self._offered
        if due:
            threading.Thread(target=self._background, name="storyteller-models", daemon=True).start()
        return offered

    def _background(self) -> None:
        try:
            self.refresh()
        finally:
            with self._lock:
                self._refreshing = False

    @property
    def default(self) -> str:
        return choose_default(self.offered or [], self._settings())

    def choices(self) -> list[str]:
        """Models to offer in a picker: the key's (or our table when unknown), the default first."""
        names = self.offered or list(MODELS)
        default = self.default
        return [default, *[n for n in names if n != default]]

    def warning(self, model: str) -> str | None:
        """One sentence when ``model`` will not answer: retired (known without asking) or not offered to the key."""
        offered = self.offered
        if offered is not None and model in offered:
            return None
        if model in RETIRED:
            return retired_sentence(model, self._instead(model, offered))
        if offered is None:
            return None
        return (
            f"The model {model} is not offered to this key any more (models.list). Pick another model; "
            f"{self.default} is the current default."
        )

    def _instead(self, model: str, offered: list[str] | None) -> str:
        """Google's named replacement when the key is offered it (or nothing is known), else the key's default."""
        named = RETIRED[model]
        if offered is None or named in offered:
            return named
        return choose_default(offered, replace(self._settings(), model_pinned=False))
