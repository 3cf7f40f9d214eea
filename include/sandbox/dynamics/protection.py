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
        self._in_flight: dict[str, int] = defaultdict(int)
        self._requests = 0
        self._by_user: dict[str, int] = defaultdict(int)
        self._throttled = 0

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

    def leave(self, user: str) -> None:
        with self._lock:
            self._in_flight[user] = max(0, self._in_flight[user] - 1)

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
            self._requests = 0
            self._by_user.clear()
            self._throttled = 0

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {"requests": self._requests, "by_user": dict(self._by_user), "throttled": self._throttled}
