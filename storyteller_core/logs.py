"""JSON-lines logging to the data dir and stderr, with secrets scrubbed."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import threading
import time
from pathlib import Path
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_secrets: set[str] = set()
_lock = threading.Lock()
_configured: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make sure ``value`` (an API key) is never written to any log line."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    for secret in list(_secrets):
        if secret in text:
            text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str, ensure_ascii=False))


def setup_logging(data_dir: Path, stderr_level: int = logging.INFO) -> Path:
    """Idempotent: one file handler per data dir, one stderr handler per process."""
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_file = log_dir / "storyteller.jsonl"
    root = logging.getLogger("storyteller_core")
    root.setLevel(logging.INFO)
    with _lock:
        if str(log_file) not in _configured:
            handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=20 * 1024**2, backupCount=3, encoding="utf-8")
            log_file.chmod(0o600)
            handler.setFormatter(JsonFormatter())
            root.addHandler(handler)
            _configured.add(str(log_file))
        if "stderr" not in _configured:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(JsonFormatter())
            console.setLevel(stderr_level)
            root.addHandler(console)
            _configured.add("stderr")
    for noisy in ("httpx", "httpx2", "httpcore", "google_genai", "google.genai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file
