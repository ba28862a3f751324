"""Durable tus uploads on disk: offsets survive a server restart; the sha256 is taken in the same pass.

Each upload is two files in ``<data dir>/uploads``: ``<id>.part`` (the bytes received, appended in order and
fsynced at the end of every PATCH) and ``<id>.json`` (name, size, state; replaced atomically). The offset is
the size of ``<id>.part``: whatever reached the disk counts, so a crash mid-PATCH loses at most what was not
written yet, and the client asks (HEAD) where to go on.

The sha256: a hashlib object cannot be saved, so the running one is kept in this process's memory with the
number of bytes it has seen. After a restart (or whenever that number is not the offset), the first PATCH
re-hashes the partial file once, reading it 1 MiB at a time, and goes on from there. Memory stays at one
1 MiB piece per upload in flight whatever the file's size.

A complete upload is probed like every intake (storyteller_core.intake.candidates.probe_candidate): a refused file is
deleted and its reason kept for the batch that names it. A batch takes the file into the spool under its
sha256 (``take``). Uploads left unfinished (or finished and never used) for ``IDLE_S`` are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storyteller_core.errors import Code
from storyteller_core.intake.candidates import Candidate, probe_candidate
from storyteller_core.intake.media import CHUNK, safe_display_name
from storyteller_core.intake.upload_sessions import DISK_MARGIN, MAX_SESSIONS, refusal, spool_suffix
from storyteller_core.settings import Settings
from storyteller_ui.api.common import ApiError

IDLE_S = 24 * 3600.0
STALE_WRITER_S = 30.0  # a PATCH that wrote nothing for this long may be replaced (a half-open connection)
MAX_METADATA_BYTES = 4096
_ID_CHARS = frozenset("0123456789abcdef")


@dataclass
class _Live:
    """What this process knows of an upload beyond its files: the running hash, and who is writing."""

    digest: Any = field(default_factory=hashlib.sha256)
    hashed: int = 0
    generation: int = 0
    writing: bool = False
    touched: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TusStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.data_dir / "uploads"
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()

    # -- files ---------------------------------------------------------------------------------
    def _part(self, upload_id: str) -> Path:
        return self.folder / f"{upload_id}.part"

    def _meta(self, upload_id: str) -> Path:
        return self.folder / f"{upload_id}.json"

    def _write_info(self, info: dict[str, Any]) -> None:
        temp = self.folder / f".{info['id']}.json.tmp"
        with temp.open("w", encoding="utf-8") as out:
            out.write(json.dumps(info))
            out.flush()
            os.fsync(out.fileno())  # the record outlives a power cut as the bytes do
        os.replace(temp, self._meta(info["id"]))

    def info(self, upload_id: str) -> dict[str, Any]:
        if len(upload_id) != 32 or not set(upload_id) <= _ID_CHARS:
            raise ApiError(404, "unknown_upload", "This upload is not known here; create it again.")
        try:
            info: dict[str, Any] = json.loads(self._meta(upload_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ApiError(
                404,
                "unknown_upload",
                "This upload is not known here (finished and used long ago, deleted, or never made); create it again.",
            ) from None
        except (OSError, ValueError) as exc:
            raise ApiError(500, "unreadable_upload", f"This upload's record cannot be read ({exc}); create it again.") from exc
        return info

    def offset(self, info: dict[str, Any]) -> int:
        if info["state"] != "receiving":
            return int(info["size"])
        try:
            return self._part(info["id"]).stat().st_size
        except FileNotFoundError:
            raise ApiError(410, "gone", f"The partial copy of {info['name']} was removed; upload the file again.") from None

    # -- creation ------------------------------------------------------------------------------
    def create(self, name: str, size: int, metadata: dict[str, str]) -> dict[str, Any]:
        self.expire()
        display = safe_display_name(name)  # never empty: a missing name becomes "video", left to the probe
        refused = refusal(display, size, self.settings.max_file_bytes)
        if refused:
            raise ApiError(*refused)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            free = shutil.disk_usage(self.folder).free
            open_ones = self._all()
        except OSError as exc:
            raise _not_saved(display, self.settings, exc) from exc
        receiving = [i for i in open_ones if i["state"] == "receiving"]
        if len(receiving) >= MAX_SESSIONS:
            raise ApiError(
                429, "too_many_uploads", f"{len(receiving)} uploads are already open; wait for some to finish, then add the rest."
            )
        owed = sum(i["size"] - self._size_on_disk(i["id"]) for i in receiving)
        if size + owed + DISK_MARGIN > free:
            raise ApiError(
                507,
                Code.NOT_SAVED,
                f"{display} ({size / 1024**3:.2f} GB) does not fit: {free / 1024**3:.2f}"
                f" GB free in {self.settings.data_dir}, and uploads under way still need "
                f"{owed / 1024**3:.2f} GB. Free some disk space or set STORYTELLER_DATA_DIR to another "
                "folder, then add it again.",
            )
        upload_id = secrets.token_hex(16)
        info = {
            "id": upload_id,
            "name": display,
            "size": size,
            "metadata": metadata,
            "state": "receiving",
            "created_at": time.time(),
            "touched_at": time.time(),
            "sha256": None,
            "error": None,
            "candidate": None,
        }
        try:
            os.close(os.open(self._part(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._write_info(info)
        except OSError as exc:
            self._part(upload_id).unlink(missing_ok=True)
            raise _not_saved(display, self.settings, exc) from exc
        return info

    def _all(self) -> list[dict[str, Any]]:
        found = []
        for meta in self.folder.glob("*.json"):
            with contextlib.suppress(ApiError):
                found.append(self.info(meta.stem))
        return found

    def _size_on_disk(self, upload_id: str) -> int:
        with contextlib.suppress(OSError):
            return self._part(upload_id).stat().st_size
        return 0

    # -- receiving -----------------------------------------------------------------------------
    def begin(self, upload_id: str, offset: int) -> Writer:
        """The writer of one PATCH starting at ``offset``: refused unless that is exactly the bytes received."""
        info = self.info(upload_id)
        if info["state"] != "receiving":
            raise ApiError(409, "finished", f"{info['name']} is complete.", {"Upload-Offset": str(info["size"])})
        with self._lock:
            live = self._live.setdefault(upload_id, _Live())
            if live.writing and time.monotonic() - live.touched < STALE_WRITER_S:
                raise ApiError(423, "busy", f"{info['name']} is still receiving an earlier request; ask again in a moment.")
            live.generation += 1  # a stale writer, if any, is refused from now on
            live.writing = True
            live.touched = time.monotonic()
            generation = live.generation
        try:
            with live.lock:
                on_disk = self.offset(info)
                if offset != on_disk:
                    raise ApiError(
                        409,
                        "wrong_offset",
                        f"{info['name']}: this piece starts at byte {offset:,}, but {on_disk:,} bytes have arrived; send from there.",
                        {"Upload-Offset": str(on_disk)},
                    )
                if live.hashed != on_disk:  # after a restart: hash what is on disk once, then go on in memory
                    live.digest, live.hashed = _hash_prefix(self._part(upload_id), on_disk)
        except BaseException:
            self._release(upload_id, generation)
            raise
        return Writer(self, info, live, generation, on_disk)

    def _release(self, upload_id: str, generation: int) -> None:
        with self._lock:
            live = self._live.get(upload_id)
            if live is not None and live.generation == generation:
                live.writing = False

    def finish(self, info: dict[str, Any], digest: Any) -> dict[str, Any]:
        """Every byte arrived: the sha256, the probe; a refused file is deleted, its reason kept."""
        part = self._part(info["id"])
        sha = digest.hexdigest()
        candidate = probe_candidate(Candidate(display_name=info["name"], path=part, size_bytes=info["size"], sha256=sha), self.settings)
        info = {**info, "sha256": sha, "touched_at": time.time(), "candidate": candidate.to_dict()}
        if candidate.ok:
            info["state"] = "complete"
        else:
            info["state"] = "refused"
            info["error"] = {"code": candidate.error_code, "message": candidate.error_message}
            part.unlink(missing_ok=True)
        self._write_info(info)
        with self._lock:
            self._live.pop(info["id"], None)
        return info

    def _digest(self, info: dict[str, Any]) -> Any:
        with self._lock:
            live = self._live.get(info["id"])
        if live is not None and live.hashed == info["size"]:
            return live.digest
        return _hash_prefix(self._part(info["id"]), info["size"])[0]

    # -- use and removal -----------------------------------------------------------------------
    def take(self, upload_id: str) -> Candidate:
        """The checked file for a batch, moved into the spool as ``<sha256><ext>`` (taken again: the same file)."""
        info = self.info(upload_id)
        if info["state"] == "receiving" and self.offset(info) == info["size"]:
            info = self.finish(info, self._digest(info))  # every byte is here; the server stopped before the check
        if info["state"] == "receiving":
            raise ApiError(
                409, "incomplete", f"{info['name']}: {self.offset(info):,} of {info['size']:,} bytes have arrived; finish the upload first."
            )
        candidate = Candidate.from_dict(info["candidate"])
        if info["state"] == "refused":
            return candidate  # a row with its reason, as any refused file
        spool = self.settings.spool_dir
        target = spool / f"{info['sha256']}{spool_suffix(info['name'])}"
        part = self._part(upload_id)
        try:
            spool.mkdir(parents=True, exist_ok=True, mode=0o700)
            if part.exists():
                os.replace(part, target)
        except OSError as exc:
            raise _not_saved(info["name"], self.settings, exc) from exc
        if not target.exists():
            raise ApiError(410, "gone", f"{info['name']} was used by an earlier batch and is no longer kept; upload it again.")
        candidate.path = target
        self._write_info({**info, "touched_at": time.time(), "candidate": candidate.to_dict()})
        return candidate

    def delete(self, upload_id: str) -> None:
        info = self.info(upload_id)
        with self._lock:
            live = self._live.pop(upload_id, None)
        if live is not None:
            with live.lock:
                live.generation += 1
        self._part(upload_id).unlink(missing_ok=True)
        self._meta(upload_id).unlink(missing_ok=True)
        del info

    def expire(self, idle_s: float = IDLE_S) -> list[str]:
        """Delete uploads nobody touched for ``idle_s`` (unfinished, or finished and never used)."""
        gone = []
        cutoff = time.time() - idle_s
        for meta in self.folder.glob("*.json") if self.folder.is_dir() else []:
            try:
                touched = max(meta.stat().st_mtime, self._part(meta.stem).stat().st_mtime if self._part(meta.stem).exists() else 0)
            except OSError:
                continue
            if touched < cutoff:
                with contextlib.suppress(ApiError, OSError):
                    self.delete(meta.stem)
                    gone.append(meta.stem)
        return gone


class Writer:
    """One PATCH's appends: in order, hashed in the same pass; ``undo`` puts the file back where it began."""

    def __init__(self, store: TusStore, info: dict[str, Any], live: _Live, generation: int, start: int) -> None:
        self.store, self.info, self.live, self.generation = store, info, live, generation
        self.start = self.offset = start
        self._before = live.digest.copy()
        self._file = store._part(info["id"]).open("ab")

    def write(self, data: bytes | bytearray) -> None:
        with self.live.lock:
            if self.live.generation != self.generation:
                raise ApiError(409, "replaced", "A newer request for this upload took over; ask where to resume.")
            try:
                self._file.write(data)
            except OSError as exc:
                raise _not_saved(self.info["name"], self.store.settings, exc) from exc
            self.live.digest.update(data)
            self.offset += len(data)
            self.live.hashed = self.offset
            self.live.touched = time.monotonic()

    def close(self) -> None:
        """Flush and fsync what arrived: the offset a HEAD answers after a restart."""
        with contextlib.suppress(OSError):
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        self.store._release(self.info["id"], self.generation)

    def undo(self) -> None:
        """This PATCH's bytes are refused (a checksum mismatch, too many bytes): back to where it began."""
        with self.live.lock:
            if self.live.generation != self.generation:
                return
            self._file.flush()
            os.truncate(self.store._part(self.info["id"]), self.start)
            self.live.digest, self.live.hashed = self._before, self.start
            self.offset = self.start


def _hash_prefix(path: Path, length: int) -> tuple[Any, int]:
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as src:
        while done < length:
            piece = src.read(min(CHUNK, length - done))
            if not piece:
                break
            digest.update(piece)
            done += len(piece)
    return digest, done


def _not_saved(display: str, settings: Settings, exc: OSError) -> ApiError:
    import errno

    status = 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 500
    reason = exc.strerror or str(exc) or type(exc).__name__
    return ApiError(
        status,
        Code.NOT_SAVED,
        f"{display} could not be saved to {settings.data_dir} ({reason}). "
        "Free some disk space or set STORYTELLER_DATA_DIR to another folder, then add it again.",
    )
