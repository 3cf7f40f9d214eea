"""The API budget panel: Marketo's daily quota as the sync's connection sees it, and Dataverse's limits.

Marketo counts every call against one daily quota per subscription, shared with the customer's other
integrations, and the sync spends only its share of it (MarketoHook.daily_budget). Reading today's usage
is itself a call, so it is cached (DYNAMICS_SYNC_UI_USAGE_CACHE_S, default 60 s): page views cost at most
one call a minute per api-server process, whatever the number of people watching. Marketo being
unreachable (or refusing the call) is a result the page shows, never an error page, and it is retried no
sooner than the next cache expiry either.

Dataverse has no daily quota the sync spends; its service protection limits are per user and per web
server over a 5-minute sliding window, answered with 429 and Retry-After, so the page states them as they
are rather than inventing a "used today" figure.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CACHE_ENV, CACHE_DEFAULT_S = "DYNAMICS_SYNC_UI_USAGE_CACHE_S", 60.0
USAGE_TIMEOUT_S = 5.0  # a page must not hang on a slow Marketo; the hook's own default is 60 s
MARKETO_RATE = "100 calls per 20 s and 10 concurrent calls per instance, shared by every integration"
MARKETO_RESET = "midnight US Central"
# ../shared/reference/dynamics-api.md, section 11 (learn.microsoft.com .../data-platform/api-limits)
DYNAMICS_LIMITS = (
    ("Requests", "6,000 per user per web server, over a 5-minute sliding window"),
    ("Execution time", "1,200 s combined, over the same 5-minute window"),
    ("Concurrent requests", "52 per user"),
    ("Daily quota", "none for the sync to spend (Power Platform entitlement limits are counted apart)"),
    ("When exceeded", "HTTP 429 with Retry-After; the hook waits and retries"),
)


@dataclass(frozen=True)
class MarketoBudget:
    """Today's Marketo usage against the quota and the sync's share of it, or why it could not be read."""

    fetched_at: dt.datetime
    used_today: int | None = None
    daily_quota: int | None = None
    budget_share: float | None = None
    daily_budget: int | None = None
    calls_per_20s: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def budget_left(self) -> int | None:
        if self.used_today is None or self.daily_budget is None:
            return None
        return max(self.daily_budget - self.used_today, 0)

    def percent_of(self, total: int | None) -> float | None:
        if self.used_today is None or not total:
            return None
        return round(100.0 * self.used_today / total, 1)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "error": self.error, "fetched_at": self.fetched_at.isoformat(),
            "used_today": self.used_today, "daily_quota": self.daily_quota, "budget_share": self.budget_share,
            "daily_budget": self.daily_budget, "budget_left": self.budget_left,
            "percent_of_budget": self.percent_of(self.daily_budget),
            "percent_of_quota": self.percent_of(self.daily_quota), "calls_per_20s": self.calls_per_20s,
            "quota_resets": MARKETO_RESET, "marketo_limits": MARKETO_RATE,
        }


def read_marketo_budget(conn_id: str = "marketo_default") -> MarketoBudget:
    """One usage call, with a short timeout and no retries (the next page view after the cache tries again)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    from dynamics_sync.errors import SyncError
    from dynamics_sync.hooks.marketo import MarketoHook

    now = dt.datetime.now(dt.UTC)
    hook = MarketoHook(conn_id)
    try:
        hook.get_conn()
        hook.max_attempts, hook.timeout = 1, min(hook.timeout, USAGE_TIMEOUT_S)
        extra = hook.get_connection(conn_id).extra_dejson
        used = hook.usage_today()
    except AirflowNotFoundException:
        return MarketoBudget(now, error=f"Marketo could not be read: no Airflow connection {conn_id!r} is defined")
    except SyncError as exc:  # the sync's own errors name the system and reason, never a secret
        return MarketoBudget(now, error=f"Marketo could not be read: {exc}")
    except Exception as exc:  # anything else (no connection, a malformed answer): its kind only
        return MarketoBudget(now, error=f"Marketo could not be read ({type(exc).__name__})")
    return MarketoBudget(now, used_today=used, daily_quota=int(extra.get("daily_quota", 50_000)),
                         budget_share=float(extra.get("budget_share", 0.8)), daily_budget=hook.daily_budget,
                         calls_per_20s=int(extra.get("calls_per_20s", 80)))


class BudgetCache:
    """Serves the last reading until it is `ttl_s` old; one reader at a time, so a burst of views makes one call."""

    def __init__(self, read: Callable[[], MarketoBudget] = read_marketo_budget, ttl_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._read, self._clock = read, clock
        self.ttl_s = float(os.environ.get(CACHE_ENV, CACHE_DEFAULT_S)) if ttl_s is None else ttl_s
        self._lock = threading.Lock()
        self._value: MarketoBudget | None = None
        self._read_at = 0.0

    def get(self) -> MarketoBudget:
        with self._lock:
            if self._value is None or self._clock() - self._read_at >= self.ttl_s:
                self._value, self._read_at = self._read(), self._clock()
            return self._value
