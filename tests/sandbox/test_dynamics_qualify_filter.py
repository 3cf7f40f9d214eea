"""Dynamics sandbox: the ``new_synctomkto`` sync filter column and the ``QualifyLead`` action, over real HTTPS.

The sandbox process and the per-test reset come from ``test_dynamics_sandbox`` (same fixtures).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from tests.sandbox import test_dynamics_sandbox as base
from tests.sandbox.test_dynamics_sandbox import Sandbox, _collect, _entity_id, _error

sandbox = base.sandbox  # the module-scoped sandbox process and the per-test reset, by fixture name
sb = base.sb

TRACK = "odata.track-changes"
QUALIFY = "Microsoft.Dynamics.CRM.QualifyLead"
FILTER_TABLES = ("lead", "contact", "account", "opportunity")


def _delta_link(sb: Sandbox, url: str, token: str) -> str:
    _, last, _ = _collect(sb, url, token, TRACK)
    return last["@odata.deltaLink"]


def _delta(sb: Sandbox, link: str, token: str) -> list[dict[str, Any]]:
    r = sb.call("GET", link, token, {"Prefer": TRACK})
    assert r.status_code == 200, r.text
    return r.json()["value"]


def _qualify(sb: Sandbox, token: str, lead: str, **params: Any) -> Any:
    body = {"CreateAccount": True, "CreateContact": True, "CreateOpportunity": True, "Status": 3, **params}
    return sb.call("POST", f"leads({lead})/{QUALIFY}", token, json=body)


# ------------------------------------------------------------------------------------ sync filter column
def test_sync_filter_column_in_metadata_on_all_four_tables(sb: Sandbox) -> None:
    tok = sb.token()
    for logical in FILTER_TABLES:
        attr = sb.call("GET", f"EntityDefinitions(LogicalName='{logical}')/Attributes(LogicalName='new_synctomkto')"
                              "?$select=LogicalName,SchemaName,AttributeType,IsCustomAttribute,IsValidForCreate,"
                              "IsValidForUpdate,IsValidForRead,RequiredLevel", tok).json()
        assert (attr["SchemaName"], attr["AttributeType"], attr["IsCustomAttribute"]) == \
            ("new_SyncToMkto", "Boolean", True), attr
        assert attr["IsValidForCreate"] and attr["IsValidForUpdate"] and attr["IsValidForRead"]
        assert attr["RequiredLevel"]["Value"] == "None"
        typed = sb.call("GET", f"EntityDefinitions(LogicalName='{logical}')/Attributes(LogicalName='new_synctomkto')"
                               "/Microsoft.Dynamics.CRM.BooleanAttributeMetadata?$select=LogicalName,DefaultValue"
                               "&$expand=OptionSet", tok).json()
        assert typed["@odata.type"] == "#Microsoft.Dynamics.CRM.BooleanAttributeMetadata"
        assert typed["DefaultValue"] is None  # nullable: an unset value reads null
        options = typed["OptionSet"]
        assert options["TrueOption"]["Value"] == 1 and options["FalseOption"]["Value"] == 0
        assert options["TrueOption"]["Label"]["UserLocalizedLabel"]["Label"] == "Yes"
        assert options["FalseOption"]["Label"]["UserLocalizedLabel"]["Label"] == "No"
        origin = sb.call("GET", f"EntityDefinitions(LogicalName='{logical}')/Attributes(LogicalName="
                                "'originatingleadid')?$select=AttributeType,Targets", tok)
        if logical == "lead":
            assert origin.status_code == 404
        else:
            assert origin.json()["AttributeType"] == "Lookup" and origin.json()["Targets"] == ["lead"]
    csdl = sb.call("GET", "$metadata", tok).text
    assert '<Property Name="new_synctomkto" Type="Edm.Boolean"/>' in csdl
    assert '<Action Name="QualifyLead" IsBound="true">' in csdl


def test_sync_filter_is_writable_filterable_and_tracked(sb: Sandbox) -> None:
    tok = sb.token()
    unset = _entity_id(sb.call("POST", "leads", tok, json={"lastname": "Unset"}))
    yes = _entity_id(sb.call("POST", "leads", tok, json={"lastname": "Yes", "new_synctomkto": True}))
    no = _entity_id(sb.call("POST", "leads", tok, json={"lastname": "No", "new_synctomkto": False}))
    row = sb.call("GET", f"leads({unset})?$select=new_synctomkto", tok).json()
    assert row["new_synctomkto"] is None
    annotated = sb.call("GET", f"leads({yes})?$select=new_synctomkto", tok,
                        {"Prefer": 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'}).json()
    assert annotated["new_synctomkto"] is True
    assert annotated["new_synctomkto@OData.Community.Display.V1.FormattedValue"] == "Yes"

    def ids(flt: str) -> set[str]:
        return {v["leadid"] for v in sb.call("GET", f"leads?$select=lastname&$filter={flt}", tok).json()["value"]}
    assert ids("new_synctomkto eq true") == {yes}
    assert ids("new_synctomkto eq false") == {no}
    assert ids("new_synctomkto eq null") == {unset}
    assert ids("new_synctomkto ne false or new_synctomkto eq null") == {yes, unset}
    _error(sb.call("POST", "leads", tok, json={"lastname": "X", "new_synctomkto": "yes"}), 400, "0x80048d19")

    links = {logical: _delta_link(sb, f"{set_}?$select=new_synctomkto", tok)
             for logical, set_ in (("lead", "leads"), ("contact", "contacts"), ("account", "accounts"),
                                   ("opportunity", "opportunities"))}
    assert sb.call("PATCH", f"leads({unset})", tok, json={"new_synctomkto": False}).status_code == 204
    contact = _entity_id(sb.call("POST", "contacts", tok, json={"lastname": "C", "new_synctomkto": True}))
    account = _entity_id(sb.call("POST", "accounts", tok, json={"name": "A", "new_synctomkto": False}))
    opp = _entity_id(sb.call("POST", "opportunities", tok, json={"name": "O", "new_synctomkto": True}))
    assert [(v["leadid"], v["new_synctomkto"]) for v in _delta(sb, links["lead"], tok)] == [(unset, False)]
    assert [(v["contactid"], v["new_synctomkto"]) for v in _delta(sb, links["contact"], tok)] == [(contact, True)]
    assert [(v["accountid"], v["new_synctomkto"]) for v in _delta(sb, links["account"], tok)] == [(account, False)]
    assert [(v["opportunityid"], v["new_synctomkto"]) for v in _delta(sb, links["opportunity"], tok)] == \
        [(opp, True)]
    # clearing it again is a change too
    assert sb.call("PATCH", f"contacts({contact})", tok, json={"new_synctomkto": None}).status_code == 204
    assert sb.call("GET", f"contacts({contact})?$select=new_synctomkto", tok).json()["new_synctomkto"] is None


def test_seeding_can_set_the_sync_filter(sb: Sandbox) -> None:
    tok = sb.token()
    assert sb.post("/_sandbox/seed", json={"entity": "lead", "count": 9, "seed": 2, "synctomkto": "mixed"}).ok
    rows = sb.call("GET", "leads?$select=emailaddress1,new_synctomkto", tok).json()["value"]
    by_mail = {r["emailaddress1"]: r["new_synctomkto"] for r in rows}
    assert [by_mail[f"lead{i:05d}@example.com"] for i in range(4)] == [None, True, False, None]
    assert sb.post("/_sandbox/seed", json={"entity": "contact", "count": 3, "seed": 2, "synctomkto": False}).ok
    values = {r["new_synctomkto"] for r in sb.call("GET", "contacts?$select=new_synctomkto", tok).json()["value"]}
    assert values == {False}
    assert sb.post("/_sandbox/seed", json={"entity": "account", "count": 1, "synctomkto": "yes"}).status_code == 400
    # without the key nothing changes: the filter stays unset
    assert sb.post("/_sandbox/seed", json={"entity": "account", "count": 2, "seed": 2}).ok
    assert {r["new_synctomkto"] for r in sb.call("GET", "accounts?$select=new_synctomkto", tok).json()["value"]} \
        == {None}


# ------------------------------------------------------------------------------------ QualifyLead
def _new_lead(sb: Sandbox, token: str, **extra: Any) -> str:
    body = {"firstname": "Ana", "lastname": "Diaz", "emailaddress1": "ana@example.com", "telephone1": "+1 555 0100",
            "mobilephone": "+1 555 0101", "jobtitle": "CTO", "companyname": "Contoso", "subject": "Big interest",
            "new_synctomkto": True, **extra}
    return _entity_id(sb.call("POST", "leads", token, json=body))


def test_qualify_lead_creates_account_contact_opportunity_and_closes_the_lead(sb: Sandbox) -> None:
    sync, user = sb.token(), sb.token(user=True)
    lead = _new_lead(sb, user)  # owned by the ordinary user; qualified by the sync's app user
    links = {name: _delta_link(sb, f"{name}?$select=_modifiedby_value", sync)
             for name in ("leads", "contacts", "accounts", "opportunities")}

    r = _qualify(sb, sync, lead, OpportunityCurrencyId=None, SourceCampaignId=None)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["@odata.context"] == sb.api + "$metadata#Collection(Microsoft.Dynamics.CRM.crmbaseentity)"
    types = [v["@odata.type"] for v in body["value"]]
    assert types == ["#Microsoft.Dynamics.CRM.account", "#Microsoft.Dynamics.CRM.contact",
                     "#Microsoft.Dynamics.CRM.opportunity"]
    account, contact, opp = (body["value"][0]["accountid"], body["value"][1]["contactid"],
                             body["value"][2]["opportunityid"])

    c = sb.call("GET", f"contacts({contact})?$select=firstname,lastname,fullname,emailaddress1,telephone1,"
                       "mobilephone,jobtitle,new_synctomkto,_ownerid_value,_originatingleadid_value,"
                       "_parentcustomerid_value,_createdby_value,statecode", sync,
                {"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'}).json()
    assert (c["fullname"], c["emailaddress1"], c["telephone1"], c["mobilephone"], c["jobtitle"]) == \
        ("Ana Diaz", "ana@example.com", "+1 555 0100", "+1 555 0101", "CTO")
    assert c["new_synctomkto"] is True and c["statecode"] == 0
    assert c["_ownerid_value"] == sb.info["user_id"]  # the lead's owner
    assert c["_createdby_value"] == sb.info["sync_user_id"]  # written as the caller
    assert c["_originatingleadid_value"] == lead
    assert c["_originatingleadid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "lead"
    assert c["_parentcustomerid_value"] == account
    assert c["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    a = sb.call("GET", f"accounts({account})?$select=name,_originatingleadid_value,_primarycontactid_value,"
                       "_ownerid_value", sync).json()
    assert (a["name"], a["_originatingleadid_value"], a["_primarycontactid_value"]) == ("Contoso", lead, contact)
    assert a["_ownerid_value"] == sb.info["sync_user_id"]
    o = sb.call("GET", f"opportunities({opp})?$select=name,_originatingleadid_value,_parentaccountid_value,"
                       "_parentcontactid_value,_customerid_value,statecode", sync).json()
    assert (o["name"], o["_originatingleadid_value"], o["_parentaccountid_value"], o["_parentcontactid_value"],
            o["_customerid_value"], o["statecode"]) == ("Big interest", lead, account, contact, account, 0)
    closed = sb.call("GET", f"leads({lead})?$select=statecode,statuscode,_modifiedby_value", sync,
                     {"Prefer": 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'}).json()
    assert (closed["statecode"], closed["statuscode"]) == (1, 3)
    assert closed["statuscode@OData.Community.Display.V1.FormattedValue"] == "Qualified"
    assert closed["_modifiedby_value"] == sb.info["sync_user_id"]

    # every write shows up in its table's delta
    for name, key, expected in (("leads", "leadid", lead), ("contacts", "contactid", contact),
                                ("accounts", "accountid", account), ("opportunities", "opportunityid", opp)):
        values = _delta(sb, links[name], sync)
        assert [(v[key], v["_modifiedby_value"]) for v in values] == [(expected, sb.info["sync_user_id"])], name
    found = sb.call("GET", f"contacts?$select=fullname&$filter=_originatingleadid_value eq {lead}", sync).json()
    assert [v["contactid"] for v in found["value"]] == [contact]


def test_qualified_lead_is_closed_and_read_only(sb: Sandbox) -> None:
    tok, user = sb.token(), sb.token(user=True)
    lead = _new_lead(sb, tok)
    assert _qualify(sb, tok, lead, CreateAccount=False, CreateOpportunity=False).status_code == 200
    message = _error(_qualify(sb, tok, lead), 400, "0x80040519")
    assert message == "The lead is closed. You cannot convert or qualify a lead that is already closed."
    assert sb.get("/_sandbox/stats").json()["contacts"] == 1  # the refused qualify created nothing

    message = _error(sb.call("PATCH", f"leads({lead})", user, json={"firstname": "Edited"}), 400, "0x80040230")
    assert "This lead is closed and cannot be edited" in message
    _error(sb.call("PUT", f"leads({lead})/jobtitle", user, json={"value": "CEO"}), 400, "0x80040230")
    # reassigning is still allowed; reactivating (statecode 0) makes it editable again
    assert sb.call("PATCH", f"leads({lead})", tok,
                   json={"ownerid@odata.bind": f"/systemusers({sb.info['user_id']})"}).status_code == 204
    assert sb.call("PATCH", f"leads({lead})", user, json={"statecode": 0, "statuscode": 2}).status_code == 204
    assert sb.call("PATCH", f"leads({lead})", user, json={"firstname": "Edited"}).status_code == 204

    disqualified = _new_lead(sb, tok)
    assert sb.call("PATCH", f"leads({disqualified})", tok, json={"statecode": 2, "statuscode": 4}).status_code == 204
    _error(_qualify(sb, tok, disqualified), 400, "0x80040519")
    _error(sb.call("PATCH", f"leads({disqualified})", tok, json={"subject": "x"}), 400, "0x80040230")


def test_qualify_lead_validation_and_errors(sb: Sandbox) -> None:
    tok = sb.token()
    missing = str(uuid.uuid4())
    assert _error(_qualify(sb, tok, missing), 404, "0x80040217") == f"lead With Id = {missing} Does Not Exist"
    lead = _new_lead(sb, tok, companyname=None, subject=None)
    message = _error(_qualify(sb, tok, lead, Status=1), 400, "0x80048408")
    assert message.startswith("1 is not a valid status code for state code LeadState.Qualified")
    _error(sb.call("POST", f"leads({lead})/{QUALIFY}", tok, json={"CreateAccount": True, "Status": 3}), 400,
           "0x80040203")
    _error(_qualify(sb, tok, lead, CreateContact="yes"), 400, "0x80048d19")
    _error(_qualify(sb, tok, lead, Status=True), 400, "0x80048d19")
    _error(_qualify(sb, tok, lead, Bogus=1), 400, "0x80048d19")
    assert sb.call("GET", f"leads({lead})/{QUALIFY}", tok).status_code == 405
    _error(sb.call("POST", f"contacts({uuid.uuid4()})/{QUALIFY}", tok, json={}), 404, "0x8006088a")
    stats = sb.get("/_sandbox/stats").json()
    assert (stats["accounts"], stats["contacts"], stats["opportunities"]) == (0, 0, 0)

    # no company name: no account even when asked for; the opportunity falls back to the lead's name
    r = _qualify(sb, tok, lead)
    assert r.status_code == 200, r.text
    assert [v["@odata.type"] for v in r.json()["value"]] == ["#Microsoft.Dynamics.CRM.contact",
                                                             "#Microsoft.Dynamics.CRM.opportunity"]
    contact = r.json()["value"][0]["contactid"]
    opp = sb.call("GET", f"opportunities({r.json()['value'][1]['opportunityid']})?$select=name,_customerid_value,"
                         "_parentaccountid_value", tok).json()
    assert (opp["name"], opp["_customerid_value"], opp["_parentaccountid_value"]) == ("Ana Diaz", contact, None)
    assert sb.call("GET", f"contacts({contact})?$select=_parentcustomerid_value", tok).json()[
        "_parentcustomerid_value"] is None

    nothing = _new_lead(sb, tok)
    r = _qualify(sb, tok, nothing, CreateAccount=False, CreateContact=False, CreateOpportunity=False)
    assert r.status_code == 200 and r.json()["value"] == []
    assert sb.call("GET", f"leads({nothing})?$select=statecode", tok).json()["statecode"] == 1


def test_qualify_lead_inside_a_batch_change_set(sb: Sandbox) -> None:
    tok = sb.token()

    def part(request: str, content_id: str) -> str:
        return (f"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {content_id}"
                f"\r\n\r\n{request}\r\n")

    body = (
        "--batch_Q\r\nContent-Type: multipart/mixed; boundary=changeset_Q\r\n\r\n"
        + "--changeset_Q\r\n" + part("POST /api/data/v9.2/leads HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                                     + json.dumps({"lastname": "Batch", "companyname": "Fabrikam"}), "1")
        + "--changeset_Q\r\n" + part(f"POST $1/{QUALIFY} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                                     + json.dumps({"CreateAccount": True, "CreateContact": True,
                                                   "CreateOpportunity": False, "Status": 3}), "2")
        + "--changeset_Q--\r\n--batch_Q--\r\n"
    )
    r = sb.call("POST", "$batch", tok, {"Content-Type": "multipart/mixed; boundary=batch_Q"}, data=body.encode())
    assert r.status_code == 200, r.text
    assert re.findall(r"^HTTP/1\.1 (\d{3})", r.text, re.M) == ["204", "200"]
    assert "#Microsoft.Dynamics.CRM.account" in r.text and "#Microsoft.Dynamics.CRM.contact" in r.text
    lead = sb.call("GET", "leads?$select=statecode,statuscode", tok).json()["value"]
    assert [(v["statecode"], v["statuscode"]) for v in lead] == [(1, 3)]
    accounts = sb.call("GET", "accounts?$select=name,_originatingleadid_value", tok).json()["value"]
    assert [(a["name"], a["_originatingleadid_value"]) for a in accounts] == [("Fabrikam", lead[0]["leadid"])]

    # a failing qualify rolls the whole change set back, the lead's creation included
    bad = body.replace('"Status": 3', '"Status": 4').replace("Fabrikam", "Rolled")
    r = sb.call("POST", "$batch", tok, {"Content-Type": "multipart/mixed; boundary=batch_Q"}, data=bad.encode())
    assert r.status_code == 400 and "0x80048408" in r.text
    assert sb.get("/_sandbox/stats").json()["leads"] == 1
