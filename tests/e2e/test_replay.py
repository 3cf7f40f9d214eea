"""The replay DAG retries logged failures after their cause is fixed and marks each resolved or still failing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dynamics_sync.state import StateStore, record_links
from include.demo.people import People
from include.runtime.run_dag import run

pytestmark = pytest.mark.e2e


def _linked(store: StateStore, entity: str) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(record_links).where(record_links.c.entity == entity)
                                 .order_by(record_links.c.id)))


def test_replay_retries_failures_of_the_chosen_entity_and_marks_the_outcome(sandboxes, fresh_state, monkeypatch,
                                                                           people_config: Path):
    monkeypatch.setenv("DYNAMICS_SYNC_CONFIG", str(people_config))
    for box in ("dynamics", "marketo"):
        sandboxes.post(box, "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 5, "contacts": 3, "seed": 61})
    assert str(run("dynamics_initial_sync").state) == "success"
    people = People(sandboxes)
    lead, contact = _linked(fresh_state, "lead")[0], _linked(fresh_state, "contact")[0]
    people.edit_marketo(lead.marketo_id, {"lastName": "", "firstName": "Replayed"})
    people.edit_marketo(contact.marketo_id, {"lastName": ""})
    cycle = run("dynamics_incremental_sync")
    assert str(cycle.state) == "success"
    [lead_failure] = fresh_state.open_failures(entity="lead")
    assert lead_failure["dynamics_id"] == lead.dynamics_id and lead_failure["run_id"] == cycle.run_id
    assert len(fresh_state.open_failures(entity="contact")) == 1

    # Replayed before the cause is fixed: it fails again, and says so; the replay's own row is now open.
    early = run("dynamics_replay", {"entity": "lead", "failed_run_id": cycle.run_id})
    assert str(early.state) == "success"
    [old] = [a for a in fresh_state.activities(entity="lead") if a["id"] == lead_failure["id"]]
    assert (old["resolution"], old["resolved_by_run"]) == ("still_failing", early.run_id)
    [still] = fresh_state.open_failures(entity="lead")
    assert (still["dynamics_id"], still["run_id"]) == (lead.dynamics_id, early.run_id)
    assert people.read_dynamics("lead", lead.dynamics_id)["firstname"] != "Replayed"

    # The marketer fixes the last name; the replay syncs the record now, with both changes.
    people.edit_marketo(lead.marketo_id, {"lastName": "Fixed"})
    fixed = run("dynamics_replay", {"entity": "lead"})
    assert str(fixed.state) == "success"
    assert fresh_state.open_failures(entity="lead") == []
    [closed] = [a for a in fresh_state.activities(entity="lead") if a["id"] == still["id"]]
    assert (closed["resolution"], closed["resolved_by_run"]) == ("resolved", fixed.run_id)
    record = people.read_dynamics("lead", lead.dynamics_id)
    assert (record["firstname"], record["lastname"]) == ("Replayed", "Fixed")
    assert len(fresh_state.open_failures(entity="contact")) == 1, "another entity's failure is left alone"
    states = {ti.task_id: str(ti.state) for ti in fixed.get_task_instances()}
    assert states["contact.extract"] == "skipped" and states["lead.resolve"] == "success"

    quiet = run("dynamics_incremental_sync")
    moved = [s for s in fresh_state.summaries("dynamics_incremental_sync", quiet.run_id)
             if s["entity"] == "lead" and (s["created"] or s["updated"])]
    assert moved == [], "the next cycle sees the replayed change as its own echo, not a new change"
