"""The Marketo sandbox over real HTTP: identity, limits, lead reads/writes, change feeds, control surface.

One sandbox process (``python -m include.sandbox.marketo``) on a free port with a temporary state dir is
shared by the module; each test resets the data it relies on. Limits are relaxed at start and tightened
only inside the tests that exercise them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from include.runtime.sandboxes import SandboxProcess, free_port

RELAXED = {"calls_per_20s": 100000, "max_concurrent": 10, "daily_quota": 50000, "latency_ms": 0, "token_ttl_s": 3600,
           "allow_query_token": False, "reset_counters": True}




class Api:
    """A tiny Marketo client: token from identity, Bearer header, one re-auth on 601/602."""

    def __init__(self, base: str, client_id: str, client_secret: str) -> None:
        self.base = base
        self.client_id = client_id
        self.client_secret = client_secret
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            reply = requests.get(
                f"{self.base}/identity/oauth/token",
                params={"grant_type": "client_credentials", "client_id": self.client_id,
                        "client_secret": self.client_secret},
                timeout=10,
            )
            reply.raise_for_status()
            self._token = reply.json()["access_token"]
        return self._token

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
            reply = requests.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kwargs)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            codes = [e["code"] for e in body.get("errors", [])]
            if attempt == 0 and codes and codes[0] in ("601", "602"):
                self._token = None
                continue
            return body
        return body

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.call("GET", path, params=params)

    def sync(self, records: list[dict[str, Any]], **opts: Any) -> dict[str, Any]:
        return self.call("POST", "/rest/v1/leads.json", json={"input": records, **opts})


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("marketo-sandbox")
    with SandboxProcess("marketo", free_port(), state / "state", state / "server.log",
                        ("--log-level", "warning")) as sandbox:
        requests.post(f"{sandbox.url}/_sandbox/limits", json=RELAXED, timeout=10).raise_for_status()
        yield {"base": sandbox.url, "info": sandbox.info(), "state": state / "state"}


@pytest.fixture
def api(box: dict[str, Any]) -> Api:
    return Api(box["base"], box["info"]["client_id"], box["info"]["client_secret"])


@pytest.fixture
def user_api(box: dict[str, Any]) -> Api:
    return Api(box["base"], box["info"]["user_client_id"], box["info"]["user_client_secret"])


def _control(box: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = requests.post(f"{box['base']}/_sandbox/{path}", json=body or {}, timeout=120)
    reply.raise_for_status()
    return reply.json()


def _error(body: dict[str, Any]) -> tuple[str, str]:
    assert body["success"] is False, body
    assert "result" not in body
    return body["errors"][0]["code"], body["errors"][0]["message"]


def _drain(api: Api, path: str, token: str, **params: Any) -> tuple[list[dict[str, Any]], str]:
    """Follow an activity feed until moreResult is false; returns the items and the last token."""
    items: list[dict[str, Any]] = []
    for _ in range(1000):
        body = api.get(path, nextPageToken=token, **params)
        assert body["success"], body
        assert isinstance(body["moreResult"], bool)
        items.extend(body["result"])
        token = body["nextPageToken"]
        if not body["moreResult"]:
            return items, token
    raise AssertionError("feed did not end")


def _watermark(api: Api) -> str:
    token = api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2000-01-01T00:00:00Z")["nextPageToken"]
    return _drain(api, "/rest/v1/activities.json", token, activityTypeIds="12,13,32,37")[1]


# ------------------------------------------------------------------------------------------ identity
def test_info_has_promised_keys(box: dict[str, Any]) -> None:
    info = box["info"]
    for key in ("rest_url", "identity_url", "munchkin_id", "client_id", "client_secret", "user_client_id",
                "user_client_secret"):
        assert info[key], key
    assert info["rest_url"] == f"{box['base']}/rest"
    assert info["identity_url"] == f"{box['base']}/identity"
    assert len(info["client_secret"]) == 32 and info["client_secret"].isalnum()
    assert (box["state"] / "credentials.json").exists()


def test_credentials_are_reused_on_restart(tmp_path: Path) -> None:
    from include.sandbox.marketo import create_app

    first = create_app(tmp_path).state.ctx
    second = create_app(tmp_path).state.ctx
    assert first.creds == second.creds
    assert first.creds.munchkin_id[3] == "-" and len(first.creds.munchkin_id) == 11
    first.store.close()
    second.store.close()


def test_token_is_reused_until_expiry_and_bad_secret_is_401(box: dict[str, Any]) -> None:
    info, url = box["info"], f"{box['base']}/identity/oauth/token"
    params = {"grant_type": "client_credentials", "client_id": info["client_id"],
              "client_secret": info["client_secret"]}
    first = requests.get(url, params=params, timeout=10).json()
    second = requests.post(url, params=params, timeout=10).json()
    third = requests.post(url, data=params, timeout=10).json()
    assert first["access_token"] == second["access_token"] == third["access_token"]
    assert first["access_token"].endswith(":ab")
    assert first["token_type"] == "bearer" and 0 < second["expires_in"] <= 3600
    assert set(first) == {"access_token", "token_type", "expires_in", "scope"}
    user = requests.get(url, params={**params, "client_id": info["user_client_id"],
                                     "client_secret": info["user_client_secret"]}, timeout=10).json()
    assert user["access_token"] != first["access_token"] and user["scope"] != first["scope"]
    bad = requests.get(url, params={**params, "client_secret": "wrong"}, timeout=10)
    assert bad.status_code == 401
    assert bad.json() == {"error": "invalid_client", "error_description": "Bad client credentials"}


def test_auth_errors_600_601_602(box: dict[str, Any], api: Api) -> None:
    base = box["base"]
    no_token = requests.get(f"{base}/rest/v1/leads/describe.json", timeout=10)
    assert no_token.status_code == 200 and _error(no_token.json()) == ("600", "Empty access token")
    bogus = requests.get(f"{base}/rest/v1/leads/describe.json", headers={"Authorization": "Bearer nope:ab"}, timeout=10)
    assert _error(bogus.json()) == ("601", "Access token invalid")
    # query-string token only behind the switch
    query = requests.get(f"{base}/rest/v1/leads/describe.json", params={"access_token": api.token()}, timeout=10)
    assert _error(query.json())[0] == "600"
    _control(box, "limits", {"allow_query_token": True})
    query = requests.get(f"{base}/rest/v1/leads/describe.json", params={"access_token": api.token()}, timeout=10)
    assert query.json()["success"] is True
    _control(box, "limits", {"allow_query_token": False, "token_ttl_s": 1})
    try:
        api._token = None
        token = api.token()
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{base}/rest/v1/leads/describe.json", headers=headers, timeout=10).json()["success"]
        time.sleep(1.2)
        expired = requests.get(f"{base}/rest/v1/leads/describe.json", headers=headers, timeout=10)
        assert _error(expired.json()) == ("602", "Access token expired")
    finally:
        _control(box, "limits", {"token_ttl_s": 3600})
    api._token = None
    assert api.get("/rest/v1/leads/describe.json")["success"]


# ------------------------------------------------------------------------------------------ reads
def test_seed_is_deterministic_and_filter_reads_page(box: dict[str, Any], api: Api) -> None:
    _control(box, "reset")
    assert _control(box, "seed", {"people": 300, "overlap_leads": 10, "overlap_contacts": 5, "seed": 7}) == {
        "ok": True, "people": 300, "skipped_existing": 0}
    emails = [f"lead{i:05d}@example.com" for i in range(10)]
    first = api.get("/rest/v1/leads.json", filterType="email", filterValues=",".join(emails),
                    fields="email,firstName,lastName,phone,title,company")["result"]
    _control(box, "reset")
    _control(box, "seed", {"people": 300, "overlap_leads": 10, "overlap_contacts": 5, "seed": 7})
    again = api.get("/rest/v1/leads.json", filterType="email", filterValues=",".join(emails),
                    fields="email,firstName,lastName,phone,title,company")["result"]
    strip = [{k: v for k, v in r.items() if k != "id"} for r in first]
    assert strip == [{k: v for k, v in r.items() if k != "id"} for r in again]
    contact = api.get("/rest/v1/leads.json", filterType="email", filterValues="contact00004@example.com")["result"]
    person = api.get("/rest/v1/leads.json", filterType="email", filterValues="PERSON00284@example.com")["result"]
    assert len(contact) == 1 and len(person) == 1  # e-mail lookups ignore case
    assert set(person[0]) == {"id", "email", "updatedAt", "createdAt", "firstName", "lastName"}  # default fields

    pages, token = [], None
    while True:
        params: dict[str, Any] = {"filterType": "email", "filterValues": ",".join(emails), "batchSize": 4,
                                  "fields": "email,msdynLeadId"}
        if token:
            params["nextPageToken"] = token
        body = api.get("/rest/v1/leads.json", **params)
        pages.append(body)
        if not body["moreResult"]:
            assert "nextPageToken" not in body
            break
        token = body["nextPageToken"]
    assert [len(p["result"]) for p in pages] == [4, 4, 2]
    ids = [r["id"] for p in pages for r in p["result"]]
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert all(set(r) == {"id", "email"} for p in pages for r in p["result"])  # null msdynLeadId left out
    none = api.get("/rest/v1/leads.json", filterType="email", filterValues="nobody@example.com")
    assert none["success"] is True and none["result"] == []


def test_method_get_variants_match_plain_get(box: dict[str, Any], api: Api) -> None:
    values = "lead00001@example.com,lead00002@example.com"
    plain = api.get("/rest/v1/leads.json", filterType="email", filterValues=values, fields="email,firstName")
    in_body = api.call("POST", "/rest/v1/leads.json", data={
        "_method": "GET", "filterType": "email", "filterValues": values, "fields": ["email", "firstName"]})
    in_query = api.call("POST", "/rest/v1/leads.json", params={"_method": "GET"}, data={
        "filterType": "email", "filterValues": values, "fields": "email,firstName"})
    assert plain["result"] and plain["result"] == in_body["result"] == in_query["result"]
    by_id = api.call("GET", f"/rest/v1/lead/{plain['result'][0]['id']}.json", params=[("fields", "email"),
                                                                                      ("fields", "title")])
    assert by_id["result"][0]["email"] == "lead00001@example.com" and "title" in by_id["result"][0]
    assert api.get("/rest/v1/lead/999999999.json")["result"] == []
    # the 414 workaround works for any GET endpoint, not only lead lookups
    token = api.call("POST", "/rest/v1/activities/pagingtoken.json",
                     data={"_method": "GET", "sinceDatetime": "2024-05-01T00:00:00Z"})
    assert token["success"] and token["nextPageToken"]


def test_filter_read_errors(api: Api) -> None:
    assert _error(api.get("/rest/v1/leads.json"))[0] == "701"
    assert _error(api.get("/rest/v1/leads.json", filterType="firstName", filterValues="Ana"))[0] == "1011"
    assert _error(api.get("/rest/v1/leads.json", filterType="nope", filterValues="x"))[0] == "1006"
    assert _error(api.get("/rest/v1/leads.json", filterType="email", filterValues="a@x.com", fields="email,nope")) == (
        "1006", "Field 'nope' not found")
    many = ",".join(f"p{i}@x.com" for i in range(301))
    assert _error(api.call("POST", "/rest/v1/leads.json", data={"_method": "GET", "filterType": "email",
                                                                "filterValues": many}))[0] == "1003"


def test_describe_and_describe2(api: Api) -> None:
    fields = {f["rest"]["name"]: f for f in api.get("/rest/v1/leads/describe.json")["result"]}
    for name in ("id", "email", "firstName", "lastName", "phone", "title", "company", "leadSource", "createdAt",
                 "updatedAt", "msdynLeadId", "msdynContactId", "msdynType", "msdynIsDeleted"):
        assert name in fields, name
    assert fields["email"]["dataType"] == "email" and fields["email"]["length"] == 255
    assert fields["id"]["rest"]["readOnly"] is True and "length" not in fields["id"]
    assert fields["msdynLeadId"]["length"] == 36 and fields["msdynIsDeleted"]["dataType"] == "boolean"
    assert set(fields["company"]["soap"]) == {"name", "readOnly"}
    d2 = api.get("/rest/v1/leads/describe2.json")["result"][0]
    assert d2["name"] == "API Lead"
    for key in (["email"], ["id"], ["msdynLeadId"], ["msdynContactId"]):
        assert key in d2["searchableFields"]
    f2 = {f["name"]: f for f in d2["fields"]}
    assert f2["updatedAt"]["updateable"] is False and f2["email"]["updateable"] is True
    assert all({"name", "displayName", "dataType", "updateable", "crmManaged"} <= set(f) for f in d2["fields"])


# ------------------------------------------------------------------------------------------ writes
def test_sync_actions_and_reasons_in_input_order(box: dict[str, Any], api: Api) -> None:
    _control(box, "reset")
    first = api.sync([{"email": "ana@example.com", "firstName": "Ana"}, {"email": "bo@example.com"}],
                     action="createOnly")
    ana, bo = first["result"][0]["id"], first["result"][1]["id"]
    assert first["result"] == [{"id": ana, "status": "created"}, {"id": bo, "status": "created"}]
    body = api.sync([
        {"email": "new@example.com"},
        {"email": "ANA@example.com", "lastName": "X"},
        {"email": "c@example.com", "id": 5},
        {"email": "d@example.com", "shoeSize": 44},
        {"email": "not-an-email"},
        {"email": "e@example.com", "msdynIsDeleted": "abc"},
        {"firstName": "no key"},
        {"email": "f@example.com", "createdAt": "2024-01-01T00:00:00Z"},
    ], action="createOnly")
    codes = [(r["status"], r["reasons"][0]["code"] if "reasons" in r else None) for r in body["result"]]
    assert codes == [("created", None), ("skipped", "1005"), ("skipped", "1003"), ("skipped", "1006"),
                     ("skipped", "1003"), ("skipped", "1001"), ("skipped", "1003"), ("skipped", "1003")]
    assert body["result"][3]["reasons"][0]["message"] == "Field 'shoeSize' not found"
    assert body["result"][4]["reasons"][0]["message"] == "Invalid email address"
    assert all("id" not in r for r in body["result"][1:])

    upd = api.sync([{"email": "zed@example.com"}, {"email": "bo@example.com", "title": "CTO"},
                    {"id": ana, "msdynIsDeleted": True}], action="updateOnly")
    assert upd["result"][0]["status"] == "skipped" and upd["result"][0]["reasons"][0]["code"] == "1004"
    assert upd["result"][1] == {"id": bo, "status": "updated"}
    assert upd["result"][2]["reasons"][0] == {"code": "1003", "message": "Value for lookup field 'email' not specified"}
    by_id = api.sync([{"id": ana, "msdynIsDeleted": True}], action="updateOnly", lookupField="id")
    assert by_id["result"] == [{"id": ana, "status": "updated"}]
    assert api.get(f"/rest/v1/lead/{ana}.json", fields="msdynIsDeleted")["result"][0]["msdynIsDeleted"] is True

    dup = api.sync([{"email": "bo@example.com", "firstName": "Bo2"}], action="createDuplicate")
    assert dup["result"][0]["status"] == "created" and dup["result"][0]["id"] not in (ana, bo)
    multi = api.sync([{"email": "bo@example.com", "firstName": "Bo3"}, {"email": "carl@example.com"}])
    assert multi["result"][0]["reasons"][0]["code"] == "1007"
    assert multi["result"][1]["status"] == "created"

    linked = api.sync([{"msdynLeadId": "0f8fad5b-d9cb-469f-a165-70867728950e", "email": "lee@example.com"}],
                      lookupField="msdynLeadId")
    again = api.sync([{"msdynLeadId": "0f8fad5b-d9cb-469f-a165-70867728950e", "firstName": "Lee"}],
                     lookupField="msdynLeadId")
    assert again["result"][0] == {"id": linked["result"][0]["id"], "status": "updated"}
    assert _error(api.sync([{"email": "x@example.com"}], lookupField="firstName"))[0] == "1011"


def test_sync_request_level_errors(box: dict[str, Any], api: Api) -> None:
    too_many = api.sync([{"email": f"m{i}@example.com"} for i in range(301)])
    assert _error(too_many)[0] == "1003"
    assert api.sync([{"email": f"m{i}@example.com"} for i in range(300)])["success"] is True
    wrong_type = api.call("POST", "/rest/v1/leads.json", data="{}", headers={"Content-Type": "text/plain"})
    assert _error(wrong_type)[0] == "612"
    bad_json = api.call("POST", "/rest/v1/leads.json", data="{oops",
                        headers={"Content-Type": "application/json; charset=utf-8"})
    assert _error(bad_json) == ("609", "Invalid JSON")
    headers = {"Authorization": f"Bearer {api.token()}", "Content-Type": "application/json"}
    huge = requests.post(f"{box['base']}/rest/v1/leads.json", data=b" " * (1024 * 1024 + 1), headers=headers,
                         timeout=30)
    assert huge.status_code == 413
    long_uri = requests.get(f"{box['base']}/rest/v1/leads.json",
                            params={"filterType": "email", "filterValues": "a" * 8300}, headers=headers, timeout=30)
    assert long_uri.status_code == 414
    assert _error(api.get("/rest/v1/nothing.json"))[0] == "610"
    assert _error(api.call("PUT", "/rest/v1/leads.json"))[0] == "605"


def test_delete_and_deleted_leads_feed(box: dict[str, Any], api: Api) -> None:
    _control(box, "reset")
    mark = _watermark(api)
    ids = [r["id"] for r in api.sync([{"email": "d1@example.com"}, {"email": "d2@example.com"}])["result"]]
    first = api.call("POST", "/rest/v1/leads/delete.json", json={"input": [{"id": ids[0]}, {"id": 123456789}]})
    assert first["result"][0] == {"id": ids[0], "status": "deleted"}
    assert first["result"][1]["status"] == "skipped" and first["result"][1]["reasons"][0]["code"] == "1004"
    second = api.call("DELETE", "/rest/v1/leads.json", json={"input": [{"id": ids[1]}]})
    assert second["result"] == [{"id": ids[1], "status": "deleted"}]
    deleted, _ = _drain(api, "/rest/v1/activities/deletedleads.json", mark)
    assert [(d["leadId"], d["activityTypeId"]) for d in deleted] == [(ids[0], 37), (ids[1], 37)]
    assert deleted[0]["marketoGUID"] == str(deleted[0]["id"])


# ------------------------------------------------------------------------------------------ change feeds
def test_paging_token_and_lead_changes(box: dict[str, Any], api: Api, user_api: Api) -> None:
    _control(box, "reset")
    assert _error(api.get("/rest/v1/activities/pagingtoken.json"))[0] == "701"
    assert _error(api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="last tuesday"))[0] == "704"
    offset = api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2024-05-01T00:00:00+02:00")
    assert set(offset) == {"requestId", "success", "nextPageToken"}
    lead_id = api.sync([{"email": "ch@example.com", "firstName": "Anna", "title": "CEO"}])["result"][0]["id"]
    mark = _watermark(api)

    assert api.sync([{"email": "ch@example.com", "firstName": "Ana", "title": "CEO"}])["result"][0]["status"] == \
        "updated"
    assert user_api.sync([{"email": "ch@example.com", "title": "CTO"}])["result"][0]["status"] == "updated"
    unchanged = api.sync([{"email": "ch@example.com", "firstName": "Ana"}])
    assert unchanged["result"] == [{"id": lead_id, "status": "updated"}]
    new_id = api.sync([{"email": "nl@example.com"}])["result"][0]["id"]

    changes, mark2 = _drain(api, "/rest/v1/activities/leadchanges.json", mark, fields="firstName,title")
    assert [(c["activityTypeId"], c["leadId"]) for c in changes] == [(13, lead_id), (13, lead_id), (12, new_id)]
    first, second, created = changes
    assert first["fields"] == [{"id": 48, "name": "firstName", "newValue": "Ana", "oldValue": "Anna"}]
    attrs = {a["name"]: a["value"] for a in first["attributes"]}
    assert attrs["Source"] == "Web service API"
    assert attrs["API User"] == box["info"]["api_user_email"]
    user_attrs = {a["name"]: a["value"] for a in second["attributes"]}
    assert second["fields"][0]["name"] == "title" and second["fields"][0]["oldValue"] == "CEO"
    assert user_attrs["API User"] == box["info"]["user_email"] and user_attrs["Source"] == "Web service API"
    assert created["fields"] == [] and created["activityDate"].endswith("Z")
    assert {a["name"]: a["value"] for a in created["attributes"]}["Source Type"] == "Web service API"

    only_email, _ = _drain(api, "/rest/v1/activities/leadchanges.json", mark, fields="email")
    assert [c["activityTypeId"] for c in only_email] == [12]
    assert _drain(api, "/rest/v1/activities/leadchanges.json", mark2, fields="firstName")[0] == []
    assert _error(api.get("/rest/v1/activities/leadchanges.json", nextPageToken=mark))[0] == "701"

    generic, _ = _drain(api, "/rest/v1/activities.json", mark, activityTypeIds="13", batchSize=1)
    assert len(generic) == 2
    assert generic[0]["primaryAttributeValueId"] == 48
    assert {"New Value", "Old Value", "Source", "Reason"} <= {a["name"] for a in generic[0]["attributes"]}
    by_lead, _ = _drain(api, "/rest/v1/activities.json", mark, activityTypeIds="12,13", leadIds=str(new_id))
    assert [a["activityTypeId"] for a in by_lead] == [12]
    assert _error(api.get("/rest/v1/activities.json", nextPageToken=mark,
                          activityTypeIds=",".join(str(i) for i in range(11))))[0] == "1003"
    types = {t["id"]: t for t in api.get("/rest/v1/activities/types.json")["result"]}
    assert {1, 12, 13, 32, 37} <= set(types)
    assert types[13]["name"] == "Change Data Value" and types[13]["primaryAttribute"]["name"]


def test_merge_records_activity(box: dict[str, Any], api: Api) -> None:
    _control(box, "reset")
    mark = _watermark(api)
    ids = [r["id"] for r in api.sync([{"email": "w@example.com"}, {"email": "l@example.com", "title": "VP"}],
                                     action="createDuplicate")["result"]]
    merge = api.call("POST", f"/rest/v1/leads/{ids[0]}/merge.json", params={"leadId": ids[1]})
    assert merge["success"] is True and "result" not in merge
    merged = api.get(f"/rest/v1/lead/{ids[0]}.json", fields="title")["result"][0]
    assert merged["title"] == "VP"
    assert api.get(f"/rest/v1/lead/{ids[1]}.json")["result"] == []
    acts, _ = _drain(api, "/rest/v1/activities.json", mark, activityTypeIds="32")
    assert [a["leadId"] for a in acts] == [ids[0]]


# ------------------------------------------------------------------------------------------ limits
def test_rate_limit_606(box: dict[str, Any], api: Api) -> None:
    api.token()
    _control(box, "limits", {"calls_per_20s": 5, "reset_counters": True})
    try:
        replies = [api.get("/rest/v1/leads/describe.json") for _ in range(6)]
        assert all(r["success"] for r in replies[:5])
        assert _error(replies[5]) == ("606", "Max rate limit '5' exceeded with in '20' secs")
        stats = requests.get(f"{box['base']}/_sandbox/stats", timeout=10).json()
        assert stats["calls"] == 5 and stats["limit_errors"]["606"] == 1
        assert stats["by_endpoint"] == {"GET /rest/v1/leads/describe.json": 5}
    finally:
        _control(box, "limits", RELAXED)


def test_concurrency_615_and_daily_quota_607(box: dict[str, Any], api: Api) -> None:
    api.token()
    _control(box, "limits", {"max_concurrent": 2, "latency_ms": 400, "reset_counters": True})
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            replies = list(pool.map(lambda _: api.get("/rest/v1/leads/describe.json"), range(6)))
        codes = [r["errors"][0]["code"] if not r["success"] else "ok" for r in replies]
        assert codes.count("ok") >= 2 and "615" in codes, codes
        _control(box, "limits", {"max_concurrent": 10, "latency_ms": 0, "daily_quota": 1, "reset_counters": True})
        assert api.get("/rest/v1/leads/describe.json")["success"]
        assert _error(api.get("/rest/v1/leads/describe.json")) == ("607", "Daily quota reached")
    finally:
        _control(box, "limits", RELAXED)
    limits = requests.get(f"{box['base']}/_sandbox/limits", timeout=10).json()
    assert {k: limits[k] for k in RELAXED if k != "reset_counters"} == {
        k: v for k, v in RELAXED.items() if k != "reset_counters"}


def test_usage_stats(box: dict[str, Any], api: Api) -> None:
    api.get("/rest/v1/leads/describe.json")
    usage = api.get("/rest/v1/stats/usage.json")["result"]
    assert len(usage) == 1 and usage[0]["total"] >= 1
    assert usage[0]["users"][0]["count"] >= 1 and "@" in usage[0]["users"][0]["userId"]


def test_seed_100k_is_fast(box: dict[str, Any], api: Api) -> None:
    _control(box, "reset")
    started = time.monotonic()
    assert _control(box, "seed", {"people": 100_000, "overlap_leads": 500, "overlap_contacts": 500})["people"] == \
        100_000
    assert time.monotonic() - started < 20
    started = time.monotonic()
    found = api.get("/rest/v1/leads.json", filterType="email", filterValues="person98999@example.com")["result"]
    assert len(found) == 1 and time.monotonic() - started < 2
    assert requests.get(f"{box['base']}/_sandbox/stats", timeout=10).json()["leads"] == 100_000
    _control(box, "reset")
