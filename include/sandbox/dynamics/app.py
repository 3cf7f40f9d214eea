"""FastAPI assembly of the sandbox: Entra ID endpoints, the Dataverse Web API and /_sandbox/.

Why: one TLS port serves everything a real deployment spreads over login.microsoftonline.com and
<org>.crm.dynamics.com, plus an unauthenticated control surface for tests and tools (info, reset,
seed, limits, stats, faults). HTTP concerns live here: bearer-token checks with the real 401 shapes,
service-protection admission (429 + Retry-After: requests, concurrency and execution time), injected
faults (POST/GET/DELETE /_sandbox/faults; an integer code answered as Dataverse or Entra ID would),
optional latency, and translating between
Starlette requests and the transport-neutral ``ApiRequest``/``ApiResponse`` of ``webapi``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from . import seed as seeding
from . import tables as t
from .identity import AuthError, Identity, TokenError
from .protection import FaultError, Faults, Limits, LimitsError, ServiceProtection, fault_error
from .protocol import API_PREFIX, ApiRequest, ApiResponse, dumps
from .records import now_utc
from .store import Store
from .tls import ensure_tls
from .webapi import WebApi

log = logging.getLogger("include.sandbox.dynamics")
MAX_SEED_ROWS = 2_000_000


def _ensure_system_users(store: Store, identity: Identity) -> None:
    table = store.tables["systemuser"]
    stamp = now_utc()
    with store.transaction():
        for client_id, (_, principal) in identity.apps.items():
            if store.get(table, principal.user_id) is not None:
                continue
            first, _, last = principal.fullname.partition(" ")
            store.insert(table, {
                "systemuserid": principal.user_id,
                "firstname": first,
                "lastname": last,
                "fullname": principal.fullname,
                "domainname": f"{principal.fullname.lower().replace(' ', '.')}@sandbox.onmicrosoft.com",
                "internalemailaddress": f"{principal.fullname.lower().replace(' ', '.')}@sandbox.onmicrosoft.com",
                "applicationid": client_id,
                "isdisabled": 0,
                "accessmode": 4,
                "businessunitid": identity.creds["business_unit_id"],
                "createdon": stamp,
                "modifiedon": stamp,
                "createdby": principal.user_id,
                "modifiedby": principal.user_id,
                "versionnumber": store.allocate_versions(1),
            })


def _ensure_default_team(store: Store, identity: Identity) -> None:
    """The business unit's default owner team (it can be described, not renamed or deleted)."""
    table = store.tables["team"]
    team_id = str(uuid.uuid5(uuid.UUID(identity.creds["business_unit_id"]), "default-team"))
    if store.get(table, team_id) is not None:
        return
    stamp = now_utc()
    with store.transaction():
        store.insert(table, {
            "teamid": team_id, "name": "sandbox", "teamtype": 0, "isdefault": 1,
            "businessunitid": identity.creds["business_unit_id"], "administratorid": identity.creds["user_id"],
            "description": "Default team of the root business unit.", "createdon": stamp, "modifiedon": stamp,
            "createdby": identity.creds["user_id"], "modifiedby": identity.creds["user_id"],
            "versionnumber": store.allocate_versions(1),
        })


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * resource.getpagesize() / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _to_response(api: ApiResponse, extra: dict[str, str] | None = None) -> Response:
    headers = dict(api.headers)
    headers.update(extra or {})
    media_type = headers.pop("Content-Type", None)
    body = b"" if api.status in (204, 304) else api.body
    return Response(content=body, status_code=api.status, headers=headers, media_type=media_type)


