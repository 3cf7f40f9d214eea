"""DynamicsHook: the Dataverse Web API behind one Airflow connection, signed in with MSAL.

Connection (type "dynamics"): host = the environment URL (https://<org>.crm.dynamics.com), login = the
app registration's client id, password = its client secret. Extra: tenant_id (required unless authority
is given), authority (default https://login.microsoftonline.com/<tenant_id>), ca_file (a CA bundle to
trust, e.g. the sandbox's locally generated CA), api_version (default 9.2), page_size (default 5000),
timeout_s, max_attempts, backoff_base_s.

TLS: requests lets REQUESTS_CA_BUNDLE override a Session's `verify`, so the CA file is passed on every
request (ours and MSAL's); verification is never turned off.

Tokens: MSAL renews its token before it runs out, but Dataverse may still reject one early (revoked, a
clock skewed); a 401 drops the cached token and retries once with a fresh one, and only a fresh token
rejected too is refused credentials. Entra ID answering 429/5xx is an outage, retried like Dataverse's.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook

from dynamics_sync.errors import ApiError, AuthError, ChangeTrackingExpired
from dynamics_sync.hooks.transport import Retryable, retry_after, send, with_backoff

MICROSOFT_HOSTS = {"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"}
ENTITY_ID = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")
ODATA_HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "If-None-Match": "null",
}
# Entra ID's answers that mean "try again later", not "these credentials are wrong".
TRANSIENT_TOKEN_ERRORS = {"temporarily_unavailable", "server_error"}
# Dataverse's answer to a delta link whose change-tracking version stamp has expired.
EXPIRED_DELTA = "0x80044352"


class _VerifyingHttpClient:
    """The http_client MSAL calls, passing `verify` per request so REQUESTS_CA_BUNDLE cannot override it."""

    def __init__(self, session: requests.Session, verify: str | bool, timeout: float):
        self.session, self.verify, self.timeout = session, verify, timeout

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return send(self.session, "GET", url, system="Entra ID", timeout=self.timeout, verify=self.verify, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return send(self.session, "POST", url, system="Entra ID", timeout=self.timeout, verify=self.verify, **kwargs)

    def close(self) -> None:
        pass


class DynamicsHook(BaseHook):
    conn_name_attr = "dynamics_conn_id"
    default_conn_name = "dynamics_default"
    conn_type = "dynamics"
    hook_name = "Microsoft Dynamics 365 (Dataverse)"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "Environment URL", "login": "Client ID", "password": "Client Secret"},
            "placeholders": {
                "host": "https://contoso.crm.dynamics.com",
                "extra": '{"tenant_id": "<directory (tenant) id>"}',
            },
        }

    def __init__(self, dynamics_conn_id: str = default_conn_name, **kwargs: Any):
        super().__init__(**kwargs)
        self.dynamics_conn_id = dynamics_conn_id
        self._session: requests.Session | None = None
        self._app: Any = None
        self._lock = threading.Lock()
        self._user_id: str | None = None
        self._token_rejected = False  # a token was rejected (401) and none has worked since
        self.calls = 0

    # ---- connection ------------------------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        if self._session is None:
            conn = self.get_connection(self.dynamics_conn_id)
            extra = conn.extra_dejson
            if not conn.host or not conn.login or not conn.password:
                raise AuthError(
                    f"Dynamics connection {self.dynamics_conn_id!r} needs host (environment URL), "
                    "login (client id) and password (client secret)"
                )
            authority = extra.get("authority")
            if not authority:
                if not extra.get("tenant_id"):
                    raise AuthError(f"Dynamics connection {self.dynamics_conn_id!r} needs extra.tenant_id")
                authority = f"https://login.microsoftonline.com/{extra['tenant_id']}"
            self.authority = authority.rstrip("/")
            self.resource_url = conn.host.rstrip("/")
            if "://" not in self.resource_url:
                self.resource_url = f"https://{self.resource_url}"
            self.api_url = f"{self.resource_url}/api/data/v{extra.get('api_version', '9.2')}/"
            self.verify: str | bool = extra.get("ca_file") or True
            self.page_size = int(extra.get("page_size", 5000))
            self.timeout = float(extra.get("timeout_s", 120))
            self.max_attempts = int(extra.get("max_attempts", 6))
            self.backoff_base_s = float(extra.get("backoff_base_s", 2.0))
            self._client_id, self._client_secret = conn.login, conn.password
            self._session = requests.Session()
        return self._session

    def _msal(self) -> Any:
        if self._app is None:
            import msal

            session = self.get_conn()
            custom_host = urlsplit(self.authority).hostname not in MICROSOFT_HOSTS
            try:
                self._app = msal.ConfidentialClientApplication(
                    self._client_id,
                    client_credential=self._client_secret,
                    authority=self.authority,
                    instance_discovery=not custom_host,
                    http_client=_VerifyingHttpClient(session, self.verify, self.timeout),
                )
            except ValueError as exc:
                raise AuthError(f"Entra ID authority {self.authority} is not usable: {exc}") from None
        return self._app

    def _access_token(self) -> str:
        from msal.exceptions import MsalServiceError

        with self._lock:
            try:
                result = self._msal().acquire_token_for_client(scopes=[f"{self.resource_url}/.default"])
            except MsalServiceError as exc:  # MSAL raises on a 5xx from the token endpoint
                self._app = None  # a new client next try: MSAL replays a 5xx from its cache for Retry-After
                raise Retryable(f"Entra ID token endpoint unavailable ({exc})") from None
        if "access_token" not in result:
            description = (str(result.get("error_description", "")).splitlines() or [""])[0][:300]
            if result.get("error") in TRANSIENT_TOKEN_ERRORS:  # Entra ID's 429 and outages
                with self._lock:
                    self._app = None
                raise Retryable(f"Entra ID token endpoint busy: {result.get('error')}: {description}")
            raise AuthError(
                f"Entra ID refused the credentials of connection {self.dynamics_conn_id!r}: "
                f"{result.get('error')}: {description}"
            )
        return result["access_token"]

    def _drop_token(self) -> None:
        """Forget the cached access token, so the next call asks Entra ID for a new one."""
        with self._lock:
            if self._app is not None:
                cache = self._app.token_cache
                for item in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
                    cache.remove_at(item)

    # ---- the call ---------------------------------------------------------------------------------

    def request(
        self, method: str, path_or_url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """One Web API call with token, OData headers and backoff on 429/5xx; raises ApiError on 4xx."""
        self.get_conn()
        url = path_or_url if "://" in path_or_url else self.api_url + path_or_url.lstrip("/")
        return with_backoff(
            lambda: self._request_once(method, url, headers or {}, kwargs),
            system="Dynamics",
            attempts=self.max_attempts,
            base_s=self.backoff_base_s,
        )

    def _request_once(self, method: str, url: str, headers: dict[str, str], kwargs: dict[str, Any]) -> Any:
        all_headers = {**ODATA_HEADERS, **headers, "Authorization": f"Bearer {self._access_token()}"}
        self.calls += 1
        response = send(
            self.get_conn(), method, url, system="Dynamics", timeout=self.timeout, verify=self.verify,
            headers=all_headers, **kwargs,
        )
        if response.status_code == 401:
            if self._token_rejected:
                raise AuthError("Dataverse refused a freshly issued access token (HTTP 401); check the application "
                                "user")
            # An expired or revoked token: one more try with a new one (a retry of the same call, at once).
            self._token_rejected = True
            self._drop_token()
            raise Retryable("Dataverse rejected the access token (HTTP 401); renewed the token", delay=0)
        self._token_rejected = False  # any other answer means the token was accepted
        if response.status_code == 429:
            raise Retryable("429 throttled by service protection", delay=retry_after(response, 5.0))
        if response.status_code >= 500:  # a 503 may say when to come back, too
            raise Retryable(f"HTTP {response.status_code} from {method} {urlsplit(url).path}",
                            delay=retry_after(response))
        if response.status_code >= 400:
            code, message = _error(response)
            if code == EXPIRED_DELTA or "version stamp associated with the client has expired" in message.lower():
                raise ChangeTrackingExpired("Dynamics", code, message, response.status_code)
            raise ApiError("Dynamics", code, message, response.status_code)
        return response

    # ---- queries ----------------------------------------------------------------------------------

    def pages(
        self, path_or_url: str, *, params: dict[str, str] | None = None, track_changes: bool = False
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Yield (rows, deltaLink) per page, following @odata.nextLink; deltaLink only on the last page."""
        self.get_conn()
        prefer = [f"odata.maxpagesize={self.page_size}"]
        if track_changes:
            prefer.append("odata.track-changes")
        headers = {"Prefer": ", ".join(prefer)}
        url: str | None = path_or_url
        entity_set = urlsplit(path_or_url).path.rsplit("/", 1)[-1]
        page = 0
        while url:
            body = self.request("GET", url, headers=headers, params=params).json()
            params = None  # the nextLink carries the query
            url = body.get("@odata.nextLink")
            page += 1
            rows = body.get("value", [])
            self.log.info("Dataverse %s page %d: %d rows", entity_set, page, len(rows))
            yield rows, body.get("@odata.deltaLink")

    def who_am_i(self) -> str:
        if self._user_id is None:
            self._user_id = self.request("GET", "WhoAmI").json()["UserId"]
        return self._user_id

    # ---- writes -----------------------------------------------------------------------------------

    def create(self, entity_set: str, body: dict[str, Any]) -> str:
        """Create a row; returns its id, read from the OData-EntityId header."""
        response = self.request("POST", entity_set, json=body, headers={"Content-Type": "application/json"})
        match = ENTITY_ID.search(response.headers.get("OData-EntityId", ""))
        if not match:
            raise ApiError("Dynamics", "no-id", f"create in {entity_set} answered without OData-EntityId")
        return match.group(1)

    def update(self, entity_set: str, row_id: str, body: dict[str, Any]) -> None:
        """Update an existing row only (If-Match: *), never an accidental upsert of a deleted row."""
        self.request(
            "PATCH", f"{entity_set}({row_id})", json=body,
            headers={"Content-Type": "application/json", "If-Match": "*"},
        )

    def update_multiple(self, entity_set: str, logical_name: str, key: str,
                        rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Update many existing rows in one call (the UpdateMultiple action). All or nothing: one bad row
        fails the call, so callers fall back to single updates to tell which."""
        targets = [{"@odata.type": f"Microsoft.Dynamics.CRM.{logical_name}", key: row_id, **body}
                   for row_id, body in rows]
        self.request("POST", f"{entity_set}/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": targets},
                     headers={"Content-Type": "application/json"})

    def test_connection(self) -> tuple[bool, str]:
        try:
            user = self.who_am_i()
        except Exception as exc:  # the UI shows the message; our errors never carry secrets
            return False, str(exc)
        return True, f"Connected to Dataverse as user {user}"


def _error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or response.status_code), str(error.get("message") or "")[:500]
    except ValueError:
        return str(response.status_code), response.text[:200]


def quote(value: str) -> str:
    """An OData string literal: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"
