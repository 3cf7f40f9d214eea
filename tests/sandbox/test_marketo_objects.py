"""Marketo sandbox: companies, opportunities, roles, sales persons and custom objects (from config)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox import test_marketo_sandbox as base
from tests.sandbox.test_marketo_sandbox import RELAXED, Api, _control, _error

box = base.box
api = base.api


@pytest.fixture(autouse=True)
def _clean(box: dict[str, Any]) -> None:
    _control(box, "limits", {**RELAXED, "crm_enabled": False})
    _control(box, "reset")


def test_companies_sync_query_delete_and_crm_switch(box: dict[str, Any], api: Api) -> None:
    desc = api.get("/rest/v1/companies/describe.json")["result"][0]
    assert desc["idField"] == "id" and desc["dedupeFields"] == ["externalCompanyId"]
    out = api.call("POST", "/rest/v1/companies.json", json={"action": "createOrUpdate", "input": [
        {"externalCompanyId": "acme", "company": "Acme"}, {"externalCompanyId": "acme", "company": "Dup"},
        {"company": "No key"}, {"externalCompanyId": "x", "bogus": 1}]})["result"]
    assert out[0]["status"] == "created" and out[0]["seq"] == 0 and isinstance(out[0]["id"], int)
    assert out[1]["reasons"][0]["code"] == "1036"
    assert out[2]["reasons"][0]["code"] == "1003" and out[3]["reasons"][0]["code"] == "1006"
    again = api.call("POST", "/rest/v1/companies.json", json={"input": [{"externalCompanyId": "acme",
                                                                          "industry": "Tools"}]})["result"]
    assert again[0] == {"seq": 0, "id": out[0]["id"], "status": "updated"}
    found = api.get("/rest/v1/companies.json", filterType="externalCompanyId", filterValues="acme",
                    fields="company,industry")["result"]
    assert found[0]["company"] == "Acme" and found[0]["industry"] == "Tools"
    only = api.call("POST", "/rest/v1/companies.json", json={"action": "createOnly",
                                                             "input": [{"externalCompanyId": "acme"}]})
    assert only["result"][0]["reasons"][0]["code"] == "1017"
    _control(box, "limits", {"crm_enabled": True})
    blocked = api.call("POST", "/rest/v1/companies.json", json={"input": [{"externalCompanyId": "b"}]})
    assert blocked["result"][0]["reasons"][0] == {"code": "1018", "message": "CRM Enabled"}
    _control(box, "limits", {"crm_enabled": False})
    gone = api.call("POST", "/rest/v1/companies/delete.json", json={"deleteBy": "dedupeFields", "input": [
        {"externalCompanyId": "acme"}, {"externalCompanyId": "nope"}]})["result"]
    assert gone[0]["status"] == "deleted" and gone[1]["reasons"][0]["code"] == "1013"
    assert _error(api.get("/rest/v1/companies.json", filterType="website", filterValues="x"))[0] == "1003"


def test_opportunities_roles_salespersons(api: Api) -> None:
    opp = api.call("POST", "/rest/v1/opportunities.json", json={"input": [
        {"externalOpportunityId": "o1", "name": "Deal", "amount": 1200.5, "isWon": False}]})["result"][0]
    assert opp["status"] == "created" and len(opp["marketoGUID"]) == 36
    lead = api.sync([{"email": "buyer@example.com"}])["result"][0]["id"]
    role = api.call("POST", "/rest/v1/opportunities/roles.json", json={"input": [
        {"externalOpportunityId": "o1", "leadId": lead, "role": "Buyer", "isPrimary": True}]})["result"][0]
    assert role["status"] == "created"
    read = api.call("POST", "/rest/v1/opportunities/roles.json?_method=GET", json={
        "filterType": "dedupeFields", "fields": ["marketoGUID", "isPrimary"],
        "input": [{"externalOpportunityId": "o1", "leadId": lead, "role": "Buyer"}]})["result"]
    assert read[0]["marketoGUID"] == role["marketoGUID"] and read[0]["isPrimary"] is True
    sp = api.call("POST", "/rest/v1/salespersons.json", json={"input": [
        {"externalSalesPersonId": "sp1", "email": "rep@example.com"}]})["result"][0]
    assert sp["status"] == "created" and "id" in sp
    assert api.get("/rest/v1/opportunities/describe.json")["result"][0]["idField"] == "marketoGUID"


def test_custom_objects_from_config(box: dict[str, Any], api: Api) -> None:
    names = [t["name"] for t in api.get("/rest/v1/customobjects.json")["result"]]
    assert "msdynOpportunityProduct_c" in names and "carOwnership_c" in names
    desc = api.get("/rest/v1/customobjects/carOwnership_c/describe.json")["result"][0]
    assert desc["idField"] == "marketoGUID" and desc["dedupeFields"] == ["vin", "leadEmail"]
    api.sync([{"email": "a@example.com"}])
    made = api.call("POST", "/rest/v1/customobjects/carOwnership_c.json", json={"input": [
        {"vin": "V1", "leadEmail": "a@example.com", "make": "Saab", "year": 1999}]})["result"][0]
    assert made["status"] == "created"
    got = api.call("POST", "/rest/v1/customobjects/carOwnership_c.json?_method=GET", json={
        "filterType": "dedupeFields", "fields": ["make", "year"],
        "input": [{"vin": "V1", "leadEmail": "a@example.com"}]})["result"]
    assert got[0]["make"] == "Saab" and got[0]["year"] == 1999 and got[0]["seq"] == 0
    by_email = api.get("/rest/v1/customobjects/carOwnership_c.json", filterType="leadEmail",
                       filterValues="a@example.com")["result"]
    assert by_email[0]["marketoGUID"] == made["marketoGUID"]
    bad = api.call("POST", "/rest/v1/customobjects/carOwnership_c.json", json={"input": [
        {"vin": "V2", "leadEmail": "a@example.com", "year": "old"}]})["result"][0]
    assert bad["reasons"][0]["code"] == "1001"
    seeded = _control(box, "seed", {"entity": "msdynOpportunityProduct_c", "count": 50, "seed": 1})
    assert seeded["created"] == 50
    deleted = api.call("POST", "/rest/v1/customobjects/carOwnership_c/delete.json", json={
        "deleteBy": "idField", "input": [{"marketoGUID": made["marketoGUID"]}]})["result"][0]
    assert deleted["status"] == "deleted"
    assert _error(api.get("/rest/v1/customobjects/nope_c/describe.json"))[0] == "1003"


def test_custom_activity_type_lifecycle_and_add(box: dict[str, Any], api: Api) -> None:
    lead = api.sync([{"email": "ca@example.com"}])["result"][0]["id"]
    api_name = f"webinarAttended{lead}"
    made = api.call("POST", "/rest/v1/activities/external/type.json", json={
        "apiName": api_name, "name": f"Webinar attended {lead}", "triggerName": "Attends webinar",
        "filterName": "Attended webinar", "primaryAttribute": {"apiName": "webinar", "name": "Webinar",
                                                                "dataType": "string"}})["result"][0]
    assert made["status"] == "draft" and made["id"] >= 100000
    api.call("POST", f"/rest/v1/activities/external/type/{api_name}/attributes/create.json", json={
        "attribute": [{"apiName": "minutes", "name": "Minutes", "dataType": "integer"}]})
    item = {"leadId": lead, "activityDate": "2024-05-01T10:00:00Z", "activityTypeId": made["id"],
            "primaryAttributeValue": "Intro", "attributes": [{"apiName": "minutes", "value": 42}]}
    draft = api.call("POST", "/rest/v1/activities/external.json", json={"input": [item]})["result"][0]
    assert draft["status"] == "skipped"
    assert api.call("POST", f"/rest/v1/activities/external/type/{api_name}/approve.json")["result"][0][
        "status"] == "approved"
    assert made["id"] in [t["id"] for t in api.get("/rest/v1/activities/types.json")["result"]]
    added = api.call("POST", "/rest/v1/activities/external.json", json={"input": [
        item, {**item, "leadId": 999999}]})["result"]
    assert added[0]["status"] == "added" and added[1]["reasons"][0]["code"] == "1004"
    token = api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2000-01-01T00:00:00Z")["nextPageToken"]
    seen = []
    for _ in range(100):
        page = api.get("/rest/v1/activities.json", nextPageToken=token, activityTypeIds=str(made["id"]))
        seen.extend(page["result"])
        token = page["nextPageToken"]
        if not page["moreResult"]:
            break
    assert seen[0]["primaryAttributeValue"] == "Intro"
    assert {"name": "Minutes", "value": 42} in seen[0]["attributes"]
    assert api.get(f"/rest/v1/activities/external/type/{api_name}/describe.json")["result"][0]["attributes"][0][
        "apiName"] == "minutes"
