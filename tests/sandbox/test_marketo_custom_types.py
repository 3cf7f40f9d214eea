"""Marketo sandbox over HTTP: the msdynTeam_c / msdynProject_c / msdynSubscription_c custom object types
and Sync Opportunity Roles with its references to a lead and an opportunity."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox import test_marketo_sandbox as base
from tests.sandbox.test_marketo_sandbox import RELAXED, Api, _control, _error

box = base.box
api = base.api

CO = "/rest/v1/customobjects"


@pytest.fixture(autouse=True)
def _clean(box: dict[str, Any]) -> None:
    _control(box, "limits", {**RELAXED, "crm_enabled": False})
    _control(box, "reset")


def _sync(api: Api, path: str, records: list[dict[str, Any]], **opts: Any) -> list[dict[str, Any]]:
    body = api.call("POST", path, json={"input": records, **opts})
    assert body["success"], body
    return body["result"]


def _reasons(item: dict[str, Any]) -> list[str]:
    assert item["status"] == "skipped", item
    return [r["code"] for r in item["reasons"]]


def test_new_types_are_listed_and_described(api: Api) -> None:
    listed = {t["name"]: t for t in api.get(f"{CO}.json")["result"]}
    assert {"msdynTeam_c", "msdynProject_c", "msdynSubscription_c"} <= set(listed)
    assert listed["msdynTeam_c"]["displayName"] == "MS Dynamics Team" and "fields" not in listed["msdynTeam_c"]
    team = api.get(f"{CO}/msdynTeam_c/describe.json")["result"][0]
    assert team["idField"] == "marketoGUID" and team["dedupeFields"] == ["teamId"]
    assert team["relationships"] == []
    fields = {f["name"]: f for f in team["fields"]}
    assert fields["teamId"] == {"name": "teamId", "displayName": "Team Id", "dataType": "string", "length": 36,
                                "updateable": False}
    assert fields["description"]["dataType"] == "text" and fields["teamType"]["length"] == 50
    assert fields["administratorId"]["length"] == 36
    project = api.get(f"{CO}/msdynProject_c/describe.json")["result"][0]
    assert project["dedupeFields"] == ["projectId"]
    assert project["relationships"] == [{"field": "leadId", "type": "child",
                                         "relatedTo": {"name": "Lead", "field": "id"}}]
    types = {f["name"]: f["dataType"] for f in project["fields"]}
    assert types == {"marketoGUID": "string", "projectId": "string", "leadId": "link", "name": "string",
                     "code": "string", "stage": "string", "startDate": "date", "hours": "integer",
                     "budget": "currency", "notes": "text", "createdAt": "datetime", "updatedAt": "datetime"}
    subscription = api.get(f"{CO}/msdynSubscription_c/describe.json", names="x")["result"][0]
    types = {f["name"]: f["dataType"] for f in subscription["fields"]}
    assert types["active"] == "boolean" and types["renewalOn"] == "date" and types["seats"] == "integer"
    assert subscription["dedupeFields"] == ["subscriptionId"]


def test_team_without_relationships_sync_query_delete(api: Api) -> None:
    path = f"{CO}/msdynTeam_c.json"
    made = _sync(api, path, [{"teamId": "t1", "name": "Sales", "teamType": "Owner", "description": "x" * 500},
                             {"teamId": "t2", "name": "Ops"}, {"name": "no key"}], action="createOnly")
    assert [m["status"] for m in made[:2]] == ["created", "created"] and _reasons(made[2]) == ["1003"]
    assert [m["seq"] for m in made] == [0, 1, 2]
    assert _reasons(_sync(api, path, [{"teamId": "t1"}], action="createOnly")[0]) == ["1017"]
    assert _reasons(_sync(api, path, [{"teamId": "t9", "name": "x"}], action="updateOnly")[0]) == ["1013"]
    upd = _sync(api, path, [{"teamId": "t1", "name": "Sales EU"}], action="createOrUpdate", dedupeBy="dedupeFields")
    assert upd[0] == {"seq": 0, "marketoGUID": made[0]["marketoGUID"], "status": "updated"}
    # teamId is not updateable: changing it through idField is refused, keeping it is fine
    guid = made[1]["marketoGUID"]
    by_id = _sync(api, path, [{"marketoGUID": guid, "teamId": "other"}, {"marketoGUID": guid}], dedupeBy="idField")
    assert _reasons(by_id[0]) == ["1003"] and _reasons(by_id[1]) == ["1036"]
    by_id = _sync(api, path, [{"marketoGUID": guid, "teamId": "t2", "administratorId": "u1"}], dedupeBy="idField")
    assert by_id == [{"seq": 0, "marketoGUID": guid, "status": "updated"}]
    got = api.get(path, filterType="teamId", filterValues="t1,t2", fields="teamId,name,description,administratorId")
    assert [(r["teamId"], r["name"]) for r in got["result"]] == [("t1", "Sales EU"), ("t2", "Ops")]
    assert got["result"][0]["description"] == "x" * 500 and got["result"][1]["administratorId"] == "u1"
    dedupe = api.get(path, filterType="dedupeFields", filterValues="t2")["result"]
    assert dedupe[0]["marketoGUID"] == made[1]["marketoGUID"]
    assert api.get(path, filterType="name", filterValues="Ops")["result"][0]["teamId"] == "t2"
    assert _error(api.get(path, filterType="teamType", filterValues="Owner"))[0] == "1003"
    gone = _sync(api, f"{CO}/msdynTeam_c/delete.json", [{"teamId": "t1"}, {"teamId": "t1"}])
    assert gone[0]["status"] == "deleted" and _reasons(gone[1]) == ["1013"]
    gone = api.call("POST", f"{CO}/msdynTeam_c/delete.json", json={
        "deleteBy": "idField", "input": [{"marketoGUID": made[1]["marketoGUID"]}]})["result"]
    assert gone == [{"seq": 0, "marketoGUID": made[1]["marketoGUID"], "status": "deleted"}]
    assert api.get(path, filterType="teamId", filterValues="t1,t2")["result"] == []


def test_project_link_must_name_a_lead(api: Api) -> None:
    lead = api.sync([{"email": "pm@example.com"}])["result"][0]["id"]
    path = f"{CO}/msdynProject_c.json"
    out = _sync(api, path, [
        {"projectId": "p1", "leadId": lead, "name": "Rollout", "code": "RO", "stage": "Plan",
         "startDate": "2024-05-01", "hours": 120, "budget": "9999.50", "notes": "first"},
        {"projectId": "p2", "leadId": 999999, "name": "Orphan"},
        {"projectId": "p3", "leadId": lead, "startDate": "01/05/2024"},
        {"projectId": "p4", "name": "No person yet"}])
    assert out[0]["status"] == "created"
    assert out[1]["reasons"] == [{"code": "1004", "message": "Lead not found"}]
    assert _reasons(out[2]) == ["1001"]
    assert out[3]["status"] == "created"
    got = api.get(path, filterType="leadId", filterValues=str(lead),
                  fields="projectId,leadId,startDate,hours,budget,notes")["result"]
    assert got == [{"seq": 0, "projectId": "p1", "leadId": lead, "startDate": "2024-05-01", "hours": 120,
                    "budget": 9999.5, "notes": "first"}]
    moved = _sync(api, path, [{"projectId": "p1", "leadId": 123456789}], action="updateOnly")
    assert _reasons(moved[0]) == ["1004"]
    assert _sync(api, path, [{"projectId": "p1", "stage": "Run"}], action="updateOnly")[0]["status"] == "updated"
    assert _sync(api, f"{CO}/msdynProject_c/delete.json", [{"projectId": "p1"}])[0]["status"] == "deleted"


def test_subscription_types_and_link(api: Api) -> None:
    lead = api.sync([{"email": "sub@example.com"}])["result"][0]["id"]
    path = f"{CO}/msdynSubscription_c.json"
    out = _sync(api, path, [
        {"subscriptionId": "s1", "leadId": str(lead), "name": "Pro", "plan": "annual", "seats": "25",
         "renewalOn": "2025-01-31", "active": "true"},
        {"subscriptionId": "s2", "leadId": 424242},
        {"subscriptionId": "s3", "leadId": lead, "seats": "many"},
        {"subscriptionId": "s1", "leadId": lead}])
    assert out[0]["status"] == "created" and _reasons(out[1]) == ["1004"]
    assert _reasons(out[2]) == ["1001"] and _reasons(out[3]) == ["1036"]
    got = api.call("POST", f"{path}?_method=GET", json={
        "filterType": "dedupeFields", "fields": ["leadId", "seats", "renewalOn", "active", "plan"],
        "input": [{"subscriptionId": "s1"}]})["result"]
    assert got == [{"seq": 0, "leadId": lead, "seats": 25, "renewalOn": "2025-01-31", "active": True,
                    "plan": "annual"}]
    assert _sync(api, path, [{"subscriptionId": "s1", "active": False}])[0]["status"] == "updated"
    assert api.get(path, filterType="subscriptionId", filterValues="s1", fields="active")["result"][0][
        "active"] is False


def test_opportunity_roles_need_lead_and_opportunity(box: dict[str, Any], api: Api) -> None:
    lead = api.sync([{"email": "role@example.com"}])["result"][0]["id"]
    assert _sync(api, "/rest/v1/opportunities.json", [{"externalOpportunityId": "o1", "name": "Deal"}])[0][
        "status"] == "created"
    path = "/rest/v1/opportunities/roles.json"
    made = _sync(api, path, [
        {"externalOpportunityId": "o1", "leadId": lead, "role": "Buyer", "isPrimary": True},
        {"externalOpportunityId": "o1", "leadId": 999999, "role": "Buyer"},
        {"externalOpportunityId": "nope", "leadId": lead, "role": "Buyer"},
        {"externalOpportunityId": "o1", "leadId": lead},
        {"externalOpportunityId": "o1", "leadId": lead, "role": "Buyer"}],
        action="createOrUpdate", dedupeBy="dedupeFields")
    assert made[0]["status"] == "created" and len(made[0]["marketoGUID"]) == 36
    assert made[1]["reasons"] == [{"code": "1004", "message": "Lead not found"}]
    assert made[2]["reasons"] == [{"code": "1013", "message": "Object not found"}]
    assert _reasons(made[3]) == ["1003"] and _reasons(made[4]) == ["1036"]
    again = _sync(api, path, [{"externalOpportunityId": "o1", "leadId": lead, "role": "Buyer", "isPrimary": False},
                              {"externalOpportunityId": "o1", "leadId": lead, "role": "Champion"}])
    assert again[0] == {"seq": 0, "marketoGUID": made[0]["marketoGUID"], "status": "updated"}
    assert again[1]["status"] == "created"
    assert _reasons(_sync(api, path, [{"externalOpportunityId": "o1", "leadId": lead, "role": "Sponsor"}],
                          action="updateOnly")[0]) == ["1013"]
    roles = api.get(path, filterType="externalOpportunityId", filterValues="o1", fields="role,isPrimary")["result"]
    assert [(r["role"], r.get("isPrimary")) for r in roles] == [("Buyer", False), ("Champion", None)]
    assert [r["role"] for r in api.get(path, filterType="leadId", filterValues=str(lead),
                                         fields="role")["result"]] == ["Buyer", "Champion"]
    _control(box, "limits", {"crm_enabled": True})
    assert _reasons(_sync(api, path, [{"externalOpportunityId": "o1", "leadId": lead, "role": "X"}])[0]) == ["1018"]
    _control(box, "limits", {"crm_enabled": False})
    gone = _sync(api, "/rest/v1/opportunities/roles/delete.json", [
        {"externalOpportunityId": "o1", "leadId": lead, "role": "Champion"}], deleteBy="dedupeFields")
    assert gone[0]["status"] == "deleted"
