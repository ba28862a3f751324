"""What every stored record shares: JSON round-trips and a table of allowed state changes.

Records are dataclasses stored as JSON text (never pickles). Each record type
names its own state enum and its one table of allowed transitions; the store
applies them in ``Store.transition``, the one place a state changes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


class TransitionError(ValueError):
    pass


@dataclasses.dataclass
class Record:
    """Base of Video, Analysis, Item and Batch: an id, timestamps, JSON."""

    KIND: ClassVar[str]
    TRANSITIONS: ClassVar[dict[Any, frozenset[Any]]] = {}
    STATE: ClassVar[type[StrEnum] | None] = None

    id: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls: type[R], text: str | bytes) -> R:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if cls.STATE is not None and "state" in values:
            values["state"] = cls.STATE(values["state"])
        return cls(**values)

    def check_transition(self, new: Any) -> None:
        old = self.state  # type: ignore[attr-defined]
        if new not in self.TRANSITIONS[old]:
            raise TransitionError(f"a {self.KIND} cannot move from {old.value} to {new.value}")


def now() -> float:
    return time.time()
