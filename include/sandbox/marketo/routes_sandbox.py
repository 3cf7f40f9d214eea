"""Control surface ``/_sandbox/*`` (no auth, never counted): what tests and tools use to drive the sandbox.

- ``GET /_sandbox/info`` → URLs and credentials. The keys ``rest_url``, ``identity_url``,
  ``munchkin_id``, ``client_id`` and ``client_secret`` are a promise to outside tools: do not rename.
- ``POST /_sandbox/reset`` → delete all leads, activities, objects and bulk jobs (credentials, tokens,
  custom activity types and limits stay).
- ``POST /_sandbox/seed`` ``{"entity": "lead", "count": N, "seed": S, "overlap_leads": A,
  "overlap_contacts": B}`` or the original ``{"people": N, "overlap_leads", "overlap_contacts", "seed"}``
  → synthetic people (see :mod:`seed`), with New Lead activities by API user ``seed``; ``entity`` may
  also be ``companies``/``opportunities``/``opportunities/roles``/``salespersons`` or a custom object
  apiName (``{"entity": "carOwnership_c", "count": N, "seed": S}``).
- ``GET|POST /_sandbox/limits`` → read / partly update the limit settings (``calls_per_20s``,
  ``max_concurrent``, ``daily_quota``, ``latency_ms``, ``token_ttl_s``, ``allow_query_token``,
  ``bulk_step_ms``, ``export_daily_quota_bytes``, ``crm_enabled``, ``timeout_hold_s``);
  ``{"reset_counters": true}`` clears the rate window, the daily count and the stats tallies.
- ``POST|GET|DELETE /_sandbox/faults`` → inject / list / clear faults (see :mod:`faults`).
- ``GET /_sandbox/stats`` → counted calls per endpoint (keys like ``GET /rest/v1/lead/{id}.json``; a
  ``POST`` with ``_method=GET`` counts as the ``GET``), errors returned per code (``errors``; HTTP-level
  ones as ``"HTTP 413"``), record-level reason codes, limit refusals (606/615/607), faulted calls, quota
  used today, records per entity; ``quota.peak_inflight`` is the most calls in flight at once since the
  tallies were last zeroed. ``POST /_sandbox/stats/reset`` zeroes the tallies (not the quota).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from . import seed as seed_mod
from .context import ctx_of

router = APIRouter(prefix="/_sandbox")


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=400)


async def _json_object(request: Request) -> dict[str, Any] | None:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = await request.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@router.get("/info")
async def info(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    c = ctx.creds
    return {
        "rest_url": f"{ctx.base_url}/rest",
        "identity_url": f"{ctx.base_url}/identity",
        "munchkin_id": c.munchkin_id,
        "client_id": c.client_id,
        "client_secret": c.client_secret,
        "user_client_id": c.user_client_id,
        "user_client_secret": c.user_client_secret,
        "bulk_url": f"{ctx.base_url}/bulk",
        "api_user_email": c.api_user_email,
        "user_email": c.user_email,
    }


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    await run_in_threadpool(ctx.store.reset)
    if ctx.jobs is not None:
        ctx.jobs.reset()
    if ctx.objects is not None:
        await run_in_threadpool(ctx.objects.reset)
    return {"ok": True}


@router.post("/seed")
async def seed(request: Request) -> JSONResponse:
    """Two body forms: ``{"entity": "lead"|<object>, "count": N, "seed": S, ...}`` and the original
    ``{"people": N, "overlap_leads": A, "overlap_contacts": B, "seed": S}`` (leads)."""
    data = await _json_object(request)
    if data is None:
        return _bad("body must be a JSON object")
    ctx = ctx_of(request)
    entity = data.get("entity")
    if entity is None and "people" not in data:
        return _bad("give 'entity' and 'count' (or the legacy 'people')")
    if entity is not None and entity not in ("lead", "leads"):
        if not isinstance(entity, str) or ctx.objects is None or not ctx.objects.has_type(entity):
            known = ", ".join(["lead", *(ctx.objects.type_names() if ctx.objects is not None else [])])
            return _bad(f"unknown entity '{entity}' (known: {known})")
        count, seed_value = data.get("count"), data.get("seed", 42)
        for key, value in (("count", count), ("seed", seed_value)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return _bad(f"'{key}' must be a non-negative integer")
        created = await run_in_threadpool(ctx.objects.seed, entity, count, seed_value)
        return JSONResponse({"ok": True, "entity": entity, "created": created})
    values: dict[str, int] = {}
    count_key = "count" if entity is not None else "people"
    for key, default in ((count_key, None), ("overlap_leads", 0), ("overlap_contacts", 0), ("seed", 42)):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return _bad(f"'{key}' must be a non-negative integer")
        values[key] = value
    n = values[count_key]
    if values["overlap_leads"] + values["overlap_contacts"] > n:
        return _bad(f"overlap_leads + overlap_contacts must not exceed {count_key}")
    rows = seed_mod.people(n, values["overlap_leads"], values["overlap_contacts"], values["seed"])
    started = time.monotonic()
    created, skipped = await run_in_threadpool(ctx.store.seed, rows, seed_mod.SEED_COLUMNS, "seed")
    out: dict[str, Any] = {"ok": True, "people": created, "skipped_existing": skipped}
    if entity is not None:
        out.update({"entity": "lead", "created": created, "seconds": round(time.monotonic() - started, 3)})
    return JSONResponse(out)


@router.post("/faults")
async def add_fault(request: Request) -> JSONResponse:
    data = await _json_object(request)
    if data is None:
        return _bad("body must be a JSON object")
    ctx = ctx_of(request)
    items = data.get("faults") if isinstance(data.get("faults"), list) else [data]
    added = []
    for item in items:
        if not isinstance(item, dict):
            return _bad("each fault must be a JSON object")
        fault = ctx.faults.add(item)
        if isinstance(fault, str):
            return _bad(fault)
        added.append(fault.as_dict())
    return JSONResponse({"ok": True, "added": added, "faults": ctx.faults.list()})


@router.get("/faults")
async def list_faults(request: Request) -> dict[str, Any]:
    return {"faults": ctx_of(request).faults.list()}


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, Any]:
    return {"ok": True, "cleared": ctx_of(request).faults.clear()}


@router.get("/limits")
async def get_limits(request: Request) -> dict[str, Any]:
    return ctx_of(request).settings.as_dict()


@router.post("/limits")
async def set_limits(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    data = await _json_object(request)
    if data is None:
        return _bad("body must be a JSON object")
    old_ttl = ctx.settings.token_ttl_s
    problems = ctx.settings.update(data)
    if problems:
        return _bad("; ".join(problems))
    if ctx.settings.token_ttl_s < old_ttl:
        ctx.tokens.clamp_ttl(ctx.settings.token_ttl_s)
    if data.get("reset_counters") is True:
        ctx.counters.reset()
    return JSONResponse(ctx.settings.as_dict())


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    """Calls per endpoint, errors returned per code, quota used today, records per entity."""
    ctx = ctx_of(request)
    counters = ctx.counters
    leads = await run_in_threadpool(ctx.store.count_leads)
    records: dict[str, int] = {"leads": leads, "activities": await run_in_threadpool(ctx.store.count_activities)}
    if ctx.objects is not None:
        records.update(await run_in_threadpool(ctx.objects.counts))
    if ctx.jobs is not None:
        records.update(ctx.jobs.counts())
    counters._roll_day()
    return {
        "calls": counters.calls,
        "by_endpoint": dict(sorted(counters.by_endpoint.items())),
        "errors": dict(sorted(counters.error_tally.items())),
        "record_reasons": dict(sorted(counters.reason_tally.items())),
        "limit_errors": dict(counters.limit_errors),
        "faulted": counters.faulted,
        "quota": {
            "day": counters.day,
            "used_today": counters.daily_total,
            "daily_quota": ctx.settings.daily_quota,
            "remaining_today": max(0, ctx.settings.daily_quota - counters.daily_total),
            "calls_in_window": len(counters.window),
            "inflight": counters.inflight,
            "peak_inflight": counters.peak_inflight,
        },
        "quota_used_today": counters.daily_total,
        "export_bytes_today": ctx.jobs.export_bytes_today() if ctx.jobs is not None else 0,
        "records": records,
        "leads": leads,
    }


@router.post("/stats/reset")
async def stats_reset(request: Request) -> dict[str, Any]:
    ctx_of(request).counters.reset_stats()
    return {"ok": True}
