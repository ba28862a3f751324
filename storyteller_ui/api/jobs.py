"""Batches and jobs over HTTP: create, read, cancel, retry, ask again, export. A job is one row (an Item).

A batch is made the way Start makes one (Commands.start_pending), without the Batch page's checked list:
its rows are stored at once, each carrying what is known of its file, and the engine's background intake
(engine.commands.intake) checks the files and queues the work; the answer does not wait for hashing.
Local paths are taken only under an allowed root: STORYTELLER_API_ROOTS (folders, separated by the
system's path separator) and STORYTELLER_SHARED_ROOT (team mode's shared folder).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storyteller_core.commands import Ask
from storyteller_core.intake.candidates import Candidate, expand, inspect_url, unchecked
from storyteller_core.intake.shared_root import OutsideSharedRoot, SharedPaths
from storyteller_core.records.batch import Batch, Item, default_batch_name, new_batch_id, new_id
from storyteller_core.records.options import VideoOptions
from storyteller_core.settings import PROMPT_PRESETS
from storyteller_core.storage.disk_store import NotFound
from storyteller_core.views.board import batch_rows, rows_of
from storyteller_core.views.export import batch_names, to_csv_bytes, to_json_bytes
from storyteller_ui.api import models
from storyteller_ui.api.common import ApiError, answer, engine, prefix, read_model
from storyteller_ui.api.status import iso, job_of
from storyteller_ui.api.tus import store_for, upload_id_of

if TYPE_CHECKING:
    from storyteller_core import Engine

ROOTS_ENV = "STORYTELLER_API_ROOTS"
MAX_ROWS = 10_000


def routes() -> list[Route]:
    root = prefix()
    return [
        Route(f"{root}/batches", _batches, methods=["GET", "POST"]),
        Route(f"{root}/batches/{{batch_id}}", _batch, methods=["GET"]),
        Route(f"{root}/batches/{{batch_id}}/export.csv", _export_csv, methods=["GET"]),
        Route(f"{root}/batches/{{batch_id}}/export.json", _export_json, methods=["GET"]),
        Route(f"{root}/batches/{{batch_id}}/{{action:str}}", _batch_action, methods=["POST"]),
        Route(f"{root}/jobs/{{job_id}}", _job, methods=["GET"]),
        Route(f"{root}/jobs/{{job_id}}/{{action:str}}", _job_action, methods=["POST"]),
        Route(f"{root}/presets", _presets, methods=["GET"]),
    ]


def allowed_roots() -> list[Path]:
    raw = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    shared = SharedPaths.from_env().root
    return [Path(p).expanduser().resolve() for p in raw] + ([shared] if shared else [])


def check_path(text: str, roots: list[Path]) -> Path:
    """``text`` as a path under one of ``roots`` (links followed before the check), or 403 with how to allow it."""
    if not roots:
        raise ApiError(
            403,
            "paths_not_allowed",
            f"Local paths are not accepted by this server: set {ROOTS_ENV} to the "
            "folders programs may name, and restart; or upload the files (tus at /api/v1/uploads).",
        )
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ApiError(400, "bad_path", f"{text}: give an absolute path.")
    for root in roots:
        try:
            return SharedPaths(root).check(path)
        except OutsideSharedRoot:
            continue
    raise ApiError(
        403,
        "outside_roots",
        f"{text} is outside the folders this server lets programs name "
        f"({', '.join(map(str, roots))}). Move it there, or upload it (tus at /api/v1/uploads).",
    )


def ask_of(body: models.BatchCreate | models.Ask, eng: Engine) -> Ask:
    preset = body.preset
    if preset is not None and preset not in PROMPT_PRESETS:
        raise ApiError(400, "unknown_preset", f"There is no preset {preset!r}; use one of {', '.join(PROMPT_PRESETS)} or give a prompt.")
    prompt = body.prompt if body.prompt is not None else PROMPT_PRESETS.get(preset or "", "")
    if not prompt.strip() and preset is None:
        preset = next(iter(PROMPT_PRESETS))
        prompt = PROMPT_PRESETS[preset]
    try:
        options = VideoOptions.from_key(body.options)
        return Ask(
            prompt=prompt,
            model=body.model or eng.catalog.default,
            preset=preset if preset and prompt == PROMPT_PRESETS[preset] else None,
            priority=body.priority,
            options=options,
            tier=body.tier,
        )
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "bad_request", f"{exc}.") from None


def candidates_of(body: models.BatchCreate, eng: Engine) -> list[Candidate]:
    """The batch's sources in the order given: uploads (checked), paths (checked in the background), links."""
    roots = allowed_roots()
    local: list[Candidate] = []
    for text in body.paths:  # checked before any upload is taken into the spool: a refusal changes nothing
        found, _skipped = expand([check_path(text, roots)])
        local += [unchecked(p) for p in found]
        if len(local) + len(body.uploads) + len(body.urls) > MAX_ROWS:
            raise ApiError(413, "too_many", f"A batch takes at most {MAX_ROWS:,} videos; split it.")
    uploads = store_for(eng.settings)
    return [*(uploads.take(upload_id_of(ref)) for ref in body.uploads), *local, *(inspect_url(u) for u in body.urls)]


