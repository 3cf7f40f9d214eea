"""Injected faults (``POST|GET|DELETE /_sandbox/faults``): make the next K matching calls fail.

A fault is ``{"method": "POST", "path": "/rest/v1/leads.json", "code": "606" | 500 | "timeout",
"count": K}``: the next ``K`` calls with that method (``"*"`` for any) whose path *starts with* ``path``
fail that way, then the fault is used up. Faults are checked in the order they were added.

- a string code → that Marketo error in the usual envelope (HTTP 200, ``success: false``), with the
  documented message for the code (or ``"message"`` from the fault);
- an integer → that HTTP status with a short plain-text body (e.g. 500, 502, 503 from a proxy);
- ``"timeout"`` → the call is held for ``timeout_hold_s`` (limits, default 300 s; or ``"hold_s"`` of the
  fault), then answered ``604`` "Request time-out"; a client that gives up earlier just disconnects.

Faulted calls are answered after authentication (a call without a valid token still gets 600/601/602),
are not counted against the rate window or the daily quota, and appear in ``/_sandbox/stats``
(``errors`` per code, ``faulted``). Identity (``/identity/...``) calls can be faulted too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

MESSAGES: dict[str, str] = {
    "502": "Bad Gateway",
    "600": "Empty access token",
    "601": "Access token invalid",
    "602": "Access token expired",
    "603": "Access denied",
    "604": "Request time-out",
    "605": "HTTP Method not supported",
    "606": "Max rate limit '100' exceeded with in '20' secs",
    "607": "Daily quota reached",
    "608": "API Temporarily Unavailable",
    "609": "Invalid JSON",
    "610": "Requested resource not found",
    "611": "System error",
    "612": "Invalid Content Type",
    "613": "Invalid Multipart Request",
    "614": "Invalid Subscription",
    "615": "Concurrent access limit reached",
    "616": "Invalid subscription type",
    "701": "cannot be blank",
    "702": "No data found for a given search scenario",
    "703": "The requested feature is not enabled",
    "704": "Invalid date format",
    "709": "Business rule violation",
    "710": "Parent folder not found",
    "711": "Incompatible folder type",
    "712": "Merge operation invalid for this type",
    "713": "Transient Error",
    "714": "Unable to find the default record type",
    "718": "ExternalSalesPersonID not found",
    "1014": "Failed to create object",
    "1016": "Too many imports",
    "1019": "Import in progress",
    "1022": "Object in use",
    "1029": "Too many jobs in queue",
}


@dataclass
class Fault:
    method: str
    path: str
    code: str | int
    remaining: int
    message: str | None = None
    hold_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "path": self.path, "code": self.code, "count": self.remaining}
        if self.message is not None:
            out["message"] = self.message
        if self.hold_s is not None:
            out["hold_s"] = self.hold_s
        return out


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Fault] = []

    def add(self, data: dict[str, Any]) -> Fault | str:
        """Validate and queue a fault; a string is the problem."""
        method = data.get("method", "*")
        path = data.get("path")
        code = data.get("code")
        count = data.get("count", 1)
        if not isinstance(method, str) or not method:
            return "'method' must be an HTTP method or '*'"
        if not isinstance(path, str) or not path.startswith("/"):
            return "'path' must be a path starting with '/'"
        if isinstance(code, bool) or not (
            (isinstance(code, int) and 100 <= code <= 599) or (isinstance(code, str) and code.strip())
        ):
            return "'code' must be a Marketo code string, an HTTP status integer or \"timeout\""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            return "'count' must be a positive integer"
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            return "'message' must be a string"
        hold = data.get("hold_s")
        if hold is not None and (isinstance(hold, bool) or not isinstance(hold, (int, float)) or hold < 0):
            return "'hold_s' must be a non-negative number"
        fault = Fault(method.upper(), path, code.strip() if isinstance(code, str) else code, count, message, hold)
        with self._lock:
            self._items.append(fault)
        return fault

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            return n

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._items]

    def take(self, method: str, path: str) -> Fault | None:
        """The first matching fault, with one use consumed (removed when used up)."""
        with self._lock:
            for i, fault in enumerate(self._items):
                if fault.method not in ("*", method) or not path.startswith(fault.path):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._items[i]
                return fault
        return None
