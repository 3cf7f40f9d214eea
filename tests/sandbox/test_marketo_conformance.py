"""Conformance: the third-party ``marketorestpython`` client (PyPI, unchanged) against the sandbox.

Only its host is changed (``client.host = <sandbox base URL>``), as clients.md describes. It drives
authentication, lead reads and writes, describe, activity types, lead changes, deleted leads, bulk lead
export (create, enqueue, status, file) and bulk lead import.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.sandbox import test_marketo_sandbox as base
from tests.sandbox.test_marketo_sandbox import RELAXED, _control

box = base.box  # the module-scoped sandbox process fixture (one per test module)

marketorestpython = pytest.importorskip("marketorestpython.client")


@pytest.fixture
def mc(box: dict[str, Any]) -> Any:
    _control(box, "limits", {**RELAXED, "bulk_step_ms": 100})
    _control(box, "reset")
    requests.delete(f"{box['base']}/_sandbox/faults", timeout=5)
    info = box["info"]
    client = marketorestpython.MarketoClient(info["munchkin_id"], info["client_id"], info["client_secret"])
    client.host = box["base"]
    return client


def test_auth_leads_and_describe(mc: Any) -> None:
    mc.authenticate()
    assert mc.token.endswith(":ab") and mc.token_type == "bearer" and mc.expires_in > 3500
    created = mc.execute("create_update_leads", leads=[
        {"email": "conf1@example.com", "firstName": "Ana"}, {"email": "conf2@example.com", "firstName": "Bo"}],
        action="createOrUpdate", lookupField="email")
    assert [r["status"] for r in created] == ["created", "created"]
    found = mc.execute("get_multiple_leads_by_filter_type", filterType="email",
                       filterValues=["conf1@example.com", "conf2@example.com"], fields=["email", "firstName"])
    assert sorted(r["firstName"] for r in found) == ["Ana", "Bo"]
    one = mc.execute("get_lead_by_id", id=created[0]["id"], fields=["email"])
    assert one[0]["email"] == "conf1@example.com"
    fields = {f["rest"]["name"] for f in mc.execute("describe")}
    assert {"email", "msdynLeadId"} <= fields
    assert any(t["id"] == 13 for t in mc.execute("get_activity_types"))
    deleted = mc.execute("delete_lead", id=[created[1]["id"]])
    assert deleted[0]["status"] == "deleted"


def test_lead_changes_and_deleted_leads(mc: Any) -> None:
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lead = mc.execute("create_update_leads", leads=[{"email": "chg@example.com", "firstName": "A"}])[0]
    mc.execute("create_update_leads", leads=[{"email": "chg@example.com", "firstName": "B"}])
    mc.execute("delete_lead", id=[lead["id"]])
    changes = mc.execute("get_lead_changes", fields=["firstName"], sinceDatetime=since)
    assert [c["activityTypeId"] for c in changes] == [12, 13]
    assert changes[1]["fields"][0]["newValue"] == "B" and changes[1]["fields"][0]["oldValue"] == "A"
    gone = mc.execute("get_deleted_leads", sinceDatetime=since)
    assert [g["leadId"] for g in gone] == [lead["id"]]


def test_bulk_export_and_import(mc: Any, box: dict[str, Any], tmp_path: Path) -> None:
    _control(box, "seed", {"entity": "lead", "count": 120, "seed": 3})
    now = dt.datetime.now(dt.UTC)
    window = {"createdAt": {"startAt": (now - dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "endAt": (now + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    job = mc.execute("create_leads_export_job", fields=["id", "email", "firstName"], filters=window)[0]
    mc.execute("enqueue_leads_export_job", job_id=job["exportId"])
    for _ in range(100):
        status = mc.execute("get_leads_export_job_status", job_id=job["exportId"])[0]
        if status["status"] == "Completed":
            break
        time.sleep(0.05)
    assert status["status"] == "Completed" and status["numberOfRecords"] == 120
    data = mc.execute("get_leads_export_job_file", job_id=job["exportId"])
    lines = data.decode().splitlines()
    assert lines[0] == "id,email,firstName" and len(lines) == 121
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text("email,firstName\nimp@example.com,Imp\nbad,Row\n")
    batch = mc.execute("import_lead", format="csv", file=str(csv_file), lookupField="email")
    assert batch[0]["status"] == "Queued"
    for _ in range(100):
        state = mc.execute("get_import_lead_status", id=batch[0]["batchId"])[0]
        if state["status"] in ("Complete", "Failed"):
            break
        time.sleep(0.05)
    assert state["status"] == "Complete" and state["numOfLeadsProcessed"] == 1 and state["numOfRowsFailed"] == 1
    failures = mc.execute("get_import_failure_file", id=batch[0]["batchId"])
    assert "bad" in (failures.decode() if isinstance(failures, bytes) else failures)


def test_custom_objects(mc: Any) -> None:
    listed = mc.execute("get_list_of_custom_objects")
    assert "carOwnership_c" in [t["name"] for t in listed]
    desc = mc.execute("describe_custom_object", name="carOwnership_c")
    assert desc[0]["dedupeFields"] == ["vin", "leadEmail"]
    mc.execute("create_update_leads", leads=[{"email": "c@example.com"}])  # the link must name a lead
    made = mc.execute("create_update_custom_objects", name="carOwnership_c", input=[
        {"vin": "C1", "leadEmail": "c@example.com", "make": "Volvo"}], action="createOrUpdate",
        dedupeBy="dedupeFields")
    assert made[0]["status"] == "created"
    got = mc.execute("get_custom_objects", name="carOwnership_c", filterType="dedupeFields",
                     input=[{"vin": "C1", "leadEmail": "c@example.com"}], fields=["make"])
    assert got[0]["make"] == "Volvo"
    gone = mc.execute("delete_custom_objects", name="carOwnership_c", deleteBy="dedupeFields",
                      input=[{"vin": "C1", "leadEmail": "c@example.com"}])
    assert gone[0]["status"] == "deleted"
