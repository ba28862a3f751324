"""tus 1.0 at /api/v1/uploads: core, creation, termination, checksum (sha1, md5, sha256), expiration; over TusStore.

    OPTIONS /uploads            -> 204, Tus-Version / Tus-Extension / Tus-Max-Size / Tus-Checksum-Algorithm
    POST    /uploads            Upload-Length, Upload-Metadata (filename) -> 201, Location
    HEAD    /uploads/{id}       -> 200, Upload-Offset, Upload-Length, Upload-Metadata
    PATCH   /uploads/{id}       Upload-Offset, Content-Type: application/offset+octet-stream [, Upload-Checksum]
                                -> 204, Upload-Offset (460 on a checksum mismatch: the piece is dropped)
    DELETE  /uploads/{id}       -> 204
    GET     /uploads/{id}       -> 200 JSON (models.Upload): state, sha256 once complete, the reason if refused

Errors are JSON ``{"error": {"code", "message"}}`` with the same sentences as the browser uploader's.
The body of a PATCH is read as a stream and written 1 MiB at a time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from storyteller_core.intake.media import CHUNK
from storyteller_ui.api.common import ApiError, answer, engine, prefix
from storyteller_ui.api.models import ErrorInfo, Upload
from storyteller_ui.api.tus_store import IDLE_S, TusStore

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
OCTETS = "application/offset+octet-stream"
_DIGITS = re.compile(r"\d{1,18}")
_stores: dict[Path, TusStore] = {}
_stores_lock = threading.Lock()
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tus-check")  # probes of finished files, time-limited


def store_for(settings: Any) -> TusStore:
    with _stores_lock:
        store = _stores.get(settings.data_dir)
        if store is None:
            store = _stores[settings.data_dir] = TusStore(settings)
        return store


async def _store() -> TusStore:
    return store_for((await engine()).settings)


def routes() -> list[Route]:
    root = prefix() + "/uploads"
    return [
        Route(root, _collection, methods=["OPTIONS", "POST"]),
        Route(root + "/{upload_id}", _one, methods=["HEAD", "PATCH", "DELETE", "GET"]),
    ]


async def collection(request: Request) -> Response:
    """OPTIONS / POST of the collection: for another mount of these routes (the Batch page's, storyteller_ui.uploader)."""
    return await _collection(request)


async def one(request: Request) -> Response:
    """HEAD / PATCH / DELETE / GET of one upload, for another mount of these routes."""
    return await _one(request)


def upload_id_of(reference: str) -> str:
    """An upload's id from its URL (the tus Location) or the id itself."""
    return reference.rstrip("/").rsplit("/", 1)[-1]


def _expires() -> dict[str, str]:
    """tus expiration: an upload nobody touches is deleted IDLE_S after its last piece (TusStore.expire)."""
    return {"Upload-Expires": formatdate(time.time() + IDLE_S, usegmt=True)}


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **(extra or {})}


def _fail(exc: ApiError) -> Response:
    response = exc.response()
    response.headers.update(_headers(exc.headers))
    return response


def _check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise ApiError(
            412, "tus_version", f"This server speaks tus {TUS_VERSION}: send Tus-Resumable: {TUS_VERSION}.", {"Tus-Version": TUS_VERSION}
        )


def _number(request: Request, header: str) -> int:
    raw = request.headers.get(header, "").strip()
    if not _DIGITS.fullmatch(raw):
        raise ApiError(400, "bad_request", f"Send {header} as a whole number of bytes.")
    return int(raw)


def parse_metadata(raw: str) -> dict[str, str]:
    """tus Upload-Metadata: ``key base64value`` pairs, comma-separated."""
    if len(raw) > 4096:
        raise ApiError(400, "bad_request", "Upload-Metadata is over 4 KB.")
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = pair.partition(" ")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value.strip() else ""
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(400, "bad_request", f"Upload-Metadata {key!r} is not base64 UTF-8 text.") from None
    return out


async def _collection(request: Request) -> Response:
    try:
        store = await _store()
        if request.method == "OPTIONS":
            return Response(
                status_code=204,
                headers=_headers(
                    {
                        "Tus-Version": TUS_VERSION,
                        "Tus-Extension": EXTENSIONS,
                        "Tus-Max-Size": str(store.settings.max_file_bytes),
                        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
                    }
                ),
            )
        _check_version(request)
        if request.headers.get("upload-defer-length"):
            raise ApiError(400, "bad_request", "Give Upload-Length when creating the upload (deferred length is not supported).")
        size = _number(request, "upload-length")
        metadata = parse_metadata(request.headers.get("upload-metadata", ""))
        name = metadata.get("filename") or metadata.get("name") or ""
        info = await asyncio.to_thread(store.create, name, size, metadata)
    except ApiError as exc:
        return _fail(exc)
    location = str(request.url.replace(query="", fragment="")).rstrip("/") + "/" + info["id"]
    return Response(status_code=201, headers=_headers({"Location": location, "Upload-Offset": "0", **_expires()}))


