"""What every step works with: the store, the gateway to Gemini, settings and the shared limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from storyteller_core.gemini.reach import noting
from storyteller_core.gemini.retry import call_with_retry
from storyteller_core.steps.batch_tier_looks import BatchLooks

if TYPE_CHECKING:
    from storyteller_core.gemini.gateway import Gateway
    from storyteller_core.settings import Settings
    from storyteller_core.storage.disk_store import Store
    from storyteller_core.work.cooldown import Cooldown
    from storyteller_core.work.poll_limits import PollLimits

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
        with noting(self.store):  # a wait's note is kept in the store too: any process showing the row sees it
            return call_with_retry(fn, budget_s, should_stop=should_stop, cooldown=self.cooldown)
