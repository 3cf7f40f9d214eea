"""Activity endpoints (change feeds) and usage statistics.

- ``GET /rest/v1/activities/types.json``
- ``GET /rest/v1/activities/pagingtoken.json?sinceDatetime=`` → ``{"requestId", "success", "nextPageToken"}``
  (``701`` when missing, ``704`` "Invalid date format" when not ISO 8601).
- ``GET /rest/v1/activities.json?nextPageToken=&activityTypeIds=&leadIds=&batchSize=`` (≤10 type ids,
  ≤30 lead ids), ``GET /rest/v1/activities/leadchanges.json?nextPageToken=&fields=`` (types 12 and 13,
  13 only for the listed fields; ``fields`` required) and ``GET /rest/v1/activities/deletedleads.json``.
  All three always answer ``nextPageToken`` and ``moreResult``; like the real service they scan the log
  in blocks, so a page may hold fewer items than ``batchSize`` (even none) with ``moreResult: true``.
- ``GET /rest/v1/stats/usage.json``, ``usage/last7days.json``, ``errors.json``, ``errors/last7days.json``.

Sandbox choices: an unparsable ``nextPageToken`` → ``1003``; ``listId`` is not supported (no static
lists) → ``1013``; ``result`` is always present (``[]`` when a page is empty).
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .activities import ACTIVITY_TYPES, render_activity, render_lead_change
from .context import ctx_of
from .envelope import MarketoError, ok
from .fields import FIELDS_BY_NAME
from .paging import activity_token, parse_activity_token, parse_since, since_key
from .params import Params
from .routes_custom_activities import catalogue_for
from .routes_leads import batch_size

router = APIRouter()

MAX_TYPE_IDS = 10
MAX_LEAD_IDS = 30


def _ints(params: Params, name: str, limit: int) -> list[int]:
    out: list[int] = []
    for raw in params.get_list(name):
        try:
            out.append(int(raw))
        except ValueError:
            raise MarketoError("1001", f"Invalid value '{raw}'. Required of type 'integer'") from None
    if len(out) > limit:
        raise MarketoError("1003", f"Too many values for '{name}', max is {limit}")
    return out


def _position(params: Params) -> tuple[dt.datetime, int]:
    token = params.get("nextPageToken")
    if token is None:
        raise MarketoError("701", "nextPageToken cannot be blank")
    parsed = parse_activity_token(token)
    if parsed is None:
        raise MarketoError("1003", "Invalid nextPageToken")
    if params.get("listId") is not None:
        raise MarketoError("1013", "Static list not found")
    return parsed


@router.get("/rest/v1/activities/types.json")
async def types(request: Request) -> Response:
    return ok([*ACTIVITY_TYPES, *catalogue_for(request)])


@router.get("/rest/v1/activities/pagingtoken.json")
async def paging_token(request: Request) -> Response:
    raw = Params(request.query_params.multi_items()).get("sinceDatetime")
    if raw is None:
        raise MarketoError("701", "sinceDatetime cannot be blank")
    since = parse_since(raw)
    if since is None:
        raise MarketoError("704", "Invalid date format")
    return ok(include_result=False, next_page_token=activity_token(since, 0))


@router.get("/rest/v1/activities.json")
async def activities(request: Request) -> Response:
    params = Params(request.query_params.multi_items())
    since, pos = _position(params)
    type_ids = _ints(params, "activityTypeIds", MAX_TYPE_IDS)
    if not type_ids:
        raise MarketoError("701", "activityTypeIds cannot be blank")
    lead_ids = _ints(params, "leadIds", MAX_LEAD_IDS)
    batch = batch_size(params)
    rows, nxt, more = await run_in_threadpool(
        ctx_of(request).store.activities_page, since_key(since), pos,
        batch=batch, type_ids=type_ids, lead_ids=lead_ids or None,
    )
    return ok([render_activity(r) for r in rows], more_result=more, next_page_token=activity_token(since, nxt))


@router.get("/rest/v1/activities/leadchanges.json")
async def lead_changes(request: Request) -> Response:
    params = Params(request.query_params.multi_items())
    since, pos = _position(params)
    fields = params.get_list("fields")
    if not fields:
        raise MarketoError("701", "fields cannot be blank")
    for name in fields:
        if name not in FIELDS_BY_NAME:
            raise MarketoError("1006", f"Field '{name}' not found")
    lead_ids = _ints(params, "leadIds", MAX_LEAD_IDS)
    batch = batch_size(params)
    rows, nxt, more = await run_in_threadpool(
        ctx_of(request).store.activities_page, since_key(since), pos,
        batch=batch, change_fields=fields, lead_ids=lead_ids or None,
    )
    return ok([render_lead_change(r) for r in rows], more_result=more, next_page_token=activity_token(since, nxt))


@router.get("/rest/v1/activities/deletedleads.json")
async def deleted_leads(request: Request) -> Response:
    params = Params(request.query_params.multi_items())
    since, pos = _position(params)
    batch = batch_size(params)
    rows, nxt, more = await run_in_threadpool(
        ctx_of(request).store.activities_page, since_key(since), pos, batch=batch, type_ids=[37],
    )
    return ok([render_activity(r) for r in rows], more_result=more, next_page_token=activity_token(since, nxt))


@router.get("/rest/v1/stats/usage.json")
async def usage(request: Request) -> Response:
    return ok(ctx_of(request).counters.usage_days(1))


@router.get("/rest/v1/stats/usage/last7days.json")
async def usage_7(request: Request) -> Response:
    return ok(ctx_of(request).counters.usage_days(7))


@router.get("/rest/v1/stats/errors.json")
async def errors(request: Request) -> Response:
    return ok(ctx_of(request).counters.error_days(1))


@router.get("/rest/v1/stats/errors/last7days.json")
async def errors_7(request: Request) -> Response:
    return ok(ctx_of(request).counters.error_days(7))
