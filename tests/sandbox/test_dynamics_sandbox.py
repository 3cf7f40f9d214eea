"""Integration tests of the local Entra ID + Dataverse Web API sandbox, over real HTTPS.

The server runs in a subprocess exactly as developers start it (``python -m include.sandbox.dynamics``)
on a free port with a temporary state directory; every request verifies the sandbox's own CA. MSAL's
ConfidentialClientApplication signs in unchanged. ``verify=`` is passed per request because this
machine exports REQUESTS_CA_BUNDLE, which would override a Session's ``verify`` attribute.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msal
import pytest
import requests

from include.runtime.sandboxes import SandboxProcess, free_port

DEFAULT_LIMITS = {"requests_per_300s": 6000, "max_concurrent": 52, "latency_ms": 0, "token_ttl_s": 3599,
                  "delta_token_ttl_s": 604800, "strict_required": False}




class Sandbox:
    def __init__(self, base: str, ca: str) -> None:
        self.base, self.ca = base, ca
        self.info: dict[str, Any] = self.get("/_sandbox/info").json()
        self.api: str = self.info["api_url"]
        self.http = requests.Session()

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.base + path, verify=self.ca, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.base + path, verify=self.ca, timeout=60, **kw)

    def token(self, user: bool = False) -> str:
        prefix = "user_" if user else ""
        r = self.post(f"/{self.info['tenant_id']}/oauth2/v2.0/token", data={
            "client_id": self.info[f"{prefix}client_id"], "client_secret": self.info[f"{prefix}client_secret"],
            "grant_type": "client_credentials", "scope": self.info["resource_url"] + "/.default"})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def call(self, method: str, url: str, token: str, headers: dict[str, str] | None = None,
             **kw: Any) -> requests.Response:
        h = {"Authorization": f"Bearer {token}", "Accept": "application/json", "OData-Version": "4.0",
             "OData-MaxVersion": "4.0", "If-None-Match": "null"}
        h.update(headers or {})
        full = url if url.startswith("https://") else self.api + url
        return self.http.request(method, full, headers=h, verify=self.ca, timeout=60, **kw)

    def limits(self, **values: Any) -> dict[str, Any]:
        r = self.post("/_sandbox/limits", json=values)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    state = tmp_path_factory.mktemp("dynamics-sandbox")
    with SandboxProcess("dynamics", free_port(), state, state / "server.log") as box:
        yield Sandbox(box.url, str(box.ca_file))


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """Fresh data and default limits for each test."""
    sandbox.limits(**DEFAULT_LIMITS, reset_counters=True)
    assert sandbox.post("/_sandbox/reset").ok
    yield sandbox
    sandbox.limits(**DEFAULT_LIMITS, reset_counters=True)


class VerifyingHttpClient:
    """The http_client MSAL accepts, passing the sandbox CA on every request."""

    def __init__(self, ca: str) -> None:
        self.ca, self.session = ca, requests.Session()

    def get(self, url: str, params: Any = None, headers: Any = None, **kw: Any) -> requests.Response:
        return self.session.get(url, params=params, headers=headers, verify=self.ca, **kw)

    def post(self, url: str, params: Any = None, data: Any = None, headers: Any = None,
             **kw: Any) -> requests.Response:
        return self.session.post(url, params=params, data=data, headers=headers, verify=self.ca, **kw)

    def close(self) -> None:
        self.session.close()


def _msal(sb: Sandbox, secret: str) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sb.info["client_id"], client_credential=secret, authority=sb.info["authority"],
        instance_discovery=False, http_client=VerifyingHttpClient(sb.ca))


def _jwt_payload(token: str) -> dict[str, Any]:
    parts = token.split(".")
    assert len(parts) == 3
    return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))


def _entity_id(response: requests.Response) -> str:
    m = re.fullmatch(r"https://127\.0\.0\.1:\d+/api/data/v9\.2/(\w+)\(([0-9a-f-]{36})\)",
                     response.headers["OData-EntityId"])
    assert m, response.headers["OData-EntityId"]
    return m.group(2)


def _seed(sb: Sandbox, **body: Any) -> dict[str, Any]:
    r = sb.post("/_sandbox/seed", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _error(r: Any, status: int, code: str) -> str:
    """The Dataverse error of a refused request: checks its status and code, returns its message."""
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code, err
    return err["message"]


def _collect(sb: Sandbox, url: str, token: str, prefer: str) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    rows: list[dict[str, Any]] = []
    pages = 0
    while True:
        r = sb.call("GET", url, token, {"Prefer": prefer})
        assert r.status_code == 200, r.text
        body = r.json()
        rows += body["value"]
        pages += 1
        if "@odata.nextLink" not in body:
            return rows, body, pages
        url = body["@odata.nextLink"]
        assert url.startswith(sb.api)


# ------------------------------------------------------------------------------------ sign-in
def test_msal_gets_a_token_and_rejects_a_bad_secret(sb: Sandbox) -> None:
    result = _msal(sb, sb.info["client_secret"]).acquire_token_for_client([sb.info["resource_url"] + "/.default"])
    assert result.get("token_type") == "Bearer", result
    assert result["expires_in"] > 3000
    claims = _jwt_payload(result["access_token"])
    assert claims["aud"] == sb.info["resource_url"]
    assert claims["tid"] == sb.info["tenant_id"] and claims["appid"] == sb.info["client_id"]
    assert {"iss", "oid", "exp"} <= set(claims)
    r = sb.call("GET", "WhoAmI", result["access_token"])
    assert r.status_code == 200 and r.json()["UserId"] == sb.info["sync_user_id"]

    bad = _msal(sb, "not-the-secret").acquire_token_for_client([sb.info["resource_url"] + "/.default"])
    assert bad.get("error") == "invalid_client" and 7000215 in bad["error_codes"], bad
    assert bad["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")


def test_token_endpoint_errors(sb: Sandbox) -> None:
    tenant, resource = sb.info["tenant_id"], sb.info["resource_url"]
    form = {"client_id": sb.info["client_id"], "client_secret": sb.info["client_secret"],
            "grant_type": "client_credentials", "scope": resource + "/.default"}
    unknown = sb.post(f"/{tenant}/oauth2/v2.0/token", data={**form, "client_id": str(uuid.uuid4())})
    assert unknown.status_code == 400 and unknown.json()["error"] == "unauthorized_client"
    assert unknown.json()["error_codes"] == [700016]
    scope = sb.post(f"/{tenant}/oauth2/v2.0/token", data={**form, "scope": "https://other.example/.default"})
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    assert scope.json()["error_codes"] == [70011]
    no_tenant = sb.post(f"/{uuid.uuid4()}/oauth2/v2.0/token", data=form)
    assert no_tenant.status_code == 400 and no_tenant.json()["error_codes"] == [90002]
    basic = base64.b64encode(f"{form['client_id']}:{form['client_secret']}".encode()).decode()
    ok = sb.post(f"/{tenant}/oauth2/v2.0/token", data={k: v for k, v in form.items() if k != "client_secret"},
                 headers={"Authorization": f"Basic {basic}"})
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer"
    oidc = sb.get(f"/{tenant}/v2.0/.well-known/openid-configuration").json()
    assert oidc["token_endpoint"] == f"{sb.info['authority']}/oauth2/v2.0/token"
    assert oidc["authorization_endpoint"] == f"{sb.info['authority']}/oauth2/v2.0/authorize"


def test_web_api_requires_a_valid_token(sb: Sandbox) -> None:
    r = requests.get(sb.api + "leads", verify=sb.ca, timeout=30)
    assert r.status_code == 401 and r.content == b""
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith(f"Bearer authorization_uri={sb.info['authority']}/oauth2/authorize")
    assert f"resource_id={sb.info['resource_url']}" in challenge
    sb.limits(token_ttl_s=0)
    expired = sb.token()
    sb.limits(token_ttl_s=3599)
    r = sb.call("GET", "leads", expired)
    assert r.status_code == 401 and "error" in r.json()
    assert sb.call("GET", "leads", "eyJ0eXAiOiJKV1QifQ.e30.c2ln").status_code == 401


def test_service_document_and_whoami(sb: Sandbox) -> None:
    user = sb.token(user=True)
    doc = sb.call("GET", "", user).json()
    assert doc["@odata.context"] == sb.api + "$metadata"
    assert {"name": "leads", "kind": "EntitySet", "url": "leads"} in doc["value"]
    who = sb.call("GET", "WhoAmI", user)
    assert who.status_code == 200
    assert who.json()["UserId"] == sb.info["user_id"]
    assert who.json()["@odata.context"].endswith("$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse")
    assert sb.call("POST", "WhoAmI", user).status_code == 404


# ------------------------------------------------------------------------------------ queries
def test_select_filter_top_and_paging(sb: Sandbox) -> None:
    assert sb.post("/_sandbox/seed", json={"leads": 30, "contacts": 4, "seed": 42}).json() == {
        "ok": True, "leads": 30, "contacts": 4}
    tok = sb.token()
    r = sb.call("GET", "leads?$select=firstname,lastname,emailaddress1&$filter=emailaddress1 eq "
                       "'lead00007@example.com'", tok)
    body = r.json()
    assert body["@odata.context"] == sb.api + "$metadata#leads(firstname,lastname,emailaddress1)"
    [row] = body["value"]
    assert set(row) == {"@odata.etag", "firstname", "lastname", "emailaddress1", "leadid"}
    assert re.fullmatch(r'W/"\d+"', row["@odata.etag"])

    top = sb.call("GET", "leads?$select=emailaddress1&$orderby=emailaddress1 desc&$top=3", tok).json()
    assert [v["emailaddress1"] for v in top["value"]] == [f"lead000{i}@example.com" for i in (29, 28, 27)]
    assert "@odata.nextLink" not in top

    rows, last, pages = _collect(sb, "leads?$select=emailaddress1,modifiedon&$count=true", tok, "odata.maxpagesize=7")
    assert pages == 5 and len(rows) == 30 and len({r["leadid"] for r in rows}) == 30
    assert last["@odata.count"] == 30
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[0]["modifiedon"])
    first = sb.call("GET", "leads?$select=emailaddress1", tok, {"Prefer": "odata.maxpagesize=7"})
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=7"
    assert "$skiptoken=" in first.json()["@odata.nextLink"]

    mine = sb.call("GET", f"leads?$select=fullname&$filter=_ownerid_value eq {sb.info['user_id']} and "
                          "(contains(emailaddress1,'lead0001') or startswith(lastname,'zz'))", tok).json()["value"]
    assert len(mine) == 10
    since = sb.call("GET", "leads?$select=leadid&$filter=modifiedon gt 2020-01-01T00:00:00Z and statecode eq 0",
                    tok).json()["value"]
    assert len(since) == 30
    annotated = sb.call("GET", "leads?$select=statecode,_ownerid_value&$top=1", tok,
                        {"Prefer": 'odata.include-annotations="*"'}).json()["value"][0]
    assert annotated["statecode@OData.Community.Display.V1.FormattedValue"] == "Open"
    assert annotated["_ownerid_value@OData.Community.Display.V1.FormattedValue"] == "Dana Seller"
    assert annotated["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "systemuser"

    bad = sb.call("GET", "leads?$select=nosuchcolumn", tok)
    assert bad.status_code == 400 and bad.json()["error"] == {
        "code": "0x80060888", "message": "Could not find a property named 'nosuchcolumn' on type "
                                         "'Microsoft.Dynamics.CRM.lead'."}
    skip = sb.call("GET", "leads?$skip=5", tok)
    assert skip.status_code == 400 and "$skip is not supported" in skip.json()["error"]["message"]
    missing = sb.call("GET", "widgets", tok)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "0x8006088a"
    row_id = str(uuid.uuid4())
    gone = sb.call("GET", f"leads({row_id})?$select=firstname", tok)
    assert gone.status_code == 404
    assert gone.json()["error"] == {"code": "0x80040217", "message": f"lead With Id = {row_id} Does Not Exist"}


def test_change_tracking_delta_with_updates_and_deletes(sb: Sandbox) -> None:
    sb.post("/_sandbox/seed", json={"leads": 12, "contacts": 0, "seed": 1})
    sync, user = sb.token(), sb.token(user=True)
    select = "leads?$select=firstname,lastname,_modifiedby_value"
    rows, last, pages = _collect(sb, select, sync, "odata.track-changes, odata.maxpagesize=5")
    assert pages == 3 and len(rows) == 12
    delta_link = last["@odata.deltaLink"]
    assert re.search(r"\$deltatoken=\d+%21\d\d%2F\d\d%2F\d{4}%20\d\d%3A\d\d%3A\d\d$", delta_link), delta_link
    assert delta_link.startswith(sb.api + "leads?$select=firstname,lastname,_modifiedby_value&")

    changed, deleted = rows[0]["leadid"], rows[1]["leadid"]
    assert sb.call("PATCH", f"leads({changed})", user, json={"firstname": "Edited"},
                   headers={"If-Match": "*"}).status_code == 204
    assert sb.call("DELETE", f"leads({deleted})", user).status_code == 204
    created = _entity_id(sb.call("POST", "leads", sync, json={"lastname": "Brand-New"}))

    r = sb.call("GET", delta_link, sync, {"Prefer": "odata.track-changes"})
    body = r.json()
    assert body["@odata.context"] == sb.api + "$metadata#leads(firstname,lastname,_modifiedby_value)/$delta"
    values = body["value"]
    assert [v.get("leadid") for v in values[:2]] == [changed, created]
    assert values[0]["firstname"] == "Edited" and values[0]["_modifiedby_value"] == sb.info["user_id"]
    assert values[1]["_modifiedby_value"] == sb.info["sync_user_id"]
    assert values[2] == {"@odata.context": sb.api + "$metadata#leads/$deletedEntity", "id": deleted,
                         "reason": "deleted"}
    next_delta = body["@odata.deltaLink"]
    empty = sb.call("GET", next_delta, sync, {"Prefer": "odata.track-changes"}).json()
    assert empty["value"] == [] and "@odata.deltaLink" in empty

    rejected = sb.call("GET", "leads?$select=firstname&$filter=statecode eq 0", sync,
                       {"Prefer": "odata.track-changes"})
    assert rejected.status_code == 400
    assert rejected.json()["error"]["message"] == (
        'The "$filter" query parameter isn\'t supported when Change Tracking is enabled.')

    sb.limits(delta_token_ttl_s=0)
    time.sleep(1.1)
    expired = sb.call("GET", next_delta, sync, {"Prefer": "odata.track-changes"})
    assert expired.status_code == 400 and expired.json()["error"] == {
        "code": "0x80044352",
        "message": "Version stamp associated with the client has expired. Please perform a full sync."}


# ------------------------------------------------------------------------------------ writes
def test_create_upsert_and_conditional_writes(sb: Sandbox) -> None:
    tok = sb.token()
    r = sb.call("POST", "leads", tok, json={"firstname": "Ana", "lastname": "Diaz", "subject": "Hi",
                                              "emailaddress1": "ana@example.com", "createdon": "2001-01-01T00:00:00Z"})
    assert r.status_code == 204 and r.content == b""
    lead_id = _entity_id(r)
    row = sb.call("GET", f"leads({lead_id})?$select=fullname,createdon,_createdby_value,statecode,statuscode",
                  tok).json()
    assert row["fullname"] == "Ana Diaz" and row["statecode"] == 0 and row["statuscode"] == 1
    assert row["_createdby_value"] == sb.info["sync_user_id"] and not row["createdon"].startswith("2001")

    rep = sb.call("POST", "contacts?$select=fullname,emailaddress1", tok, {"Prefer": "return=representation"},
                  json={"firstname": "Bo", "lastname": "Li", "emailaddress1": "bo@example.com"})
    assert rep.status_code == 201 and rep.json()["fullname"] == "Bo Li" and rep.json()["contactid"]

    own_id = str(uuid.uuid4())
    assert _entity_id(sb.call("POST", "leads", tok, json={"leadid": own_id, "lastname": "Keyed"})) == own_id

    new_id = str(uuid.uuid4())
    update_only = sb.call("PATCH", f"leads({new_id})", tok, {"If-Match": "*"}, json={"lastname": "X"})
    assert update_only.status_code == 404 and update_only.json()["error"]["code"] == "0x80040217"
    upsert = sb.call("PATCH", f"leads({new_id})", tok, json={"lastname": "Upserted"})
    assert upsert.status_code == 204 and _entity_id(upsert) == new_id
    again = sb.call("PATCH", f"leads({new_id})", tok, json={"firstname": "Now"})
    assert again.status_code == 204 and _entity_id(again) == new_id
    create_only = sb.call("PATCH", f"leads({new_id})", tok, {"If-None-Match": "*"}, json={"lastname": "Y"})
    assert create_only.status_code == 412 and create_only.json()["error"] == {
        "code": "0x80040237", "message": "A record with matching key values already exists."}

    current = sb.call("GET", f"leads({new_id})?$select=fullname", tok)
    assert current.json()["fullname"] == "Now Upserted"
    etag = current.json()["@odata.etag"]
    stale = sb.call("PATCH", f"leads({new_id})", tok, {"If-Match": 'W/"1"'}, json={"lastname": "Z"})
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "0x80060882"
    assert sb.call("PATCH", f"leads({new_id})", tok, {"If-Match": etag}, json={"lastname": "Z"}).status_code == 204
    assert sb.call("DELETE", f"leads({new_id})", tok).status_code == 204
    assert sb.call("DELETE", f"leads({new_id})", tok).status_code == 404


def test_validation_errors_and_required_levels(sb: Sandbox) -> None:
    tok = sb.token()
    long = sb.call("POST", "leads", tok, json={"lastname": "x" * 51})
    assert long.status_code == 400 and long.json()["error"] == {
        "code": "0x80044331",
        "message": "A validation error occurred.  The length of the 'lastname' attribute of the 'lead' entity "
                   "exceeded the maximum allowed length of '50'."}
    unknown = sb.call("POST", "leads", tok, json={"lastname": "A", "shoe_size": 9})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "0x80048d19"
    assert "The property 'shoe_size' does not exist on type 'Microsoft.Dynamics.CRM.lead'" in \
        unknown.json()["error"]["message"]

    no_owner = sb.call("POST", "leads", tok, json={"lastname": "A", "ownerid@odata.bind": None})
    assert no_owner.status_code == 400 and no_owner.json()["error"]["code"] == "0x80040203"
    lead_id = _entity_id(sb.call("POST", "leads", tok, json={"firstname": "No last name"}))  # ApplicationRequired
    nulled = sb.call("PATCH", f"leads({lead_id})", tok, json={"statecode": None})
    assert nulled.status_code == 400 and nulled.json()["error"]["code"] == "0x80040203"
    owner = sb.call("PATCH", f"leads({lead_id})", tok,
                    json={"ownerid@odata.bind": f"/systemusers({sb.info['user_id']})"})
    assert owner.status_code == 204

    sb.limits(strict_required=True)
    strict = sb.call("POST", "leads", tok, json={"firstname": "Still no last name", "subject": "s"})
    assert strict.status_code == 400 and strict.json()["error"]["code"] == "0x80040203"


def test_batch_change_set_rolls_back(sb: Sandbox) -> None:
    tok = sb.token()
    kept = str(uuid.uuid4())

    def part(request: str, content_id: str | None = None) -> str:
        cid = f"Content-ID: {content_id}\r\n" if content_id else ""
        return f"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n{cid}\r\n{request}\r\n"

    body = (
        "--batch_A\r\n" + part(f"POST /api/data/v9.2/leads HTTP/1.1\r\nContent-Type: application/json; type=entry"
                              f"\r\n\r\n{json.dumps({'leadid': kept, 'lastname': 'Outside'})}")
        + "--batch_A\r\nContent-Type: multipart/mixed; boundary=changeset_B\r\n\r\n"
        + "--changeset_B\r\n" + part(f"POST {sb.api}leads HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                                     + json.dumps({"lastname": "Rolled", "emailaddress1": "rb@example.com"}), "1")
        + "--changeset_B\r\n" + part("PATCH $1 HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                                     + json.dumps({"firstname": "Then"}), "2")
        + "--changeset_B\r\n" + part("POST leads HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                                     + json.dumps({"lastname": "x" * 99}), "3")
        + "--changeset_B--\r\n"
        + "--batch_A\r\n" + part("GET leads?$select=lastname HTTP/1.1\r\nAccept: application/json\r\n")
        + "--batch_A--\r\n"
    )
    r = sb.call("POST", "$batch", tok, {"Content-Type": "multipart/mixed; boundary=batch_A",
                                        "Prefer": "odata.continue-on-error"}, data=body.encode())
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert re.findall(r"^HTTP/1\.1 (\d{3})", r.text, re.M) == ["204", "400", "200"]
    assert "0x80044331" in r.text and "Content-ID: 3" in r.text
    listing = json.loads(r.text[r.text.rindex('{"@odata.context"'):].split("\r\n")[0])
    assert [v["lastname"] for v in listing["value"]] == ["Outside"]
    rolled = sb.call("GET", "leads?$select=lastname&$filter=emailaddress1 eq 'rb@example.com'", tok).json()
    assert rolled["value"] == []

    good = (
        "--batch_C\r\nContent-Type: multipart/mixed; boundary=changeset_D\r\n\r\n"
        + "--changeset_D\r\n" + part(f"POST {sb.api}contacts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                                     + json.dumps({"firstname": "Cy", "lastname": "Old"}), "1")
        + "--changeset_D\r\n" + part("PUT $1/lastname HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                                     + json.dumps({"value": "New"}), "2")
        + "--changeset_D--\r\n--batch_C--\r\n"
    )
    r = sb.call("POST", "$batch", tok, {"Content-Type": 'multipart/mixed; boundary="batch_C"'}, data=good.encode())
    assert r.status_code == 200 and "--changesetresponse_" in r.text
    contact = sb.call("GET", "contacts?$select=fullname", tok).json()["value"]
    assert [c["fullname"] for c in contact] == ["Cy New"]

    stop = "--batch_E\r\n" + part("POST leads HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"bogus\": 1}") + \
        "--batch_E\r\n" + part("POST leads HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"lastname\": \"n\"}") + \
        "--batch_E--\r\n"
    r = sb.call("POST", "$batch", tok, {"Content-Type": "multipart/mixed; boundary=batch_E"}, data=stop.encode())
    assert r.status_code == 400 and re.findall(r"^HTTP/1\.1 (\d{3})", r.text, re.M) == ["400"]


# ------------------------------------------------------------------------------------ metadata
def test_entity_definitions_and_attributes(sb: Sandbox) -> None:
    tok = sb.token()
    found = sb.call("GET", "EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&"
                           "$filter=LogicalName eq 'lead'", tok).json()["value"]
    assert [(e["LogicalName"], e["EntitySetName"], e["PrimaryIdAttribute"]) for e in found] == [
        ("lead", "leads", "leadid")]
    assert sb.call("GET", "EntityDefinitions?$select=LogicalName&$filter=LogicalName eq 'nope'",
                   tok).json()["value"] == []
    entity = sb.call("GET", "EntityDefinitions(LogicalName='contact')?$select=LogicalName,ChangeTrackingEnabled",
                     tok).json()
    assert entity["ChangeTrackingEnabled"] is True

    attrs = sb.call("GET", "EntityDefinitions(LogicalName='lead')/Attributes?$select=LogicalName,AttributeType,"
                           "RequiredLevel,MaxLength,IsValidForCreate,IsValidForUpdate,IsValidForRead,IsSecured",
                    tok).json()["value"]
    by_name = {a["LogicalName"]: a for a in attrs}
    assert by_name["lastname"]["RequiredLevel"] == {
        "Value": "ApplicationRequired", "CanBeChanged": True,
        "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"}
    assert by_name["lastname"]["MaxLength"] == 50 and by_name["subject"]["MaxLength"] == 300
    assert by_name["statecode"]["RequiredLevel"]["Value"] == "SystemRequired"
    assert by_name["statecode"]["IsValidForCreate"] is False and by_name["createdon"]["IsValidForUpdate"] is False
    assert by_name["firstname"]["RequiredLevel"]["Value"] == "Recommended"

    picklists = sb.call("GET", "EntityDefinitions(LogicalName='lead')/Attributes/Microsoft.Dynamics.CRM."
                               "PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)",
                        tok)
    assert picklists.status_code == 200
    source = next(p for p in picklists.json()["value"] if p["LogicalName"] == "leadsourcecode")
    options = source["OptionSet"]["Options"]
    assert {"Value": 8, "Label": "Web"} in [
        {"Value": o["Value"], "Label": o["Label"]["UserLocalizedLabel"]["Label"]} for o in options]


# ------------------------------------------------------------------------------------ service protection
def test_service_protection_limits(sb: Sandbox) -> None:
    tok = sb.token()
    sb.limits(requests_per_300s=3, reset_counters=True)
    codes = [sb.call("GET", "WhoAmI", tok).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = sb.call("GET", "WhoAmI", tok)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert r.json()["error"] == {
        "code": "0x80072322", "message": "Number of requests exceeded the limit of 3 over time window of 300 seconds."}
    stats = sb.get("/_sandbox/stats").json()
    assert stats["throttled"] == 2 and stats["by_user"][sb.info["sync_user_id"]] == 5

    sb.limits(requests_per_300s=6000, max_concurrent=2, latency_ms=800, reset_counters=True)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: requests.get(
            sb.api + "WhoAmI", headers={"Authorization": f"Bearer {tok}"}, verify=sb.ca, timeout=30), range(5)))
    throttled = [x for x in results if x.status_code == 429]
    assert throttled and all(x.json()["error"]["code"] == "0x80072326" for x in throttled)
    assert any(x.status_code == 200 for x in results)
