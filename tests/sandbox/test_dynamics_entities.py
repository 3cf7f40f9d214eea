"""Dynamics sandbox, second part: more tables, lookups, alternate keys, bulk messages, validation, metadata,
faults, execution-time limits, stats and the entity seed form, all over real HTTPS with plain ``requests``.

The sandbox process and the per-test reset come from ``test_dynamics_sandbox`` (same fixtures).
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET

import msal
import msal.exceptions
import pytest
import requests

from tests.sandbox import test_dynamics_sandbox as base
from tests.sandbox.test_dynamics_sandbox import Sandbox, VerifyingHttpClient, _collect, _entity_id, _error, _seed

sandbox = base.sandbox  # the module-scoped sandbox process and the per-test reset, by fixture name
sb = base.sb

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


# ------------------------------------------------------------------------------------ seeding
def test_seed_entity_form_is_deterministic_and_relates_rows(sb: Sandbox) -> None:
    assert _seed(sb, entity="contact", count=2500, seed=9)["count"] == 2500
    tok = sb.token()
    first = sb.call("GET", "contacts?$select=emailaddress1,_ownerid_value&$filter=emailaddress1 eq "
                           "'contact00042@example.com'", tok).json()["value"]
    assert len(first) == 1 and first[0]["_ownerid_value"] == sb.info["user_id"]
    again = _seed(sb, entity="contact", count=50, seed=9)
    assert again["count"] == 50
    assert sb.get("/_sandbox/stats").json()["contacts"] == 2500
    same = sb.call("GET", f"contacts({first[0]['contactid']})?$select=emailaddress1", tok).json()
    assert same["emailaddress1"] == "contact00042@example.com"

    assert sb.post("/_sandbox/reset").ok
    out = _seed(sb, entity="account", count=4, contacts_per_account=3, opportunities_per_account=2, seed=1)
    assert (out["count"], out["contacts"], out["opportunities"]) == (4, 12, 8)
    stats = sb.get("/_sandbox/stats").json()
    assert (stats["accounts"], stats["contacts"], stats["opportunities"]) == (4, 12, 8)
    account = sb.call("GET", "accounts(accountnumber='ACC0000002')?$select=name", tok).json()
    kids = sb.call("GET", f"contacts?$select=fullname&$filter=_parentcustomerid_value eq {account['accountid']}",
                   tok).json()["value"]
    assert len(kids) == 3
    opps = sb.call("GET", f"opportunities?$select=name&$filter=_parentaccountid_value eq {account['accountid']}",
                   tok).json()["value"]
    assert len(opps) == 2

    assert sb.post("/_sandbox/reset").ok  # each deal of an account with its first contact as the deal's contact
    _seed(sb, entity="account", count=3, contacts_per_account=2, opportunities_per_account=1, seed=1,
          opportunity_contact=True)
    account = sb.call("GET", "accounts(accountnumber='ACC0000001')?$select=name", tok).json()
    [opp] = sb.call("GET", f"opportunities?$select=_parentcontactid_value&$filter=_parentaccountid_value eq "
                           f"{account['accountid']}", tok).json()["value"]
    kids = sb.call("GET", f"contacts?$select=emailaddress1&$filter=_parentcustomerid_value eq {account['accountid']}"
                          "&$orderby=emailaddress1", tok).json()["value"]
    assert opp["_parentcontactid_value"] == kids[0]["contactid"]

    for bad in ({"entity": "nope", "count": 1}, {"entity": "contact", "count": -1},
                {"entity": "contact", "count": 1, "contacts_per_account": 2}, {"entity": "lead", "count": 1, "x": 1},
                {"entity": "account", "count": 1, "opportunity_contact": True}):
        r = sb.post("/_sandbox/seed", json=bad)
        assert r.status_code == 400 and r.json()["ok"] is False, bad
    # The original form still works, with the same deterministic e-mails.
    assert _seed(sb, leads=3, contacts=0, seed=5) == {"ok": True, "leads": 3, "contacts": 0}


# ------------------------------------------------------------------------------------ tables and lookups
def test_accounts_contacts_opportunities_with_lookups_and_expand(sb: Sandbox) -> None:
    tok = sb.token()
    acc = _entity_id(sb.call("POST", "accounts", tok, json={"name": "Contoso", "accountnumber": "A-1",
                                                             "industrycode": 7, "revenue": 1500000.5}))
    contact = _entity_id(sb.call("POST", "contacts", tok, json={
        "firstname": "Ana", "lastname": "Diaz", "parentcustomerid_account@odata.bind": f"/accounts({acc})"}))
    r = sb.call("PATCH", f"accounts({acc})", tok, json={"primarycontactid@odata.bind": f"contacts({contact})"})
    assert r.status_code == 204
    opp = _entity_id(sb.call("POST", "opportunities", tok, json={
        "name": "Big deal", "estimatedvalue": 1000, "estimatedclosedate": "2030-01-31",
        "parentaccountid@odata.bind": f"/accounts({acc})", "customerid_account@odata.bind": f"/accounts({acc})"}))

    row = sb.call("GET", f"opportunities({opp})?$select=name,_parentaccountid_value,_customerid_value,statecode,"
                         "statuscode,estimatedclosedate&$expand=parentaccountid($select=name,accountnumber)", tok,
                  {"Prefer": 'odata.include-annotations="*"'}).json()
    assert row["_parentaccountid_value"] == acc and row["_customerid_value"] == acc
    assert row["_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    assert row["parentaccountid"]["name"] == "Contoso" and row["parentaccountid"]["accountid"] == acc
    assert (row["statecode"], row["statuscode"]) == (0, 1) and row["estimatedclosedate"] == "2030-01-31"
    assert row["statuscode@OData.Community.Display.V1.FormattedValue"] == "In Progress"
    assert row["@odata.context"].endswith("$metadata#opportunities(name,_parentaccountid_value,_customerid_value,"
                                          "statecode,statuscode,estimatedclosedate,"
                                          "parentaccountid(name,accountnumber))/$entity")

    listed = sb.call("GET", "contacts?$select=fullname&$expand=parentcustomerid_account($select=name),"
                            "parentcustomerid_contact($select=fullname)", tok).json()["value"]
    assert listed[0]["parentcustomerid_account"]["name"] == "Contoso" and listed[0]["parentcustomerid_contact"] is None
    assert sb.call("GET", f"accounts({acc})?$select=name&$expand=primarycontactid($select=fullname)",
                   tok).json()["primarycontactid"]["fullname"] == "Ana Diaz"
    assert sb.call("GET", f"accounts({acc})?$expand=nosuchnav", tok).status_code == 400
    # lookups are set through navigation properties only; a customer lookup has one per target
    _error(sb.call("POST", "contacts", tok, json={"lastname": "X", "parentcustomerid@odata.bind": f"/accounts({acc})"}),
           400, "0x80048d19")
    _error(sb.call("POST", "contacts", tok, json={"lastname": "X", "_parentcustomerid_value": acc}), 400,
           "0x80048d19")
    _error(sb.call("POST", "contacts", tok, json={
        "lastname": "X", "parentcustomerid_account@odata.bind": f"/accounts({uuid.uuid4()})"}), 404, "0x80040217")
    # $filter on lookup values, and/or/not, functions
    found = sb.call("GET", f"contacts?$select=fullname&$filter=_parentcustomerid_value eq {acc} and "
                           "not startswith(lastname,'Z') and (contains(fullname,'Ana') or lastname eq null)",
                    tok).json()["value"]
    assert [c["fullname"] for c in found] == ["Ana Diaz"]

    teams = sb.call("GET", "teams?$select=name,teamtype,isdefault", tok).json()["value"]
    assert teams and teams[0]["isdefault"] is True
    r = sb.call("POST", "leads", tok, json={"lastname": "Team", "ownerid@odata.bind": f"/teams({teams[0]['teamid']})"})
    lead = _entity_id(r)
    owned = sb.call("GET", f"leads({lead})?$select=_ownerid_value", tok,
                    {"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'}).json()
    assert owned["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "team"
    _error(sb.call("POST", "teams", tok, json={"name": "t"}), 403, "0x80040220")


def test_alternate_keys_upsert_and_uniqueness(sb: Sandbox) -> None:
    tok = sb.token()
    r = sb.call("PATCH", "accounts(accountnumber='K-1')", tok, json={"name": "Keyed"})
    assert r.status_code == 204
    acc = _entity_id(r)
    r = sb.call("PATCH", "accounts(accountnumber='K-1')", tok, json={"name": "Keyed 2", "accountnumber": "OTHER"},
                headers={"Prefer": "return=representation"})
    assert r.status_code == 200 and r.json()["accountid"] == acc
    assert r.json()["accountnumber"] == "K-1" and r.json()["name"] == "Keyed 2"  # the key in the URL wins
    got = sb.call("GET", "accounts(accountnumber='K-1')?$select=name", tok)
    assert got.status_code == 200 and got.json()["name"] == "Keyed 2"
    _error(sb.call("GET", "accounts(accountnumber='missing')", tok), 404, "0x80040217")
    _error(sb.call("PATCH", "accounts(accountnumber='missing')", tok, {"If-Match": "*"}, json={"name": "n"}),
           404, "0x80040217")
    msg = _error(sb.call("GET", "accounts(name='Keyed 2')", tok), 400, "0x80060888")
    assert "alternate key properties" in msg
    _error(sb.call("POST", "accounts", tok, json={"name": "Dup", "accountnumber": "K-1"}), 412, "0x80060892")
    other = _entity_id(sb.call("POST", "accounts", tok, json={"name": "Other", "accountnumber": "K-2"}))
    _error(sb.call("PATCH", f"accounts({other})", tok, {"If-Match": "*"}, json={"accountnumber": "K-1"}), 412,
           "0x80060892")
    r = sb.call("POST", "accounts/Microsoft.Dynamics.CRM.UpsertMultiple", tok, json={"Targets": [
        {"@odata.type": "Microsoft.Dynamics.CRM.account", "@odata.id": "accounts(accountnumber='K-1')", "name": "U1"},
        {"@odata.type": "Microsoft.Dynamics.CRM.account", "@odata.id": "accounts(accountnumber='K-3')", "name": "U3"},
    ]})
    assert r.status_code == 200, r.text
    ids = r.json()["Ids"]
    assert ids[0] == acc and len(ids) == 2
    assert sb.call("GET", "accounts(accountnumber='K-3')?$select=name", tok).json()["name"] == "U3"
    assert sb.call("DELETE", "accounts(accountnumber='K-3')", tok).status_code == 204
    # the custom table's declared key works the same way
    r = sb.call("PATCH", "new_projects(new_code='P-9')", tok, json={"new_name": "Nine"})
    assert r.status_code == 204


def test_bulk_delete_runs_a_system_job(sb: Sandbox) -> None:
    _seed(sb, entity="contact", count=30, seed=2)
    tok = sb.token()
    r = sb.call("POST", "BulkDelete", tok, json={
        "QuerySet": [{"@odata.type": "Microsoft.Dynamics.CRM.QueryExpression", "EntityName": "contact",
                      "ColumnSet": {"AllColumns": True},
                      "Criteria": {"FilterOperator": "Or", "Conditions": [
                          {"AttributeName": "emailaddress1", "Operator": "Like",
                           "Values": [{"Value": "contact0000%", "Type": "System.String"}]},
                          {"AttributeName": "emailaddress1", "Operator": "Equal",
                           "Values": [{"Value": "contact00029@example.com", "Type": "System.String"}]}]}}],
        "JobName": "Purge", "SendEmailNotification": False, "ToRecipients": [], "CCRecipients": [],
        "RecurrencePattern": "", "StartDateTime": "2024-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    job = r.json()["JobId"]
    assert sb.get("/_sandbox/stats").json()["contacts"] == 19
    status = sb.call("GET", f"asyncoperations({job})?$select=name,operationtype,statecode,statuscode", tok).json()
    assert (status["operationtype"], status["statecode"], status["statuscode"]) == (13, 3, 30)
    _error(sb.call("POST", "BulkDelete", tok, json={"JobName": "x"}), 400, "0x80040203")


# ------------------------------------------------------------------------------------ validation
def test_validation_types_ranges_picklists_and_secured_columns(sb: Sandbox) -> None:
    tok, user = sb.token(), sb.token(user=True)
    cases = [
        ("opportunities", {"name": "x", "closeprobability": 101}, 400, "0x80044331"),
        ("opportunities", {"name": "x", "closeprobability": "high"}, 400, "0x80048d19"),
        ("opportunities", {"name": "x", "estimatedclosedate": "2030-01-31T10:00:00Z"}, 400, "0x80048d19"),
        ("accounts", {"name": "x", "numberofemployees": 2**31}, 400, "0x80048d19"),
        ("accounts", {"name": "x", "revenue": -1}, 400, "0x80044331"),
        ("accounts", {"name": "x", "industrycode": 999}, 400, "0x80044331"),
        ("accounts", {"name": "x" * 161}, 400, "0x80044331"),
        ("accounts", {"name": 5}, 400, "0x80048d19"),
        ("accounts", {"nosuchcolumn": 1}, 400, "0x80048d19"),
        ("contacts", {"lastname": "x", "birthdate": "1700-01-01"}, 400, "0x80044331"),
        ("new_projects", {"new_name": "x", "new_stage": 5}, 400, "0x80044331"),
        ("new_projects", {"new_name": "x", "new_hours": -5}, 400, "0x80044331"),
    ]
    for entity_set, body, status, code in cases:
        _error(sb.call("POST", entity_set, tok, json=body), status, code)
    # Business Required (ApplicationRequired) is not enforced by the server.
    assert sb.call("POST", "accounts", tok, json={"telephone1": "1"}).status_code == 204
    # Columns not valid for create are silently ignored.
    r = sb.call("POST", "accounts", tok, json={"name": "n", "createdon": "2001-01-01T00:00:00Z", "statecode": 1},
                headers={"Prefer": "return=representation"})
    assert r.status_code == 201 and r.json()["statecode"] == 0 and not r.json()["createdon"].startswith("2001")

    # A secured column: the ordinary user (in the field security profile) writes and reads it; the sync user
    # reads null and may not write it.
    r = sb.call("POST", "new_projects", user, json={"new_name": "Secret", "new_budget": 5000, "new_code": "S-1"})
    project = _entity_id(r)
    assert sb.call("GET", f"new_projects({project})?$select=new_budget", user).json()["new_budget"] == 5000
    assert sb.call("GET", f"new_projects({project})?$select=new_budget,new_name", tok).json()["new_budget"] is None
    _error(sb.call("PATCH", f"new_projects({project})", tok, json={"new_budget": 1}), 403, "0x8004f507")
    _error(sb.call("POST", "new_projects", tok, json={"new_name": "n", "new_budget": 1}), 403, "0x8004f502")
    meta = sb.call("GET", "EntityDefinitions(LogicalName='new_project')/Attributes(LogicalName='new_budget')?"
                          "$select=LogicalName,IsSecured", tok).json()
    assert meta["IsSecured"] is True


# ------------------------------------------------------------------------------------ metadata
def test_metadata_csdl_and_entity_definitions_cover_every_table(sb: Sandbox) -> None:
    tok = sb.token()
    doc = sb.call("GET", "", tok).json()["value"]
    sets = {i["name"] for i in doc if i["kind"] == "EntitySet"}
    assert {"leads", "contacts", "accounts", "opportunities", "systemusers", "teams", "new_projects"} <= sets

    root = ET.fromstring(sb.call("GET", "$metadata", tok).content)
    schema = root.find(f".//{EDM}Schema")
    assert schema is not None
    types = {e.get("Name"): e for e in schema.findall(f"{EDM}EntityType")}
    project = types["new_project"]
    props = {p.get("Name"): p.get("Type") for p in project.findall(f"{EDM}Property")}
    assert props["new_startdate"] == "Edm.Date" and props["_new_accountid_value"] == "Edm.Guid"
    navs = {n.get("Name"): n.get("Type") for n in project.findall(f"{EDM}NavigationProperty")}
    assert navs["new_AccountId"] == "mscrm.account"
    contact_navs = {n.get("Name") for n in types["contact"].findall(f"{EDM}NavigationProperty")}
    assert {"parentcustomerid_account", "parentcustomerid_contact", "ownerid"} <= contact_navs
    account_keys = types["account"].find(f"{EDM}Annotation[@Term='OData.Community.Keys.V1.AlternateKeys']")
    assert account_keys is not None and "accountnumber" in ET.tostring(account_keys, encoding="unicode")
    assert {a.get("Name") for a in schema.findall(f"{EDM}Action")} >= {"CreateMultiple", "UpsertMultiple",
                                                                        "BulkDelete"}

    entities = sb.call("GET", "EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute,"
                              "ChangeTrackingEnabled,CanChangeTrackingBeEnabled,IsCustomEntity", tok).json()["value"]
    by_name = {e["LogicalName"]: e for e in entities}
    assert by_name["opportunity"]["EntitySetName"] == "opportunities"
    assert by_name["new_project"]["IsCustomEntity"] is True and by_name["team"]["PrimaryIdAttribute"] == "teamid"
    assert all(e["CanChangeTrackingBeEnabled"]["Value"] is True for e in entities)
    keys = sb.call("GET", "EntityDefinitions(LogicalName='account')?$select=LogicalName&$expand=Keys,"
                          "ManyToOneRelationships", tok).json()
    assert [k["KeyAttributes"] for k in keys["Keys"]] == [["accountnumber"]]
    assert {r["ReferencingAttribute"] for r in keys["ManyToOneRelationships"]} >= {"primarycontactid", "ownerid"}
    dates = sb.call("GET", "EntityDefinitions(LogicalName='opportunity')/Attributes/Microsoft.Dynamics.CRM."
                           "DateTimeAttributeMetadata?$select=LogicalName,DateTimeBehavior,Format", tok).json()["value"]
    close = next(d for d in dates if d["LogicalName"] == "estimatedclosedate")
    assert close["DateTimeBehavior"]["Value"] == "DateOnly" and close["Format"] == "DateOnly"
    ints = sb.call("GET", "EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='closeprobability')/"
                          "Microsoft.Dynamics.CRM.IntegerAttributeMetadata?$select=MinValue,MaxValue", tok).json()
    assert (ints["MinValue"], ints["MaxValue"]) == (0, 100)

    # The typed casts also work inside $batch.
    boundary = "batch_meta"
    url = (f"{sb.api}EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM."
           "PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)")
    body = (f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"GET {url} HTTP/1.1\r\nAccept: application/json\r\n\r\n--{boundary}--\r\n")
    r = sb.call("POST", "$batch", tok, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, data=body.encode())
    assert r.status_code == 200 and "HTTP/1.1 200 OK" in r.text and '"industrycode"' in r.text
    assert '"Label":"Consulting"' in r.text


# ------------------------------------------------------------------------------------ faults, limits, stats
def test_injected_faults_answer_like_dataverse(sb: Sandbox) -> None:
    tok = sb.token()
    assert sb.post("/_sandbox/faults", json={"code": 429, "count": 2, "path": "contacts", "retry_after": 7}).ok
    assert sb.call("GET", "WhoAmI", tok).status_code == 200  # path does not match
    for _ in range(2):
        r = sb.call("GET", "contacts?$top=1", tok)
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.json()["error"] == {"code": "0x80072322", "message": "Number of requests exceeded the limit of 6000 "
                                                                      "over time window of 300 seconds."}
    assert sb.call("GET", "contacts?$top=1", tok).status_code == 200

    sb.post("/_sandbox/faults", json={"faults": [
        {"code": 503, "method": "POST"}, {"code": 429, "reason": "execution_time"},
        {"code": 429, "reason": "concurrency", "user": "user"}]})
    listed = sb.get("/_sandbox/faults").json()["faults"]
    assert [f["code"] for f in listed] == [503, 429, 429]
    r = sb.call("POST", "accounts", tok, json={"name": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"]
    _error(sb.call("GET", "WhoAmI", tok), 429, "0x80072321")
    _error(sb.call("GET", "WhoAmI", sb.token(user=True)), 429, "0x80072326")
    sb.post("/_sandbox/faults", json={"code": 500, "count": 5})
    cleared = requests.delete(sb.base + "/_sandbox/faults", verify=sb.ca, timeout=30).json()
    assert cleared["cleared"] == 1 and sb.call("GET", "WhoAmI", tok).status_code == 200
    assert sb.post("/_sandbox/faults", json={"code": 200}).status_code == 400
    assert sb.post("/_sandbox/faults", json={"code": 429, "bogus": 1}).status_code == 400

    # Faults on the token endpoint reach MSAL as Entra ID's error shape.
    sb.post("/_sandbox/faults", json={"code": 503, "target": "token"})
    app = msal.ConfidentialClientApplication(sb.info["client_id"], client_credential=sb.info["client_secret"],
                                             authority=sb.info["authority"], instance_discovery=False,
                                             http_client=VerifyingHttpClient(sb.ca))
    with pytest.raises(msal.exceptions.MsalServiceError):  # MSAL raises on 5xx from the token endpoint
        app.acquire_token_for_client([sb.info["resource_url"] + "/.default"])
    sb.post("/_sandbox/faults", json={"code": 429, "target": "token", "retry_after": 3})
    r = sb.post(f"/{sb.info['tenant_id']}/oauth2/v2.0/token", data={
        "client_id": sb.info["client_id"], "client_secret": sb.info["client_secret"],
        "grant_type": "client_credentials", "scope": sb.info["resource_url"] + "/.default"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.json()["error"] == "temporarily_unavailable" and r.json()["error_description"].startswith("AADSTS")
    stats = sb.get("/_sandbox/stats").json()
    assert stats["faults_fired"] >= 7 and stats["faults_pending"] == 0


def test_execution_time_limit_and_stats(sb: Sandbox) -> None:
    tok = sb.token()
    sb.limits(execution_time_s_per_300s=1, latency_ms=600, reset_counters=True)
    codes = [sb.call("GET", "WhoAmI", tok).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = sb.call("GET", "WhoAmI", tok)
    msg = _error(r, 429, "0x80072321")
    assert msg.startswith("Combined execution time of incoming requests exceeded limit of 1,000 milliseconds")
    assert int(r.headers["Retry-After"]) > 0
    assert sb.get("/_sandbox/limits").json()["execution_time_s_per_300s"] == 1
    sb.limits(execution_time_s_per_300s=1200, latency_ms=0, reset_counters=True)
    ok = sb.call("GET", "WhoAmI", tok)
    assert ok.status_code == 200 and float(ok.headers["x-ms-ratelimit-time-remaining-xrm-requests"]) > 1000
    stats = sb.get("/_sandbox/stats").json()
    for key in ("requests", "by_user", "throttled", "in_flight", "execution_s", "leads", "contacts", "accounts",
                "opportunities", "new_projects", "tombstones", "rss_mb", "faults_fired"):
        assert key in stats, key


def test_change_tracking_covers_new_tables(sb: Sandbox) -> None:
    _seed(sb, entity="account", count=20, opportunities_per_account=1, seed=3)
    tok = sb.token()
    rows, last, pages = _collect(sb, "opportunities?$select=name", tok,
                                 "odata.track-changes,odata.maxpagesize=7")
    assert len(rows) == 20 and pages == 3 and "@odata.deltaLink" in last
    first = rows[0]["opportunityid"]
    assert sb.call("PATCH", f"opportunities({first})", tok, {"If-Match": "*"}, json={"name": "Renamed"}).status_code \
        == 204
    assert sb.call("DELETE", f"opportunities({rows[1]['opportunityid']})", tok).status_code == 204
    delta = sb.call("GET", last["@odata.deltaLink"], tok).json()
    assert [v.get("name") for v in delta["value"] if "name" in v] == ["Renamed"]
    assert [v["id"] for v in delta["value"] if v.get("reason") == "deleted"] == [rows[1]["opportunityid"]]
    assert re.search(r"\$deltatoken=\d+", delta["@odata.deltaLink"])
