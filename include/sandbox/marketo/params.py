"""Request parameter reading shared by the REST routes.

Why: Marketo accepts the same parameters in three shapes and widely used clients use all of them:
the query string, a ``POST`` with ``_method=GET`` and an ``application/x-www-form-urlencoded`` body
(the 414 workaround, used by marketorestpython for every lead lookup), and ``_method=GET`` in the query
string with a JSON body. List parameters come comma-separated or as repeated keys (``fields=a&fields=b``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .envelope import MarketoError


class Params:
    """Ordered multi-valued parameters."""

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()) -> None:
        self._pairs: list[tuple[str, Any]] = list(pairs)

    def extend(self, pairs: Iterable[tuple[str, Any]]) -> None:
        self._pairs.extend(pairs)

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self._pairs)

    def get(self, name: str) -> str | None:
        """First non-empty value as text (lists are comma-joined)."""
        for key, value in self._pairs:
            if key != name or value is None:
                continue
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            text = str(value).strip()
            if text:
                return text
        return None

    def get_list(self, name: str) -> list[str]:
        """All values of a list parameter: repeated keys, comma-separated text, or JSON arrays."""
        out: list[str] = []
        for key, value in self._pairs:
            if key != name or value is None:
                continue
            items = value if isinstance(value, list) else str(value).split(",")
            for item in items:
                text = str(item).strip()
                if text:
                    out.append(text)
        return out

    def get_int(self, name: str, default: int | None = None) -> int | None:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise MarketoError("1001", f"Invalid value '{raw}'. Required of type 'integer'") from None


def is_form(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def form_pairs(body: bytes) -> list[tuple[str, str]]:
    return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def parse_json_body(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MarketoError("609", "Invalid JSON") from None


def json_pairs(data: Any) -> list[tuple[str, Any]]:
    if not isinstance(data, dict):
        raise MarketoError("609", "Invalid JSON")
    return list(data.items())


@dataclass
class PostedCall:
    """A POST as Marketo reads it: its body, content type, form pairs and any `_method` override.

    Clients send reads as POST with `_method=GET` in the query string or in a form body (to stay under
    the 8 KB URL limit); `params` is then the read's parameters, query string and form together.
    """

    body: bytes
    content_type: str
    form: list[tuple[str, str]]
    override: str
    params: Params


async def posted_call(request: Any) -> PostedCall:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    form = form_pairs(body) if is_form(content_type) and body else []
    params = Params(request.query_params.multi_items())
    override = (params.get("_method") or Params(form).get("_method") or "").upper()
    if form:
        params.extend(form)
    return PostedCall(body, content_type, form, override, params)
