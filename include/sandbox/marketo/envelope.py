"""Marketo's JSON response envelope, built in one place.

Every REST answer is HTTP 200 with ``{"requestId", "success", ...}``; response-level failures carry
``errors: [{"code": "<quoted int>", "message"}]`` and ``success: false``. Empty ``errors``/``warnings``
arrays are omitted, as in every documented example. Handlers raise :class:`MarketoError` and the app
turns it into the envelope (and counts it for ``/rest/v1/stats/errors.json``).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from starlette.responses import Response

_rng = random.Random()


def request_id() -> str:
    """``"<hex>#<hex>"`` like ``"e42b#14272d07d78"``: a random part and the epoch milliseconds in hex."""
    return f"{_rng.getrandbits(17):x}#{int(time.time() * 1000):x}"


class MarketoError(Exception):
    """A response-level error (6xx/7xx, or 10xx used at response level)."""

    def __init__(self, code: str | int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = str(code)
        self.message = message


class JsonResponse(Response):
    """Compact JSON with the content type Marketo sends."""

    media_type = "application/json;charset=UTF-8"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def ok(
    result: list[Any] | None = None,
    *,
    more_result: bool | None = None,
    next_page_token: str | None = None,
    warnings: list[Any] | None = None,
    include_result: bool = True,
) -> JsonResponse:
    """A ``success: true`` envelope."""
    body: dict[str, Any] = {"requestId": request_id()}
    if include_result:
        body["result"] = result if result is not None else []
    body["success"] = True
    if warnings:
        body["warnings"] = warnings
    if next_page_token is not None:
        body["nextPageToken"] = next_page_token
    if more_result is not None:
        body["moreResult"] = more_result
    return JsonResponse(body)


def error_body(code: str | int, message: str) -> dict[str, Any]:
    return {"requestId": request_id(), "success": False, "errors": [{"code": str(code), "message": message}]}


def error(code: str | int, message: str) -> JsonResponse:
    """A ``success: false`` envelope with one error, HTTP 200."""
    return JsonResponse(error_body(code, message))
