"""Marketo sandbox: faults, stats, the entity seed form, latency, bulk extract and bulk import over HTTP."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import time
from typing import Any

import pytest
import requests

from tests.sandbox import test_marketo_sandbox as base
from tests.sandbox.test_marketo_sandbox import RELAXED, Api, _control, _error

box = base.box  # the module-scoped sandbox process fixture (one per test module)
api = base.api

STEP = {"bulk_step_ms": 150}


def _wait_status(api: Api, path: str, want: set[str], timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(path)
        assert body["success"], body
        item = body["result"][0]
        if item["status"] in want:
            return item
        time.sleep(0.05)
    raise AssertionError(f"status never reached {want}: {item}")


@pytest.fixture(autouse=True)
def _clean(box: dict[str, Any]) -> None:
    requests.delete(f"{box['base']}/_sandbox/faults", timeout=5).raise_for_status()
    _control(box, "limits", {**RELAXED, **STEP, "export_daily_quota_bytes": 500 * 1024 * 1024})
    _control(box, "reset")


# ------------------------------------------------------------------------------------------ faults/stats
def test_faults_string_int_and_count(box: dict[str, Any], api: Api) -> None:
    api.token()
    _control(box, "stats/reset")
    _control(box, "faults", {"method": "POST", "path": "/rest/v1/leads.json", "code": "606", "count": 2})
    _control(box, "faults", {"method": "GET", "path": "/rest/v1/lead/", "code": 500, "count": 1})
    for _ in range(2):
        code, message = _error(api.sync([{"email": "f@example.com"}]))
        assert code == "606" and "rate limit" in message
    assert api.sync([{"email": "f@example.com"}])["result"][0]["status"] == "created"
    # a GET on another path is not affected; a GET on /rest/v1/lead/... is
    assert api.get("/rest/v1/leads.json", filterType="email", filterValues="f@example.com")["success"]
    reply = requests.get(f"{box['base']}/rest/v1/lead/1.json",
                         headers={"Authorization": f"Bearer {api.token()}"}, timeout=5)
    assert reply.status_code == 500
    assert requests.get(f"{box['base']}/_sandbox/faults", timeout=5).json()["faults"] == []
    stats = requests.get(f"{box['base']}/_sandbox/stats", timeout=5).json()
    assert stats["errors"]["606"] == 2 and stats["errors"]["HTTP 500"] == 1
    assert stats["faulted"] == 3
    assert stats["by_endpoint"]["POST /rest/v1/leads.json"] == 3
    assert stats["records"]["leads"] == 1 and stats["quota_used_today"] >= 2
    assert {"calls", "by_endpoint", "errors", "quota", "records", "limit_errors", "leads"} <= set(stats)
    api.sync([{"email": "f@example.com"}], action="createOnly")
    assert requests.get(f"{box['base']}/_sandbox/stats", timeout=5).json()["record_reasons"] == {"1005": 1}
    _control(box, "stats/reset")
    stats = requests.get(f"{box['base']}/_sandbox/stats", timeout=5).json()
    assert stats["calls"] == 0 and stats["errors"] == {} and stats["records"]["leads"] == 1


def test_fault_timeout_holds_the_call(box: dict[str, Any], api: Api) -> None:
    api.token()
    _control(box, "faults", {"method": "GET", "path": "/rest/v1/leads/describe.json", "code": "timeout"})
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(f"{box['base']}/rest/v1/leads/describe.json",
                     headers={"Authorization": f"Bearer {api.token()}"}, timeout=1.0)
    assert time.monotonic() - started >= 1.0
    assert api.get("/rest/v1/leads/describe.json")["success"]  # used up
    # a bounded hold ends in 604
    _control(box, "faults", {"method": "GET", "path": "/rest/v1/leads/describe.json", "code": "timeout",
                             "hold_s": 0.2})
    assert _error(api.get("/rest/v1/leads/describe.json"))[0] == "604"


def test_fault_clear_and_validation(box: dict[str, Any]) -> None:
    _control(box, "faults", {"method": "POST", "path": "/rest/v1/leads.json", "code": "615", "count": 5})
    assert len(requests.get(f"{box['base']}/_sandbox/faults", timeout=5).json()["faults"]) == 1
    assert requests.delete(f"{box['base']}/_sandbox/faults", timeout=5).json()["cleared"] == 1
    bad = requests.post(f"{box['base']}/_sandbox/faults", json={"path": "x", "code": "606"}, timeout=5)
    assert bad.status_code == 400


def test_identity_fault(box: dict[str, Any]) -> None:
    _control(box, "faults", {"method": "GET", "path": "/identity/oauth/token", "code": 503})
    info = box["info"]
    reply = requests.get(f"{box['base']}/identity/oauth/token", params={
        "grant_type": "client_credentials", "client_id": info["client_id"], "client_secret": info["client_secret"]},
        timeout=5)
    assert reply.status_code == 503


def test_seed_entity_form_and_latency(box: dict[str, Any], api: Api) -> None:
    out = _control(box, "seed", {"entity": "lead", "count": 500, "seed": 7})
    assert out["created"] == 500 and out["entity"] == "lead"
    first = api.get("/rest/v1/leads.json", filterType="email", filterValues="person00000@example.com")
    _control(box, "reset")
    _control(box, "seed", {"entity": "lead", "count": 500, "seed": 7})
    again = api.get("/rest/v1/leads.json", filterType="email", filterValues="person00000@example.com")
    assert [{k: v for k, v in r.items() if k not in ("id", "createdAt", "updatedAt")} for r in first["result"]] == \
        [{k: v for k, v in r.items() if k not in ("id", "createdAt", "updatedAt")} for r in again["result"]]
    bad = requests.post(f"{box['base']}/_sandbox/seed", json={"entity": "nope", "count": 1}, timeout=5)
    assert bad.status_code == 400
    limits = _control(box, "limits", {"latency_ms": 150})
    assert limits["latency_ms"] == 150
    started = time.monotonic()
    api.get("/rest/v1/leads/describe.json")
    assert time.monotonic() - started >= 0.15
    assert requests.get(f"{box['base']}/_sandbox/limits", timeout=5).json()["latency_ms"] == 150


def test_body_size_caps(box: dict[str, Any], api: Api) -> None:
    big = "x" * (1024 * 1024 + 10)
    reply = requests.post(f"{box['base']}/rest/v1/leads.json", data=big,
                          headers={"Authorization": f"Bearer {api.token()}", "Content-Type": "application/json"},
                          timeout=10)
    assert reply.status_code == 413
    reply = requests.get(f"{box['base']}/rest/v1/leads.json?filterType=email&filterValues={'a' * 9000}",
                         headers={"Authorization": f"Bearer {api.token()}"}, timeout=10)
    assert reply.status_code == 414


# ------------------------------------------------------------------------------------------ bulk export
def _window() -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {"startAt": (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endAt": (now + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _create(api: Api, **extra: Any) -> dict[str, Any]:
    body = {"fields": ["id", "email", "firstName", "msdynIsDeleted"], "format": "CSV",
            "filter": {"createdAt": _window()}, **extra}
    return api.call("POST", "/bulk/v1/leads/export/create.json", json=body)


def test_lead_export_lifecycle_file_and_range(box: dict[str, Any], api: Api) -> None:
    _control(box, "limits", {"bulk_step_ms": 400})  # long enough to see every status when polling
    _control(box, "seed", {"entity": "lead", "count": 250, "seed": 1})
    created = _create(api, columnHeaderNames={"id": "Marketo Id"})
    job = created["result"][0]
    assert job["status"] == "Created" and job["format"] == "CSV"
    eid = job["exportId"]
    base = f"/bulk/v1/leads/export/{eid}"
    auth = {"Authorization": f"Bearer {api.token()}"}
    early = requests.get(f"{box['base']}{base}/file.json", headers=auth, timeout=5)
    assert early.status_code == 404 and not early.headers["content-type"].startswith("application/json")
    queued = api.call("POST", f"{base}/enqueue.json")["result"][0]
    assert queued["status"] == "Queued" and "queuedAt" in queued
    assert _error(api.call("POST", f"{base}/enqueue.json")) == ("1029", "Job already queued")
    seen = {api.get(f"{base}/status.json")["result"][0]["status"]}
    done = None
    for _ in range(400):
        item = api.get(f"{base}/status.json")["result"][0]
        seen.add(item["status"])
        if item["status"] == "Completed":
            done = item
            break
        time.sleep(0.03)
    assert done is not None and {"Queued", "Processing", "Completed"} <= seen
    assert done["numberOfRecords"] == 250
    whole = requests.get(f"{box['base']}{base}/file.json", headers=auth, timeout=10)
    assert whole.status_code == 200
    assert done["fileSize"] == len(whole.content)
    assert done["fileChecksum"] == "sha256:" + hashlib.sha256(whole.content).hexdigest()
    rows = list(csv.reader(io.StringIO(whole.text)))
    assert rows[0] == ["Marketo Id", "email", "firstName", "msdynIsDeleted"]
    assert len(rows) == 251 and rows[1][3] == "null"
    part = requests.get(f"{box['base']}{base}/file.json", headers={**auth, "Range": "bytes=0-9"}, timeout=5)
    assert part.status_code == 206 and part.content == whole.content[:10]
    assert part.headers["content-range"] == f"bytes 0-9/{len(whole.content)}"
    listed = api.get("/bulk/v1/leads/export.json", status="Completed")["result"]
    assert [j["exportId"] for j in listed] == [eid]


def test_export_filter_rules(api: Api) -> None:
    now = dt.datetime.now(dt.UTC)
    too_long = {"startAt": (now - dt.timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "endAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    code, message = _error(api.call("POST", "/bulk/v1/leads/export/create.json",
                                    json={"fields": ["id"], "filter": {"createdAt": too_long}}))
    assert code == "1003" and "31 days" in message
    assert _error(api.call("POST", "/bulk/v1/leads/export/create.json",
                           json={"fields": ["nope"], "filter": {"createdAt": _window()}}))[0] == "1006"
    assert _error(api.call("POST", "/bulk/v1/leads/export/create.json",
                           json={"fields": ["id"], "filter": {"createdAt": _window(), "updatedAt": _window()}}
                           ))[0] == "1003"
    assert _error(api.call("POST", "/bulk/v1/leads/export/create.json", json={"fields": ["id"], "filter": {}}))[0] \
        == "1003"


def test_export_queue_limits_cancel_and_daily_cap(box: dict[str, Any], api: Api) -> None:
    _control(box, "limits", {"bulk_step_ms": 60000})  # nothing moves during this test
    ids = [_create(api)["result"][0]["exportId"] for _ in range(11)]
    for eid in ids[:10]:
        assert api.call("POST", f"/bulk/v1/leads/export/{eid}/enqueue.json")["success"]
    assert _error(api.call("POST", f"/bulk/v1/leads/export/{ids[10]}/enqueue.json")) == \
        ("1029", "Too many jobs in queue")
    cancelled = api.call("POST", f"/bulk/v1/leads/export/{ids[0]}/cancel.json")["result"][0]
    assert cancelled["status"] == "Cancelled"
    assert api.call("POST", f"/bulk/v1/leads/export/{ids[10]}/enqueue.json")["success"]
    for eid in ids[1:]:
        api.call("POST", f"/bulk/v1/leads/export/{eid}/cancel.json")
    # two processing at most
    _control(box, "limits", {"bulk_step_ms": 100})
    _control(box, "seed", {"entity": "lead", "count": 20, "seed": 2})
    jobs = [_create(api)["result"][0]["exportId"] for _ in range(3)]
    for eid in jobs:
        api.call("POST", f"/bulk/v1/leads/export/{eid}/enqueue.json")
    time.sleep(0.15)
    statuses = [api.get(f"/bulk/v1/leads/export/{eid}/status.json")["result"][0]["status"] for eid in jobs]
    assert statuses.count("Processing") <= 2
    for eid in jobs:
        _wait_status(api, f"/bulk/v1/leads/export/{eid}/status.json", {"Completed"})
    _control(box, "limits", {"export_daily_quota_bytes": 1})
    assert _error(_create(api)) == ("1029", "Export daily quota exceeded")


def test_activity_export(box: dict[str, Any], api: Api) -> None:
    api.sync([{"email": "act@example.com", "firstName": "A"}])
    api.sync([{"email": "act@example.com", "firstName": "B"}])
    job = api.call("POST", "/bulk/v1/activities/export/create.json",
                   json={"filter": {"createdAt": _window(), "activityTypeIds": [13]}})["result"][0]
    api.call("POST", f"/bulk/v1/activities/export/{job['exportId']}/enqueue.json")
    _wait_status(api, f"/bulk/v1/activities/export/{job['exportId']}/status.json", {"Completed"})
    text = requests.get(f"{box['base']}/bulk/v1/activities/export/{job['exportId']}/file.json",
                        headers={"Authorization": f"Bearer {api.token()}"}, timeout=5).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["activityTypeId"] == "13" and '"New Value": "B"' in rows[0]["attributes"]


# ------------------------------------------------------------------------------------------ bulk import
def _import(box: dict[str, Any], api: Api, text: str, **params: Any) -> requests.Response:
    return requests.post(f"{box['base']}/bulk/v1/leads.json", params={"format": "csv", **params},
                         files={"file": ("leads.csv", text.encode(), "text/csv")},
                         headers={"Authorization": f"Bearer {api.token()}"}, timeout=30)


def test_lead_import_status_failures_warnings(box: dict[str, Any], api: Api) -> None:
    api.sync([{"email": "old@example.com", "firstName": "Old"}])
    text = ("email,firstName,lastName,createdAt\n"
            "old@example.com,New,Person,\n"
            "fresh@example.com,Fresh,One,2020-01-01T00:00:00Z\n"
            "not-an-email,Bad,Row,\n")
    reply = _import(box, api, text, lookupField="email").json()
    assert reply["success"] and reply["result"][0]["status"] == "Queued"
    batch = reply["result"][0]["batchId"]
    assert reply["result"][0]["importId"] == str(batch)
    done = _wait_status(api, f"/bulk/v1/leads/batch/{batch}.json", {"Complete", "Failed"})
    assert done["status"] == "Complete"
    assert done["numOfLeadsProcessed"] == 2 and done["numOfRowsFailed"] == 1 and done["numOfRowsWithWarning"] == 1
    assert done["message"].startswith("Import completed with errors, 2 records imported")
    auth = {"Authorization": f"Bearer {api.token()}"}
    failures = requests.get(f"{box['base']}/bulk/v1/leads/batch/{batch}/failures.json", headers=auth, timeout=5).text
    rows = list(csv.reader(io.StringIO(failures)))
    assert rows[0][-1] == "Import Failure Reason" and rows[1][0] == "not-an-email"
    warnings = requests.get(f"{box['base']}/bulk/v1/leads/batch/{batch}/warnings.json", headers=auth, timeout=5).text
    assert "fresh@example.com" in warnings
    lead = api.get("/rest/v1/leads.json", filterType="email", filterValues="old@example.com")["result"][0]
    assert lead["firstName"] == "New"


def test_import_limits(box: dict[str, Any], api: Api) -> None:
    big = "email\n" + "x" * (10 * 1024 * 1024)
    assert _import(box, api, big).status_code == 413
    auth = {"Authorization": f"Bearer {api.token()}"}
    no_file = requests.post(f"{box['base']}/bulk/v1/leads.json?format=csv", files={"other": ("a", b"x")},
                            headers=auth, timeout=5).json()
    assert _error(no_file)[0] == "613"
    _control(box, "limits", {"bulk_step_ms": 60000})
    for _ in range(10):
        assert _import(box, api, "email\na@example.com\n").json()["success"]
    assert _error(_import(box, api, "email\na@example.com\n").json()) == ("1016", "Too many imports")
    _control(box, "reset")  # forgets the queued jobs
    _control(box, "limits", {"bulk_step_ms": 1})
    bad = _import(box, api, "email,bogus\na@example.com,1\n").json()["result"][0]["batchId"]
    done = _wait_status(api, f"/bulk/v1/leads/batch/{bad}.json", {"Complete", "Failed"}, timeout=20)
    assert done["status"] == "Failed" and "bogus" in done["message"]
