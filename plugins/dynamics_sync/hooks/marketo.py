"""MarketoHook: the Marketo Engage REST API behind one Airflow connection.

Connection (type "marketo"): host = the instance's base URL (https://<munchkin>.mktorest.com, or the
sandbox's http://127.0.0.1:8081), login = client id, password = client secret. Extra (all optional):
munchkin_id, calls_per_20s (default 80, under Marketo's 100 shared by every integration; one window for all
task processes on the machine, where a call holds its place until 20 s after its answer, so a window of
the full 100 never draws a 606), max_concurrent (default 2: the calls a task process keeps in flight while it
writes a batch; the marketo_api pool's 4 slots make 8, under Marketo's 10), timeout_s, max_attempts,
backoff_base_s, daily_quota (the subscription's, default 50,000) and budget_share (this product's part of
it, default 0.8): the quota is shared with the customer's other integrations, so a load reserves its calls
against the day's usage (read from Marketo's own usage endpoint) and stops cleanly, before writing, when the
budget is spent.

The hook owns the token (reused until shortly before expires_in runs out, renewed on 601/602), keeps the
call rate under the limit by construction, and backs off on 606/615 and other transient codes. Marketo
answers errors with HTTP 200 and success:false, so every envelope is checked, not only the status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json as _json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from airflow.sdk import BaseHook

from dynamics_sync.errors import ApiError, AuthError, BudgetSpent, QuotaExhausted
from dynamics_sync.hooks.transport import RateLimiter, Retryable, send, with_backoff

BATCH = 300  # records per call and per page, Marketo's cap
RETRYABLE = {"502", "604", "606", "608", "611", "613", "615", "713", "1014", "1016", "1019", "1022", "1029"}
REAUTH = {"601", "602"}


class MarketoHook(BaseHook):
    conn_name_attr = "marketo_conn_id"
    default_conn_name = "marketo_default"
    conn_type = "marketo"
    hook_name = "Marketo Engage"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "Instance URL", "login": "Client ID", "password": "Client Secret"},
            "placeholders": {
                "host": "https://123-ABC-456.mktorest.com",
                "extra": '{"calls_per_20s": 80, "max_concurrent": 2, "budget_share": 0.8}',
            },
        }

    def __init__(self, marketo_conn_id: str = default_conn_name, priority: int = 0, **kwargs: Any):
        """`priority`: this hook's place in the machine's shared rate window when it is full (RateLimiter)."""
        super().__init__(**kwargs)
        self.marketo_conn_id = marketo_conn_id
        self.priority = priority
        self._session: requests.Session | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.calls = 0
        self._used_at_start: int | None = None

    # ---- connection ------------------------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        if self._session is None:
            conn = self.get_connection(self.marketo_conn_id)
            if not conn.host or not conn.login or not conn.password:
                raise AuthError(
                    f"Marketo connection {self.marketo_conn_id!r} needs host (instance URL), "
                    "login (client id) and password (client secret)"
                )
            extra = conn.extra_dejson
            base = conn.host.rstrip("/")
            if "://" not in base:
                base = f"https://{base}"
            self.base_url = base
            self.rest_url = extra.get("rest_url", f"{base}/rest").rstrip("/")
            self.identity_url = extra.get("identity_url", f"{base}/identity").rstrip("/")
            self._client_id, self._client_secret = conn.login, conn.password
            self.timeout = float(extra.get("timeout_s", 60))
            self.max_attempts = int(extra.get("max_attempts", 6))
            self.backoff_base_s = float(extra.get("backoff_base_s", 2.0))
            # One window for every task process on this machine using this API account (see RateLimiter).
            account = hashlib.sha256(f"{base}|{conn.login}".encode()).hexdigest()[:16]
            self.max_concurrent = max(1, int(extra.get("max_concurrent", 2)))
            self.limiter = RateLimiter(
                calls=int(extra.get("calls_per_20s", 80)),
                window_s=20.0,
                max_concurrent=self.max_concurrent,
                shared=Path(tempfile.gettempdir()) / f"dynamics-sync-marketo-{account}.window",
                priority=self.priority,
                max_call_s=self.timeout + 5,
            )
            self.daily_budget = int(int(extra.get("daily_quota", 50_000)) * float(extra.get("budget_share", 0.8)))
            self._session = requests.Session()
        return self._session

    # ---- the daily budget -------------------------------------------------------------------------

    def usage_today(self) -> int:
        """Calls the whole subscription made today (Marketo's day), from the usage endpoint."""
        days = self.call("GET", "/v1/stats/usage.json").get("result") or [{}]
        return int(days[0].get("total") or 0)

    def reserve(self, calls: int, what: str) -> None:
        """Claim `calls` of today's budget for `what`, or raise BudgetSpent before any of them is made.

        The usage is read once per hook (one call); later reservations add up locally.
        """
        self.get_conn()
        if self._used_at_start is None:
            self._used_at_start = self.usage_today()
        planned = self._used_at_start + self.calls + calls
        if planned > self.daily_budget:
            raise BudgetSpent(
                f"Marketo daily budget for this sync reached: {what} needs {calls} calls, "
                f"{self._used_at_start + self.calls} of the {self.daily_budget} budgeted are used today; "
                "none of them was made (parts of a copy committed before are kept), and the next run after the "
                "quota resets (midnight US Central) resumes from the same watermark"
            )

    def _access_token(self, force: bool = False) -> str:
        session = self.get_conn()
        with self._token_lock:
            if force or not self._token or time.monotonic() > self._token_expires - 60:
                response = send(
                    session,
                    "GET",
                    f"{self.identity_url}/oauth/token",
                    system="Marketo identity",
                    timeout=self.timeout,
                    params={
                        "grant_type": "client_credentials",
                        "client_id": self._client_id,
                        "client_secret": self._client_secret,
                    },
                )
                if response.status_code in (400, 401, 403):
                    raise AuthError(
                        f"Marketo refused the credentials of connection {self.marketo_conn_id!r} "
                        f"(HTTP {response.status_code}); check its client id and secret"
                    )
                if response.status_code >= 300:
                    raise Retryable(f"identity endpoint answered HTTP {response.status_code}")
                body = response.json()
                self._token = body["access_token"]
                self._token_expires = time.monotonic() + float(body.get("expires_in", 0))
            return self._token

    # ---- the call ---------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One REST call with throttle, token renewal and backoff; returns the success envelope."""
        self.get_conn()
        return with_backoff(
            lambda: self._call_once(method, path, params=params, json=json, data=data),
            system="Marketo",
            attempts=self.max_attempts,
            base_s=self.backoff_base_s,
        )

    def _call_once(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        token = self._access_token()
        with self.limiter.call():
            with self._count_lock:
                self.calls += 1
            response = send(
                self.get_conn(),
                method,
                f"{self.rest_url}{path}",
                system="Marketo",
                timeout=self.timeout,
                headers={"Authorization": f"Bearer {token}"},
                **kwargs,
            )
        if response.status_code >= 500:
            raise Retryable(f"HTTP {response.status_code} on {path}")
        if response.status_code >= 400:
            raise ApiError("Marketo", str(response.status_code), response.text[:200], response.status_code)
        body = response.json()
        if body.get("success"):
            return body
        errors = body.get("errors") or [{"code": "?", "message": "success:false without errors"}]
        code, message = str(errors[0].get("code")), str(errors[0].get("message"))
        if code in REAUTH:
            self._access_token(force=True)
            raise Retryable(f"{code} {message}; renewed the token", delay=0)
        if code in RETRYABLE:
            raise Retryable(f"{code} {message}", delay=20.0 if code == "606" else None)
        if code == "607":
            raise QuotaExhausted(f"Marketo daily API quota reached (607: {message}); resume after it resets")
        if code in ("600", "603"):
            raise AuthError(f"Marketo refused access ({code}: {message})")
        raise ApiError("Marketo", code, message)

    # ---- leads ------------------------------------------------------------------------------------

    def get_leads(self, filter_type: str, values: Sequence[Any], fields: Sequence[str]) -> list[dict[str, Any]]:
        """Leads whose `filter_type` is one of `values`, 300 values a call, following nextPageToken.

        Sent as POST with _method=GET so that 300 long values never exceed the 8 KB URL limit.
        """
        found: list[dict[str, Any]] = []
        values = [str(v) for v in dict.fromkeys(values) if v is not None and str(v) != ""]
        for start in range(0, len(values), BATCH):
            form = {
                "filterType": filter_type,
                "filterValues": ",".join(values[start : start + BATCH]),
                "fields": ",".join(fields),
                "batchSize": str(BATCH),
            }
            while True:
                body = self.call("POST", "/v1/leads.json", params={"_method": "GET"}, data=form)
                found.extend(body.get("result") or [])
                token = body.get("nextPageToken")
                if not token or not body.get("result"):
                    break
                form = {**form, "nextPageToken": token}
        return found

    def sync_leads(
        self, records: Sequence[dict[str, Any]], *, action: str, lookup_field: str
    ) -> list[dict[str, Any]]:
        """Create/update leads 300 at a time; one result per input record, in input order."""
        chunks = -(-len(records) // BATCH)

        def send(index: int, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            body = self.call(
                "POST", "/v1/leads.json", json={"action": action, "lookupField": lookup_field, "input": chunk}
            )
            result = body.get("result") or []
            if len(result) != len(chunk):
                raise ApiError("Marketo", "result", f"sync answered {len(result)} results for {len(chunk)} records")
            self.log.info("Marketo %s chunk %d/%d: %d records, %s", action, index + 1, chunks, len(chunk),
                          dict(Counter(str(item.get("status")) for item in result)))
            return result

        return self._batches(records, send, key=lambda r: str(r.get(lookup_field, "")).strip().lower())

    def sync_objects(self, marketo_object: str, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Upsert Marketo objects (companies, opportunities, ...) by their dedupe fields, 300 at a time.

        One result per input record, in input order (Marketo numbers them with `seq`).
        """

        def send(index: int, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            body = self.call("POST", f"/v1/{marketo_object}.json",
                             json={"action": "createOrUpdate", "dedupeBy": "dedupeFields", "input": chunk})
            result = sorted(body.get("result") or [], key=lambda item: int(item.get("seq", 0)))
            if len(result) != len(chunk):
                raise ApiError("Marketo", "result", f"sync answered {len(result)} results for {len(chunk)} records")
            self.log.info("Marketo %s chunk %d: %d records, %s", marketo_object, index + 1, len(chunk),
                          dict(Counter(str(item.get("status")) for item in result)))
            return result

        return self._batches(records, send, key=lambda r: _json.dumps(r, sort_keys=True, default=str))

    def _batches(self, records: Sequence[dict[str, Any]],
                 send: Callable[[int, list[dict[str, Any]]], list[dict[str, Any]]],
                 key: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
        """Send `records` 300 a call with up to max_concurrent calls in flight; results in input order.

        One call at a time leaves the rate window idle while Marketo answers (150 ms of latency plus the
        upsert itself), so a lone load could not reach the published rate; the limiter still keeps every
        process under it. Calls in flight at once have no order between them, so records that share a key
        (two Dynamics leads with one email) go in successive rounds: the second sees the first's person
        (1005 "already exists") exactly as it would one call later. The first failure is raised once the
        calls already in flight have ended (nothing is left half-sent); calls not yet started are dropped.
        """
        self.get_conn()
        results: list[dict[str, Any] | None] = [None] * len(records)
        for positions in _rounds(records, key):
            chunks = [positions[start : start + BATCH] for start in range(0, len(positions), BATCH)]
            workers = max(1, min(self.max_concurrent, len(chunks)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="marketo-call") as pool:
                futures = [pool.submit(send, i, [records[p] for p in chunk]) for i, chunk in enumerate(chunks)]
                try:
                    for chunk, future in zip(chunks, futures, strict=True):
                        for position, answer in zip(chunk, future.result(), strict=True):
                            results[position] = answer
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        return [r for r in results if r is not None]

    def describe_leads(self) -> list[dict[str, Any]]:
        return self.call("GET", "/v1/leads/describe.json").get("result") or []

    def describe_object(self, marketo_object: str) -> dict[str, Any]:
        """A company/opportunity/role/sales person/custom object type: fields, idField, dedupeFields."""
        result = self.call("GET", f"/v1/{marketo_object}/describe.json").get("result") or [{}]
        return result[0]

    # ---- change feed ------------------------------------------------------------------------------

    def paging_token(self, since: dt.datetime) -> str:
        since_text = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.call("GET", "/v1/activities/pagingtoken.json", params={"sinceDatetime": since_text})[
            "nextPageToken"
        ]

    def lead_changes(
        self, fields: Sequence[str], *, token: str | None = None, since: dt.datetime | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Pages of New Lead and Change Data Value activities, oldest first, with the token after each page.

        Start from `token` (a position kept from the last run: nothing is read twice) or, without one, from
        `since`. The token after the last page is the next run's watermark.
        """
        return self._activity_pages("/v1/activities/leadchanges.json", {"fields": ",".join(fields)}, token, since)

    def activities(
        self, type_ids: Sequence[int], *, token: str | None = None, since: dt.datetime | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Pages of activities of the given types (at most 10), like lead_changes."""
        params = {"activityTypeIds": ",".join(str(t) for t in type_ids)}
        return self._activity_pages("/v1/activities.json", params, token, since)

    def _activity_pages(
        self, path: str, params: dict[str, Any], token: str | None, since: dt.datetime | None
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        if token is None:
            if since is None:
                raise ValueError(f"{path} needs a paging token or a start time")
            token = self.paging_token(since)
        while True:
            body = self.call("GET", path, params={**params, "nextPageToken": token, "batchSize": BATCH})
            token = body.get("nextPageToken") or token
            yield body.get("result") or [], token
            if not body.get("moreResult"):
                return

    # ---- custom activities --------------------------------------------------------------------------

    def ensure_activity_type(self, definition: dict[str, Any], attributes: Sequence[dict[str, Any]]) -> int:
        """The id of the approved custom activity type `definition["apiName"]`, creating it if missing."""
        api_name = definition["apiName"]
        for item in self.call("GET", "/v1/activities/external/types.json").get("result") or []:
            if item.get("apiName") == api_name and item.get("status") == "approved":
                return int(item["id"])
            if item.get("apiName") == api_name:
                break
        else:
            self.call("POST", "/v1/activities/external/type.json", json=definition)
            self.call("POST", f"/v1/activities/external/type/{api_name}/attributes/create.json",
                      json={"apiName": api_name, "attribute": list(attributes)})
        [approved] = self.call("POST", f"/v1/activities/external/type/{api_name}/approve.json")["result"]
        return int(approved["id"])

    def add_activities(self, activities: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add custom activities to people, 300 a call; one result per activity, in order."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(activities), BATCH):
            chunk = list(activities[start : start + BATCH])
            body = self.call("POST", "/v1/activities/external.json", json={"input": chunk})
            results.extend(body.get("result") or [])
        return results

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.describe_leads()
        except Exception as exc:  # the UI shows the message; our errors never carry secrets
            return False, str(exc)
        return True, "Connected to Marketo: token issued and leads/describe answered"


def _rounds(records: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> list[list[int]]:
    """Positions of `records` in rounds: round k holds every key's k-th record, in input order."""
    seen: Counter[str] = Counter()
    rounds: list[list[int]] = []
    for position, record in enumerate(records):
        k = key(record)
        if seen[k] == len(rounds):
            rounds.append([])
        rounds[seen[k]].append(position)
        seen[k] += 1
    return rounds
