"""Transport-neutral request/response types and the Dataverse error envelope.

Why: the same handler code must serve a plain HTTPS request and each inner request of a
``$batch`` body. Handlers therefore take an ``ApiRequest`` and return an ``ApiResponse``; the
FastAPI route and the batch processor only translate to and from these. ``ApiError`` carries the
real status plus the ``{"error":{"code":"0x...","message":"..."}}`` body every Dataverse error uses.
"""

from __future__ import annotations

import http
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from .identity import Principal

API_PREFIX = "/api/data/v9.2"
JSON_CONTENT_TYPE = "application/json; odata.metadata=minimal"
FORMATTED_VALUE = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
ASSOCIATED_NAV = "Microsoft.Dynamics.CRM.associatednavigationproperty"
MAX_PAGE_SIZE = 5000


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def split_top_level(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes, parentheses and brackets."""
    out: list[str] = []
    depth, quote, start = 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'" or (ch == '"' and sep != '"'):
            quote = not quote
        elif not quote and ch in "([":
            depth += 1
        elif not quote and ch in ")]":
            depth -= 1
        elif not quote and depth == 0 and ch == sep:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


@dataclass
class Prefer:
    """Parsed ``Prefer`` request header(s)."""

    values: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, header_values: list[str]) -> Prefer:
        values: dict[str, str | None] = {}
        for header in header_values:
            for item in split_top_level(header, ","):
                item = item.strip()
                if not item:
                    continue
                name, eq, value = item.partition("=")
                v: str | None = value.strip() if eq else None
                if v is not None and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                    v = v[1:-1]
                values[name.strip().lower()] = v
        return cls(values)

    def has(self, name: str) -> bool:
        return name in self.values

    @property
    def maxpagesize(self) -> int | None:
        raw = self.values.get("odata.maxpagesize")
        if raw is None:
            return None
        try:
            size = int(raw)
        except ValueError:
            return None
        return size if size > 0 else None

    @property
    def annotations(self) -> list[str]:
        raw = self.values.get("odata.include-annotations")
        if not raw:
            return []
        return [a.strip() for a in raw.split(",") if a.strip()]

    def wants(self, annotation: str) -> bool:
        for pattern in self.annotations:
            if pattern == "*" or pattern == annotation:
                return True
            if pattern.endswith(".*") and annotation.startswith(pattern[:-1]):
                return True
        return False


@dataclass
class ApiRequest:
    method: str
    path: str  # below /api/data/v9.2/, percent-decoded, no leading slash
    query: str  # raw query string
    headers: dict[str, list[str]]  # lower-case names
    body: bytes
    caller: Principal
    in_batch: bool = False

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @cached_property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    @cached_property
    def prefer(self) -> Prefer:
        return Prefer.parse(self.headers.get("prefer", []))

    def json_body(self, entity_set: str) -> Any:
        if not self.body.strip():
            raise payload_error(entity_set, "Microsoft.OData.ODataException: An empty payload was found.")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise payload_error(
                entity_set, f"Microsoft.OData.ODataException: Invalid JSON. {exc}"
            ) from None


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> ApiResponse:
        h = {"Content-Type": JSON_CONTENT_TYPE, "OData-Version": "4.0"}
        h.update(headers or {})
        return cls(status, h, dumps(obj))

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> ApiResponse:
        h = {"OData-Version": "4.0"}
        h.update(headers or {})
        return cls(status, h, b"")


class ApiError(Exception):
    """A Dataverse error answer: real HTTP status plus ``{"error":{"code","message"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self) -> ApiResponse:
        return ApiResponse.json(self.status, {"error": {"code": self.code, "message": self.message}}, self.headers)


def payload_error(entity_set: str, inner: str) -> ApiError:
    return ApiError(
        400, "0x80048d19",
        f"Error identified in Payload provided by the user for Entity :'{entity_set}', For more information on this "
        f"error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ----> "
        f"InnerException : {inner}",
    )


def property_not_found(name: str, edm_type: str) -> ApiError:
    return ApiError(400, "0x80060888", f"Could not find a property named '{name}' on type '{edm_type}'.")


def segment_not_found(segment: str) -> ApiError:
    return ApiError(404, "0x8006088a", f"Resource not found for the segment '{segment}'.")


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "0x80060888", f"The requested resource does not support http method '{method}'.")


_SEGMENT_RE = re.compile(r"^(?P<name>[^()]+)(?:\((?P<key>.*)\))?$", re.S)


def split_path(path: str) -> list[tuple[str, str | None]]:
    """``leads(…)/firstname`` → [("leads", "…"), ("firstname", None)]; slashes inside keys are kept."""
    segments = []
    for raw in split_top_level(path.strip("/"), "/"):
        if raw == "":
            continue
        m = _SEGMENT_RE.match(raw)
        if m is None:
            raise segment_not_found(raw)
        segments.append((m.group("name"), m.group("key")))
    return segments
