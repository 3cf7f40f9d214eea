"""Lead endpoints of the Lead Database REST API: describe, read, sync, delete, merge.

Paths, parameters, result items and codes follow Adobe's Leads page and the Lead Database OpenAPI:

- ``GET /rest/v1/leads.json?filterType=&filterValues=&fields=&batchSize=&nextPageToken=`` and the same
  as ``POST`` with ``_method=GET`` (query string or form body; JSON body also accepted).
  Errors: ``701`` blank filterType/filterValues, ``1006`` unknown field, ``1011`` non-searchable
  filterType, ``1003`` more than 300 values or more than 1,000 matches. Records: ``id`` first, then
  the requested fields with null values left out; ordered by id; ``moreResult``/``nextPageToken`` paging.
- ``POST /rest/v1/leads.json`` (``application/json`` only, else ``612``; bad JSON ``609``) — Sync Leads
  with per-record ``created``/``updated``/``skipped`` + reasons, in input order, at most 300 records;
  company fields on a person linked to a company → ``1021``, an ``externalSalesPersonId`` naming no
  sales person → ``718`` (both per record, see :mod:`links`). Reads show the linked company's fields and
  the Lead Owner fields of the linked sales person.
- ``POST /rest/v1/leads/delete.json`` (JSON body or ``id`` query list) and ``DELETE /rest/v1/leads.json``.
- ``GET /rest/v1/lead/{id}.json``, ``describe.json``, ``describe2.json``, ``schema/fields``,
  ``partitions.json``, ``POST /rest/v1/leads/{id}/merge.json?leadId=|leadIds=``.

Sandbox choices where the docs are silent: an empty ``input`` → ``701``; ``batchSize`` above 300 is
lowered to 300 (0 means the default); an unparsable ``nextPageToken`` → ``1003``; a ``filterType`` that
is no field at all → ``1006``; read-only fields or ``id`` with a create action in sync input → record
skipped with ``1003``; a ``partitionName`` other than ``Default`` on create → ``1008``; an unknown
``lookupField`` → ``1006`` and a non-searchable one → ``1011`` (response level).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .context import actor_of, ctx_of
from .envelope import MarketoError, ok
from .fields import DEFAULT_READ_FIELDS, FIELDS_BY_NAME, LEAD_FIELDS, SEARCHABLE
from .paging import leads_token, position_after
from .params import Params, form_pairs, is_form, is_json, json_pairs, parse_json_body, posted_call
from .store import ACTIONS, LeadNotFound

router = APIRouter()

MAX_BATCH = 300
MAX_FILTER_VALUES = 300
MAX_FILTER_MATCHES = 1000
MAX_MERGE_IDS = 25


def requested_fields(params: Params) -> list[str]:
    """``fields`` parameter (comma list or repeated keys) or the documented default set."""
    names = params.get_list("fields")
    if not names:
        return list(DEFAULT_READ_FIELDS)
    out: list[str] = []
    for name in names:
        if name not in FIELDS_BY_NAME:
            raise MarketoError("1006", f"Field '{name}' not found")
        if name not in out:
            out.append(name)
    return out


def batch_size(params: Params) -> int:
    """``batchSize``: default and maximum 300 (larger values are lowered, as a sandbox choice)."""
    size = params.get_int("batchSize") or MAX_BATCH
    if size < 0:
        raise MarketoError("1003", f"Invalid batchSize '{size}'")
    return min(size, MAX_BATCH)


# ---------------------------------------------------------------------------------------------- reads
async def _filter_read(request: Request, params: Params) -> Response:
    ctx = ctx_of(request)
    filter_type = params.get("filterType")
    if filter_type is None:
        raise MarketoError("701", "filterType cannot be blank")
    field = FIELDS_BY_NAME.get(filter_type)
    if field is None:
        raise MarketoError("1006", f"Field '{filter_type}' not found")
    if filter_type not in SEARCHABLE:
        raise MarketoError("1011", f"Field '{filter_type}' not supported")
    raw_values = params.get_list("filterValues")
    if not raw_values:
        raise MarketoError("701", "filterValues cannot be blank")
    if len(raw_values) > MAX_FILTER_VALUES:
        raise MarketoError("1003", f"Too many filter values, max is {MAX_FILTER_VALUES}")
    values: list[Any] = []
    for raw in raw_values:
        if field.data_type == "integer":
            try:
                values.append(int(raw))
            except ValueError:
                raise MarketoError("1001", f"Invalid value '{raw}'. Required of type 'integer'") from None
        else:
            values.append(raw)
    fields = requested_fields(params)
    batch = batch_size(params)
    after = position_after(params)
    if params.get("nextPageToken") is None:
        matches = await run_in_threadpool(ctx.store.count_matches, filter_type, values, MAX_FILTER_MATCHES + 1)
        if matches > MAX_FILTER_MATCHES:
            raise MarketoError("1003", "Too many results match the filter")
    records, more, last = await run_in_threadpool(ctx.store.query_leads, filter_type, values, fields, batch, after)
    return ok(records, more_result=more, next_page_token=leads_token(last) if more else None)


@router.get("/rest/v1/leads.json")
async def get_leads(request: Request) -> Response:
    return await _filter_read(request, Params(request.query_params.multi_items()))


@router.post("/rest/v1/leads.json")
async def post_leads(request: Request) -> Response:
    call = await posted_call(request)
    body, ctype = call.body, call.content_type
    if call.override == "GET":
        params = call.params
        if not call.form and body.strip() and is_json(ctype):
            params.extend(json_pairs(parse_json_body(body)))
        return await _filter_read(request, params)
    if call.override == "DELETE":
        return await _delete(request, body, ctype)
    return await _sync(request, body, ctype)


@router.get("/rest/v1/lead/{lead_id}.json")
async def get_lead(request: Request, lead_id: str) -> Response:
    try:
        lid = int(lead_id)
    except ValueError:
        raise MarketoError("1001", f"Invalid value '{lead_id}'. Required of type 'integer'") from None
    fields = requested_fields(Params(request.query_params.multi_items()))
    record = await run_in_threadpool(ctx_of(request).store.get_lead, lid, fields)
    return ok([record] if record is not None else [])


# ---------------------------------------------------------------------------------------------- writes
async def _sync(request: Request, body: bytes, ctype: str) -> Response:
    if not is_json(ctype):
        raise MarketoError("612", "Invalid Content Type")
    data = parse_json_body(body)
    if not isinstance(data, dict):
        raise MarketoError("609", "Invalid JSON")
    records = data.get("input")
    if records is None or records == []:
        raise MarketoError("701", "input cannot be blank")
    if not isinstance(records, list):
        raise MarketoError("1003", "Invalid data: input must be an array")
    if len(records) > MAX_BATCH:
        raise MarketoError("1003", f"Batch size of {len(records)} exceeds the maximum of {MAX_BATCH}")
    action = data.get("action") or "createOrUpdate"
    if action not in ACTIONS:
        raise MarketoError("1003", f"Invalid action '{action}'")
    lookup = data.get("lookupField") or "email"
    if not isinstance(lookup, str) or lookup not in FIELDS_BY_NAME:
        raise MarketoError("1006", f"Field '{lookup}' not found")
    if lookup not in SEARCHABLE:
        raise MarketoError("1011", f"Field '{lookup}' not supported")
    partition = data.get("partitionName")
    ctx = ctx_of(request)
    results = await run_in_threadpool(
        ctx.store.sync_leads, action, lookup, records, partition if isinstance(partition, str) else None,
        actor_of(request),
    )
    ctx.counters.record_reasons(results)
    return ok(results)


async def _delete(request: Request, body: bytes, ctype: str) -> Response:
    ids: list[Any]
    if body.strip():
        if not is_json(ctype):
            raise MarketoError("612", "Invalid Content Type")
        data = parse_json_body(body)
        if not isinstance(data, dict):
            raise MarketoError("609", "Invalid JSON")
        items = data.get("input")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise MarketoError("1003", "Invalid data: input must be an array")
        ids = [item.get("id") if isinstance(item, dict) else None for item in items]
    else:
        ids = []
        for raw in Params(request.query_params.multi_items()).get_list("id"):
            try:
                ids.append(int(raw))
            except ValueError:
                raise MarketoError("1001", f"Invalid value '{raw}'. Required of type 'integer'") from None
    if not ids:
        raise MarketoError("701", "input cannot be blank")
    if len(ids) > MAX_BATCH:
        raise MarketoError("1003", f"Batch size of {len(ids)} exceeds the maximum of {MAX_BATCH}")
    results = await run_in_threadpool(ctx_of(request).store.delete_leads, ids, actor_of(request))
    ctx_of(request).counters.record_reasons(results)
    return ok(results)


@router.post("/rest/v1/leads/delete.json")
async def delete_leads_post(request: Request) -> Response:
    return await _delete(request, await request.body(), request.headers.get("content-type", ""))


@router.delete("/rest/v1/leads.json")
async def delete_leads(request: Request) -> Response:
    return await _delete(request, await request.body(), request.headers.get("content-type", ""))


@router.post("/rest/v1/leads/{lead_id}/merge.json")
async def merge_leads(request: Request, lead_id: str) -> Response:
    try:
        winner = int(lead_id)
    except ValueError:
        raise MarketoError("1001", f"Invalid value '{lead_id}'. Required of type 'integer'") from None
    params = Params(request.query_params.multi_items())
    body = await request.body()
    if body and is_form(request.headers.get("content-type", "")):
        params.extend(form_pairs(body))
    raw = params.get_list("leadIds") or params.get_list("leadId")
    if not raw:
        raise MarketoError("701", "leadId cannot be blank")
    try:
        losers = [int(x) for x in raw]
    except ValueError:
        raise MarketoError("1001", f"Invalid value '{','.join(raw)}'. Required of type 'integer'") from None
    if len(losers) > MAX_MERGE_IDS:
        raise MarketoError("1080", f"Too many lead ids to merge, max is {MAX_MERGE_IDS}")
    if winner in losers or len(set(losers)) != len(losers):
        raise MarketoError("1003", "Invalid data: duplicate lead ids in merge")
    try:
        await run_in_threadpool(ctx_of(request).store.merge_leads, winner, losers, actor_of(request))
    except LeadNotFound as exc:
        raise MarketoError("1004", f"Lead '{exc.args[0]}' not found") from None
    return ok(include_result=False)


# ---------------------------------------------------------------------------------------------- metadata
@router.get("/rest/v1/leads/describe.json")
async def describe() -> Response:
    return ok([f.describe() for f in LEAD_FIELDS])


@router.get("/rest/v1/leads/describe2.json")
async def describe2() -> Response:
    return ok(
        [
            {
                "name": "API Lead",
                "searchableFields": [[name] for name in SEARCHABLE],
                "fields": [f.describe2() for f in LEAD_FIELDS],
            }
        ]
    )


@router.get("/rest/v1/leads/schema/fields.json")
async def schema_fields(request: Request) -> Response:
    batch = batch_size(Params(request.query_params.multi_items()))
    items = [f.schema() for f in LEAD_FIELDS]
    return ok(items[:batch], more_result=False)


@router.get("/rest/v1/leads/schema/fields/{name}.json")
async def schema_field(name: str) -> Response:
    field = FIELDS_BY_NAME.get(name)
    if field is None:
        raise MarketoError("702", "No data found for a given search scenario")
    return ok([field.schema()])


@router.get("/rest/v1/leads/partitions.json")
async def partitions() -> Response:
    return ok([{"id": 1, "name": "Default", "description": "Initial system lead partition"}])

