"""REST routes of companies, opportunities, opportunity roles, sales persons and custom objects.

For each object path ``P`` (``companies``, ``opportunities``, ``opportunities/roles``, ``salespersons``,
``customobjects/{apiName}``):
- ``GET /rest/v1/P/describe.json``;
- ``GET /rest/v1/P.json?filterType=&filterValues=&fields=&batchSize=&nextPageToken=`` (also ``POST`` with
  ``_method=GET``: form body, or JSON body ``{"filterType": "dedupeFields", "fields": [...],
  "input": [{...}]}`` for compound keys);
- ``POST /rest/v1/P.json`` ``{"action", "dedupeBy": "dedupeFields"|"idField", "input": [...]}`` (≤ 300);
- ``POST /rest/v1/P/delete.json`` ``{"deleteBy": "dedupeFields"|"idField", "input": [...]}`` (≤ 300).
Plus ``GET /rest/v1/customobjects.json?names=`` (list of custom object types).
Errors: blank filterType/filterValues/input → ``701``; unknown field → ``1006``; filterType that is not
searchable → ``1003``; > 300 values/records → ``1003``; invalid JSON ``609``; non-JSON body ``612``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .context import ctx_of
from .envelope import MarketoError, ok
from .objects import ObjType
from .paging import leads_token, position_after
from .params import Params, is_json, json_pairs, parse_json_body, posted_call
from .routes_leads import MAX_BATCH, batch_size

router = APIRouter()
ACTIONS = ("createOnly", "updateOnly", "createOrUpdate")


def _type(request: Request, path: str) -> ObjType:
    objects = ctx_of(request).objects
    t = objects.types.get(path)
    if t is None:
        raise MarketoError("1003", f"Invalid object name '{path.rsplit('/', 1)[-1]}'")
    return t


async def _query(request: Request, t: ObjType, params: Params, json_body: Any = None) -> Response:
    objects = ctx_of(request).objects
    filter_type = params.get("filterType")
    if filter_type is None:
        raise MarketoError("701", "filterType cannot be blank")
    searchable = {s[0] for s in t.searchable if len(s) == 1} | {t.id_field}
    if filter_type != "dedupeFields" and filter_type not in searchable:
        if filter_type not in t.by_name:
            raise MarketoError("1006", f"Field '{filter_type}' not found")
        raise MarketoError("1003", f"Field '{filter_type}' is not searchable")
    values: list[Any]
    if isinstance(json_body, dict) and isinstance(json_body.get("input"), list):
        values = json_body["input"]
        if filter_type != "dedupeFields":
            values = [v.get(filter_type) if isinstance(v, dict) else v for v in values]
    else:
        values = params.get_list("filterValues")
        if filter_type == "dedupeFields":
            if len(t.dedupe) != 1:
                raise MarketoError("1003", "Compound dedupe fields need a JSON body with 'input'")
            values = [{t.dedupe[0]: v} for v in values]
    if not values:
        raise MarketoError("701", "filterValues cannot be blank")
    if len(values) > MAX_BATCH:
        raise MarketoError("1003", f"Too many filter values, max is {MAX_BATCH}")
    by_name = t.by_name
    key_field = t.dedupe[0] if filter_type == "dedupeFields" else filter_type
    if filter_type == "dedupeFields":
        norm = []
        for v in values:
            if not isinstance(v, dict):
                raise MarketoError("1003", "Invalid input")
            norm.append({k: _typed(by_name.get(k), v.get(k)) for k in t.dedupe})
        values = norm
    else:
        values = [_typed(by_name.get(key_field), v) for v in values]
    names = params.get_list("fields")
    fields = []
    for name in names or objects.default_fields(t):
        if name not in by_name and name not in ("seq",):
            raise MarketoError("1006", f"Field '{name}' not found")
        if name not in fields:
            fields.append(name)
    after = position_after(params)
    rows, more, last = await run_in_threadpool(objects.query, t, filter_type, values, fields, batch_size(params),
                                               after)
    return ok(rows, more_result=more if more else None, next_page_token=leads_token(last) if more else None)


def _typed(field: Any, value: Any) -> Any:
    if field is not None and field.data_type in ("integer",) and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if field is not None and field.name in ("id", "leadId") and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _input(data: Any, name: str = "input") -> list[Any]:
    if not isinstance(data, dict):
        raise MarketoError("609", "Invalid JSON")
    records = data.get(name)
    if records is None or records == []:
        raise MarketoError("701", f"{name} cannot be blank")
    if not isinstance(records, list):
        raise MarketoError("1003", f"Invalid data: {name} must be an array")
    if len(records) > MAX_BATCH:
        raise MarketoError("1003", f"Batch size of {len(records)} exceeds the maximum of {MAX_BATCH}")
    return records


async def _post(request: Request, t: ObjType) -> Response:
    ctx = ctx_of(request)
    call = await posted_call(request)
    body, ctype = call.body, call.content_type
    if call.override == "GET":
        params = call.params
        data = None
        if not call.form and body.strip():
            data = parse_json_body(body)
            params.extend([(k, v) for k, v in json_pairs(data) if k != "input"])
        return await _query(request, t, params, data)
    if not is_json(ctype):
        raise MarketoError("612", "Invalid Content Type")
    data = parse_json_body(body)
    records = _input(data)
    action = data.get("action") or "createOrUpdate"
    if action not in ACTIONS:
        raise MarketoError("1003", f"Invalid action '{action}'")
    dedupe_by = data.get("dedupeBy") or "dedupeFields"
    if dedupe_by not in ("dedupeFields", "idField"):
        raise MarketoError("1003", f"Invalid dedupeBy '{dedupe_by}'")
    results = await run_in_threadpool(ctx.objects.sync, t, action, dedupe_by, records, ctx.settings.crm_enabled)
    ctx.counters.record_reasons(results)
    return ok(results)


async def _delete(request: Request, t: ObjType) -> Response:
    ctx = ctx_of(request)
    if not is_json(request.headers.get("content-type", "")):
        raise MarketoError("612", "Invalid Content Type")
    data = parse_json_body(await request.body())
    records = _input(data)
    delete_by = data.get("deleteBy") or "dedupeFields"
    if delete_by not in ("dedupeFields", "idField"):
        raise MarketoError("1003", f"Invalid deleteBy '{delete_by}'")
    results = await run_in_threadpool(ctx.objects.delete, t, delete_by, records, ctx.settings.crm_enabled)
    ctx.counters.record_reasons(results)
    return ok(results)


def _register(path: str) -> None:
    async def describe(request: Request) -> Response:
        return ok([_type(request, path).describe()])

    async def get(request: Request) -> Response:
        return await _query(request, _type(request, path), Params(request.query_params.multi_items()))

    async def post(request: Request) -> Response:
        return await _post(request, _type(request, path))

    async def delete(request: Request) -> Response:
        return await _delete(request, _type(request, path))

    router.add_api_route(f"/rest/v1/{path}/describe.json", describe, methods=["GET"])
    router.add_api_route(f"/rest/v1/{path}.json", get, methods=["GET"])
    router.add_api_route(f"/rest/v1/{path}.json", post, methods=["POST"])
    router.add_api_route(f"/rest/v1/{path}/delete.json", delete, methods=["POST"])


for _path in ("companies", "opportunities/roles", "opportunities", "salespersons"):
    _register(_path)


@router.get("/rest/v1/customobjects.json")
async def list_custom_objects(request: Request) -> Response:
    objects = ctx_of(request).objects
    names = set(Params(request.query_params.multi_items()).get_list("names"))
    out = []
    for name, t in objects.custom_names.items():
        if names and name not in names:
            continue
        item = t.describe()
        item.pop("fields", None)
        out.append(item)
    return ok(out)


@router.get("/rest/v1/customobjects/{name}/describe.json")
async def describe_custom(request: Request, name: str) -> Response:
    return ok([_type(request, f"customobjects/{name}").describe()])


@router.get("/rest/v1/customobjects/{name}.json")
async def get_custom(request: Request, name: str) -> Response:
    return await _query(request, _type(request, f"customobjects/{name}"), Params(request.query_params.multi_items()))


@router.post("/rest/v1/customobjects/{name}.json")
async def post_custom(request: Request, name: str) -> Response:
    return await _post(request, _type(request, f"customobjects/{name}"))


@router.post("/rest/v1/customobjects/{name}/delete.json")
async def delete_custom(request: Request, name: str) -> Response:
    return await _delete(request, _type(request, f"customobjects/{name}"))
