"""The Marketo quota is shared: when this product's daily budget is spent, a load stops cleanly and resumes."""

from __future__ import annotations

import json
import os

import pytest

from include.runtime.run_dag import run

pytestmark = pytest.mark.e2e


def _budget(monkeypatch: pytest.MonkeyPatch, daily_quota: int) -> None:
    definition = json.loads(os.environ["AIRFLOW_CONN_MARKETO_DEFAULT"])
    definition["extra"] = {**definition.get("extra", {}), "daily_quota": daily_quota, "budget_share": 1.0}
    monkeypatch.setenv("AIRFLOW_CONN_MARKETO_DEFAULT", json.dumps(definition))


def test_a_spent_budget_stops_the_load_before_writing_and_the_next_run_resumes(sandboxes, fresh_state, monkeypatch):
    sandboxes.post("dynamics", "/_sandbox/reset")
    sandboxes.post("marketo", "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"entity": "lead", "count": 15, "seed": 21})
    used = sandboxes.get("marketo", "/_sandbox/stats")["quota"]["used_today"]
    _budget(monkeypatch, daily_quota=used + 2)  # enough to describe and match by email, not to write
    stopped = run("dynamics_initial_sync", {"entities": ["lead"]})
    states = {ti.task_id: str(ti.state) for ti in stopped.get_task_instances()}
    assert states["lead.load"] == "skipped", "a clean stop, not a red failure"
    assert sandboxes.get("marketo", "/_sandbox/stats")["leads"] == 0, "nothing was written"
    [spent] = fresh_state.activities(activity_type="budget_spent")
    assert "budget" in spent["reason"] and "resumes" in spent["reason"]
    assert not fresh_state.is_populated("lead") and fresh_state.lock_holder("lead") is None

    _budget(monkeypatch, daily_quota=10_000_000)  # the quota reset
    resumed = run("dynamics_initial_sync", {"entities": ["lead"]})
    assert str(resumed.state) == "success" and fresh_state.count_links("lead") == 15
