"""API tokens: made for one program each, stored hashed, revocable; the app's own token still works beside them.

A token is shown once, when made (``vst_`` and 43 random characters); the data dir keeps only its sha256,
in ``api-tokens.json`` (0600), read again whenever the file changes (another process may revoke one).
Only the app's token may make, list or revoke tokens (an API token cannot mint others):

    POST   /api/v1/tokens          {"name"}  -> 201 {"id", "name", "token", "created_at"}
    GET    /api/v1/tokens                    -> 200 {"tokens": [{"id", "name", "created_at", "last_used_at"}]}
    DELETE /api/v1/tokens/{id}               -> 204

The Settings page can call ``tokens_for(data_dir)`` with the same methods (create / list / revoke).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storyteller_core.settings import default_data_dir
from storyteller_ui.access import API_PRINCIPAL as PRINCIPAL
from storyteller_ui.api.common import ApiError, answer, prefix, read_model

PREFIX = "vst_"
FILE_NAME = "api-tokens.json"
MAX_TOKENS = 100
USED_EVERY_S = 60.0  # last_used_at is written at most this often per token


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, description="Which program holds it.")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class ApiTokens:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._tokens: list[dict[str, Any]] = []

    def _load(self) -> list[dict[str, Any]]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._mtime, self._tokens = None, []
            return self._tokens
        if mtime != self._mtime:
            with contextlib.suppress(OSError, ValueError):
                self._tokens = list(json.loads(self.path.read_text(encoding="utf-8")).get("tokens", []))
                self._mtime = mtime
        return self._tokens

    def _save(self, tokens: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(prefix=".api-tokens-", dir=self.path.parent)  # 0600
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"tokens": tokens}, out)
        os.replace(temp, self.path)
        self._tokens, self._mtime = tokens, self.path.stat().st_mtime_ns

    def create(self, name: str) -> dict[str, Any]:
        secret = PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            tokens = list(self._load())
            if len(tokens) >= MAX_TOKENS:
                raise ApiError(409, "too_many_tokens", f"{len(tokens)} API tokens exist; revoke some first.")
            record = {
                "id": secrets.token_hex(6),
                "name": name.strip()[:100],
                "sha256": _digest(secret),
                "created_at": time.time(),
                "last_used_at": None,
            }
            self._save([*tokens, record])
        return {**self.public(record), "token": secret}

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self.public(t) for t in self._load()]

    def revoke(self, token_id: str) -> bool:
        with self._lock:
            tokens = self._load()
            kept = [t for t in tokens if t["id"] != token_id]
            if len(kept) == len(tokens):
                return False
            self._save(kept)
            return True

    def check(self, secret: str) -> str | None:
        """The id of the API token ``secret`` is, or None."""
        if not secret.startswith(PREFIX):
            return None
        wanted = _digest(secret)
        with self._lock:
            tokens = self._load()
            found = next((t for t in tokens if hmac.compare_digest(t["sha256"], wanted)), None)
            if found is None:
                return None
            if time.time() - (found.get("last_used_at") or 0) > USED_EVERY_S:
                self._mtime = None  # read the file again: another server on this folder may have revoked one since
                fresh = self._load()
                if not any(t["id"] == found["id"] for t in fresh):
                    return None  # revoked meanwhile
                with contextlib.suppress(OSError):
                    self._save([{**t, "last_used_at": time.time()} if t["id"] == found["id"] else t for t in fresh])
            return str(found["id"])

    @staticmethod
    def public(record: dict[str, Any]) -> dict[str, Any]:
        return {k: record[k] for k in ("id", "name", "created_at", "last_used_at")}


_by_dir: dict[Path, ApiTokens] = {}
_by_dir_lock = threading.Lock()


def tokens_for(data_dir: Path | None = None) -> ApiTokens:
    data_dir = data_dir or default_data_dir()
    with _by_dir_lock:
        found = _by_dir.get(data_dir)
        if found is None:
            found = _by_dir[data_dir] = ApiTokens(data_dir)
        return found


def check(secret: str) -> str | None:
    """For TokenGate: the id of a valid API token of this server's data dir, or None."""
    return tokens_for().check(secret)


def routes() -> list[Route]:
    root = prefix() + "/tokens"
    return [Route(root, _collection, methods=["GET", "POST"]), Route(root + "/{token_id}", _one, methods=["DELETE"])]


def _app_only(request: Request) -> None:
    if request.scope.get("state", {}).get(PRINCIPAL, "app") != "app":
        raise ApiError(
            403,
            "forbidden",
            "API tokens are made and revoked with the app's own token (or on the Settings page), not with another API token.",
        )


async def _collection(request: Request) -> Response:
    import asyncio

    try:
        _app_only(request)
        if request.method == "GET":
            return answer({"tokens": await asyncio.to_thread(tokens_for().list)})
        body = await read_model(request, TokenCreate)
        return answer(await asyncio.to_thread(tokens_for().create, body.name), 201)
    except ApiError as exc:
        return exc.response()


async def _one(request: Request) -> Response:
    import asyncio

    try:
        _app_only(request)
        if not await asyncio.to_thread(tokens_for().revoke, request.path_params["token_id"]):
            raise ApiError(404, "unknown_token", "There is no such API token (revoked already?).")
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    except ApiError as exc:
        return exc.response()