async def _one(request: Request) -> Response:
    upload_id = request.path_params["upload_id"]
    try:
        store = await _store()
        if request.method == "GET":
            return answer(await asyncio.to_thread(_as_json, store, upload_id), headers=_headers())
        _check_version(request)
        if request.method == "DELETE":
            await asyncio.to_thread(store.delete, upload_id)
            return Response(status_code=204, headers=_headers())
        if request.method == "HEAD":
            info = await asyncio.to_thread(store.info, upload_id)
            offset = await asyncio.to_thread(store.offset, info)
            metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in info["metadata"].items())
            return Response(
                status_code=200,
                headers=_headers(
                    {
                        "Upload-Offset": str(offset),
                        "Upload-Length": str(info["size"]),
                        **({"Upload-Metadata": metadata} if metadata else {}),
                    }
                ),
            )
        return await _patch(request, store, upload_id)
    except ApiError as exc:
        return _fail(exc)


def _as_json(store: TusStore, upload_id: str) -> Upload:
    info = store.info(upload_id)
    return Upload(
        id=info["id"],
        file_name=info["name"],
        size=info["size"],
        offset=store.offset(info),
        state=info["state"],
        sha256=info["sha256"],
        error=ErrorInfo(**info["error"]) if info.get("error") else None,
    )


def _checksum(request: Request) -> tuple[Any, bytes] | None:
    raw = request.headers.get("upload-checksum")
    if raw is None:
        return None
    name, _, value = raw.strip().partition(" ")
    if name not in CHECKSUMS:
        raise ApiError(400, "bad_checksum", f"Upload-Checksum {name!r} is not supported; use one of {', '.join(CHECKSUMS)}.")
    try:
        expected = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise ApiError(400, "bad_checksum", "Upload-Checksum's value is not base64.") from None
    return CHECKSUMS[name](), expected


async def _patch(request: Request, store: TusStore, upload_id: str) -> Response:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != OCTETS:
        raise ApiError(415, "bad_request", f"Send each piece with Content-Type: {OCTETS}.")
    offset = _number(request, "upload-offset")
    checksum = _checksum(request)
    writer = await asyncio.to_thread(store.begin, upload_id, offset)
    remaining = writer.info["size"] - offset
    try:
        buffer, got, cut = bytearray(), 0, False
        try:
            async for piece in request.stream():
                got += len(piece)
                if got > remaining:
                    await asyncio.to_thread(writer.undo)
                    raise ApiError(
                        413,
                        "too_large",
                        f"{writer.info['name']}: this piece goes past the {writer.info['size']:,} bytes announced.",
                        {"Upload-Offset": str(offset)},
                    )
                if checksum is not None:
                    checksum[0].update(piece)
                buffer += piece
                if len(buffer) >= CHUNK:
                    data, buffer = buffer, bytearray()
                    await asyncio.to_thread(writer.write, data)
        except ClientDisconnect:
            cut = True  # keep what did arrive (without a checksum to meet): the client asks where to resume
        if buffer and not (cut and checksum is not None):
            await asyncio.to_thread(writer.write, buffer)
        if checksum is not None and (cut or checksum[0].digest() != checksum[1]):
            await asyncio.to_thread(writer.undo)
            if not cut:
                raise ApiError(
                    460,
                    "checksum_mismatch",
                    f"{writer.info['name']}: this piece's checksum does not match its bytes; it was dropped. Send it again.",
                    {"Upload-Offset": str(offset)},
                )
    finally:
        await asyncio.to_thread(writer.close)
    done = writer.offset
    if done == writer.info["size"]:
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(_checks, store.finish, writer.info, writer.live.digest)
        if info["state"] == "refused":  # the bytes all arrived; the file is no video we take: say so now
            return Response(status_code=204, headers=_headers({"Upload-Offset": str(done), "Upload-Refused": info["error"]["code"]}))
    return Response(status_code=204, headers=_headers({"Upload-Offset": str(done), **(_expires() if done < writer.info["size"] else {})}))
