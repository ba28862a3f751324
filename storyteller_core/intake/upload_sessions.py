"""Browser uploads in pieces, straight to the spool: resumable, hashed in the same pass, constant memory.

The web layer (storyteller_ui.uploader) maps HTTP onto these calls; nothing here knows about HTTP
beyond the status code an error suggests.

    start(name, size)          -> a session: an empty ``.incoming-upload-<id>`` file in the spool
    receive(id, offset)        -> a Receiver; its write(bytes) appends in order and hashes in the same pass
    status(id)                 -> bytes received so far: a client resumes from there after a dropped connection
    finish(id)                 -> sha256 final, renamed to ``<sha256><ext>``, probed like any intake: a Candidate
    cancel(id)                 -> the partial file is deleted

Pieces are appended strictly in order (a piece at any other offset is refused with the offset the
client must use), so one incremental sha256 per session is the file's hash when the last byte lands.
A session lives in this process only: after a server restart a client starts the file again, and the
spool sweep at engine start removes ``.incoming-*`` files older than five minutes. Here, idle
sessions are dropped (and their partial files deleted) after ``idle_s``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storyteller_core.errors import Code, MediaError
from storyteller_core.intake.candidates import Candidate, check_extension, probe_candidate
from storyteller_core.intake.media import PARTIAL_PREFIX, check_size, safe_display_name
from storyteller_core.settings import Settings

IDLE_S = 30 * 60  # an unfinished session nobody touched for this long is dropped, its partial file deleted
FINISHED_KEEP_S = 10 * 60  # a finished session answers a repeated finish (a lost answer) for this long
STALE_WRITER_S = 30.0  # a writer that wrote nothing for this long may be replaced (a half-open connection)
MAX_SESSIONS = 64
DISK_MARGIN = 256 * 1024**2  # keep this much free on the data dir's disk beyond what open uploads will need


class UploadError(Exception):
    """A refused call: ``status`` is the HTTP status it suggests, ``received`` where the client must resume."""

    def __init__(self, status: int, code: str, message: str, received: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.received = received

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.received is not None:
            data["received"] = self.received
        return data


@dataclass(eq=False)
class _Session:
    id: str
    display_name: str
    size: int
    suffix: str
    partial: Path
    touched: float
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    generation: int = 0  # of the current writer; a replaced writer's pieces are refused
    writing: bool = False
    finishing: bool = False
    checked: Candidate | None = None  # renamed and probed; listed once ``accept`` succeeded
    candidate: Candidate | None = None  # checked and accepted: what a repeated finish answers
    lock: threading.Lock = field(default_factory=threading.Lock)  # one piece at a time reaches the file

    def snapshot(self) -> dict[str, Any]:
        state = (
            "finished" if self.candidate else "checking" if self.finishing else ("complete" if self.received == self.size else "receiving")
        )
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.display_name,
            "size": self.size,
            "received": self.received,
            "state": state,
            "busy": self.writing or self.finishing,
        }
        if self.candidate is not None:
            data.update(candidate_summary(self.candidate))
        return data


def candidate_summary(candidate: Candidate) -> dict[str, Any]:
    """What a client may see of a checked upload (never the path on this machine)."""
    return {
        "ok": candidate.ok,
        "name": candidate.display_name,
        "sha256": candidate.sha256 or None,
        "size": candidate.size_bytes,
        "error": candidate.error_message,
        "error_code": candidate.error_code,
    }


def spool_suffix(display_name: str) -> str:
    """The extension kept on the spooled file: the same rule as media.spool_stream, so equal bytes get one path."""
    return Path(display_name).suffix.lower()[:10]


class Receiver:
    """The one writer of a session for one request: ``write`` pieces in order, then ``close``."""

    def __init__(self, owner: UploadSessions, session: _Session, generation: int) -> None:
        self._owner = owner
        self._session = session
        self._generation = generation
        self._closed = False

    @property
    def received(self) -> int:
        return self._session.received

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` at the received offset, hashing it on the way; the new offset."""
        session = self._session
        with session.lock:  # never take the owner's lock while holding this one
            if self._closed or session.generation != self._generation:
                raise UploadError(409, "superseded", "Another request took over this upload.", session.received)
            if session.received + len(data) > session.size:
                raise UploadError(
                    413,
                    "too_many_bytes",
                    f"{session.display_name}: more bytes arrived than the {session.size:,} announced.",
                    session.received,
                )
            try:
                with session.partial.open("r+b") as out:
                    out.seek(session.received)
                    out.write(data)
            except FileNotFoundError:
                gone = True
            except OSError as exc:
                raise _not_saved(session.display_name, self._owner.settings, exc, session.received) from exc
            else:
                gone = False
                session.digest.update(data)
                session.received += len(data)
                session.touched = self._owner.clock()
                return session.received
        if gone:
            self._owner._drop(session)
        raise UploadError(410, "gone", f"The partial copy of {session.display_name} was removed; start this file again.")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner._release(self._session, self._generation)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refusal(display: str, size: int, max_bytes: int) -> tuple[int, str, str] | None:
    """(HTTP status, code, message) when a file of this name and size is not one we take (both uploaders ask)."""
    try:
        check_extension(display)
        check_size(display, size, max_bytes)
    except MediaError as exc:
        return 413 if exc.code == Code.TOO_LARGE else 400, exc.code, exc.message
    return None


