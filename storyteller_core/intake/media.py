"""Local video files: spool + sha256 in one pass, PyAV probe, thumbnails."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av

from storyteller_core.errors import Code, MediaError

CHUNK = 1024 * 1024
PARTIAL_PREFIX = ".incoming-"  # a spool copy still being written
MAX_NAME_CHARS = 200

# Only these demuxers may open a file: a playlist (hls, concat), an image sequence or a device is never a video we
# upload, and some of them wait forever (a live .m3u8 reloads until new segments appear).
ALLOWED_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "mpeg", "flv", "asf")
PROBE_TIMEOUT_S = 20.0  # probing or a thumbnail that takes longer is refused / skipped
MAX_FRAME_SIDE = 8192  # pixels; read from the stream header before any frame is decoded
MAX_FRAME_PIXELS = 8192 * 4320  # 8K UHD

_MIME_BY_FORMAT = {
    "mov,mp4,m4a,3gp,3g2,mj2": "video/mp4",
    "matroska,webm": "video/webm",
    "avi": "video/x-msvideo",
    "mpeg": "video/mpeg",
    "flv": "video/x-flv",
    "asf": "video/x-ms-wmv",
}


@dataclass(frozen=True)
class Probe:
    duration_s: float
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    mime_type: str
    fps: float | None


def safe_display_name(name: str) -> str:
    """The last path component of a user-supplied name, stripped of control characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    if cleaned in {"", ".", ".."}:
        cleaned = "video"
    if len(cleaned) <= MAX_NAME_CHARS:
        return cleaned
    suffix = Path(cleaned).suffix[:10]  # a long name keeps its extension: it says what the file is
    return cleaned[: MAX_NAME_CHARS - len(suffix)].rstrip() + suffix


