"""What every step works with: the store, the gateway to Gemini, settings and the shared limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ..retry import call_with_retry
from .batch_looks import BatchLooks

if TYPE_CHECKING:
    from ..config import Settings
    from ..gemini import Gateway
    from ..limits import PollLimits
    from ..quota import Cooldown
    from ..store import Store

T = TypeVar("T")


@dataclass
class StepContext:
    store: Store
    gateway: Gateway
    settings: Settings
    polls: PollLimits
    cooldown: Cooldown
    batch_looks: BatchLooks = field(default_factory=BatchLooks)  # the Batch tier's shared looks at its jobs

    def call(self, fn: Callable[[], T], budget_s: float, should_stop: Callable[[], bool]) -> T:
        """One Gemini call under the one retry policy, sharing the quota cool-down, cancellable."""
        return call_with_retry(fn, budget_s, should_stop=should_stop, cooldown=self.cooldown)
