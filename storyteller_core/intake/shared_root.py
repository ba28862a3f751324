"""Sources every worker can read: paths inside ``STORYTELLER_SHARED_ROOT``, stored relative to it.

Each machine mounts the shared folder where it likes; the store keeps
``shared:<relative path>`` and every process maps it to its own mount. A
source outside the shared folder is refused in team mode (no worker on
another machine could read it).

>>> m = SharedPaths(Path("/mnt/team"))
>>> m.encode("/mnt/team/in/a.mp4"), m.decode("shared:in/a.mp4")
('shared:in/a.mp4', '/mnt/team/in/a.mp4')
>>> m.encode("/home/me/b.mp4")  # outside: kept as it is (intake refuses it with check())
'/home/me/b.mp4'
>>> m.decode("shared:../../etc/shadow"), m.decode("shared:/etc/shadow")
(None, None)
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from storyteller_core.team import SHARED_ROOT_ENV

MARK = "shared:"


class OutsideSharedRoot(ValueError):
    pass


class SharedPaths:
    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root else None

    @classmethod
    def from_env(cls) -> SharedPaths:
        raw = os.environ.get(SHARED_ROOT_ENV, "").strip()
        return cls(Path(raw).expanduser() if raw else None)

    def encode(self, path: str | None) -> str | None:
        """A local path as stored: relative to the shared root when inside it."""
        if not path or self.root is None or path.startswith(MARK):
            return path
        try:
            relative = Path(path).resolve().relative_to(self.root)
        except ValueError:
            return path
        return MARK + relative.as_posix()

    def decode(self, stored: str | None) -> str | None:
        """A stored path as this machine sees it; None for ``shared:`` text that would leave the shared folder.

        A record in Redis may have been written by anyone who can reach it: ``shared:/etc/shadow`` (pathlib
        drops the root for an absolute part) and ``shared:../../x`` are refused here, and the worker checks
        the resolved file (symlinks followed) again right before it opens it (``check``).
        """
        if not stored or not stored.startswith(MARK) or self.root is None:
            return stored
        relative = PurePosixPath(stored[len(MARK) :])
        if not relative.parts or relative.is_absolute() or ".." in relative.parts or "\\" in stored:
            return None
        return str(self.root / relative)

    def check(self, path: Path) -> Path:
        """``path`` resolved, or OutsideSharedRoot with a sentence for a person."""
        if self.root is None:
            raise OutsideSharedRoot(f"Team mode needs {SHARED_ROOT_ENV}: the folder every worker can read.")
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise OutsideSharedRoot(
                f"{path} is outside the shared folder {self.root}: workers on other machines "
                "could not read it. Copy it into the shared folder first."
            )
        return resolved
