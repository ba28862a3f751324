"""Turn what a person hands us (a path, a folder, an uploaded stream) into checked candidates.

Nothing here talks to the network: every file is hashed and probed locally, and
a bad file is refused with a reason before any API call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from storyteller_core.errors import Code, MediaError
from storyteller_core.intake.media import Probe, check_size, hash_file, probe, safe_display_name, spool_stream
from storyteller_core.sanitize import terminal_text
from storyteller_core.settings import VIDEO_EXTENSIONS, Settings


@dataclass
class Candidate:
    display_name: str
    path: Path
    size_bytes: int = 0
    sha256: str = ""
    probe: Probe | None = None
    error_code: str | None = None
    error_message: str | None = None
    url: str | None = None  # a web video (YouTube): analyzed by Gemini from its URL, never uploaded

    @property
    def source(self) -> str:
        """What the person added: the URL or the local path."""
        return self.url or str(self.path)

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @property
    def checked(self) -> bool:
        """Hashed and probed (or refused, or a link); an unchecked file is checked after Start."""
        return bool(self.sha256 or self.url or self.error_code)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        probe_data = data.get("probe")
        return cls(**{**data, "path": Path(data["path"]), "probe": Probe(**probe_data) if probe_data else None})


@dataclass(frozen=True)
class NotAdded:
    """An input refused before it became a row (not a video, missing, too large, a mistyped folder): kept out of the
    store, shown once with its reason (the app's dismissible "not added" list, the CLI's stderr and CSV)."""

    source: str  # what the person gave: the absolute path or the link
    display_name: str
    code: str
    reason: str

    @classmethod
    def of(cls, candidate: Candidate) -> NotAdded:
        return cls(candidate.source, candidate.display_name, str(candidate.error_code or ""), candidate.error_message or "")

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def split_refused(candidates: list[Candidate]) -> tuple[list[Candidate], list[NotAdded]]:
    """(the accepted candidates, the refused ones), each source once (the first time it was given)."""
    accepted: list[Candidate] = []
    refused: list[NotAdded] = []
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.source in seen:
            continue
        seen.add(candidate.source)
        if candidate.ok:
            accepted.append(candidate)
        else:
            refused.append(NotAdded.of(candidate))
    return accepted, refused


@dataclass
class Skipped:
    path: Path
    reason: str


def expand(paths: list[Path]) -> tuple[list[Path], list[Skipped]]:
    """Files as given, and folders expanded to the videos in them (recursively, sorted).

    Inside a folder, links are not followed out of it: a link to a file or folder elsewhere (say a root-only
    file) is skipped with a reason, never read or hashed. A link to a folder is not descended into.
    """
    files: list[Path] = []
    skipped: list[Skipped] = []
    for path in paths:
        if path.is_dir():
            found, left_out = _folder_videos(path)
            files += found
            skipped += left_out
        else:
            files.append(path)
    return files, skipped


def _folder_videos(folder: Path) -> tuple[list[Path], list[Skipped]]:
    root = folder.resolve()
    files: list[Path] = []
    skipped: list[Skipped] = []
    for child in sorted(_walk(folder)):
        if child.name.startswith("."):
            continue
        if child.is_symlink():
            target = child.resolve()
            if not target.is_relative_to(root):
                skipped.append(Skipped(child, f"{_shown(child)} was skipped: it is a link to outside the folder"))
                continue
            if target.is_dir():
                skipped.append(Skipped(child, f"{_shown(child)} was skipped: it is a link to a folder (not followed)"))
                continue
        if not child.is_file():
            continue
        if child.suffix.lower() in VIDEO_EXTENSIONS:
            files.append(child)
        else:
            skipped.append(Skipped(child, f"{_shown(child)} was skipped: not a video file extension"))
    return files, skipped


def _walk(folder: Path) -> list[Path]:
    """Every entry under ``folder``, linked folders listed but not descended into (followlinks=False)."""
    entries: list[Path] = []
    for top, dirs, names in os.walk(folder, followlinks=False):
        base = Path(top)
        entries += [base / d for d in dirs if (base / d).is_symlink()]
        entries += [base / n for n in names]
    return entries


def _shown(path: Path) -> str:
    return terminal_text(safe_display_name(path.name))


# Linear time: each part is delimited (no nested or overlapping quantifiers), and the text is capped first.
MAX_URL_CHARS = 2048
_YOUTUBE = re.compile(
    r"(?:https?://)?(?:www\.|m\.)?(?:youtube\.com/(?:watch\?(?:[^&#\s]*&)*?v=|shorts/|live/|embed/)|youtu\.be/)"
    r"([A-Za-z0-9_-]{11})(?:[&?#/]\S*)?"
)


def youtube_url(text: str) -> str | None:
    """The canonical watch URL when ``text`` is a YouTube link, else None (also for anything over 2048 characters)."""
    text = text.strip()
    if len(text) > MAX_URL_CHARS:
        return None
    match = _YOUTUBE.fullmatch(text)
    return f"https://www.youtube.com/watch?v={match.group(1)}" if match else None


def inspect_url(text: str) -> Candidate:
    """A public YouTube video: nothing to hash or probe here; Gemini reads it from the URL."""
    url = youtube_url(text)
    if url is None:
        candidate = Candidate(display_name=safe_display_name(text.strip()[:200]) or "link", path=Path(), url=text.strip())
        return _refuse(
            candidate,
            MediaError(
                Code.NOT_FOUND,
                "Only public YouTube links can be analyzed from the web "
                "(https://www.youtube.com/watch?v=...). Download other videos and add the file.",
            ),
        )
    key = hashlib.sha256(f"youtube:{url}".encode()).hexdigest()
    return Candidate(display_name=url, path=Path(), sha256=key, url=url)


def inspect_path(path: Path, settings: Settings) -> Candidate:
    """Hash and probe a local file in place (it is read from disk, never copied)."""
    name = safe_display_name(path.name)
    candidate = Candidate(display_name=name, path=path.expanduser().absolute())
    try:
        if not path.exists():
            raise MediaError(Code.NOT_FOUND, f"Nothing is at {path}: no such file or folder. Check the path for a typo and try again.")
        if not path.is_file():
            raise MediaError(Code.NOT_A_FILE, f"{path} is not a file. Give a video file or a folder of videos.")
        check_extension(name)
        check_size(name, path.stat().st_size, settings.max_file_bytes)
        candidate.sha256, candidate.size_bytes = hash_file(path)
    except MediaError as exc:
        return _refuse(candidate, exc)
    except PermissionError:
        return _refuse(candidate, MediaError(Code.UNREADABLE, f"{name} cannot be read (permission denied). Check its permissions."))
    except OSError as exc:
        reason = exc.strerror or exc
        return _refuse(candidate, MediaError(Code.UNREADABLE, f"{name} cannot be read ({reason}). Check the disk and try again."))
    return probe_candidate(candidate, settings)


def unchecked(path: Path) -> Candidate:
    """A local file listed as found, to be checked after Start (a large folder is listed in a moment)."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return Candidate(display_name=safe_display_name(path.name), path=path.expanduser().absolute(), size_bytes=size)


