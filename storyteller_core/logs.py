"""JSON-lines logging to the data dir and stderr, with secrets scrubbed.

The log files are opened without following links and created 0600, rotated
ones too. A link planted at the live log when logging starts is refused with a
DataDirError (the same rule as for the data dir: the user fixes it once,
loudly); one planted later, a full disk or any other write error costs one
stderr line and the app carries on, retrying the file on the next record.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import logging.handlers
import os
import re
import shlex
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from storyteller_core.errors import DataDirError
from storyteller_core.sanitize import register_secret, scrub, terminal_text
from storyteller_core.storage.datadir import ensure_private_dir

__all__ = ["JsonFormatter", "PrivateRotatingFileHandler", "QuietStderrHandler", "register_secret", "scrub", "setup_logging"]

LOG_NAME = "storyteller.jsonl"
MAX_BYTES = 20 * 1024**2
BACKUPS = 3

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_lock = threading.Lock()
_configured: set[str] = set()
# JSON leaves these raw with ensure_ascii=False; a terminal may act on them (C1 CSI) or reorder the line (bidi).
_TERMINAL_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# NONBLOCK: a planted FIFO cannot hang us; BINARY: on Windows the text layer alone translates newlines.
_OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line. ``tracebacks=False`` (the terminal's lines) leaves them to the log file."""

    def __init__(self, *, tracebacks: bool = True) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info and self.tracebacks:
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.exc_info:
            entry["traceback"] = f"in the log file (logs/{LOG_NAME} in the data folder)"
        line = json.dumps(entry, default=str, ensure_ascii=False)
        return scrub(_TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line))


class _Quiet(logging.Handler):
    """A write error costs one stderr line for this handler's life, never a '--- Logging error ---' traceback."""

    _warned = False

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        self._drop_stream()
        if self._warned:
            return
        self._warned = True
        reason = error.strerror if isinstance(error, OSError) and error.strerror else f"{type(error).__name__}: {error}"
        try:
            sys.stderr.write(f"Video Storyteller: cannot write its log ({terminal_text(scrub(reason))}); carrying on without it.\n")
            sys.stderr.flush()
        except Exception:  # stderr itself is gone: nothing left to tell
            pass

    def _drop_stream(self) -> None:
        pass


class QuietStderrHandler(_Quiet, logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest and Streamlit replace it)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self):
        return sys.stderr


class PrivateRotatingFileHandler(_Quiet, logging.handlers.RotatingFileHandler):
    """Opens and rotates only regular files of ours, 0600, never through a link."""

    def __init__(self, filename: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES, backup_count: int = BACKUPS) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True)
        self.rotator = _rotate_private

    def _open(self):
        fd = _open_private(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def _drop_stream(self) -> None:
        # Close so bytes stuck in the buffer are dropped; the next record reopens (the disk may have room again).
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the last flush hit the same full disk
            self.stream = None


def _open_private(path: str, flags: int) -> int:
    """A descriptor for the regular file of ours at ``path``, made 0600; a link there is never followed."""
    if not _NOFOLLOW and os.path.islink(path):  # no O_NOFOLLOW (Windows): check, then open
        raise OSError(errno.ELOOP, "it is a link, which is never followed", path)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _OPEN_FLAGS, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise OSError(errno.ELOOP, "it is a link, which is never followed", path) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            raise OSError(errno.EPERM, "it is not a plain file of its own: a device, a pipe or a second name of another file", path)
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise OSError(errno.EPERM, "it belongs to another user", path)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _rotate_private(source: str, dest: str) -> None:
    if os.path.lexists(source):
        os.replace(source, dest)  # moves a link itself, never what it points to
    _tighten(dest)


def _tighten(path: str) -> None:
    """Make the file at ``path`` 0600 if it is a regular file of ours; leave anything else alone."""
    with contextlib.suppress(OSError):
        os.close(_open_private(path, os.O_RDONLY))


def setup_logging(data_dir: Path, stderr_level: int = logging.INFO) -> Path:
    """Idempotent: one file handler per data dir, one stderr handler per process (none above CRITICAL)."""
    log_dir = ensure_private_dir(Path(data_dir) / "logs", label="The log folder")
    log_file = log_dir / LOG_NAME
    root = logging.getLogger("storyteller_core")
    root.setLevel(logging.INFO)
    with _lock:
        if str(log_file) not in _configured:
            handler = PrivateRotatingFileHandler(log_file, max_bytes=MAX_BYTES, backup_count=BACKUPS)
            handler.stream = _open_at_start(handler, log_file)
            for n in range(1, handler.backupCount + 1):
                _tighten(f"{handler.baseFilename}.{n}")  # older versions rotated files 0644
            handler.setFormatter(JsonFormatter())
            root.addHandler(handler)
            _configured.add(str(log_file))
        if stderr_level <= logging.CRITICAL and "stderr" not in _configured:
            console = QuietStderrHandler(stderr_level)
            console.setFormatter(JsonFormatter(tracebacks=False))
            root.addHandler(console)
            _configured.add("stderr")
    for noisy in ("httpx", "httpx2", "httpcore", "google_genai", "google.genai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file


def _open_at_start(handler: PrivateRotatingFileHandler, log_file: Path):
    quoted = shlex.quote(str(log_file))
    try:
        return handler._open()
    except OSError as exc:
        if log_file.is_symlink():
            raise DataDirError(
                f"The log file {log_file} is a link to {os.readlink(log_file)}. Video Storyteller never writes through a link, "
                f"since it could be aimed at another of your files. Fix: rm {quoted} (or set STORYTELLER_DATA_DIR to a folder of your own)."
            ) from exc
        raise DataDirError(
            f"Video Storyteller cannot open its log file {log_file} ({exc.strerror or exc}). "
            f"Fix: move it away (mv {quoted} {shlex.quote(str(log_file) + '.moved')}) or set STORYTELLER_DATA_DIR to a folder of your own."
        ) from exc