class UploadSessions:
    """Every unfinished browser upload of one data dir. Thread-safe; the web layer keeps one per server."""

    def __init__(
        self,
        settings: Settings,
        *,
        idle_s: float = IDLE_S,
        finished_keep_s: float = FINISHED_KEEP_S,
        stale_writer_s: float = STALE_WRITER_S,
        max_sessions: int = MAX_SESSIONS,
        disk_margin: int = DISK_MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.spool_dir = settings.spool_dir
        self.idle_s = idle_s
        self.finished_keep_s = finished_keep_s
        self.stale_writer_s = stale_writer_s
        self.max_sessions = max_sessions
        self.disk_margin = disk_margin
        self.clock = clock
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    # -- the calls ------------------------------------------------------------------------------
    def start(self, name: str, size: int) -> dict[str, Any]:
        """A new session for a file of ``size`` bytes called ``name``; refused when over the limits."""
        self.expire()
        display = safe_display_name(str(name))
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UploadError(400, "bad_size", f"{display}: the file's size is missing or not a whole number of bytes.")
        refused = refusal(display, size, self.settings.max_file_bytes)
        if refused:
            raise UploadError(*refused)
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            free = shutil.disk_usage(self.spool_dir).free
        except OSError as exc:
            raise _not_saved(display, self.settings, exc) from exc
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise UploadError(
                    429, "too_many_uploads", f"{len(self._sessions)} uploads are already open; wait for some to finish, then add the rest."
                )
            owed = sum(s.size - s.received for s in self._sessions.values() if s.candidate is None)
            if size + owed + self.disk_margin > free:
                raise UploadError(
                    507,
                    Code.NOT_SAVED,
                    f"{display} ({size / 1024**3:.2f} GB) does not fit: "
                    f"{free / 1024**3:.2f} GB free in {self.settings.data_dir}, and uploads under way "
                    f"still need {owed / 1024**3:.2f} GB. Free some disk space or set "
                    "STORYTELLER_DATA_DIR to another folder, then add it again.",
                )
            upload_id = secrets.token_hex(16)
            partial = self.spool_dir / f"{PARTIAL_PREFIX}upload-{upload_id}"
            try:
                os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise _not_saved(display, self.settings, exc) from exc
            session = _Session(
                id=upload_id, display_name=display, size=size, suffix=spool_suffix(display), partial=partial, touched=self.clock()
            )
            self._sessions[upload_id] = session
            return session.snapshot()

    def status(self, upload_id: str) -> dict[str, Any]:
        with self._lock:
            return self._get(upload_id).snapshot()

    def receive(self, upload_id: str, offset: int, total: int | None = None) -> Receiver:
        """The writer for pieces starting at ``offset``; refused unless ``offset`` is exactly the bytes received."""
        with self._lock:
            session = self._get(upload_id)
            if total is not None and total != session.size:
                raise UploadError(
                    400, "wrong_size", f"{session.display_name} was announced as {session.size:,} bytes, not {total:,}.", session.received
                )
            if session.candidate is not None or session.finishing:
                raise UploadError(409, "finished", f"{session.display_name} is complete.", session.received)
            if session.writing and self.clock() - session.touched < self.stale_writer_s:
                raise UploadError(
                    409, "busy", f"{session.display_name} is still receiving an earlier request; ask again in a moment.", session.received
                )
            if offset != session.received:
                raise UploadError(
                    409,
                    "wrong_offset",
                    f"{session.display_name}: this piece starts at byte "
                    f"{offset:,}, but {session.received:,} bytes have arrived; send from there.",
                    session.received,
                )
            with session.lock:
                session.generation += 1  # a stale writer, if any, is refused from now on
                self._check_partial(session)
            session.writing = True
            session.touched = self.clock()
            return Receiver(self, session, session.generation)

    def finish(self, upload_id: str, accept: Callable[[Candidate], None] | None = None) -> Candidate:
        """Finalise the hash, rename the file to ``<sha256><ext>``, probe it; ``accept`` sees the result once.

        Asked again (the answer was lost), the same Candidate is returned and ``accept`` is not called again.
        A refused file is not kept, as with any intake.
        """
        with self._lock:
            session = self._get(upload_id)
            if session.candidate is not None:
                return session.candidate
            if session.finishing or (session.writing and self.clock() - session.touched < self.stale_writer_s):
                raise UploadError(409, "busy", f"{session.display_name} is still receiving or being checked.", session.received)
            if session.received != session.size:
                raise UploadError(
                    409,
                    "incomplete",
                    f"{session.display_name}: {session.received:,} of {session.size:,} bytes have arrived; send the rest first.",
                    session.received,
                )
            if session.checked is None:
                with session.lock:
                    session.generation += 1  # a stale writer, if any, is refused from now on
                    self._check_partial(session)
            session.finishing = True
        try:
            if session.checked is None:
                session.checked = self._finalise(session)
            if accept is not None:
                accept(session.checked)  # failed (the store could not be written): the next finish tries again
        except BaseException:
            with self._lock:
                session.finishing = False
            raise
        with self._lock:
            session.candidate = candidate = session.checked
            session.finishing = False
            session.touched = self.clock()
        self.expire()  # now and then, so abandoned partial files go while the server runs
        return candidate

    def cancel(self, upload_id: str) -> None:
        """Forget the session; its partial file is deleted (a finished file is left to the spool's rules)."""
        with self._lock:
            session = self._sessions.pop(upload_id, None)
        if session is not None and session.candidate is None:
            with session.lock:  # after any piece being written
                session.generation += 1
                session.partial.unlink(missing_ok=True)

    def expire(self) -> list[str]:
        """Drop sessions idle for too long (deleting their partial files) and old finished ones; their ids."""
        now = self.clock()
        with self._lock:
            old = [
                s
                for s in self._sessions.values()
                if not s.finishing
                and (
                    (s.candidate is None and now - s.touched > self.idle_s)  # a hung writer too
                    or (s.candidate is not None and now - s.touched > self.finished_keep_s)
                )
            ]
        for session in old:
            self.cancel(session.id)
        return [s.id for s in old]

    def close(self) -> None:
        """Drop every session and delete every partial file (server stop, tests)."""
        with self._lock:
            ids = list(self._sessions)
        for upload_id in ids:
            self.cancel(upload_id)

    # -- inside ---------------------------------------------------------------------------------
    def _get(self, upload_id: str) -> _Session:
        session = self._sessions.get(upload_id)
        if session is None:
            raise UploadError(
                404,
                "unknown",
                "This upload is not known here (finished long ago, cancelled, or the server restarted); start the file again.",
            )
        return session

    def _check_partial(self, session: _Session) -> None:
        """The partial file still holds exactly the bytes hashed so far (called with both locks held)."""
        try:
            on_disk = session.partial.stat().st_size
        except FileNotFoundError:
            on_disk = -1
        if on_disk < session.received:
            self._sessions.pop(session.id, None)
            session.partial.unlink(missing_ok=True)
            raise UploadError(410, "gone", f"The partial copy of {session.display_name} was removed; start this file again.")
        if on_disk > session.received:  # a write that failed half way: those bytes were never hashed
            os.truncate(session.partial, session.received)

    def _release(self, session: _Session, generation: int) -> None:
        with self._lock:
            if session.generation == generation:
                session.writing = False

    def _drop(self, session: _Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def _finalise(self, session: _Session) -> Candidate:
        sha = session.digest.hexdigest()
        final = self.spool_dir / f"{sha}{session.suffix}"
        try:
            os.chmod(session.partial, 0o600)
            os.replace(session.partial, final)
        except OSError as exc:
            raise _not_saved(session.display_name, self.settings, exc, session.received) from exc
        candidate = probe_candidate(
            Candidate(display_name=session.display_name, path=final, size_bytes=session.size, sha256=sha), self.settings
        )
        if not candidate.ok:
            final.unlink(missing_ok=True)  # a refused copy is never kept: the same bytes would be refused again
        return candidate


def _not_saved(display: str, settings: Settings, exc: OSError, received: int | None = None) -> UploadError:
    status = 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 500
    reason = exc.strerror or str(exc) or type(exc).__name__
    return UploadError(
        status,
        Code.NOT_SAVED,
        f"{display} could not be saved to {settings.data_dir} ({reason}). "
        "Free some disk space or set STORYTELLER_DATA_DIR to another folder, then add it again.",
        received,
    )
