"""Where an engine is assembled for this process's mode: the one place the app, the CLI and the worker's client ask.

The mode is chosen here, once: with STORYTELLER_BROKER_URL set, team mode's engine (the same command API and
reads, with the steps done by worker processes); without it, the embedded engine with its own worker threads.
"""

from __future__ import annotations

from typing import Any

from storyteller_core.engine import Engine
from storyteller_core.settings import Settings
from storyteller_core.team import broker_url


def open_engine(settings: Settings, **kwargs: Any) -> Engine:
    """The embedded engine, or with STORYTELLER_BROKER_URL set, team mode's client (same API, workers elsewhere)."""
    if broker_url():
        from storyteller_core.team.team_engine import TeamEngine  # Redis and Dramatiq are imported only in team mode

        return TeamEngine(settings, **kwargs)
    return Engine(settings, **kwargs)