def spool_stream(stream: BinaryIO, spool_dir: Path, display_name: str) -> tuple[Path, str, int]:
    """Copy ``stream`` to ``spool_dir`` in 1 MiB chunks, hashing in the same pass.

    The spooled file is named by its sha256, never by the user's file name, so a
    name cannot escape the data dir and the same content is stored once.
    """
    spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256()
    size = 0
    suffix = Path(safe_display_name(display_name)).suffix.lower()[:10]
    fd, tmp_name = tempfile.mkstemp(dir=spool_dir, prefix=PARTIAL_PREFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        final = spool_dir / f"{sha}{suffix}"
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return final, sha, size


def hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def probe(
    path: Path,
    display_name: str,
    max_bytes: int,
    max_duration_s: float,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    formats: tuple[str, ...] = ALLOWED_FORMATS,
) -> Probe:
    """Check that ``path`` is a whole, readable video within limits, or raise MediaError.

    Only the demuxers in ``formats`` may open it, every read is interrupted after ``timeout_s`` and the
    whole probe is refused past it, and the frame size is checked from the header before a frame is decoded:
    a crafted file must not hang or swell the server (each of those did, see docs/RELIABILITY.md).
    """
    check_size(display_name, path.stat().st_size, max_bytes)
    deadline = time.monotonic() + timeout_s
    try:
        with open_video(path, timeout_s, formats) as container:
            _check_format(display_name, container, formats)
            video = next(iter(container.streams.video), None)
            if video is None:
                raise MediaError(Code.NOT_VIDEO, f"{display_name} is not a video file (no video stream found).")
            check_frame_size(display_name, video.codec_context.width, video.codec_context.height)
            audio = next(iter(container.streams.audio), None)
            duration = _duration(container, video)
            check_duration(display_name, duration, max_duration_s)
            _single_threaded(video)
            _decode_first_and_last(container, video, duration)
            _check_deadline(display_name, deadline, timeout_s)
            fmt = container.format.name
            return Probe(
                duration_s=duration,
                width=video.codec_context.width,
                height=video.codec_context.height,
                video_codec=video.codec_context.name,
                audio_codec=audio.codec_context.name if audio else None,
                mime_type=_MIME_BY_FORMAT.get(fmt) or _guess_mime(display_name),
                fps=float(video.average_rate) if video.average_rate else None,
            )
    except MediaError:
        raise
    except av.ExitError as exc:  # the interrupt callback fired: a read took longer than the limit
        raise _too_slow(display_name, timeout_s) from exc
    except av.ArgumentError as exc:  # no allowed demuxer recognised the file
        raise _not_a_container(display_name) from exc
    except (av.FFmpegError, StopIteration, ValueError, OSError) as exc:
        raise MediaError(
            Code.UNREADABLE,
            f"{display_name} is not a video file we can read, or it is truncated or damaged ({_short(exc)}).",
        ) from exc


def open_video(path: Path, timeout_s: float = PROBE_TIMEOUT_S, formats: tuple[str, ...] = ALLOWED_FORMATS) -> av.container.InputContainer:
    """Open a local file with only the allowed demuxers and the file protocol, each read limited in time."""
    options = {"format_whitelist": ",".join(formats), "protocol_whitelist": "file"}
    return av.open(str(path), metadata_errors="ignore", options=options, timeout=(timeout_s, timeout_s))


def check_frame_size(display_name: str, width: int, height: int) -> None:
    """Refuse frames too large to decode safely (a 16000x16000 frame took 4.7 GB for one thumbnail)."""
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
        raise MediaError(
            Code.TOO_LARGE,
            f"{display_name} has frames of {width}x{height} pixels, over the limit of {MAX_FRAME_SIDE} pixels a side "
            f"and {MAX_FRAME_PIXELS / 1e6:.1f} megapixels a frame. Export it at 4K or less, then add it again.",
        )


def _check_format(display_name: str, container: av.container.InputContainer, formats: tuple[str, ...]) -> None:
    if container.format.name not in formats:
        raise _not_a_container(display_name, container.format.name)


def _not_a_container(display_name: str, format_name: str = "") -> MediaError:
    what = (
        "an image"
        if "pipe" in format_name or format_name.startswith("image")
        else "a playlist"
        if format_name in ("hls", "concat", "dash")
        else ""
    )
    return MediaError(
        Code.NOT_VIDEO,
        f"{display_name} is not a video file" + (f" (it is {what})" if what else "") + ": only MP4/MOV, MKV/WebM, "
        "AVI, MPEG, FLV and WMV videos are accepted; playlists such as .m3u8 are refused. Convert it to MP4, then "
        "add it again.",
    )


def _too_slow(display_name: str, timeout_s: float) -> MediaError:
    return MediaError(
        Code.UNREADABLE,
        f"{display_name} could not be checked within {timeout_s:.0f} s (it kept the reader waiting), so it was "
        "refused. A live stream or a damaged file does this; save the video as an MP4 file and add that.",
    )


def _check_deadline(display_name: str, deadline: float, timeout_s: float) -> None:
    if time.monotonic() > deadline:
        raise _too_slow(display_name, timeout_s)


def _single_threaded(video: av.VideoStream) -> None:
    """One decoding thread: frame threads each hold a whole frame, multiplying memory by the core count."""
    video.codec_context.thread_count = 1
    video.codec_context.thread_type = "SLICE"


def check_size(display_name: str, size: int, max_bytes: int) -> None:
    if size == 0:
        raise MediaError(Code.EMPTY_FILE, f"{display_name} is empty (0 bytes). Check the file and add it again.")
    if size > max_bytes:
        raise MediaError(
            Code.TOO_LARGE,
            f"{display_name} is {size / 1024**3:.2f} GB, over the {max_bytes / 1024**3:.2f} GB limit "
            "per file. Split or compress it, then add it again.",
        )


def check_duration(display_name: str, duration_s: float, max_duration_s: float) -> None:
    if duration_s > max_duration_s:
        raise MediaError(
            Code.TOO_LONG,
            f"{display_name} lasts {duration_s / 3600:.1f} h, over the {max_duration_s / 3600:.1f} h limit. "
            "Cut it into parts, then add them.",
        )


def thumbnail(path: Path, out: Path, width: int = 160, *, timeout_s: float = PROBE_TIMEOUT_S) -> Path | None:
    """Save a JPEG of the first decodable frame; None when there is none, or it is too large or too slow to get.

    The frame is scaled down by swscale before it becomes an image (no full-size RGB copy), on one thread.
    """
    if out.exists():
        return out
    deadline = time.monotonic() + timeout_s
    try:
        with open_video(path, timeout_s) as container:
            _check_format(path.name, container, ALLOWED_FORMATS)
            stream = container.streams.video[0]
            check_frame_size(path.name, stream.codec_context.width, stream.codec_context.height)
            _single_threaded(stream)
            for frame in container.decode(stream):
                if time.monotonic() > deadline:
                    return None
                small = frame.reformat(
                    width=min(width, frame.width),
                    height=max(1, round(frame.height * min(width, frame.width) / max(1, frame.width))),
                    format="rgb24",
                )
                image = small.to_image()
                out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                image.save(out, "JPEG", quality=80)
                out.chmod(0o600)
                return out
    except (av.FFmpegError, IndexError, OSError, MediaError):
        return None
    return None


def _duration(container: av.container.InputContainer, video: av.VideoStream) -> float:
    if container.duration:
        return container.duration / av.time_base
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    return 0.0


def _decode_first_and_last(container: av.container.InputContainer, video: av.VideoStream, duration: float) -> None:
    """Decode one frame at the start and one near the end: a truncated file fails here."""
    if _first_frame(container, video) is None:
        raise ValueError("no frame could be decoded")
    if duration > 1:
        target = int((duration * 0.9) / float(video.time_base)) if video.time_base else 0
        container.seek(target, stream=video, any_frame=False, backward=True)
        if _first_frame(container, video) is None:
            raise ValueError("the end of the video is missing")


def _first_frame(container: av.container.InputContainer, video: av.VideoStream) -> av.VideoFrame | None:
    for packet in container.demux(video):
        for frame in packet.decode():
            return frame
    return None


def _guess_mime(name: str) -> str:
    mime, _ = mimetypes.guess_type(name)
    return mime if mime and mime.startswith("video/") else "video/mp4"


def _short(exc: BaseException) -> str:
    """The error's reason without the file's path (which can be long and private)."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    text = text[0].lower() + text[1:]
    return text if len(text) < 120 else text[:117] + "..."
