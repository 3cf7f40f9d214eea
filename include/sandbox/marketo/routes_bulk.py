"""Bulk API routes (``/bulk/v1/...``, not prefixed with ``/rest``): lead/activity extract, lead import.

See :mod:`bulk` for the job rules. Paths:
- ``POST /bulk/v1/{leads|activities}/export/create.json`` (JSON body: fields, format, columnHeaderNames,
  filter), ``POST …/export/{exportId}/enqueue.json``, ``GET …/export/{exportId}/status.json``,
  ``GET …/export/{exportId}/file.json`` (raw file; ``Range``), ``POST …/export/{exportId}/cancel.json``,
  ``GET …/export.json?status=&batchSize=&nextPageToken=`` (own jobs of the last 7 days).
- ``POST /bulk/v1/leads.json?format=csv&lookupField=email`` (``multipart/form-data``, part ``file``;
  > 10 MB → HTTP 413 from the gate), ``GET /bulk/v1/leads/batch/{batchId}.json``,
  ``GET …/batch/{batchId}/failures.json`` and ``…/warnings.json`` (the rows in the job's format plus one
  reason column).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, PlainTextResponse, Response

from .context import actor_of, ctx_of
from .envelope import MarketoError, ok
from .fields import FIELDS_BY_NAME, SEARCHABLE
from .params import Params, is_json, parse_json_body

router = APIRouter()
KINDS = ("leads", "activities")
_CTYPES = {"CSV": "text/csv", "TSV": "text/tab-separated-values", "SSV": "text/plain"}


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise MarketoError("610", "Requested resource not found")
    return kind


@router.post("/bulk/v1/{kind}/export/create.json")
async def create_export(request: Request, kind: str) -> Response:
    ctx = ctx_of(request)
    _kind(kind)
    body = await request.body()
    if not is_json(request.headers.get("content-type", "")):
        raise MarketoError("612", "Invalid Content Type")
    data = parse_json_body(body)
    if not isinstance(data, dict):
        raise MarketoError("609", "Invalid JSON")
    ctx.jobs.tick()
    job = ctx.jobs.create_export(kind, actor_of(request).api_user, data)
    return ok([job.view()])


@router.post("/bulk/v1/{kind}/export/{export_id}/enqueue.json")
async def enqueue_export(request: Request, kind: str, export_id: str) -> Response:
    ctx = ctx_of(request)
    job = ctx.jobs.enqueue(_kind(kind), export_id, actor_of(request).api_user)
    return ok([job.view()])


@router.get("/bulk/v1/{kind}/export/{export_id}/status.json")
async def export_status(request: Request, kind: str, export_id: str) -> Response:
    job = ctx_of(request).jobs.get_export(_kind(kind), export_id, actor_of(request).api_user)
    return ok([job.view()])


@router.post("/bulk/v1/{kind}/export/{export_id}/cancel.json")
async def cancel_export(request: Request, kind: str, export_id: str) -> Response:
    job = ctx_of(request).jobs.cancel(_kind(kind), export_id, actor_of(request).api_user)
    return ok([job.view(cancel_reply=True)])


@router.get("/bulk/v1/{kind}/export/{export_id}/file.json")
async def export_file(request: Request, kind: str, export_id: str) -> Response:
    jobs = ctx_of(request).jobs
    try:
        job = jobs.get_export(_kind(kind), export_id, actor_of(request).api_user)
    except MarketoError:
        job = None
    if job is None or job.status != "Completed" or job.path is None or not job.path.exists():
        # documented: 404 with a plain-text body (not the JSON envelope) before completion / unknown id
        return PlainTextResponse("File not found", status_code=404)
    return FileResponse(job.path, media_type=_CTYPES[job.fmt], filename=None)


@router.get("/bulk/v1/{kind}/export.json")
async def list_exports(request: Request, kind: str) -> Response:
    params = Params(request.query_params.multi_items())
    jobs = ctx_of(request).jobs.list_exports(_kind(kind), actor_of(request).api_user, params.get_list("status"))
    batch = min(params.get_int("batchSize") or 300, 300)
    offset = 0
    token = params.get("nextPageToken")
    if token is not None:
        try:
            offset = int(token)
        except ValueError:
            raise MarketoError("1003", "Invalid nextPageToken") from None
    page = jobs[offset:offset + batch]
    more = offset + batch < len(jobs)
    return ok([j.view() for j in page], more_result=more, next_page_token=str(offset + batch) if more else None)


# ---------------------------------------------------------------------------------------------- import
@router.post("/bulk/v1/leads.json")
async def import_leads(request: Request) -> Response:
    ctx = ctx_of(request)
    params = Params(request.query_params.multi_items())
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise MarketoError("612", "Invalid Content Type")
    try:
        form = await request.form()
    except Exception:
        raise MarketoError("613", "Invalid Multipart Request") from None
    for key, value in form.multi_items():
        if isinstance(value, str):
            params.extend([(key, value)])
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise MarketoError("613", "Invalid Multipart Request")
    data: bytes = await upload.read()
    fmt = (params.get("format") or "").lower()
    if not fmt:
        raise MarketoError("701", "format cannot be blank")
    if fmt not in ("csv", "tsv", "ssv"):
        raise MarketoError("1003", f"Invalid format '{fmt}'")
    lookup = params.get("lookupField") or "email"
    if lookup not in FIELDS_BY_NAME:
        raise MarketoError("1006", f"Field '{lookup}' not found")
    if lookup not in SEARCHABLE:
        raise MarketoError("1011", f"Field '{lookup}' not supported")
    if params.get("listId") is not None:
        raise MarketoError("1013", "Static list not found")
    partition = params.get("partitionName")
    if partition not in (None, "Default"):
        raise MarketoError("1008", f"Access denied to partition '{partition}'")
    ctx.jobs.tick()
    job = ctx.jobs.create_import(actor_of(request).api_user, data, fmt, lookup)
    return ok([{"batchId": job.batch_id, "importId": str(job.batch_id), "status": job.status}])


def _batch_id(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise MarketoError("1001", f"Invalid value '{raw}'. Required of type 'integer'") from None


@router.get("/bulk/v1/leads/batch/{batch_id}.json")
async def import_status(request: Request, batch_id: str) -> Response:
    job = ctx_of(request).jobs.get_import(_batch_id(batch_id), actor_of(request).api_user)
    return ok([job.view()])


async def _report(request: Request, batch_id: str, which: str) -> Response:
    jobs = ctx_of(request).jobs
    job = jobs.get_import(_batch_id(batch_id), actor_of(request).api_user)
    if job.status not in ("Complete", "Failed"):
        raise MarketoError("1019", "Import in progress")
    text: Any = await run_in_threadpool(jobs.report, job, which)
    return Response(text, media_type=_CTYPES.get(job.fmt, "text/csv"))


@router.get("/bulk/v1/leads/batch/{batch_id}/failures.json")
async def import_failures(request: Request, batch_id: str) -> Response:
    return await _report(request, batch_id, "failures")


@router.get("/bulk/v1/leads/batch/{batch_id}/warnings.json")
async def import_warnings(request: Request, batch_id: str) -> Response:
    return await _report(request, batch_id, "warnings")
