"""Team mode: the same records, steps and command API on Redis and Dramatiq workers, across processes and machines.

Selected by ``STORYTELLER_BROKER_URL`` (``redis://host:port/db``); without it
the embedded engine runs exactly as before and nothing here is imported.

- ``store.RedisStore``: the job store (records as JSON text, indexes as
  sorted sets, atomic transitions, leases on Redis's clock).
- ``limits``: the global limits on Redis's clock (upload slots, poll slots
  and rate, generate requests per minute, the File API storage bytes, the
  shared quota cool-down, the shared gate).
- ``dispatch``: one Dramatiq actor that advances a task by one step, with
  fencing so that exactly one message line advances each task.
- ``watch``: the bulk status watch, one leader per team.
- ``worker``: ``python -m storyteller_core.team.worker`` runs a worker process.

See docs/TEAM.md.
"""

from __future__ import annotations

import os

BROKER_ENV = "STORYTELLER_BROKER_URL"
SHARED_ROOT_ENV = "STORYTELLER_SHARED_ROOT"
PREFIX_ENV = "STORYTELLER_TEAM_PREFIX"
DEFAULT_PREFIX = "storyteller"


def broker_url() -> str | None:
    """The Redis URL of team mode, or None for the embedded engine."""
    return os.environ.get(BROKER_ENV, "").strip() or None


def key_prefix() -> str:
    """Every Redis key of one deployment starts with this (several deployments can share a Redis)."""
    return os.environ.get(PREFIX_ENV, "").strip() or DEFAULT_PREFIX
