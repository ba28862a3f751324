"""Which Gemini a row was asked of, in words a person can act on: demo mode, or a key ending ...abcd.

An analysis names its backend (demo mode, Google's Gemini, another server), never the key. When the app
and a CLI share a data folder with different keys, a row asked by one is left for it by the other
(runner.py), and the row says which key it waits for. So each engine notes, in the data folder, the last
four characters of the key it uses for its backend (``backends.json``, owner-only): never the key itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from storyteller_core.settings import DEMO_BACKEND, GOOGLE_BACKEND, Settings

FILE_NAME = "backends.json"
_lock = threading.Lock()
_noted: set[tuple[str, str, str]] = set()  # (data dir, backend, key end) written by this process
_read: dict[str, tuple[float, dict[str, Any]]] = {}  # data dir -> (mtime, contents)


def key_end(api_key: str | None) -> str | None:
    """The last four characters of a key, to tell two keys apart (None: no key, or too short to cut)."""
    key = (api_key or "").strip()
    return key[-4:] if len(key) >= 12 else None


def note(settings: Settings) -> None:
    """Remember which key (its last four characters) this data folder's rows of this backend are asked with."""
    end = key_end(settings.api_key)
    if settings.demo or end is None:
        return
    marker = (str(settings.data_dir), settings.backend, end)
    with _lock:
        if marker in _noted:
            return
        path = settings.data_dir / FILE_NAME
        known = _load(path)
        known[settings.backend] = {"key_end": end, "at": time.time()}
        try:
            tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(known, out)
            os.replace(tmp, path)
        except OSError:
            return  # a read-only or full disk: the row only says less
        _noted.add(marker)


def _load(path: Path) -> dict[str, Any]:
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return {}
    held = _read.get(str(path))
    if held and held[0] == mtime:
        return dict(held[1])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    data = data if isinstance(data, dict) else {}
    _read[str(path)] = (mtime, data)
    return dict(data)


def describe(backend: str, data_dir: Path | None = None, api_key: str | None = None) -> str:
    """e.g. "demo mode (no key: the local emulator)", "Gemini, the key ending …abcd"."""
    if backend == DEMO_BACKEND:
        return "demo mode (no key: the local emulator)"
    end = key_end(api_key)
    if end is None and data_dir is not None:
        with _lock:
            entry = _load(data_dir / FILE_NAME).get(backend)
        end = str(entry.get("key_end")) if isinstance(entry, dict) and entry.get("key_end") else None
    parts = urlsplit(backend)
    where = (
        "Gemini"
        if backend == GOOGLE_BACKEND.rstrip("/")
        else f"the Gemini server at {parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    )
    return f"{where}, the key ending …{end}" if end else f"{where} (with a key)"


def describe_settings(settings: Settings) -> str:
    """What this process uses, in the same words."""
    return describe(settings.backend, settings.data_dir, settings.api_key)
