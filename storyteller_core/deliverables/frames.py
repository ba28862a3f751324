"""The frame at a key moment, read with PyAV from the local file, as a small JPEG.

One frame is decoded at a time and handed on as JPEG bytes (about 20-40 kB), so
a 100-video report never holds decoded pictures. None when there is no local
file (a YouTube link, or the source was moved or deleted) or it cannot be read:
the report shows a placeholder then.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

log = logging.getLogger(__name__)
WIDTH = 480


def local_source(path: str | None) -> Path | None:
    """The file behind a row, if it is local and still there."""
    if not path or "://" in path or path.startswith(("youtube.com", "www.youtube.com", "youtu.be")):
        return None
    candidate = Path(path)
    return candidate if candidate.is_file() else None


def frame_jpeg(path: Path, seconds: float, width: int = WIDTH) -> bytes | None:
    """The first frame at or after ``seconds`` as JPEG, or None when the file cannot be decoded there."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if stream.time_base is not None:
                container.seek(int(max(seconds, 0) / stream.time_base), stream=stream, backward=True)
            image = None
            for frame in container.decode(stream):
                image = frame.to_image()
                if frame.time is None or frame.time >= seconds - 0.05:
                    break
            if image is None:
                return None
        image.thumbnail((width, width * 2))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=80)
        return out.getvalue()
    except Exception as exc:  # av raises many kinds; a bad file gets a placeholder, not a failed report
        log.info("frame not read", extra={"file": path.name, "reason": type(exc).__name__})
        return None
