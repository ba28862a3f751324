"""What team mode no longer takes on trust: a broker anyone on the machine can open, and records anyone could write.

Redis with no password is open to every local user (and to anyone on the network when bound beyond
loopback): they read every story and can forge records that make a worker upload any file it can read or
ask questions on the team's key. So a worker or client refuses a broker URL without credentials unless
``STORYTELLER_BROKER_INSECURE=1`` says the risk is known, and a worker checks each record it is about to
act on: its JSON has the fields, types, id and state the record type has, and its sources are in the
shared folder.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

from storyteller_core.errors import DataDirError
from storyteller_core.intake.shared_root import MARK, SharedPaths
from storyteller_core.records.record import Record

INSECURE_ENV = "STORYTELLER_BROKER_INSECURE"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_FALSE = ("", "0", "false", "no")


class InsecureBroker(DataDirError):
    """The broker URL has no password or ACL user, and nobody said that is fine.

    A DataDirError: the team's store cannot be used safely, and the CLI and the pages already say that
    kind of problem in one sentence (no traceback).
    """


def broker_has_credentials(url: str) -> bool:
    """A password (``redis://:pw@`` or ``redis://user:pw@``) in the URL; a unix socket counts, its file mode guards it."""
    parts = urlsplit(url)
    return parts.scheme == "unix" or bool(parts.password)


def require_credentials(url: str) -> None:
    """Raise InsecureBroker, with why and what to do, for a broker URL any local user could use."""
    if broker_has_credentials(url) or os.environ.get(INSECURE_ENV, "").strip().lower() not in _FALSE:
        return
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    raise InsecureBroker(
        f"The broker {shown} has no password: any user on this machine (or the network) could read every story "
        "and forge work for the team's workers. Give Redis an ACL user and put it in the URL "
        "(redis://storyteller:PASSWORD@host:6379/0, see docs/TEAM.md), or set "
        f"{INSECURE_ENV}=1 to run without one anyway."
    )


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type[Record]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a JSON value fits a field's annotation (the shapes the record types use)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_accepts(arg, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        if issubclass(hint, str):  # StrEnum states: checked against the enum below
            return isinstance(value, str)
        return isinstance(value, hint)
    return True


def record_problem(cls: type[Record], record_id: str, text: str | None, shared: SharedPaths) -> str | None:
    """Why this stored record must not be acted on, or None when it is well-formed."""
    if not ID_PATTERN.fullmatch(record_id):
        return f"{cls.KIND} id {record_id[:80]!r} is not an id"
    if text is None:
        return None  # gone: the step finds nothing to do
    try:
        data = json.loads(text)
    except ValueError:
        return f"{cls.KIND} {record_id} is not JSON"
    if not isinstance(data, dict):
        return f"{cls.KIND} {record_id} is not a record"
    if data.get("id") != record_id:
        return f"{cls.KIND} {record_id} holds the id {str(data.get('id'))[:80]!r}"
    hints = _hints(cls)
    for f in fields(cls):
        if f.name in data and not _accepts(hints.get(f.name, Any), data[f.name]):
            return f"{cls.KIND} {record_id}: {f.name} has the wrong type"
    if cls.STATE is not None and "state" in data and data["state"] not in {s.value for s in cls.STATE}:
        return f"{cls.KIND} {record_id}: unknown state {str(data['state'])[:40]!r}"
    for name in ("video_id", "analysis_id", "batch_id"):
        value = data.get(name)
        if isinstance(value, str) and value and not ID_PATTERN.fullmatch(value):
            return f"{cls.KIND} {record_id}: {name} is not an id"
    return _sources_problem(cls, record_id, data, shared)


def _sources_problem(cls: type[Record], record_id: str, data: dict[str, Any], shared: SharedPaths) -> str | None:
    """In team mode a source is stored as ``shared:<relative path>``: no absolute path, no ``..``."""
    if shared.root is None:
        return None
    for source in data.get("sources") or []:
        if not source.startswith(MARK) or shared.decode(source) is None:
            return f"{cls.KIND} {record_id}: source {source[:120]!r} is not a path inside the shared folder"
    return None