def inspect_stream(stream: BinaryIO, name: str, settings: Settings) -> Candidate:
    """Spool an uploaded stream into the data dir (hashing on the way), then probe it."""
    display = safe_display_name(name)
    try:
        check_extension(display)
    except MediaError as exc:
        return _refuse(Candidate(display_name=display, path=settings.data_dir / "spool"), exc)
    try:
        path, sha, size = spool_stream(stream, settings.data_dir / "spool", display)
    except OSError as exc:
        candidate = Candidate(display_name=display, path=settings.data_dir / "spool")
        return _refuse(
            candidate,
            MediaError(
                Code.NOT_SAVED,
                f"{display} could not be saved to {settings.data_dir} "
                f"({exc.strerror or exc}). Free some disk space or set "
                "STORYTELLER_DATA_DIR to another folder, then add it again.",
            ),
        )
    candidate = probe_candidate(Candidate(display_name=display, path=path, size_bytes=size, sha256=sha), settings)
    if not candidate.ok:
        path.unlink(missing_ok=True)  # a refused copy is never kept: the same bytes would be refused again
    return candidate


def probe_candidate(candidate: Candidate, settings: Settings) -> Candidate:
    """Probe a hashed file in place (PyAV) and refuse it with a reason when it is not a whole video within limits."""
    try:
        candidate.probe = probe(candidate.path, candidate.display_name, settings.max_file_bytes, settings.max_duration_s)
    except MediaError as exc:
        return _refuse(candidate, exc)
    return candidate


def check_extension(display_name: str) -> None:
    """Refuse a name with another extension before a byte is read: a .m3u8 or .txt is no video we upload.

    A name with no extension at all (a browser may send one) is left to the probe, whose demuxer whitelist decides.
    """
    suffix = Path(display_name).suffix.lower()
    if suffix and suffix not in VIDEO_EXTENSIONS:
        raise MediaError(
            Code.NOT_VIDEO,
            f"{display_name} is not a video file ({suffix}); only "
            f"{', '.join(sorted(VIDEO_EXTENSIONS))} files are accepted. Convert it to MP4, then add it again.",
        )


def _refuse(candidate: Candidate, exc: MediaError) -> Candidate:
    candidate.error_code = exc.code
    candidate.error_message = exc.message
    return candidate
