"""Marketo sandbox over HTTP: people linked to companies (externalCompanyId) and sales persons
(externalSalesPersonId) — company fields and Lead Owner fields on reads, 1021 and 718 on Sync Leads."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.sandbox import test_marketo_sandbox as base
from tests.sandbox.test_marketo_sandbox import RELAXED, Api, _control, _drain, _watermark

box = base.box
api = base.api

COMPANY = {"externalCompanyId": "acme", "company": "Acme", "website": "https://acme.example", "mainPhone": "+1 555",
           "industry": "Tools", "annualRevenue": 1250000.5, "numberOfEmployees": 42, "billingCity": "Springfield",
           "billingCountry": "US"}
COMPANY_FIELDS = "company,website,mainPhone,industry,annualRevenue,numberOfEmployees,billingCity,billingCountry"


@pytest.fixture(autouse=True)
def _clean(box: dict[str, Any]) -> None:
    _control(box, "limits", {**RELAXED, "crm_enabled": False, "bulk_step_ms": 100})
    _control(box, "reset")


def _companies(api: Api, *records: dict[str, Any], action: str = "createOrUpdate") -> list[dict[str, Any]]:
    body = api.call("POST", "/rest/v1/companies.json", json={"action": action, "input": list(records)})
    assert body["success"], body
    return body["result"]


def _by_email(api: Api, *emails: str, fields: str) -> dict[str, dict[str, Any]]:
    body = api.get("/rest/v1/leads.json", filterType="email", filterValues=",".join(emails), fields=f"email,{fields}")
    assert body["success"], body
    return {r["email"]: r for r in body["result"]}


def test_linked_lead_reads_show_company_fields(api: Api) -> None:
    assert _companies(api, COMPANY)[0]["status"] == "created"
    out = api.sync([{"email": "ana@example.com", "firstName": "Ana", "externalCompanyId": "acme"},
                    {"email": "own@example.com", "company": "Own Co", "website": "https://own.example",
                     "annualRevenue": "10.5", "numberOfEmployees": "7"},
                    {"email": "ghost@example.com", "externalCompanyId": "ghost", "company": "Ghost Co"}])["result"]
    assert [r["status"] for r in out] == ["created", "created", "created"]
    ana_id = out[0]["id"]
    want = {k: v for k, v in COMPANY.items() if k != "externalCompanyId"}
    people = _by_email(api, "ana@example.com", "own@example.com", "ghost@example.com",
                       fields=f"externalCompanyId,{COMPANY_FIELDS}")
    assert people["ana@example.com"] == {"id": ana_id, "email": "ana@example.com", "externalCompanyId": "acme", **want}
    # not linked (no key, or a key that names no company): the person's own company fields
    assert people["own@example.com"]["company"] == "Own Co" and people["own@example.com"]["annualRevenue"] == 10.5
    assert people["own@example.com"]["numberOfEmployees"] == 7
    assert people["ghost@example.com"]["company"] == "Ghost Co"
    assert "website" not in people["ghost@example.com"]
    # the same through Get Lead by Id, POST _method=GET and a filter on externalCompanyId
    by_id = api.get(f"/rest/v1/lead/{ana_id}.json", fields="company,industry,annualRevenue")["result"]
    assert by_id == [{"id": ana_id, "company": "Acme", "industry": "Tools", "annualRevenue": 1250000.5}]
    posted = api.call("POST", "/rest/v1/leads.json?_method=GET",
                      data={"filterType": "externalCompanyId", "filterValues": "acme", "fields": "email,company"})
    assert posted["result"] == [{"id": ana_id, "email": "ana@example.com", "company": "Acme"}]
    describe2 = api.get("/rest/v1/leads/describe2.json")["result"][0]
    assert ["externalCompanyId"] in describe2["searchableFields"]
    assert ["externalSalesPersonId"] in describe2["searchableFields"]
    fields = {f["rest"]["name"]: f for f in api.get("/rest/v1/leads/describe.json")["result"]}
    assert fields["annualRevenue"]["dataType"] == "currency" and fields["website"]["dataType"] == "url"
    assert fields["externalCompanyId"]["length"] == 100 and fields["company"]["id"] == 2


def test_company_change_is_seen_on_all_its_people(api: Api) -> None:
    _companies(api, COMPANY)
    api.sync([{"email": "p1@example.com", "externalCompanyId": "acme"},
              {"email": "p2@example.com", "externalCompanyId": "acme"},
              {"email": "p3@example.com", "externalCompanyId": "later", "company": "Own Later"}])
    renamed = _companies(api, {"externalCompanyId": "acme", "company": "Acme Corp", "numberOfEmployees": 43},
                         action="updateOnly")
    assert renamed[0]["status"] == "updated"
    people = _by_email(api, "p1@example.com", "p2@example.com", "p3@example.com",
                       fields="company,numberOfEmployees,website")
    for email in ("p1@example.com", "p2@example.com"):
        assert people[email]["company"] == "Acme Corp" and people[email]["numberOfEmployees"] == 43
        assert people[email]["website"] == "https://acme.example"
    assert people["p3@example.com"]["company"] == "Own Later"
    # the link takes effect as soon as a company with that key exists, and ends when it is deleted
    _companies(api, {"externalCompanyId": "later", "company": "Later Inc"})
    assert _by_email(api, "p3@example.com", fields="company")["p3@example.com"]["company"] == "Later Inc"
    gone = api.call("POST", "/rest/v1/companies/delete.json", json={"input": [{"externalCompanyId": "later"}]})
    assert gone["result"][0]["status"] == "deleted"
    assert _by_email(api, "p3@example.com", fields="company")["p3@example.com"]["company"] == "Own Later"


def test_company_fields_refused_on_linked_lead_1021(box: dict[str, Any], api: Api) -> None:
    _companies(api, COMPANY, {"externalCompanyId": "beta", "company": "Beta"})
    lead = api.sync([{"email": "l@example.com", "externalCompanyId": "acme"}])["result"][0]["id"]
    mark = _watermark(api)
    out = api.sync([{"email": "l@example.com", "company": "Hacked"},
                    {"email": "new@example.com", "externalCompanyId": "acme", "website": "https://x.example"},
                    {"email": "l@example.com", "firstName": "Lia", "externalCompanyId": "beta"},
                    {"email": "free@example.com", "company": "Free Co", "externalCompanyId": "nobody"}])["result"]
    refused = {"status": "skipped", "reasons": [{"code": "1021", "message": "Company update not allowed"}]}
    assert out[0] == refused and out[1] == refused
    assert out[2] == {"id": lead, "status": "updated"}
    assert out[3]["status"] == "created"
    now = _by_email(api, "l@example.com", "new@example.com", fields="firstName,company,externalCompanyId")
    assert "new@example.com" not in now
    assert now["l@example.com"]["company"] == "Beta" and now["l@example.com"]["externalCompanyId"] == "beta"
    # unlinking (null key) and writing own company fields in the same record is allowed
    freed = api.sync([{"email": "l@example.com", "externalCompanyId": None, "company": "Solo"}])["result"][0]
    assert freed == {"id": lead, "status": "updated"}
    assert _by_email(api, "l@example.com", fields="company")["l@example.com"]["company"] == "Solo"
    changes, _ = _drain(api, "/rest/v1/activities/leadchanges.json", mark, fields="externalCompanyId,company",
                        leadIds=str(lead))
    seen = [(c["fields"][0]["name"], c["fields"][0]["oldValue"], c["fields"][0]["newValue"]) for c in changes]
    assert seen == [("externalCompanyId", "acme", "beta"), ("externalCompanyId", "beta", None),
                    ("company", None, "Solo")]
    stats = requests.get(f"{box['base']}/_sandbox/stats", timeout=5).json()
    assert stats["record_reasons"]["1021"] == 2


def test_sales_person_fills_lead_owner_fields(api: Api) -> None:
    sp = api.call("POST", "/rest/v1/salespersons.json", json={"input": [
        {"externalSalesPersonId": "rep1", "firstName": "Rita", "lastName": "Rep", "email": "rita@example.com",
         "phone": "+1 777"}]})["result"][0]
    assert sp["status"] == "created"
    lead = api.sync([{"email": "o@example.com", "externalSalesPersonId": "rep1"}])["result"][0]["id"]
    owner = "leadOwnerFirstName,leadOwnerLastName,leadOwnerEmail,leadOwnerPhone"
    got = api.get(f"/rest/v1/lead/{lead}.json", fields=f"externalSalesPersonId,{owner}")["result"][0]
    assert got == {"id": lead, "externalSalesPersonId": "rep1", "leadOwnerFirstName": "Rita",
                   "leadOwnerLastName": "Rep", "leadOwnerEmail": "rita@example.com", "leadOwnerPhone": "+1 777"}
    api.call("POST", "/rest/v1/salespersons.json", json={"input": [{"externalSalesPersonId": "rep1",
                                                                     "lastName": "Smith"}]})
    by_owner = api.get("/rest/v1/leads.json", filterType="externalSalesPersonId", filterValues="rep1",
                       fields="leadOwnerLastName")["result"]
    assert by_owner == [{"id": lead, "leadOwnerLastName": "Smith"}]
    describe = {f["rest"]["name"]: f for f in api.get("/rest/v1/leads/describe.json")["result"]}
    describe2 = {f["name"]: f for f in api.get("/rest/v1/leads/describe2.json")["result"][0]["fields"]}
    for name in owner.split(","):
        assert describe[name]["rest"]["readOnly"] is True and describe2[name]["updateable"] is False
    assert describe2["externalSalesPersonId"]["updateable"] is True
    written = api.sync([{"email": "o@example.com", "leadOwnerEmail": "x@example.com"}])["result"][0]
    assert written["status"] == "skipped" and written["reasons"][0]["code"] == "1003"
    none = api.sync([{"email": "none@example.com"}])["result"][0]["id"]
    assert api.get(f"/rest/v1/lead/{none}.json", fields=owner)["result"] == [{"id": none}]


def test_unknown_sales_person_is_skipped_718(api: Api) -> None:
    api.call("POST", "/rest/v1/salespersons.json", json={"input": [{"externalSalesPersonId": "rep1"}]})
    out = api.sync([{"email": "a@example.com", "externalSalesPersonId": "nobody"},
                    {"email": "b@example.com", "externalSalesPersonId": "rep1"},
                    {"email": "c@example.com", "externalSalesPersonId": None}])["result"]
    assert out[0] == {"status": "skipped",
                      "reasons": [{"code": "718", "message": "ExternalSalesPersonID not found"}]}
    assert out[1]["status"] == "created" and out[2]["status"] == "created"
    assert api.get("/rest/v1/leads.json", filterType="email", filterValues="a@example.com")["result"] == []
    mark = _watermark(api)
    moved = api.sync([{"email": "b@example.com", "externalSalesPersonId": None}])["result"][0]
    assert moved == {"id": out[1]["id"], "status": "updated"}
    changes, _ = _drain(api, "/rest/v1/activities/leadchanges.json", mark, fields="externalSalesPersonId")
    assert changes[0]["fields"][0]["name"] == "externalSalesPersonId"
    assert changes[0]["fields"][0]["oldValue"] == "rep1" and changes[0]["fields"][0]["newValue"] is None


def test_bulk_export_shows_linked_values(api: Api) -> None:
    _companies(api, COMPANY)
    api.call("POST", "/rest/v1/salespersons.json", json={"input": [{"externalSalesPersonId": "rep1",
                                                                     "email": "rita@example.com"}]})
    api.sync([{"email": "x1@example.com", "externalCompanyId": "acme", "externalSalesPersonId": "rep1"},
              {"email": "x2@example.com", "company": "Own"}])
    now = dt.datetime.now(dt.UTC)
    window = {"startAt": (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "endAt": (now + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    job = api.call("POST", "/bulk/v1/leads/export/create.json", json={
        "fields": ["email", "company", "numberOfEmployees", "leadOwnerEmail"],
        "filter": {"createdAt": window}})["result"][0]
    base_path = f"/bulk/v1/leads/export/{job['exportId']}"
    assert api.call("POST", f"{base_path}/enqueue.json")["success"]
    for _ in range(200):
        if api.get(f"{base_path}/status.json")["result"][0]["status"] == "Completed":
            break
        time.sleep(0.05)
    reply = requests.get(f"{api.base}{base_path}/file.json", headers={"Authorization": f"Bearer {api.token()}"},
                         timeout=10)
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert rows == [["email", "company", "numberOfEmployees", "leadOwnerEmail"],
                    ["x1@example.com", "Acme", "42", "rita@example.com"],
                    ["x2@example.com", "Own", "null", "null"]]


def test_state_dir_of_an_older_sandbox_gets_the_new_columns(tmp_path: Path) -> None:
    from include.sandbox.marketo.store import Store

    path = tmp_path / "marketo.db"
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE leads (id INTEGER PRIMARY KEY AUTOINCREMENT, "company", "email" TEXT COLLATE NOCASE, '
                 '"createdAt", "updatedAt")')
    conn.execute("INSERT INTO leads (company, email) VALUES ('Old Co', 'old@example.com')")
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        got = store.get_lead(1, ["email", "company", "externalCompanyId", "leadOwnerEmail", "firstName"])
        assert got == {"id": 1, "email": "old@example.com", "company": "Old Co"}
    finally:
        store.close()
