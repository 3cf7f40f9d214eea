"""The hooks against the running sandboxes: tokens, paging, and failures that name the cause, never the secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dynamics_sync.errors import AuthError, ServiceUnavailable
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook
from include.runtime import connections
from include.runtime.sandboxes import free_port

SECRET = "TOP-SECRET-VALUE-42"


def _use(monkeypatch: pytest.MonkeyPatch, conn_id: str, definition: dict[str, Any]) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(definition))


def test_marketo_token_is_reused_and_connection_tests_ok(sandboxes):
    hook = MarketoHook()
    ok, message = hook.test_connection()
    assert ok, message
    first = hook._access_token()
    hook.describe_leads()
    assert hook._access_token() == first


def test_dynamics_signs_in_with_msal_over_verified_tls(sandboxes):
    hook = DynamicsHook()
    ok, message = hook.test_connection()
    assert ok, message
    assert hook.who_am_i() == sandboxes.dynamics_info()["sync_user_id"]


def test_dynamics_paging_follows_next_links(sandboxes, monkeypatch):
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 120, "contacts": 0, "seed": 3})
    definition = connections.dynamics_connection(sandboxes.dynamics_info())
    _use(monkeypatch, "dyn_paging", {**definition, "extra": {**definition["extra"], "page_size": 50}})
    pages = list(DynamicsHook("dyn_paging").pages("leads", params={"$select": "leadid"}))
    assert len(pages) >= 3 and sum(len(rows) for rows, _ in pages) >= 120


@pytest.mark.parametrize("side", ["marketo", "dynamics"])
def test_refused_credentials_fail_clearly_without_the_secret(sandboxes, monkeypatch, side):
    if side == "marketo":
        definition = connections.marketo_connection(sandboxes.marketo_info())
        _use(monkeypatch, "bad", {**definition, "password": SECRET})
        hook: Any = MarketoHook("bad")
        call = hook.describe_leads
    else:
        definition = connections.dynamics_connection(sandboxes.dynamics_info())
        _use(monkeypatch, "bad", {**definition, "password": SECRET})
        hook = DynamicsHook("bad")
        call = hook.who_am_i
    with pytest.raises(AuthError) as err:
        call()
    assert "refused" in str(err.value) and "'bad'" in str(err.value)
    assert SECRET not in str(err.value) and SECRET not in repr(err.value.__cause__)


def test_unreachable_marketo_names_the_host_not_the_secret(monkeypatch):
    port = free_port()
    _use(monkeypatch, "gone", {"conn_type": "marketo", "host": f"http://127.0.0.1:{port}", "login": "id",
                               "password": SECRET, "extra": {"max_attempts": 2, "backoff_base_s": 0.01}})
    with pytest.raises(ServiceUnavailable) as err:
        MarketoHook("gone").describe_leads()
    assert f"127.0.0.1:{port}" in str(err.value)
    assert SECRET not in str(err.value) and err.value.__cause__ is None


def test_marketo_writes_overlap_calls_in_input_order_and_same_email_waits(sandboxes, monkeypatch):
    """A lone load keeps max_concurrent calls in flight (one at a time cannot reach Marketo's rate with
    real latency), answers in input order, and a second record with an email sends only after the first."""
    definition = connections.marketo_connection(sandboxes.marketo_info())
    _use(monkeypatch, "mkto_overlap", {**definition, "extra": {**definition["extra"], "max_concurrent": 3}})
    stamp = free_port()
    records = [{"email": f"overlap.{stamp}.{i}@example.com", "lastName": f"Overlap {i}"} for i in range(1200)]
    records[1000] = {**records[1000], "email": records[5]["email"].upper(), "lastName": "Same email"}
    sandboxes.post("marketo", "/_sandbox/limits", {"latency_ms": 150})
    sandboxes.post("marketo", "/_sandbox/stats/reset")
    try:
        answers = MarketoHook("mkto_overlap").sync_leads(records, action="createOnly", lookup_field="email")
        peak = sandboxes.get("marketo", "/_sandbox/stats")["quota"]["peak_inflight"]
    finally:
        sandboxes.post("marketo", "/_sandbox/limits", {"latency_ms": 0})
    assert peak == 3
    assert len(answers) == len(records)
    assert answers[1000]["status"] == "skipped" and "1005" in {r["code"] for r in answers[1000]["reasons"]}
    created = {i: a["id"] for i, a in enumerate(answers) if a["status"] == "created"}
    assert len(created) == len(records) - 1
    found = MarketoHook("mkto_overlap").get_leads("email", [records[i]["email"] for i in (0, 299, 300, 899, 1199)],
                                                  ["id", "email"])
    by_email = {lead["email"]: lead["id"] for lead in found}
    assert all(by_email[records[i]["email"]] == created[i] for i in (0, 299, 300, 899, 1199))
