"""Assembly of the sandbox FastAPI app: state, routers, request gate and error mapping.

Why here and not in ``__init__``: importing the package stays cheap, and this is the one place that
decides how framework errors look. Under ``/rest`` and ``/bulk`` every failure is a Marketo envelope
with HTTP 200: unknown path → ``610`` "Requested resource not found", wrong verb → ``605`` "HTTP Method
not supported", unexpected exception → ``611`` "System error". Endpoints not implemented (static
lists, programs, assets, program-member and custom-object bulk jobs…) therefore answer ``610``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .auth import TokenStore, load_or_create_credentials
from .bulk import BulkJobs
from .context import SandboxContext
from .envelope import MarketoError, error
from .gate import Gate
from .objects import ObjectStore
from .routes_activities import router as activities_router
from .routes_bulk import router as bulk_router
from .routes_custom_activities import router as custom_activities_router
from .routes_identity import router as identity_router
from .routes_leads import router as leads_router
from .routes_objects import router as objects_router
from .routes_sandbox import router as sandbox_router
from .store import Store

log = logging.getLogger(__name__)


def _is_api(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/rest/") or path.startswith("/bulk/")


def create_app(state_dir: Path, host: str = "127.0.0.1", port: int = 8081) -> FastAPI:
    """Build the sandbox app; ``state_dir`` holds ``credentials.json``, ``tokens.json`` and ``marketo.db``."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    creds = load_or_create_credentials(state_dir)
    ctx = SandboxContext(
        state_dir=state_dir,
        host=host,
        port=port,
        creds=creds,
        tokens=TokenStore(state_dir, creds),
        store=Store(state_dir / "marketo.db"),
    )

    ctx.jobs = BulkJobs(ctx.store, ctx.settings, state_dir)
    ctx.objects = ObjectStore(ctx.store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ctx.jobs.close()
            ctx.store.close()

    app = FastAPI(
        title="Marketo Engage REST API sandbox",
        lifespan=lifespan,
        docs_url="/_sandbox/docs",
        openapi_url="/_sandbox/openapi.json",
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.include_router(identity_router)
    app.include_router(leads_router)
    app.include_router(custom_activities_router)
    app.include_router(activities_router)
    app.include_router(bulk_router)
    app.include_router(objects_router)
    app.include_router(sandbox_router)
    app.add_middleware(Gate, ctx=ctx)

    @app.exception_handler(MarketoError)
    async def marketo_error(_request: Request, exc: MarketoError) -> Response:
        ctx.counters.record_error(exc.code)
        return error(exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_api(request):
            if exc.status_code == 405:
                ctx.counters.record_error("605")
                return error("605", "HTTP Method not supported")
            if exc.status_code == 404:
                ctx.counters.record_error("610")
                return error("610", "Requested resource not found")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def system_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        if _is_api(request):
            ctx.counters.record_error("611")
            return error("611", "System error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app
