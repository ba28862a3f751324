"""What every API route shares: the engine, JSON answers and errors, a bounded JSON body."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from storyteller_core.errors import DataDirError
from storyteller_ui.access import API_PREFIX, base_path
from storyteller_ui.app_engine import data_dir_problem, start_engine

if TYPE_CHECKING:
    from storyteller_core import Engine

M = TypeVar("M", bound=BaseModel)
MAX_JSON_BYTES = 1024 * 1024  # a batch of 10,000 paths fits


class ApiError(Exception):
    """A refused request: its HTTP status, a stable code and a sentence for a person."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": self.code, "message": self.message}},
            status_code=self.status,
            headers={"Cache-Control": "no-store", **self.headers},
        )


def prefix() -> str:
    return base_path() + API_PREFIX


def answer(data: BaseModel | dict[str, Any] | list[Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    body = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


async def engine() -> Engine:
    try:
        return await asyncio.to_thread(start_engine)
    except (OSError, DataDirError) as exc:
        raise ApiError(503, "data_dir", data_dir_problem(exc)) from exc


async def read_model(request: Request, model: type[M]) -> M:
    """The body as ``model``; 415 / 413 / 400 with what is wrong."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > MAX_JSON_BYTES:
            raise ApiError(413, "too_large", f"The request body is over {MAX_JSON_BYTES // 1024} KB.")
    if raw and kind != "application/json":
        raise ApiError(415, "bad_request", "Send the body as JSON (Content-Type: application/json).")
    try:
        return model.model_validate(json.loads(raw) if raw else {})
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
            raise ApiError(400, "bad_request", f"The request body is not valid: {where}.") from None
        raise ApiError(400, "bad_request", "The request body is not valid JSON.") from None
