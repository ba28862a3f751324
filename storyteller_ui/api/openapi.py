"""The OpenAPI 3.1 document at /api/v1/openapi.json, its schemas generated from the pydantic models in models.py."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storyteller_ui.api import models
from storyteller_ui.api.common import answer, prefix
from storyteller_ui.api.tokens import TokenCreate

TITLE = "Video Storyteller job API"
VERSION = "1.0.0"
MODELS: list[type[BaseModel]] = [
    TokenCreate,
    models.ErrorAnswer,
    models.Job,
    models.Batch,
    models.BatchCreate,
    models.BatchCreated,
    models.BatchList,
    models.Ask,
    models.JobEvent,
    models.EndEvent,
    models.Upload,
    models.Health,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


ERRORS = {
    "401": _json(models.ErrorAnswer, "No or a wrong Authorization: Bearer token."),
    "404": _json(models.ErrorAnswer, "Not known here."),
}


def _op(
    summary: str,
    responses: dict[str, Any],
    body: type[BaseModel] | None = None,
    params: list[dict[str, Any]] | None = None,
    tag: str = "jobs",
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {**responses, **ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _header(name: str, description: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description, "schema": {"type": "string"}}


def document(server_prefix: str = "/api/v1") -> dict[str, Any]:
    _, schemas = models_json_schema([(m, "serialization") for m in MODELS], ref_template="#/components/schemas/{model}")
    batch, job, upload = [_path_param("batch_id")], [_path_param("job_id")], [_path_param("upload_id")]
    events = {
        "200": {
            "description": "text/event-stream: `status` events (data: JobEvent), then one `end` event "
            "(data: EndEvent). Send Last-Event-ID to resume.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }
    tus_version = _header("Tus-Resumable", "1.0.0")
    empty = {"description": "Done (tus headers: Upload-Offset, Tus-Resumable)."}
    paths: dict[str, Any] = {
        "/batches": {
            "get": _op(
                "The batches, newest first",
                {"200": _json(models.BatchList, "Batches.")},
                params=[
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    }
                ],
            ),
            "post": _op(
                "Create a batch from finished uploads, local paths and links",
                {
                    "201": _json(models.BatchCreated, "The batch and one job per video."),
                    "400": _json(models.ErrorAnswer, "The body is not valid, or names no video."),
                    "403": _json(models.ErrorAnswer, "A path outside the allowed roots."),
                },
                models.BatchCreate,
            ),
        },
        "/batches/{batch_id}": {"get": _op("A batch and its jobs", {"200": _json(models.Batch, "The batch.")}, params=batch)},
        "/batches/{batch_id}/cancel": {"post": _op("Cancel every job not ended", {"200": _json(models.Batch, "The batch.")}, params=batch)},
        "/batches/{batch_id}/retry": {
            "post": _op("Retry every failed or cancelled job", {"200": _json(models.Batch, "The batch.")}, params=batch)
        },
        "/batches/{batch_id}/ask": {
            "post": _op(
                "Ask another question of the batch's videos (a new batch)",
                {"201": _json(models.BatchCreated, "The new batch.")},
                models.Ask,
                params=batch,
            )
        },
        "/batches/{batch_id}/export.csv": {
            "get": _op(
                "The batch as CSV (UTF-8 with a BOM, cells neutralized)",
                {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}},
                params=batch,
            )
        },
        "/batches/{batch_id}/export.json": {
            "get": _op(
                "The batch as JSON, with structured stories",
                {
                    "200": {
                        "description": "JSON",
                        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
                    }
                },
                params=batch,
            )
        },
        "/batches/{batch_id}/events": {
            "get": _op(
                "Live events of a batch (SSE)",
                events,
                params=[*batch, _header("Last-Event-ID", "Resume after this event.", required=False)],
                tag="events",
            )
        },
        "/jobs/{job_id}": {"get": _op("A job: status, progress, error, result", {"200": _json(models.Job, "The job.")}, params=job)},
        "/jobs/{job_id}/cancel": {"post": _op("Cancel a job", {"200": _json(models.Job, "The job.")}, params=job)},
        "/jobs/{job_id}/retry": {"post": _op("Retry a failed or cancelled job", {"200": _json(models.Job, "The job.")}, params=job)},
        "/jobs/{job_id}/ask": {
            "post": _op(
                "Ask another question of this job's video (a new batch)",
                {"201": _json(models.BatchCreated, "The new batch.")},
                models.Ask,
                params=job,
            )
        },
        "/jobs/{job_id}/events": {
            "get": _op(
                "Live events of one job (SSE)",
                events,
                params=[*job, _header("Last-Event-ID", "Resume after this event.", required=False)],
                tag="events",
            )
        },
        "/uploads": {
            "options": _op(
                "tus: what this server supports",
                {"204": {"description": "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"}},
                tag="tus",
            ),
            "post": _op(
                "tus creation: a new upload",
                {
                    "201": {"description": "Location: the upload's URL"},
                    "400": _json(models.ErrorAnswer, "Not a video name, or empty."),
                    "413": _json(models.ErrorAnswer, "Over the size limit."),
                },
                params=[
                    tus_version,
                    _header("Upload-Length", "The file's size in bytes."),
                    _header("Upload-Metadata", "filename <base64>", required=False),
                ],
                tag="tus",
            ),
        },
        "/uploads/{upload_id}": {
            "head": _op(
                "tus: where to resume", {"200": {"description": "Upload-Offset, Upload-Length"}}, params=[*upload, tus_version], tag="tus"
            ),
            "patch": _op(
                "tus: append bytes at Upload-Offset",
                {
                    "204": empty,
                    "409": _json(models.ErrorAnswer, "Wrong offset: HEAD, then send from there."),
                    "460": _json(models.ErrorAnswer, "Checksum mismatch: the piece was dropped."),
                },
                params=[
                    *upload,
                    tus_version,
                    _header("Upload-Offset", "Where this piece starts."),
                    _header("Upload-Checksum", "sha1|md5|sha256 <base64>", required=False),
                ],
                tag="tus",
            ),
            "delete": _op("tus termination", {"204": empty}, params=[*upload, tus_version], tag="tus"),
            "get": _op("The upload as JSON (sha256 once complete)", {"200": _json(models.Upload, "The upload.")}, params=upload, tag="tus"),
        },
        "/tokens": {
            "get": _op(
                "API tokens (the app's token only)",
                {
                    "200": {
                        "description": "{tokens: [{id, name, created_at, last_used_at}]}",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                tag="access",
            ),
            "post": _op(
                "Make an API token (shown once; stored hashed)",
                {
                    "201": {
                        "description": "{id, name, token, created_at}",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "403": _json(models.ErrorAnswer, "Not the app's token."),
                },
                TokenCreate,
                tag="access",
            ),
        },
        "/tokens/{token_id}": {
            "delete": _op("Revoke an API token", {"204": {"description": "Revoked."}}, params=[_path_param("token_id")], tag="access")
        },
        "/presets": {
            "get": _op(
                "The prompt presets",
                {"200": {"description": "{presets: [{name, prompt}]}", "content": {"application/json": {"schema": {"type": "object"}}}}},
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Uploads over tus 1.0, batches and jobs over HTTP, live events over SSE. Every route "
            "takes Authorization: Bearer <the app's access token>; GET /health does not.",
        },
        "servers": [{"url": server_prefix}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas["$defs"], "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def routes() -> list[Route]:
    return [Route(prefix() + "/openapi.json", _openapi, methods=["GET"])]


async def _openapi(request: Request) -> Response:
    return answer(document(prefix()))
