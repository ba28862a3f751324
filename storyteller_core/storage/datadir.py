"""Refuse a data dir that another local user could tamper with.

The data dir holds the store's records (diskcache) and logs: whoever can write
there can run code as the user. So every folder must be ours and writable by
nobody else. A symlink is accepted only when it is ours and points at a folder
that passes the same checks (a spool on a bigger disk, say). On platforms
without POSIX owners and modes (Windows) only the folders' existence is ensured.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from pathlib import Path

from storyteller_core.errors import DataDirError

log = logging.getLogger(__name__)

SUBFOLDERS = ("store", "logs", "spool", "thumbs")
STORE_FOLDER = "store"  # releases before 0.3 called it "jobs": renamed on first open (see store_dir)
_POSIX = hasattr(os, "geteuid")
_ELSEWHERE = "set STORYTELLER_DATA_DIR to a folder of your own"


def ensure_data_dir(root: Path) -> Path:
    """The data dir and its subfolders, created 0700 where absent and checked where present."""
    root = ensure_private_dir(root)
    _rename_old_store(root)
    for name in SUBFOLDERS:
        ensure_private_dir(root / name, label="The data subfolder")
    return root


def store_dir(root: Path) -> Path:
    """The store's folder in a data dir (``store``; an older release's ``jobs`` folder is renamed to it)."""
    _rename_old_store(Path(root))
    return Path(root) / STORE_FOLDER


def _rename_old_store(root: Path) -> None:
    old, new = root / "jobs", root / STORE_FOLDER
    if old.is_dir() and not old.is_symlink() and not new.exists():
        os.replace(old, new)  # one rename on one file system: the store moves whole or not at all
        log.warning(
            "renamed the data dir's store folder from jobs to store (the old name of an earlier release)", extra={"data_dir": str(root)}
        )


def ensure_private_dir(path: Path, *, label: str = "The data folder") -> Path:
    """``path`` as a folder only we can write: created 0700 (with missing parents) or refused with the fix."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # absent, or under a file: _make_private says which
        _make_private(path)
        info = os.lstat(path)
    _check(path, info, label)
    return path


def _make_private(path: Path) -> None:
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by someone else meanwhile: the checks below decide
        except OSError as exc:
            reason = "a part of that path is a file, not a folder" if isinstance(exc, NotADirectoryError) else exc.strerror or exc
            raise DataDirError(
                f"Video Storyteller cannot create its data folder {folder} ({reason}). "
                f"Fix: create it yourself (mkdir -m 700 -p {shlex.quote(str(path))}) or {_ELSEWHERE}."
            ) from exc
        if _POSIX:
            os.chmod(folder, 0o700)  # a umask could have taken bits we need


def _check(path: Path, info: os.stat_result, label: str) -> None:
    quoted = shlex.quote(str(path))
    if stat.S_ISLNK(info.st_mode):
        _check_link(path, info, label)
        return
    if not stat.S_ISDIR(info.st_mode):
        raise DataDirError(
            f"{label} {path} is a file, not a folder, so it cannot hold Video Storyteller's data. "
            f"Fix: move it away (mv {quoted} {shlex.quote(str(path) + '.moved')}) or {_ELSEWHERE}."
        )
    if not _POSIX:
        return
    problem = _ownership_problem(info)
    if problem:
        raise DataDirError(
            f"{label} {path} {problem}, so another user could plant files that run code as you. "
            f"Fix: {_fix(quoted, info)} (or {_ELSEWHERE})."
        )


def _check_link(path: Path, info: os.stat_result, label: str) -> None:
    quoted = shlex.quote(str(path))
    try:
        target = path.resolve(strict=True)
        target_info = os.stat(target)
    except (OSError, RuntimeError):
        raise DataDirError(
            f"{label} {path} is a link to a folder that does not exist. Fix: remove the link (rm {quoted}) or {_ELSEWHERE}."
        ) from None
    if not stat.S_ISDIR(target_info.st_mode):
        raise DataDirError(f"{label} {path} is a link to {target}, which is not a folder. Fix: remove the link (rm {quoted}).")
    if not _POSIX:
        return
    problem = "belongs to another user" if info.st_uid != os.geteuid() else _ownership_problem(target_info)
    if problem:
        where = "the link itself" if info.st_uid != os.geteuid() else str(target)
        raise DataDirError(
            f"{label} {path} is a link to {target}, and {where} {problem}, so another user could plant files that "
            f"run code as you. Fix: remove the link (rm {quoted}) and let Video Storyteller create the folder, or {_ELSEWHERE}."
        )


def _ownership_problem(info: os.stat_result) -> str | None:
    if info.st_uid != os.geteuid():
        return f"belongs to another user ({_user(info.st_uid)})"
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IWOTH:
        return f"is writable by other users (mode {mode:04o})"
    if mode & stat.S_IWGRP:
        return f"is writable by its group (mode {mode:04o})"
    return None


def _fix(quoted: str, info: os.stat_result) -> str:
    if info.st_uid != os.geteuid():
        return f"if it should be yours, sudo chown -R {_user_name()} {quoted} && chmod 700 {quoted}"
    return f"chmod 700 {quoted}"


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name}, uid {uid}"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
