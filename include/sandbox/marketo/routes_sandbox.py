"""Control surface ``/_sandbox/*`` (no auth, never counted): what tests and tools use to drive the sandbox.

- ``GET /_sandbox/info`` → URLs and credentials. The keys ``rest_url``, ``identity_url``,
  ``munchkin_id``, ``client_id`` and ``client_secret`` are a promise to outside tools: do not rename.
- ``POST /_sandbox/reset`` → delete all leads and activities (credentials, tokens and limits stay).
- ``POST /_sandbox/seed`` ``{"people", "overlap_leads", "overlap_contacts", "seed"}`` → synthetic people
  (see :mod:`seed`), with New Lead activities by API user ``seed``.
- ``GET|POST /_sandbox/limits`` → read / partly update the limit settings; ``{"reset_counters": true}``
  clears the rate window and the daily count.
- ``GET /_sandbox/stats`` → counted calls since ``reset_counters``, per endpoint (keys like
  ``GET /rest/v1/lead/{id}.json``; a ``POST`` with ``_method=GET`` counts as the ``GET``), limit
  refusals (606/615/607), lead count.
"""

from __future__ import annotations

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
    await run_in_threadpool(ctx_of(request).store.reset)
    return {"ok": True}


@router.post("/seed")
async def seed(request: Request) -> JSONResponse:
    data = await _json_object(request)
    if data is None:
        return _bad("body must be a JSON object")
    values: dict[str, int] = {}
    for key, default in (("people", None), ("overlap_leads", 0), ("overlap_contacts", 0), ("seed", 42)):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return _bad(f"'{key}' must be a non-negative integer")
        values[key] = value
    if values["overlap_leads"] + values["overlap_contacts"] > values["people"]:
        return _bad("overlap_leads + overlap_contacts must not exceed people")
    rows = seed_mod.people(values["people"], values["overlap_leads"], values["overlap_contacts"], values["seed"])
    created, skipped = await run_in_threadpool(
        ctx_of(request).store.seed, list(rows), seed_mod.SEED_COLUMNS, "seed"
    )
    return JSONResponse({"ok": True, "people": created, "skipped_existing": skipped})


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
    ctx = ctx_of(request)
    counters = ctx.counters
    return {
        "calls": counters.calls,
        "by_endpoint": dict(sorted(counters.by_endpoint.items())),
        "limit_errors": dict(counters.limit_errors),
        "leads": await run_in_threadpool(ctx.store.count_leads),
    }
