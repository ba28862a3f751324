"""Collection answers and their citation checks, durable: SQLite in the data dir, JSON values (never pickles).

``<data dir>/collection/answers.db``, two tables:

    answers(key, record, updated_at)     one row per question: key = question + scope + model + backend + the
                                         stories it was made from (material.fingerprint); record = JSON
    checks(key, idx, outcome)            one row per finished citation check, written (and committed) the
                                         moment it ends, before the next one starts

Every write is its own committed transaction in WAL mode: a SIGKILL loses at most the check in flight, and
a restart asks only the checks that have no row. The answer's record is written before its first check.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA = 1


class AnswerStore:
    def __init__(self, data_dir: Path) -> None:
        folder = data_dir / "collection"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / "answers.db"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, record TEXT NOT NULL, updated_at REAL NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS checks (key TEXT NOT NULL, idx INTEGER NOT NULL, outcome TEXT NOT NULL, PRIMARY KEY (key, idx))"
            )
            self._db.execute(f"PRAGMA user_version={SCHEMA}")
        for db_file in folder.glob("answers.db*"):  # the database, its WAL and shared memory: owner only
            db_file.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AnswerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- answers -------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM answers WHERE key = ?", (key,)).fetchone()
        return _load(row[0]) if row else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT INTO answers (key, record, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE "
                "SET record = excluded.record, updated_at = excluded.updated_at",
                (key, text, time.time()),
            )

    def put_first(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Store ``record`` unless an answer to this key is stored already; the stored one. Two processes asking the
        same question at once keep one answer, so the checks (by citation index) always refer to its citations."""
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO answers (key, record, updated_at) VALUES (?, ?, ?)", (key, text, time.time()))
            row = self._db.execute("SELECT record FROM answers WHERE key = ?", (key,)).fetchone()
        return _load(row[0]) or record

    def all(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored answer (key, record), newest first: for search and for a list of earlier questions."""
        with self._lock:
            rows = self._db.execute("SELECT key, record FROM answers ORDER BY updated_at DESC").fetchall()
        for key, text in rows:
            record = _load(text)
            if record is not None:
                yield key, record

    def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM checks WHERE key = ?", (key,))
            self._db.execute("DELETE FROM answers WHERE key = ?", (key,))
            self._db.execute("COMMIT")

    # -- checks ---------------------------------------------------------------------------------
    def checks(self, key: str) -> dict[int, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT idx, outcome FROM checks WHERE key = ?", (key,)).fetchall()
        out: dict[int, dict[str, Any]] = {}
        for idx, text in rows:
            value = _load(text)
            if value is not None:
                out[int(idx)] = value
        return out

    def put_check(self, key: str, idx: int, outcome: dict[str, Any]) -> None:
        """One finished check, committed before this returns; a check already stored is kept (never asked twice)."""
        text = json.dumps(outcome, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO checks (key, idx, outcome) VALUES (?, ?, ?)", (key, idx, text))


def _load(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
