"""Request gate in front of every ``/rest`` and ``/bulk`` call: size limits, token, API limits, latency.

Why an ASGI middleware instead of a FastAPI dependency: the concurrency limit counts calls *in flight*,
which only a wrapper around the whole request can see, and 413/414 must be plain HTTP errors before any
routing. Order of checks:

1. URI longer than 8 KB → HTTP 414; body over 1 MB → HTTP 413 (the only documented HTTP-level errors).
2. Token from ``Authorization: Bearer`` (the ``access_token`` query/form parameter only when the
   ``allow_query_token`` switch is on): none → ``600`` "Empty access token", unknown → ``601``,
   expired → ``602``. These calls are not counted.
3. Daily quota (607), rate window (606), concurrency (615): see :mod:`limits`.
4. ``POST`` with ``_method=GET`` and a form body (or none) is handed on as the ``GET`` it stands for.
5. The call is counted, optional latency is added, and the app runs with ``scope["state"]["api_user"]``.
"""

from __future__ import annotations

import asyncio
import json
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .context import SandboxContext
from .envelope import error_body
from .faults import MESSAGES, Fault

MAX_URI = 8 * 1024
MAX_BODY = 1024 * 1024
MAX_IMPORT_BODY = 10 * 1024 * 1024  # bulk import files (docs: file < 10 MB)
_IMPORT_PATH = re.compile(r"^/bulk/v1/(leads\.json|customobjects/[^/]+/import\.json)$")
_ID_SEGMENT = re.compile(r"/\d+(?=/|\.json$)")


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def endpoint_key(method: str, path: str) -> str:
    """``GET /rest/v1/lead/{id}.json`` style key for per-endpoint statistics."""
    return f"{method} {_ID_SEGMENT.sub('/{id}', path)}"


async def _send_plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json;charset=UTF-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _method_override(scope: Scope, headers: dict[str, str], query: bytes, body: bytes) -> tuple[Scope, bytes]:
    """``POST`` + ``_method=GET`` (query string or form body) becomes the ``GET`` it stands for.

    The form body joins the query string, so every GET endpoint accepts the documented 414 workaround.
    A JSON body with ``_method=GET`` in the query string is left to the route (custom-object style).
    """
    if scope["method"] != "POST":
        return scope, body
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    form = (
        parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        if ctype == "application/x-www-form-urlencoded" and body.strip()
        else None
    )
    override = next((v for k, v in pairs if k == "_method"), None)
    if override is None and form:
        override = next((v for k, v in form if k == "_method"), None)
    if (override or "").upper() != "GET" or (form is None and body.strip()):
        return scope, body
    merged = [(k, v) for k, v in [*pairs, *(form or [])] if k != "_method"]
    new_scope = dict(scope)
    new_scope["method"] = "GET"
    new_scope["query_string"] = urlencode(merged).encode("ascii")
    return new_scope, b""


class Gate:
    def __init__(self, app: ASGIApp, ctx: SandboxContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/identity/"):
            fault = self.ctx.faults.take(scope["method"], path)
            if fault is not None:
                await self._fault(fault, path, receive, send)
                return
        if scope["type"] != "http" or not (path.startswith("/rest/") or path.startswith("/bulk/")):
            await self.app(scope, receive, send)
            return
        max_body = MAX_IMPORT_BODY if scope["method"] == "POST" and _IMPORT_PATH.match(path) else MAX_BODY
        raw_path: bytes = scope.get("raw_path") or path.encode()
        query: bytes = scope.get("query_string", b"")
        if len(raw_path) + (len(query) + 1 if query else 0) > MAX_URI:
            self.ctx.counters.record_http(414)
            await _send_plain(send, 414, "Request-URI Too Long")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            self.ctx.counters.record_http(413)
            await _send_plain(send, 413, "Request Entity Too Large")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                self.ctx.counters.record_http(413)
                await _send_plain(send, 413, "Request Entity Too Large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)

        ctx = self.ctx
        token = self._token(headers, query, body)
        scope, body = _method_override(scope, headers, query, body)
        if not token:
            ctx.counters.record_error("600")
            await _send_json(send, error_body("600", "Empty access token"))
            return
        code, user = ctx.tokens.check(token)
        if code is not None or user is None:
            message_text = "Access token expired" if code == "602" else "Access token invalid"
            ctx.counters.record_error(code or "601")
            await _send_json(send, error_body(code or "601", message_text))
            return
        fault = ctx.faults.take(scope["method"], path)
        if fault is not None:
            ctx.counters.by_endpoint[endpoint_key(scope["method"], path)] += 1
            await self._fault(fault, path, receive, send)
            return
        refusal = ctx.counters.admit(ctx.settings, user, endpoint_key(scope["method"], path))
        if refusal is not None:
            await _send_json(send, error_body(*refusal))
            return
        ctx.counters.inflight += 1
        ctx.counters.peak_inflight = max(ctx.counters.peak_inflight, ctx.counters.inflight)
        try:
            if ctx.settings.latency_ms > 0:
                await asyncio.sleep(ctx.settings.latency_ms / 1000)
            scope.setdefault("state", {})["api_user"] = user
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            ctx.counters.inflight -= 1

    async def _fault(self, fault: Fault, path: str, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        ctx.counters.faulted += 1
        if isinstance(fault.code, int):
            ctx.counters.record_http(fault.code)
            try:
                phrase = HTTPStatus(fault.code).phrase
            except ValueError:
                phrase = "Error"
            await _send_plain(send, fault.code, fault.message or phrase)
            return
        if fault.code.lower() == "timeout":
            hold = fault.hold_s if fault.hold_s is not None else ctx.settings.timeout_hold_s
            disconnected = asyncio.ensure_future(_wait_disconnect(receive))
            try:
                await asyncio.wait_for(asyncio.shield(disconnected), timeout=hold)
                return  # the client gave up
            except TimeoutError:
                pass
            finally:
                disconnected.cancel()
            ctx.counters.record_error("604")
            await _send_json(send, error_body("604", "Request time-out"))
            return
        ctx.counters.record_error(fault.code)
        message = fault.message or MESSAGES.get(fault.code, "Injected fault")
        if fault.code == "606" and fault.message is None:
            message = f"Max rate limit '{ctx.settings.calls_per_20s}' exceeded with in '20' secs"
        await _send_json(send, error_body(fault.code, message))

    def _token(self, headers: dict[str, str], query: bytes, body: bytes) -> str | None:
        auth = headers.get("authorization", "").strip()
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer":
                return value.strip() or None
            return auth  # not a bearer token: will be answered 601
        if not self.ctx.settings.allow_query_token:
            return None
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if key == "access_token" and value:
                return value
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded" and body:
            for key, value in parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True):
                if key == "access_token" and value:
                    return value
        return None