def create_batch(eng: Engine, body: models.BatchCreate) -> models.BatchCreated:
    ask = ask_of(body, eng)
    candidates = candidates_of(body, eng)
    if not candidates:
        raise ApiError(400, "no_sources", "Name at least one video: uploads, paths (a folder with videos in it) or urls.")
    batch = Batch(id=new_batch_id(), name=(body.name or "").strip() or default_batch_name(candidates[0].display_name), intake=ask.to_dict())
    items = [
        Item(
            id=new_id(),
            batch_id=batch.id,
            display_name=c.display_name,
            source_path=c.source,
            error_code=c.error_code,
            error_message=c.error_message,
            intake=c.to_dict() if c.ok else None,
        )
        for c in candidates
    ]
    for item in items:  # the rows first, then the batch: an intake sweep never sees the batch with rows missing
        eng.store.add_item(item)
    eng.store.add_batch(batch)
    eng.commands.intake.start(batch.id)
    return models.BatchCreated(id=batch.id, jobs=[models.JobRef(id=i.id, file_name=i.display_name) for i in items])


def batch_view(eng: Engine, batch_id: str) -> models.Batch:
    batch = eng.store.get(Batch, batch_id)
    if batch is None:
        raise ApiError(404, "unknown_batch", f"There is no batch {batch_id!r} here.")
    jobs = [job_of(row) for row in batch_rows(eng.store, batch_id)]
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status.value] = counts.get(job.status.value, 0) + 1
    return models.Batch(
        id=batch.id,
        name=batch.name,
        created_at=iso(batch.created_at),
        counts=counts,
        jobs=jobs,
        status="ended" if all(j.status.ended for j in jobs) else "running",
    )


def item_of(eng: Engine, job_id: str) -> Item:
    item = eng.store.get(Item, job_id)
    if item is None:
        raise ApiError(404, "unknown_job", f"There is no job {job_id!r} here.")
    return item


def job_view(eng: Engine, job_id: str) -> models.Job:
    [row] = rows_of(eng.store, [item_of(eng, job_id)])
    return job_of(row)


async def _run(request: Request, work: Any, *args: Any, status: int = 200) -> Response:
    try:
        eng = await engine()
        return answer(await asyncio.to_thread(work, eng, *args), status)
    except ApiError as exc:
        return exc.response()
    except NotFound as exc:
        return ApiError(404, "unknown", f"{exc.args[0] if exc.args else 'It'} is not known here.").response()


def batch_list(eng: Engine, limit: int) -> models.BatchList:
    ids = eng.store.batch_ids()[:limit]  # newest first
    found = eng.store.by_id(Batch, ids)
    return models.BatchList(
        batches=[models.BatchSummary(id=b, name=found[b].name, created_at=iso(found[b].created_at)) for b in ids if b in found]
    )


