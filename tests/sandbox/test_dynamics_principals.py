"""Dynamics sandbox: seeded users and teams, owners spread over them, admin edits of users and teams with
change tracking, and the second custom table (``new_subscription``) with seeding of custom tables.

The sandbox process and the per-test reset come from ``test_dynamics_sandbox`` (same fixtures).
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.sandbox import test_dynamics_sandbox as base
from tests.sandbox.test_dynamics_sandbox import Sandbox, _collect, _entity_id, _error, _seed

sandbox = base.sandbox  # the module-scoped sandbox process and the per-test reset, by fixture name
sb = base.sb

TRACK = "odata.track-changes"


def _seeded_users(sb: Sandbox, token: str) -> list[dict[str, Any]]:
    rows = sb.call("GET", "systemusers?$select=fullname,internalemailaddress,domainname,isdisabled,accessmode,"
                          "_businessunitid_value,applicationid&$filter=applicationid eq null"
                          "&$orderby=internalemailaddress", token).json()["value"]
    return rows


# ------------------------------------------------------------------------------------ seeding users and teams
def test_seed_users_and_teams_deterministically(sb: Sandbox) -> None:
    tok = sb.token()
    assert _seed(sb, entity="systemuser", count=5, seed=3)["count"] == 5
    users = _seeded_users(sb, tok)
    assert [u["internalemailaddress"] for u in users] == [f"user{i:05d}@example.com" for i in range(5)]
    who = sb.call("GET", "WhoAmI", tok).json()
    first = users[0]
    assert first["domainname"] == "user00000@sandbox.onmicrosoft.com"
    assert (first["isdisabled"], first["accessmode"], first["_businessunitid_value"]) == \
        (False, 0, who["BusinessUnitId"])
    assert first["fullname"] and " " in first["fullname"]
    _seed(sb, entity="systemuser", count=5, seed=3)  # same rows again, not new ones
    assert [u["systemuserid"] for u in _seeded_users(sb, tok)] == [u["systemuserid"] for u in users]
    assert sb.get("/_sandbox/stats").json()["systemusers"] == 7  # plus the two application users

    assert _seed(sb, entity="team", count=2, seed=3)["count"] == 2
    teams = sb.call("GET", "teams?$select=name,teamtype,isdefault,_administratorid_value,_businessunitid_value"
                           "&$filter=isdefault eq false&$orderby=name", tok).json()["value"]
    assert [(t["name"], t["teamtype"]) for t in teams] == [("Team 00000", 0), ("Team 00001", 0)]
    assert [t["_administratorid_value"] for t in teams] == [users[0]["systemuserid"], users[1]["systemuserid"]]
    assert teams[0]["_businessunitid_value"] == who["BusinessUnitId"]

    # reset leaves only the application users and the default team
    assert sb.post("/_sandbox/reset").ok
    stats = sb.get("/_sandbox/stats").json()
    assert (stats["systemusers"], stats["teams"]) == (2, 1)
    assert sb.call("GET", "WhoAmI", tok).json()["UserId"] == sb.info["sync_user_id"]
    r = sb.post("/_sandbox/seed", json={"entity": "lead", "count": 3, "owners": "users"})
    assert r.status_code == 400 and "seeded users" in r.json()["error"]
    for bad in ({"entity": "systemuser", "count": 1, "owners": "users"}, {"entity": "lead", "count": 1, "owners": "x"},
                {"entity": "lead", "count": 1, "owner_teams": -1}, {"entity": "team", "count": 1, "owner_teams": 2}):
        assert sb.post("/_sandbox/seed", json=bad).status_code == 400, bad


def test_seeded_rows_are_owned_round_robin_by_users_and_teams(sb: Sandbox) -> None:
    tok = sb.token()
    _seed(sb, entity="systemuser", count=3, seed=1)
    _seed(sb, entity="team", count=2, seed=1)
    users = [u["systemuserid"] for u in _seeded_users(sb, tok)]
    teams = [t["teamid"] for t in sb.call("GET", "teams?$select=name&$filter=isdefault eq false&$orderby=name",
                                          tok).json()["value"]]
    _seed(sb, entity="lead", count=12, seed=1, owners="users", owner_teams=4)
    rows = sb.call("GET", "leads?$select=emailaddress1,_ownerid_value", tok,
                   {"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'}).json()["value"]
    owner = {r["emailaddress1"]: (r["_ownerid_value"], r["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"])
             for r in rows}
    for i in range(12):
        expected = (teams[(i // 4) % 2], "team") if i % 4 == 3 else (users[i % 3], "systemuser")
        assert owner[f"lead{i:05d}@example.com"] == expected, i
    assert sb.info["user_id"] not in {o for o, _ in owner.values()}

    _seed(sb, entity="account", count=2, seed=1, contacts_per_account=2, owners="round_robin")
    contacts = sb.call("GET", "contacts?$select=_ownerid_value", tok).json()["value"]
    assert {c["_ownerid_value"] for c in contacts} <= set(users)
    # a disabled user gets no more seeded rows
    assert sb.call("PATCH", f"systemusers({users[0]})", tok, json={"isdisabled": True}).status_code == 204
    _seed(sb, entity="opportunity", count=4, seed=1, owners="users")
    opps = sb.call("GET", "opportunities?$select=_ownerid_value", tok).json()["value"]
    assert {o["_ownerid_value"] for o in opps} == set(users[1:])


# ------------------------------------------------------------------------------------ admin edits + change tracking
def test_systemuser_and_team_edits_show_in_change_tracking(sb: Sandbox) -> None:
    sync, user = sb.token(), sb.token(user=True)
    _seed(sb, entity="systemuser", count=3, seed=5)
    _seed(sb, entity="team", count=2, seed=5)
    rows, last, _ = _collect(sb, "systemusers?$select=firstname,lastname,fullname,isdisabled", sync, TRACK)
    assert len(rows) == 5
    users_delta = last["@odata.deltaLink"]
    assert users_delta.startswith(sb.api + "systemusers?$select=firstname,lastname,fullname,isdisabled&$deltatoken=")
    teams, last, _ = _collect(sb, "teams?$select=name,description", sync, TRACK)
    teams_delta = last["@odata.deltaLink"]
    seeded = [t for t in teams if t["name"].startswith("Team ")]
    default = next(t["teamid"] for t in teams if t["name"] == "sandbox")
    target = _seeded_users(sb, sync)[1]["systemuserid"]

    r = sb.call("PATCH", f"systemusers({target})", sync, json={"firstname": "Renamed", "lastname": "Person"},
                headers={"If-Match": "*"})
    assert r.status_code == 204, r.text
    assert sb.call("GET", f"systemusers({target})?$select=fullname", sync).json()["fullname"] == "Renamed Person"
    assert sb.call("PATCH", f"teams({seeded[0]['teamid']})", sync, json={"name": "Renamed Team"}).status_code == 204
    assert sb.call("DELETE", f"teams({seeded[1]['teamid']})", sync).status_code == 204

    changed = sb.call("GET", users_delta, sync, {"Prefer": TRACK}).json()
    assert changed["@odata.context"] == sb.api + "$metadata#systemusers(firstname,lastname,fullname,isdisabled)/$delta"
    assert [(v["systemuserid"], v["fullname"]) for v in changed["value"]] == [(target, "Renamed Person")]
    team_changes = sb.call("GET", teams_delta, sync, {"Prefer": TRACK}).json()["value"]
    assert team_changes[0]["teamid"] == seeded[0]["teamid"] and team_changes[0]["name"] == "Renamed Team"
    assert team_changes[1] == {"@odata.context": sb.api + "$metadata#teams/$deletedEntity",
                               "id": seeded[1]["teamid"], "reason": "deleted"}
    again = sb.call("GET", changed["@odata.deltaLink"], sync, {"Prefer": TRACK}).json()
    assert again["value"] == []
    count = sb.call("GET", f"systemusers/$count?$deltatoken={users_delta.split('$deltatoken=')[1]}", sync)
    assert count.text == "1"

    # the ordinary user (who stands for the people running Dynamics, its admin included) may edit users too
    assert sb.call("PATCH", f"systemusers({target})", user, json={"isdisabled": True}).status_code == 204
    assert sb.call("GET", f"systemusers({target})?$select=isdisabled", user).json()["isdisabled"] is True

    # what stays refused
    _error(sb.call("PATCH", f"systemusers({sb.info['user_id']})", sync, json={"firstname": "App"}), 400,
           "0x80041d48")
    _error(sb.call("PATCH", f"systemusers({target})", sync, json={"domainname": "x@y.z"}), 400, "0x80040203")
    _error(sb.call("PATCH", f"systemusers({uuid.uuid4()})", sync, json={"firstname": "New"}), 403, "0x80040220")
    _error(sb.call("PATCH", f"systemusers({uuid.uuid4()})", sync, json={"firstname": "New"},
                   headers={"If-Match": "*"}), 404, "0x80040217")
    _error(sb.call("POST", "systemusers", sync, json={"firstname": "New"}), 403, "0x80040220")
    _error(sb.call("DELETE", f"systemusers({target})", sync), 403, "0x80040220")
    _error(sb.call("POST", "teams", user, json={"name": "New"}), 403, "0x80040220")
    _error(sb.call("DELETE", f"teams({default})", sync), 400, "0x80048307")
    _error(sb.call("PATCH", f"teams({default})", sync, json={"name": "other"}), 400, "0x8004830A")
    assert sb.call("PATCH", f"teams({default})", sync, json={"description": "ok"}).status_code == 204
    owned = _entity_id(sb.call("POST", "leads", sync, json={
        "lastname": "Owned", "ownerid@odata.bind": f"/teams({seeded[0]['teamid']})"}))
    _error(sb.call("DELETE", f"teams({seeded[0]['teamid']})", sync), 400, "0x8004830E")
    assert sb.call("DELETE", f"leads({owned})", sync).status_code == 204
    assert sb.call("DELETE", f"teams({seeded[0]['teamid']})", sync).status_code == 204


# ------------------------------------------------------------------------------------ second custom table
def test_new_subscription_metadata_writes_and_seeding(sb: Sandbox) -> None:
    tok = sb.token()
    table = sb.call("GET", "EntityDefinitions(LogicalName='new_subscription')?$select=LogicalName,EntitySetName,"
                           "PrimaryIdAttribute,PrimaryNameAttribute,IsCustomEntity,ChangeTrackingEnabled,SchemaName",
                    tok).json()
    assert (table["EntitySetName"], table["PrimaryIdAttribute"], table["PrimaryNameAttribute"],
            table["SchemaName"]) == ("new_subscriptions", "new_subscriptionid", "new_name", "new_Subscription")
    assert table["IsCustomEntity"] is True and table["ChangeTrackingEnabled"] is True
    attrs = {a["LogicalName"]: a for a in sb.call(
        "GET", "EntityDefinitions(LogicalName='new_subscription')/Attributes?$select=LogicalName,AttributeType,"
               "RequiredLevel,IsCustomAttribute,SchemaName", tok).json()["value"]}
    assert {n: attrs[n]["AttributeType"] for n in ("new_name", "new_plan", "new_seats", "new_renewalon",
                                                    "new_active", "new_contactid")} == {
        "new_name": "String", "new_plan": "Picklist", "new_seats": "Integer", "new_renewalon": "DateTime",
        "new_active": "Boolean", "new_contactid": "Lookup"}
    assert attrs["new_name"]["RequiredLevel"]["Value"] == "ApplicationRequired"
    assert attrs["new_contactid"]["SchemaName"] == "new_ContactId" and attrs["new_plan"]["IsCustomAttribute"]
    base_url = "EntityDefinitions(LogicalName='new_subscription')/Attributes(LogicalName="
    plan = sb.call("GET", base_url + "'new_plan')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
                   "?$select=LogicalName&$expand=OptionSet($select=Options)", tok).json()
    assert [(o["Value"], o["Label"]["UserLocalizedLabel"]["Label"]) for o in plan["OptionSet"]["Options"]] == [
        (100000000, "Basic"), (100000001, "Pro"), (100000002, "Enterprise")]
    seats = sb.call("GET", base_url + "'new_seats')/Microsoft.Dynamics.CRM.IntegerAttributeMetadata"
                    "?$select=MinValue,MaxValue", tok).json()
    assert (seats["MinValue"], seats["MaxValue"]) == (0, 100000)
    renewal = sb.call("GET", base_url + "'new_renewalon')/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata"
                      "?$select=Format,DateTimeBehavior", tok).json()
    assert renewal["Format"] == "DateOnly" and renewal["DateTimeBehavior"]["Value"] == "DateOnly"
    name = sb.call("GET", base_url + "'new_name')/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=MaxLength",
                   tok).json()
    assert name["MaxLength"] == 100
    lookup = sb.call("GET", base_url + "'new_contactid')?$select=Targets", tok).json()
    assert lookup["Targets"] == ["contact"]

    contact = _entity_id(sb.call("POST", "contacts", tok, json={"lastname": "Subscriber"}))
    sub = _entity_id(sb.call("POST", "new_subscriptions", tok, json={
        "new_name": "Gold", "new_plan": 100000001, "new_seats": 25, "new_renewalon": "2030-06-30",
        "new_active": True, "new_ContactId@odata.bind": f"/contacts({contact})"}))
    row = sb.call("GET", f"new_subscriptions({sub})?$select=new_name,new_plan,new_seats,new_renewalon,new_active,"
                         "_new_contactid_value&$expand=new_ContactId($select=fullname)", tok).json()
    assert (row["new_plan"], row["new_seats"], row["new_renewalon"], row["new_active"]) == \
        (100000001, 25, "2030-06-30", True)
    assert row["_new_contactid_value"] == contact and row["new_ContactId"]["fullname"] == "Subscriber"
    _error(sb.call("POST", "new_subscriptions", tok, json={"new_name": "X", "new_seats": 100001}), 400, "0x80044331")
    _error(sb.call("POST", "new_subscriptions", tok, json={"new_name": "X", "new_plan": 1}), 400, "0x80044331")

    # seeding custom tables, lookups pointing at existing rows round-robin
    assert sb.post("/_sandbox/reset").ok
    r = sb.post("/_sandbox/seed", json={"entity": "new_subscription", "count": 2, "link_to": "existing"})
    assert r.status_code == 400 and "contact" in r.json()["error"]
    _seed(sb, entity="contact", count=3, seed=4)
    _seed(sb, entity="account", count=2, seed=4)
    assert _seed(sb, entity="new_subscription", count=7, seed=4, link_to="existing")["count"] == 7
    contacts = {c["contactid"] for c in sb.call("GET", "contacts?$select=fullname", tok).json()["value"]}
    subs = sb.call("GET", "new_subscriptions?$select=new_name,new_plan,new_seats,new_renewalon,new_active,"
                          "_new_contactid_value,statecode,_ownerid_value&$orderby=new_name", tok).json()["value"]
    assert [s["new_name"] for s in subs] == [f"Subscription {i:05d}" for i in range(7)]
    assert {s["_new_contactid_value"] for s in subs} == contacts
    assert all(s["new_plan"] in (100000000, 100000001, 100000002) and 0 <= s["new_seats"] <= 1000 and
               len(s["new_renewalon"]) == 10 and isinstance(s["new_active"], bool) and s["statecode"] == 0
               and s["_ownerid_value"] == sb.info["user_id"] for s in subs)
    _seed(sb, entity="new_project", count=4, seed=4, link_to="existing")
    projects = sb.call("GET", "new_projects?$select=new_code,_new_accountid_value", tok).json()["value"]
    assert len({p["_new_accountid_value"] for p in projects}) == 2 and len({p["new_code"] for p in projects}) == 4
    _seed(sb, entity="new_subscription", count=2, seed=9)  # by default lookups also point at existing rows
    _seed(sb, entity="new_subscription", count=2, seed=8, link_to="none")  # ... unless told not to
    linked = sb.call("GET", "new_subscriptions?$select=_new_contactid_value", tok).json()["value"]
    assert sum(1 for s in linked if s["_new_contactid_value"] is None) == 2 and len(linked) == 11
    assert sb.post("/_sandbox/seed", json={"entity": "lead", "count": 1, "link_to": "existing"}).status_code == 400
