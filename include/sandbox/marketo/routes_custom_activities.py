"""Custom activity types and adding custom activities to people.

Paths (Adobe endpoint reference, Activities group):
- ``GET /rest/v1/activities/external/types.json`` — custom types (drafts and approved);
- ``POST /rest/v1/activities/external/type.json`` ``{"apiName", "name", "triggerName", "filterName",
  "primaryAttribute": {"apiName", "name", "dataType"}, "description"}`` → a ``draft`` type;
- ``GET /rest/v1/activities/external/type/{apiName}/describe.json[?draft=true]``;
- ``POST /rest/v1/activities/external/type/{apiName}/attributes/create.json`` ``{"attribute": [...]}``;
- ``POST /rest/v1/activities/external/type/{apiName}/approve.json`` → ``approved``; approved types get an
  id from 100000 up and appear in ``/rest/v1/activities/types.json``;
- ``POST /rest/v1/activities/external.json`` ``{"input": [{"leadId", "activityDate", "activityTypeId",
  "primaryAttributeValue", "attributes": [{"apiName"|"name", "value"}]}]}`` (≤ 300) → items
  ``{"id", "marketoGUID", "status": "added"}`` or ``skipped`` with reasons; the activities then show up
  in ``activities.json`` and in bulk activity exports.

Sandbox choices (unconfirmed): duplicate apiName → ``1003``; unknown type → ``702`` on describe and
``1003`` reason on add; lead not found → reason ``1004``; unapproved type → reason ``1003``; an attribute
value over 65,536 bytes in total → ``1049``; types persist in ``state_dir/custom_activity_types.json``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .context import actor_of, ctx_of
from .envelope import MarketoError, ok
from .paging import parse_since
from .params import is_json, parse_json_body
from .store import _ACT_INSERT, iso_of, now_iso

router = APIRouter()
FIRST_ID = 100000
DATA_TYPES = {"string", "text", "integer", "float", "boolean", "date", "datetime", "email", "phone", "url",
              "currency", "percent", "score", "link"}


class CustomTypes:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "custom_activity_types.json"
        self.lock = threading.Lock()
        self.types: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self.types = {t["apiName"]: t for t in json.loads(self.path.read_text(encoding="utf-8"))}

    def save(self) -> None:
        self.path.write_text(json.dumps(list(self.types.values()), indent=1), encoding="utf-8")

    def by_id(self, type_id: int) -> dict[str, Any] | None:
        return next((t for t in self.types.values() if t["id"] == type_id), None)

    def catalogue(self) -> list[dict[str, Any]]:
        """Approved types in the shape of ``activities/types.json``."""
        out = []
        for t in self.types.values():
            if t["status"] != "approved":
                continue
            out.append({"id": t["id"], "name": t["name"], "description": t.get("description", ""),
                        "primaryAttribute": {"name": t["primaryAttribute"]["name"],
                                             "dataType": t["primaryAttribute"]["dataType"]},
                        "attributes": [{"name": a["name"], "dataType": a["dataType"]} for a in t["attributes"]]})
        return out


def _types(request: Request) -> CustomTypes:
    ctx = ctx_of(request)
    holder = request.app.state
    if not hasattr(holder, "custom_types"):
        holder.custom_types = CustomTypes(ctx.state_dir)
    types: CustomTypes = holder.custom_types
    return types


async def _json(request: Request) -> dict[str, Any]:
    if not is_json(request.headers.get("content-type", "")):
        raise MarketoError("612", "Invalid Content Type")
    data = parse_json_body(await request.body())
    if not isinstance(data, dict):
        raise MarketoError("609", "Invalid JSON")
    return data


def _attr(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise MarketoError("1003", "Invalid attribute")
    for key in ("apiName", "name", "dataType"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise MarketoError("701", f"{key} cannot be blank")
    if raw["dataType"] not in DATA_TYPES:
        raise MarketoError("1003", f"Invalid dataType '{raw['dataType']}'")
    return {"apiName": raw["apiName"], "name": raw["name"], "description": raw.get("description", ""),
            "dataType": raw["dataType"], "isPrimary": False}


@router.get("/rest/v1/activities/external/types.json")
async def list_types(request: Request) -> Response:
    return ok(list(_types(request).types.values()))


@router.post("/rest/v1/activities/external/type.json")
async def create_type(request: Request) -> Response:
    data = await _json(request)
    types = _types(request)
    for key in ("apiName", "name", "triggerName", "filterName"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise MarketoError("701", f"{key} cannot be blank")
    primary = data.get("primaryAttribute")
    if not isinstance(primary, dict):
        raise MarketoError("701", "primaryAttribute cannot be blank")
    prim = _attr(primary)
    prim["isPrimary"] = True
    with types.lock:
        if data["apiName"] in types.types:
            raise MarketoError("1003", f"Custom activity type '{data['apiName']}' already exists")
        next_id = max([FIRST_ID - 1, *(t["id"] for t in types.types.values())]) + 1
        now = now_iso()
        item = {"id": next_id, "apiName": data["apiName"], "name": data["name"],
                "description": data.get("description", ""), "triggerName": data["triggerName"],
                "filterName": data["filterName"], "primaryAttribute": prim, "attributes": [],
                "status": "draft", "createdAt": now, "updatedAt": now}
        types.types[item["apiName"]] = item
        types.save()
    return ok([item])


def _get(types: CustomTypes, api_name: str) -> dict[str, Any]:
    item = types.types.get(api_name)
    if item is None:
        raise MarketoError("702", "No data found for a given search scenario")
    return item


@router.get("/rest/v1/activities/external/type/{api_name}/describe.json")
async def describe_type(request: Request, api_name: str) -> Response:
    return ok([_get(_types(request), api_name)])


@router.post("/rest/v1/activities/external/type/{api_name}/attributes/create.json")
async def add_attributes(request: Request, api_name: str) -> Response:
    data = await _json(request)
    attrs = data.get("attribute")
    if not isinstance(attrs, list) or not attrs:
        raise MarketoError("701", "attribute cannot be blank")
    types = _types(request)
    with types.lock:
        item = _get(types, api_name)
        known = {a["apiName"] for a in item["attributes"]} | {item["primaryAttribute"]["apiName"]}
        for raw in attrs:
            attr = _attr(raw)
            if attr["apiName"] in known:
                raise MarketoError("1003", f"Attribute '{attr['apiName']}' already exists")
            item["attributes"].append(attr)
            known.add(attr["apiName"])
        item["updatedAt"] = now_iso()
        types.save()
    return ok([item])


@router.post("/rest/v1/activities/external/type/{api_name}/approve.json")
async def approve_type(request: Request, api_name: str) -> Response:
    types = _types(request)
    with types.lock:
        item = _get(types, api_name)
        item["status"] = "approved"
        item["updatedAt"] = now_iso()
        types.save()
    return ok([item])


@router.post("/rest/v1/activities/external.json")
async def add_activities(request: Request) -> Response:
    data = await _json(request)
    records = data.get("input")
    if not records:
        raise MarketoError("701", "input cannot be blank")
    if not isinstance(records, list):
        raise MarketoError("1003", "Invalid data: input must be an array")
    if len(records) > 300:
        raise MarketoError("1003", f"Batch size of {len(records)} exceeds the maximum of 300")
    ctx = ctx_of(request)
    types = _types(request)
    actor = actor_of(request)
    store = ctx.store

    def work() -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        with store._lock:
            store._begin()
            try:
                for rec in records:
                    results.append(_add_one(store, types, rec, actor.api_user, actor.source))
                store._commit()
            except BaseException:
                store._rollback()
                raise
        return results

    results = await run_in_threadpool(work)
    ctx.counters.record_reasons(results)
    return ok(results)


def _skip(code: str, message: str) -> dict[str, Any]:
    return {"status": "skipped", "reasons": [{"code": code, "message": message}]}


def _add_one(store: Any, types: CustomTypes, rec: Any, api_user: str, source: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        return _skip("1003", "Invalid data")
    type_id = rec.get("activityTypeId")
    item = types.by_id(type_id) if isinstance(type_id, int) else None
    if item is None:
        return _skip("1003", f"Invalid activityTypeId '{type_id}'")
    if item["status"] != "approved":
        return _skip("1003", f"Activity type '{item['apiName']}' is not approved")
    lead_id = rec.get("leadId")
    if not isinstance(lead_id, int) or store._conn.execute("SELECT 1 FROM leads WHERE id = ?",
                                                           (lead_id,)).fetchone() is None:
        return _skip("1004", "Lead not found")
    when = parse_since(str(rec.get("activityDate") or "")) if rec.get("activityDate") else None
    if when is None:
        return _skip("1003", "Invalid activityDate")
    primary = rec.get("primaryAttributeValue")
    if primary in (None, ""):
        return _skip("1003", "primaryAttributeValue cannot be blank")
    names = {a["apiName"]: a["name"] for a in item["attributes"]} | {a["name"]: a["name"] for a in item["attributes"]}
    attrs: dict[str, Any] = {}
    for attr in rec.get("attributes") or []:
        key = attr.get("apiName") or attr.get("name") if isinstance(attr, dict) else None
        if key not in names:
            return _skip("1006", f"Attribute '{key}' not found")
        attrs[names[key]] = attr.get("value")
    if len(json.dumps(attrs).encode()) > 65536:
        return _skip("1049", "Attribute value too long")
    # activities are logged in id order; the activity date is the one given by the caller
    cur = store._conn.execute(_ACT_INSERT, (lead_id, iso_of(when), item["id"], None, str(primary), None, None, None,
                                            None, source, api_user, json.dumps(attrs)))
    act_id = int(cur.lastrowid or 0)
    return {"id": act_id, "marketoGUID": str(act_id), "status": "added"}


def catalogue_for(request: Request) -> list[dict[str, Any]]:
    return _types(request).catalogue()