async def _batches(request: Request) -> Response:
    if request.method == "GET":
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            return ApiError(400, "bad_request", "limit must be a whole number from 1 to 1000.").response()
        return await _run(request, batch_list, int(raw))
    try:
        body = await read_model(request, models.BatchCreate)
    except ApiError as exc:
        return exc.response()
    return await _run(request, create_batch, body, status=201)


async def _batch(request: Request) -> Response:
    return await _run(request, batch_view, request.path_params["batch_id"])


async def _job(request: Request) -> Response:
    return await _run(request, job_view, request.path_params["job_id"])


async def _presets(request: Request) -> Response:
    return answer({"presets": [{"name": name, "prompt": prompt} for name, prompt in PROMPT_PRESETS.items()]})


def _act(eng: Engine, item_ids: list[str], action: str, ask: models.Ask | None) -> Any:
    if action == "cancel":
        for item in eng.store.many(Item, item_ids):
            [row] = rows_of(eng.store, [item])
            if not row.ended:
                eng.commands.cancel(item.id)
    elif action == "retry":
        for item in eng.store.many(Item, item_ids):
            [row] = rows_of(eng.store, [item])
            if row.ended and job_of(row).status is not models.JobStatus.COMPLETED:
                eng.commands.retry(item.id)
    else:
        assert ask is not None
        made = eng.commands.analyze_again(item_ids, ask_of(ask, eng), batch_name=ask.name)
        if not made:
            raise ApiError(409, "nothing_to_ask", "None of these jobs has a video to ask again (refused files).")
        return models.BatchCreated(id=made[0].batch_id, jobs=[models.JobRef(id=i.id, file_name=i.display_name) for i in made])
    return None


async def _action(request: Request, ids: Any, view: Any, key: str) -> Response:
    action = request.path_params["action"]
    if action not in ("cancel", "retry", "ask"):
        return ApiError(404, "unknown_action", f"There is no action {action!r}; use cancel, retry or ask.").response()
    try:
        ask = await read_model(request, models.Ask) if action == "ask" else None
        eng = await engine()

        def work(eng: Engine) -> Any:
            made = _act(eng, ids(eng), action, ask)
            return made if made is not None else view(eng, request.path_params[key])

        return answer(await asyncio.to_thread(work, eng), 201 if action == "ask" else 200)
    except ApiError as exc:
        return exc.response()


async def _batch_action(request: Request) -> Response:
    batch_id = request.path_params["batch_id"]

    def ids(eng: Engine) -> list[str]:
        if eng.store.get(Batch, batch_id) is None:
            raise ApiError(404, "unknown_batch", f"There is no batch {batch_id!r} here.")
        return eng.store.item_ids(batch_id)

    return await _action(request, ids, batch_view, "batch_id")


async def _job_action(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    return await _action(request, lambda eng: [item_of(eng, job_id).id], job_view, "job_id")


async def _export(request: Request, kind: str) -> Response:
    batch_id = request.path_params["batch_id"]
    try:
        eng = await engine()

        def build(eng: Engine) -> bytes:
            if eng.store.get(Batch, batch_id) is None:
                raise ApiError(404, "unknown_batch", f"There is no batch {batch_id!r} here.")
            rows = batch_rows(eng.store, batch_id)
            names = batch_names(eng.store, rows)
            return to_csv_bytes(rows, names) if kind == "csv" else to_json_bytes(rows, names)

        body = await asyncio.to_thread(build, eng)
    except ApiError as exc:
        return exc.response()
    media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
    return Response(
        body,
        media_type=media,
        headers={"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="stories-{batch_id}.{kind}"'},
    )


async def _export_csv(request: Request) -> Response:
    return await _export(request, "csv")


async def _export_json(request: Request) -> Response:
    return await _export(request, "json")
