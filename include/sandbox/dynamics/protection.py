"""Sandbox limits and Dataverse service-protection counters.

Why: a sync that works against the sandbox must also survive the real service's per-user limits
(6,000 requests per 300 s sliding window, 52 concurrent requests; 429 with Retry-After, see
shared/reference/dynamics-api.md §11). ``Limits`` holds the settable knobs that /_sandbox/limits
exposes (also token and delta-token lifetimes and strict required-field checks); ``ServiceProtection``
keeps per-user counters and decides when to answer 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

WINDOW_S = 300.0

DEFAULT_LIMITS: dict[str, int | bool] = {
    "requests_per_300s": 6000,
    "max_concurrent": 52,
    "execution_time_s_per_300s": 1200,
    "latency_ms": 0,
    "token_ttl_s": 3599,
    "delta_token_ttl_s": 604800,
    "strict_required": False,
}


class LimitsError(ValueError):
    pass


class Limits:
    """Thread-safe holder of the /_sandbox/limits values."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int | bool] = dict(DEFAULT_LIMITS)

    def snapshot(self) -> dict[str, int | bool]:
        with self._lock:
            return dict(self._values)

    def __getitem__(self, key: str) -> int | bool:
        with self._lock:
            return self._values[key]

    def update(self, changes: dict[str, object]) -> dict[str, int | bool]:
        clean: dict[str, int | bool] = {}
        for key, value in changes.items():
            if key not in DEFAULT_LIMITS:
                raise LimitsError(f"Unknown limit '{key}'. Known: {', '.join(DEFAULT_LIMITS)}")
            if isinstance(DEFAULT_LIMITS[key], bool):
                if not isinstance(value, bool):
                    raise LimitsError(f"'{key}' must be true or false")
                clean[key] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise LimitsError(f"'{key}' must be a non-negative integer")
                clean[key] = value
        with self._lock:
            self._values.update(clean)
            return dict(self._values)


@dataclass
class Throttled:
    code: str
    message: str
    retry_after: int


