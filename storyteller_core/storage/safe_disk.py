"""Open the job store without trusting it: no pickle runs code, a damaged file is never overwritten.

diskcache pickles any value that is not str/bytes/int/float; we store JSON
text, so a pickle in the database is either a store from before the JSON
records (plain dicts and lists, read once to migrate) or planted. SafeDisk
reads pickles with an unpickler that can build no object but the built-in
containers, so a planted ``cache.db`` cannot run code on open.
"""

from __future__ import annotations

import errno
import io
import pickle
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE

from storyteller_core.errors import DataDirError


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the job store")


def plain_loads(data: bytes) -> Any:
    """Unpickle dicts, lists, tuples, strings, numbers, booleans and None; refuse anything else."""
    return _PlainUnpickler(io.BytesIO(data)).load()


class SafeDisk(diskcache.Disk):
    def get(self, key: Any, raw: bool) -> Any:
        if raw:
            return super().get(key, raw)
        return plain_loads(bytes(key))

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode != MODE_PICKLE:
            return super().fetch(mode, filename, value, read)
        if value is None:
            with open(Path(self._directory) / str(filename), "rb") as reader:
                return plain_loads(reader.read())
        return plain_loads(bytes(value))


NEEDED_FREE_BYTES = 64 * 2**20  # room for the store's WAL and a batch's records


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's or the OS's way of saying there is no space left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


def disk_full_error(directory: Path) -> DataDirError:
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = 0
    return DataDirError(
        f"The disk that holds the job store ({directory}) is full: {_size(free)} free. Free at least "
        f"{_size(NEEDED_FREE_BYTES)} on it (or set STORYTELLER_DATA_DIR to a folder on another disk) and start again. "
        "The job store is not damaged and nothing was changed."
    )


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def check_not_damaged(db: Path) -> None:
    """Raise DataDirError, with a copy kept aside, when ``db`` exists but is not a healthy store; a full disk is
    said to be full (the store is left as it is, and no copy is attempted)."""
    if not db.exists():
        return
    reason = _damage(db)
    if reason is None:
        return
    if reason == _FULL or shutil.disk_usage(db.parent).free < NEEDED_FREE_BYTES // 8:
        raise disk_full_error(db.parent)
    copy = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    kept = ""
    try:
        shutil.copy2(db, copy)
        kept = f" A copy of it was kept at {copy}."
    except OSError as exc:
        copy.unlink(missing_ok=True)  # a partial copy is no copy
        kept = f" (A copy could not be kept: {exc.strerror or exc}.)"
    raise DataDirError(
        f"The job store {db} is damaged ({reason}). Nothing was changed.{kept} "
        f"To start again with an empty list, rename the folder {db.parent.parent} (or set STORYTELLER_DATA_DIR "
        "to a new folder) and start again; your video files are not affected. "
        "Stories in the damaged copy can often be rescued with `sqlite3 <copy> .recover`."
    )


_FULL = "the disk is full"


def _damage(db: Path, settle_s: float = 3.0) -> str | None:
    """Why ``db`` is not a healthy store, or None. Looks again for a few seconds first: another process
    (the app beside a CLI run) may be creating the store right now, which looks empty or locked for a moment."""
    deadline = time.monotonic() + settle_s
    while True:
        reason, busy = _check_once(db)
        if reason is None or busy and time.monotonic() >= deadline:
            return None  # healthy, or held by a live writer: not damage
        if time.monotonic() >= deadline:
            return reason
        time.sleep(0.2)


def _check_once(db: Path) -> tuple[str | None, bool]:
    """(why it is not healthy or None, whether the reason may only be another process at work)."""
    try:
        if db.stat().st_size == 0:
            return "the file is empty (0 bytes)", False
        con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=5)
        try:
            (result,) = con.execute("PRAGMA quick_check").fetchone()
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except FileNotFoundError:
        return None, False
    except sqlite3.OperationalError as exc:
        if is_disk_full(exc):
            return _FULL, False
        if "locked" in str(exc) or "busy" in str(exc):
            return f"SQLite says: {exc}", True
        return f"SQLite says: {exc}", False
    except sqlite3.DatabaseError as exc:
        return f"SQLite says: {exc}", False
    if result != "ok":
        return f"SQLite's check says: {str(result)[:200]}", False
    if "Cache" not in tables:
        return "it is not a Video Storyteller job store", False
    return None, False