def create_app(state_dir: Path, host: str = "127.0.0.1", port: int = 8082) -> FastAPI:
    """Build the sandbox app for ``https://host:port`` with its state (TLS, credentials, SQLite) in ``state_dir``."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_file, _, _ = ensure_tls(state_dir)
    url_host = f"[{host}]" if ":" in host else host
    base_url = f"https://{url_host}:{port}"

    limits = Limits()
    protection = ServiceProtection(limits)
    identity = Identity(state_dir, base_url, lambda: int(limits["token_ttl_s"]))
    store = Store(state_dir, t.TABLES)
    _ensure_system_users(store, identity)
    _ensure_default_team(store, identity)
    faults = Faults()
    web = WebApi(store, limits, protection, base_url, identity.creds["business_unit_id"],
                 identity.creds["organization_id"])
    tenant = identity.tenant_id
    authority = f"{base_url}/{tenant}"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title="Dynamics 365 / Dataverse sandbox", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.store = store
    app.state.identity = identity
    app.state.limits = limits
    app.state.faults = faults

    # ------------------------------------------------------------------ control surface
    @app.get("/_sandbox/info")
    def info() -> dict[str, Any]:
        return {
            "authority": authority,
            "tenant_id": tenant,
            "resource_url": identity.resource_url,
            "api_url": web.api,
            "client_id": identity.creds["client_id"],
            "client_secret": identity.creds["client_secret"],
            "user_client_id": identity.creds["user_client_id"],
            "user_client_secret": identity.creds["user_client_secret"],
            "ca_file": str(ca_file),
            "sync_user_id": identity.creds["sync_user_id"],
            "user_id": identity.creds["user_id"],
        }

    @app.post("/_sandbox/reset")
    def reset() -> dict[str, Any]:
        # Seeded users and teams go too; the application users and the default team come back as new.
        store.reset((*t.DATA_TABLES, *t.PRINCIPAL_TABLES))
        _ensure_system_users(store, identity)
        _ensure_default_team(store, identity)
        return {"ok": True}

    @app.post("/_sandbox/seed")
    async def seed(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"ok": False, "error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "body must be a JSON object"}, status_code=400)
        if "entity" in body:  # {"entity": "contact", "count": N, "seed": S, ...}
            try:
                plan = seeding.parse_entity_form(body, MAX_SEED_ROWS)
            except ValueError as exc:
                return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
            started = time.monotonic()
            try:
                result = await run_in_threadpool(seeding.seed_entity, store, plan, identity.creds["user_id"],
                                                 identity.creds["sync_user_id"], identity.creds["business_unit_id"])
            except ValueError as exc:
                return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
            result["seconds"] = round(time.monotonic() - started, 2)
            return JSONResponse(result)
        args = {k: body.get(k, d) for k, d in (("leads", 0), ("contacts", 0), ("seed", 42))}
        if any(isinstance(v, bool) or not isinstance(v, int) for v in args.values()) or \
                not 0 <= args["leads"] <= MAX_SEED_ROWS or not 0 <= args["contacts"] <= MAX_SEED_ROWS:
            return JSONResponse({"ok": False, "error": f"leads/contacts must be integers 0..{MAX_SEED_ROWS}, "
                                 "seed an integer"}, status_code=400)
        result = await run_in_threadpool(seeding.seed, store, args["leads"], args["contacts"], args["seed"],
                                         identity.creds["user_id"])
        return JSONResponse(result)

    @app.post("/_sandbox/faults")
    async def add_faults(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise FaultError("body must be a JSON object")
            return JSONResponse({"ok": True, "faults": faults.add(body)})
        except (ValueError, FaultError) as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)

    @app.get("/_sandbox/faults")
    def list_faults() -> dict[str, Any]:
        return {"faults": faults.pending(), "fired": faults.fired}

    @app.delete("/_sandbox/faults")
    def clear_faults() -> dict[str, Any]:
        return {"ok": True, "cleared": faults.clear()}

    @app.get("/_sandbox/limits")
    def get_limits() -> dict[str, Any]:
        return limits.snapshot()

    @app.post("/_sandbox/limits")
    async def post_limits(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise LimitsError("body must be a JSON object")
            if body.pop("reset_counters", False):
                protection.reset()
            return JSONResponse(limits.update(body))
        except (ValueError, LimitsError) as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)

    @app.get("/_sandbox/stats")
    def stats() -> dict[str, Any]:
        out = protection.stats()
        for logical in (*t.DATA_TABLES, *t.PRINCIPAL_TABLES):
            out[store.tables[logical].entity_set] = store.table_count(logical)
        out["tombstones"] = store.tombstone_count()
        out["version"] = store.current_version()
        out["faults_fired"] = faults.fired
        out["faults_pending"] = len(faults.pending())
        out["rss_mb"] = _rss_mb()
        out["db_mb"] = round(sum(f.stat().st_size for f in state_dir.glob("dynamics.sqlite3*")) / 2**20, 1)
        return out

    # ------------------------------------------------------------------ Entra ID
    def tenant_error(name: str) -> JSONResponse:
        err = TokenError(400, "invalid_tenant", 90002,
                         f"Tenant '{name}' not found. Check to make sure you have the correct tenant ID and are "
                         "signing into the correct cloud. Check with your subscription administrator, this may "
                         "happen if there are no active subscriptions for the tenant.")
        return JSONResponse(identity.error_body(err), status_code=400)

    @app.get("/{tenant_name}/v2.0/.well-known/openid-configuration")
    @app.get("/{tenant_name}/.well-known/openid-configuration")
    def openid_configuration(tenant_name: str) -> Response:
        if not identity.knows_tenant(tenant_name):
            return tenant_error(tenant_name)
        return JSONResponse(identity.openid_configuration())

    @app.get("/{tenant_name}/discovery/v2.0/keys")
    @app.get("/{tenant_name}/discovery/keys")
    def jwks(tenant_name: str) -> Response:
        if not identity.knows_tenant(tenant_name):
            return tenant_error(tenant_name)
        return JSONResponse(identity.jwks())

    @app.post("/{tenant_name}/oauth2/v2.0/token")
    async def token(tenant_name: str, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(raw, keep_blank_values=True))
        correlation = request.headers.get("client-request-id")
        headers = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
        if correlation:
            headers["client-request-id"] = correlation
        fault = faults.take("token", "POST", "token", form.get("client_id", ""), "")
        if fault is not None:
            if fault.delay_ms:
                await asyncio.sleep(fault.delay_ms / 1000)
            # Entra ID's throttling / outage answers (exact AADSTS numbers unconfirmed).
            err = TokenError(fault.code, "temporarily_unavailable" if fault.code >= 429 else "invalid_request",
                             50196 if fault.code == 429 else 90033 if fault.code >= 500 else 90014,
                             "The server is temporarily too busy to handle the request." if fault.code >= 429
                             else "The request is not valid.")
            if fault.code in (429, 503):
                headers["Retry-After"] = str(fault.retry_after)
            return JSONResponse(identity.error_body(err, correlation), status_code=fault.code, headers=headers)
        try:
            body = identity.issue_token(tenant_name, form, request.headers.get("authorization"))
        except TokenError as err:
            return JSONResponse(identity.error_body(err, correlation), status_code=err.status, headers=headers)
        return JSONResponse(body, headers=headers)

    # ------------------------------------------------------------------ Dataverse Web API
    challenge = (f"Bearer authorization_uri={authority}/oauth2/authorize, "
                 f"resource_id={identity.resource_url}")

    async def webapi(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return Response(status_code=401, headers={"WWW-Authenticate": challenge})
        try:
            principal = identity.verify(auth[7:].strip())
        except AuthError as exc:
            if exc.kind == "expired":
                code, message = "0x8005f101", "The requested resource requires authentication."
            else:
                code, message = "0x80072560", "The user is not a member of the organization."
            return Response(
                content=dumps({"error": {"code": code, "message": message}}), status_code=401,
                media_type="application/json; odata.metadata=minimal",
                headers={"WWW-Authenticate": f'{challenge}, error="invalid_token", '
                                             f'error_description="{exc.detail}"'},
            )
        user = principal.user_id
        throttled = protection.enter(user)
        if throttled is not None:
            return Response(
                content=dumps({"error": {"code": throttled.code, "message": throttled.message}}), status_code=429,
                media_type="application/json; odata.metadata=minimal",
                headers={"Retry-After": str(throttled.retry_after), "OData-Version": "4.0"},
            )
        started = time.monotonic()
        try:
            delay = int(limits["latency_ms"])
            if delay:
                await asyncio.sleep(delay / 1000)
            path = request.scope["path"][len(API_PREFIX):].lstrip("/")
            fault = faults.take("api", request.method, path, user, principal.role)
            if fault is not None:
                if fault.delay_ms:
                    await asyncio.sleep(fault.delay_ms / 1000)
                status, body, fault_headers = fault_error(fault, limits)
                return Response(content=dumps(body), status_code=status,
                                media_type="application/json; odata.metadata=minimal",
                                headers={**fault_headers, "OData-Version": "4.0", "REQ_ID": str(uuid.uuid4())})
            headers: dict[str, list[str]] = {}
            for name, value in request.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            api_request = ApiRequest(method=request.method, path=path, query=request.url.query,
                                     headers=headers, body=await request.body(), caller=principal)
            try:
                result = await run_in_threadpool(web.handle, api_request)
            except Exception:  # a sandbox bug must still answer like the service would
                log.exception("unhandled error for %s %s", request.method, request.url)
                result = ApiResponse.json(500, {"error": {"code": "0x80040216",
                                                          "message": "An unexpected error occurred."}})
            return _to_response(result, {
                "REQ_ID": str(uuid.uuid4()),
                "x-ms-ratelimit-burst-remaining-xrm-requests": str(protection.remaining(user)),
                "x-ms-ratelimit-time-remaining-xrm-requests": f"{protection.time_remaining_ms(user) / 1000:.2f}",
            })
        finally:
            protection.leave(user, time.monotonic() - started)

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    app.add_api_route(API_PREFIX, webapi, methods=methods, include_in_schema=False)
    app.add_api_route(API_PREFIX + "/{rest:path}", webapi, methods=methods, include_in_schema=False)

    # Registered last so that the /{tenant}/... patterns never shadow the routes above.
    app.router.routes.sort(key=lambda r: 1 if getattr(r, "path", "").startswith("/{tenant_name}") else 0)
    return app