class ServiceProtection:
    """Per-user sliding-window request counts, concurrency counts and request statistics."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._exec: dict[str, deque[tuple[float, float]]] = defaultdict(deque)  # (end time, seconds)
        self._exec_total: dict[str, float] = defaultdict(float)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._requests = 0
        self._by_user: dict[str, int] = defaultdict(int)
        self._throttled = 0
        self._total_exec = 0.0

    def _trim(self, window: deque[float], now: float) -> None:
        while window and window[0] <= now - WINDOW_S:
            window.popleft()

    def enter(self, user: str) -> Throttled | None:
        """Admit one request for ``user`` (and count it) or say why it is throttled."""
        limit = int(self._limits["requests_per_300s"])
        max_concurrent = int(self._limits["max_concurrent"])
        now = time.monotonic()
        with self._lock:
            self._requests += 1
            self._by_user[user] += 1
            window = self._windows[user]
            self._trim(window, now)
            if self._in_flight[user] >= max_concurrent:
                self._throttled += 1
                return Throttled(
                    "0x80072326", f"Number of concurrent requests exceeded the limit of {max_concurrent}.", 1
                )
            budget = float(self._limits["execution_time_s_per_300s"])
            spent = self._trim_exec(user, now)
            if spent > budget:
                self._throttled += 1
                oldest = self._exec[user][0][0] if self._exec[user] else now
                return Throttled(
                    "0x80072321",
                    f"Combined execution time of incoming requests exceeded limit of {int(budget * 1000):,} "
                    f"milliseconds over time window of {int(WINDOW_S)} seconds. Decrease number of concurrent "
                    "requests or reduce the duration of requests and try again later.",
                    max(1, math.ceil(oldest + WINDOW_S - now)),
                )
            if len(window) >= limit:
                self._throttled += 1
                retry = max(1, math.ceil(window[0] + WINDOW_S - now)) if window else 1
                return Throttled(
                    "0x80072322",
                    f"Number of requests exceeded the limit of {limit} over time window of {int(WINDOW_S)} seconds.",
                    retry,
                )
            window.append(now)
            self._in_flight[user] += 1
            return None

    def _trim_exec(self, user: str, now: float) -> float:
        spans = self._exec[user]
        while spans and spans[0][0] <= now - WINDOW_S:
            self._exec_total[user] -= spans.popleft()[1]
        if not spans:
            self._exec_total[user] = 0.0
        return self._exec_total[user]

    def leave(self, user: str, seconds: float = 0.0) -> None:
        """End a request that ``enter`` admitted; ``seconds`` is its execution time."""
        now = time.monotonic()
        with self._lock:
            self._in_flight[user] = max(0, self._in_flight[user] - 1)
            if seconds > 0:
                self._exec[user].append((now, seconds))
                self._exec_total[user] += seconds
                self._total_exec += seconds

    def time_remaining_ms(self, user: str) -> int:
        with self._lock:
            spent = self._trim_exec(user, time.monotonic())
            return max(0, int((float(self._limits["execution_time_s_per_300s"]) - spent) * 1000))

    def count_extra(self, user: str, n: int) -> None:
        """Count ``n`` more requests (the inner requests of a $batch) against the window."""
        if n <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._requests += n
            self._by_user[user] += n
            self._windows[user].extend([now] * n)

    def remaining(self, user: str) -> int:
        limit = int(self._limits["requests_per_300s"])
        with self._lock:
            window = self._windows[user]
            self._trim(window, time.monotonic())
            return max(0, limit - len(window))

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._exec.clear()
            self._exec_total.clear()
            self._total_exec = 0.0
            self._requests = 0
            self._by_user.clear()
            self._throttled = 0

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {"requests": self._requests, "by_user": dict(self._by_user), "throttled": self._throttled,
                    "in_flight": {u: n for u, n in self._in_flight.items() if n},
                    "execution_s": round(self._total_exec, 3)}


# ---------------------------------------------------------------------------------------------- faults
# How Dataverse answers each status a test may inject: (error code, message). Codes for 429 are the documented
# service-protection ones; 5xx bodies are the generic platform error (exact 5xx bodies could not be confirmed).
FAULT_BODIES: dict[int, tuple[str, str]] = {
    400: ("0x80040203", "Invalid argument."),
    401: ("0x8005f101", "The requested resource requires authentication."),
    403: ("0x80040220", "Principal user is missing prvReadEntity privilege."),
    404: ("0x80040217", "The requested record was not found or you do not have sufficient permissions to view it."),
    408: ("0x80040216", "The request timed out."),
    412: ("0x80060882", "The version of the existing record doesn't match the RowVersion property provided."),
    413: ("0x80040216", "Request Entity Too Large."),
    500: ("0x80040216", "An unexpected error occurred."),
    502: ("0x80040216", "Bad Gateway."),
    503: ("0x80040216", "The service is temporarily unavailable. Please try again later."),
    504: ("0x80040216", "The request channel timed out while waiting for a reply."),
}
THROTTLE_REASONS = {
    "requests": "0x80072322", "execution_time": "0x80072321", "concurrency": "0x80072326",
}


@dataclass
class Fault:
    """One injected failure: the next ``count`` matching Web API (or token) calls fail with ``code``."""

    id: int
    code: int
    count: int
    method: str | None = None
    path: str | None = None  # substring of the path below /api/data/v9.2/ (or 'token')
    user: str | None = None  # a systemuserid, "sync" or "user"
    target: str = "api"  # "api" or "token"
    retry_after: int = 5
    reason: str = "requests"  # 429 only: requests | execution_time | concurrency
    delay_ms: int = 0
    skip: int = 0  # let this many matching calls through first
    hits: int = 0

    def public(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


class FaultError(ValueError):
    pass


class Faults:
    """Queue of injected failures, consumed in order by matching requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next = 1
        self.fired = 0

    def add(self, body: dict[str, object]) -> list[dict[str, object]]:
        items = body.get("faults", [body])
        if not isinstance(items, list) or not items:
            raise FaultError("body must be a fault object or {\"faults\": [...]}")
        created = []
        for item in items:
            if not isinstance(item, dict):
                raise FaultError("each fault must be a JSON object")
            code = item.get("code", item.get("status"))
            if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
                raise FaultError("'code' must be an HTTP status code 400..599")
            count = item.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise FaultError("'count' must be a positive integer")
            reason = str(item.get("reason", "requests"))
            if reason not in THROTTLE_REASONS:
                raise FaultError(f"'reason' must be one of {', '.join(THROTTLE_REASONS)}")
            target = str(item.get("target", "api"))
            if target not in ("api", "token"):
                raise FaultError("'target' must be 'api' or 'token'")
            ints = {}
            for key, default in (("retry_after", 5), ("delay_ms", 0), ("skip", 0)):
                value = item.get(key, default)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise FaultError(f"'{key}' must be a non-negative integer")
                ints[key] = value
            unknown = set(item) - {"code", "status", "count", "method", "path", "user", "target", "reason",
                                   "retry_after", "delay_ms", "skip"}
            if unknown:
                raise FaultError(f"unknown fault keys: {', '.join(sorted(unknown))}")
            with self._lock:
                fault = Fault(self._next, code, count, str(item["method"]).upper() if item.get("method") else None,
                              str(item["path"]) if item.get("path") else None,
                              str(item["user"]) if item.get("user") else None, target, reason=reason, **ints)
                self._next += 1
                self._faults.append(fault)
            created.append(fault.public())
        return created

    def clear(self) -> int:
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
            return n

    def pending(self) -> list[dict[str, object]]:
        with self._lock:
            return [f.public() for f in self._faults]

    def take(self, target: str, method: str, path: str, user_id: str, role: str) -> Fault | None:
        """The fault this request triggers, if any (consumes one use of it)."""
        with self._lock:
            for fault in self._faults:
                if fault.target != target or (fault.method and fault.method != method.upper()):
                    continue
                if fault.path and fault.path not in path:
                    continue
                if fault.user and fault.user not in (user_id, role):
                    continue
                if fault.skip:
                    fault.skip -= 1
                    continue
                fault.hits += 1
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                self.fired += 1
                return fault
        return None


def fault_error(fault: Fault, limits: Limits) -> tuple[int, dict[str, object], dict[str, str]]:
    """Status, JSON body and headers Dataverse would send for an injected fault."""
    headers: dict[str, str] = {}
    if fault.code == 429:
        code = THROTTLE_REASONS[fault.reason]
        if fault.reason == "requests":
            message = (f"Number of requests exceeded the limit of {limits['requests_per_300s']} over time window "
                       f"of {int(WINDOW_S)} seconds.")
        elif fault.reason == "execution_time":
            message = (f"Combined execution time of incoming requests exceeded limit of "
                       f"{int(limits['execution_time_s_per_300s']) * 1000:,} milliseconds over time window of "
                       f"{int(WINDOW_S)} seconds. Decrease number of concurrent requests or reduce the duration of "
                       "requests and try again later.")
        else:
            message = f"Number of concurrent requests exceeded the limit of {limits['max_concurrent']}."
        headers["Retry-After"] = str(fault.retry_after)
    else:
        code, message = FAULT_BODIES.get(fault.code, ("0x80040216", "An unexpected error occurred."))
        if fault.code == 503:
            headers["Retry-After"] = str(fault.retry_after)
    return fault.code, {"error": {"code": code, "message": message}}, headers
