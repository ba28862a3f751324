"""Run the emulator alone: python -m storyteller_core.emulator --port 8765

SIGTERM and SIGINT stop it cleanly: it stops answering and deletes its temp
storage (every uploaded byte), so no bench run leaves gigabytes in /tmp.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from storyteller_core.emulator import Emulator, EmulatorConfig

log = logging.getLogger("storyteller_core.emulator")


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Gemini REST emulator")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--processing-delay", type=float, default=1.5)
    parser.add_argument("--analysis-delay", type=float, default=1.0)
    parser.add_argument("--storage-root", type=Path, default=None, help="where its temp storage dir goes (default: the temp dir)")
    parser.add_argument("--stream-chunk-delay", type=float, default=0.3, help="seconds between streamed pieces of an answer")
    parser.add_argument("--youtube-duration", type=float, default=300.0, help="seconds a YouTube video is assumed to last")
    parser.add_argument("--batch-delay", type=float, default=5.0, help="seconds a Batch API batch takes to succeed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    config = EmulatorConfig(
        processing_delay_s=args.processing_delay,
        analysis_delay_s=args.analysis_delay,
        stream_chunk_delay_s=args.stream_chunk_delay,
        youtube_duration_s=args.youtube_duration,
        batch_pending_s=args.batch_delay / 5,
        batch_running_s=args.batch_delay * 4 / 5,
    )
    emulator = Emulator(config, port=args.port, storage_root=args.storage_root).start()
    try:
        log.info("Gemini emulator listening on %s (Ctrl+C stops it); storage %s", emulator.base_url, emulator.storage)
        while not stop.wait(1.0):
            pass
    finally:
        emulator.stop()
        log.info("Gemini emulator stopped; storage deleted")


if __name__ == "__main__":
    main()
