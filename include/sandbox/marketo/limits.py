"""API limits of a Marketo subscription: rate window, concurrency gate, daily quota, and usage counters.

Why: a sync that passes against an unlimited stub melts down against the real service, so the sandbox
enforces the documented limits by default and lets tests change them at run time
(``GET|POST /_sandbox/limits``).

Documented values and codes: 100 calls per sliding 20 s per instance → ``606`` "Max rate limit '100'
exceeded with in '20' secs"; 10 calls in flight → ``615`` "Concurrent access limit reached"; 50,000
calls per day, resetting at midnight US Central time → ``607`` "Daily quota reached". Identity calls and
calls answered 600/601/602 are not counted.

Sandbox choices (not documented, keep in mind when reading results): calls refused with 606/607/615 do
not enter the rate window or the daily count; the checks run in the order 607, 606, 615; counters live in
memory (a restart starts a new day count); settings are not persisted.
"""

from __future__ import annotations

import collections
import datetime as dt
import time
from dataclasses import asdict, dataclass, fields
from typing import Any
from zoneinfo import ZoneInfo

WINDOW_S = 20.0
CENTRAL = ZoneInfo("America/Chicago")


def marketo_day(now: float | None = None) -> str:
    """The quota day (``YYYY-MM-DD``), which starts at midnight US Central time."""
    return dt.datetime.fromtimestamp(time.time() if now is None else now, CENTRAL).date().isoformat()


@dataclass
class LimitSettings:
    calls_per_20s: int = 100
    max_concurrent: int = 10
    daily_quota: int = 50000
    latency_ms: int = 0
    token_ttl_s: int = 3600
    allow_query_token: bool = False
    # Bulk jobs: minimum time a job stays in each of Queued and Processing/Importing (docs: status
    # changes at most once per 60 s; poll every 60 s or more).
    bulk_step_ms: int = 60000
    # Bulk extract daily allocation shared by all export types (docs: 500 MB, reset midnight Central).
    export_daily_quota_bytes: int = 500 * 1024 * 1024
    # A native CRM sync owns companies/opportunities/roles/sales persons: writes answer 1018.
    crm_enabled: bool = False
    # How long a "timeout" fault holds a call before answering 604 (past any sane client timeout).
    timeout_hold_s: int = 300

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply a partial update; returns a list of problems (nothing applied if any)."""
        known = {f.name: f for f in fields(self)}
        problems: list[str] = []
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "reset_counters":
                continue
            if key not in known:
                problems.append(f"unknown setting '{key}'")
                continue
            if key in ("allow_query_token", "crm_enabled"):
                if not isinstance(value, bool):
                    problems.append(f"'{key}' must be a boolean")
                    continue
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"'{key}' must be a non-negative integer")
                continue
            elif key == "token_ttl_s" and value < 1:
                problems.append("'token_ttl_s' must be at least 1")
                continue
            clean[key] = value
        if not problems:
            for key, value in clean.items():
                setattr(self, key, value)
        return problems


class Counters:
    """Mutable counters; touched only from the event loop thread, so no locking is needed."""

    def __init__(self) -> None:
        self.window: collections.deque[float] = collections.deque()
        self.inflight = 0
        self.peak_inflight = 0  # most calls in flight at once since the last stats reset
        self.day = marketo_day()
        self.daily_total = 0
        self.usage: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.errors: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.calls = 0
        self.by_endpoint: collections.Counter[str] = collections.Counter()
        self.limit_errors: dict[str, int] = {"606": 0, "615": 0, "607": 0}
        # errors returned per code since the last stats reset (response-level codes, "HTTP 413" style
        # keys for HTTP-level refusals and injected HTTP faults), and record-level reasons
        self.error_tally: collections.Counter[str] = collections.Counter()
        self.reason_tally: collections.Counter[str] = collections.Counter()
        self.faulted = 0

    def reset_stats(self) -> None:
        """``POST /_sandbox/stats/reset``: zero the call/error tallies; the daily quota count and the rate
        window are left alone (they are limits, not statistics: see ``reset_counters``)."""
        self.calls = 0
        self.peak_inflight = self.inflight
        self.by_endpoint.clear()
        self.limit_errors = {"606": 0, "615": 0, "607": 0}
        self.error_tally.clear()
        self.reason_tally.clear()
        self.faulted = 0

    def record_reasons(self, results: list[Any]) -> None:
        for item in results:
            if isinstance(item, dict):
                for reason in item.get("reasons") or ():
                    self.reason_tally[str(reason.get("code"))] += 1

    def _roll_day(self) -> str:
        today = marketo_day()
        if today != self.day:
            self.day = today
            self.daily_total = 0
            for old in sorted(self.usage)[:-8]:
                del self.usage[old]
            for old in sorted(self.errors)[:-8]:
                del self.errors[old]
        return today

    def reset(self) -> None:
        """``reset_counters``: empty the rate window and today's count (and the /_sandbox/stats tallies)."""
        today = self._roll_day()
        self.window.clear()
        self.daily_total = 0
        self.usage.pop(today, None)
        self.errors.pop(today, None)
        self.calls = 0
        self.peak_inflight = self.inflight
        self.by_endpoint.clear()
        self.limit_errors = {"606": 0, "615": 0, "607": 0}
        self.error_tally.clear()
        self.reason_tally.clear()

    def admit(self, settings: LimitSettings, user: str, endpoint: str) -> tuple[str, str] | None:
        """Count the call, or return the (code, message) that refuses it."""
        today = self._roll_day()
        now = time.monotonic()
        while self.window and now - self.window[0] >= WINDOW_S:
            self.window.popleft()
        refusal: tuple[str, str] | None = None
        if self.daily_total >= settings.daily_quota:
            refusal = ("607", "Daily quota reached")
        elif len(self.window) >= settings.calls_per_20s:
            refusal = ("606", f"Max rate limit '{settings.calls_per_20s}' exceeded with in '{int(WINDOW_S)}' secs")
        elif self.inflight >= settings.max_concurrent:
            refusal = ("615", "Concurrent access limit reached")
        if refusal is not None:
            self.limit_errors[refusal[0]] += 1
            self.errors[today][refusal[0]] += 1
            self.error_tally[refusal[0]] += 1
            return refusal
        self.window.append(now)
        self.daily_total += 1
        self.usage[today][user] += 1
        self.calls += 1
        self.by_endpoint[endpoint] += 1
        return None

    def record_error(self, code: str) -> None:
        self.errors[self._roll_day()][code] += 1
        self.error_tally[code] += 1

    def record_http(self, status: int) -> None:
        self.error_tally[f"HTTP {status}"] += 1

    def usage_days(self, days: int) -> list[dict[str, Any]]:
        """Result items of ``stats/usage.json`` (days=1) and ``usage/last7days.json`` (days=7)."""
        today = self._roll_day()
        out = []
        for i in range(days):
            day = (dt.date.fromisoformat(today) - dt.timedelta(days=i)).isoformat()
            counts = self.usage.get(day, collections.Counter())
            out.append(
                {
                    "date": day,
                    "total": sum(counts.values()),
                    "users": [{"userId": u, "count": c} for u, c in sorted(counts.items())],
                }
            )
        return out

    def error_days(self, days: int) -> list[dict[str, Any]]:
        today = self._roll_day()
        out = []
        for i in range(days):
            day = (dt.date.fromisoformat(today) - dt.timedelta(days=i)).isoformat()
            counts = self.errors.get(day, collections.Counter())
            out.append(
                {
                    "date": day,
                    "total": sum(counts.values()),
                    "errors": [{"errorCode": c, "count": n} for c, n in sorted(counts.items())],
                }
            )
        return out
