"""The steps of a video's life (upload, processing) and of an analysis (analysis).

Each step reads its record, does one piece of work, records the result with
``Store.transition`` before returning, and says what should happen next as
an ``Outcome``. Every step can run again after a crash without harm.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Next(StrEnum):
    NOW = "now"  # run the next step at once
    LATER = "later"  # run the next step after delay_s
    PARK = "park"  # an analysis waits for its video; the video's step wakes it
    DONE = "done"  # the record reached a resting state (ACTIVE or FAILED video, ended analysis)
    STOP = "stop"  # the engine is stopping: leave the record as it is for the next start


@dataclass(frozen=True)
class Outcome:
    next: Next
    delay_s: float = 0.0

    @classmethod
    def now(cls) -> Outcome:
        return cls(Next.NOW)

    @classmethod
    def later(cls, delay_s: float) -> Outcome:
        return cls(Next.LATER, max(0.0, delay_s))

    @classmethod
    def park(cls) -> Outcome:
        return cls(Next.PARK)

    @classmethod
    def done(cls) -> Outcome:
        return cls(Next.DONE)

    @classmethod
    def stop(cls) -> Outcome:
        return cls(Next.STOP)
