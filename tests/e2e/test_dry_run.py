"""A dry run reports every write it would make, per entity, and writes nothing: no API write, no commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dynamics_sync.state import StateStore, watermarks
from include.demo.people import People
from include.runtime.run_dag import run

pytestmark = pytest.mark.e2e


def _load_result(dag_run: Any, entity: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id,
                                                  task_ids=f"{entity}.load")).first().value


def _marks(store: StateStore) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(watermarks.select().order_by(watermarks.c.entity,
                                                                              watermarks.c.side))]


def test_dry_runs_report_the_writes_of_a_copy_and_a_cycle_and_write_nothing(sandboxes, fresh_state, monkeypatch,
                                                                           people_config: Path):
    monkeypatch.setenv("DYNAMICS_SYNC_CONFIG", str(people_config))
    for box in ("dynamics", "marketo"):
        sandboxes.post(box, "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 12, "contacts": 6, "seed": 31})
    people = People(sandboxes)

    dry_copy = run("dynamics_initial_sync", {"dry_run": True})
    assert str(dry_copy.state) == "success"
    lead = _load_result(dry_copy, "lead")
    assert lead["dry_run"] is True
    assert lead["dynamics_to_marketo"]["would_write"] == {"create": 12}
    assert len(lead["dynamics_to_marketo"]["sample"]) == 5
    assert {"email", "msdynLeadId"} <= set(lead["dynamics_to_marketo"]["sample"][0]["payload"])
    assert _load_result(dry_copy, "contact")["dynamics_to_marketo"]["would_write"] == {"create": 6}
    assert sandboxes.get("marketo", "/_sandbox/stats")["leads"] == 0, "a dry run creates no Marketo person"
    assert not fresh_state.is_populated(), "a dry run commits nothing to the state store"
    assert fresh_state.lock_holder("lead") is None

    assert str(run("dynamics_initial_sync").state) == "success"
    lead_link, nameless = _leads(fresh_state)[:2]
    people.edit_dynamics("lead", lead_link.dynamics_id, {"jobtitle": "Dry title"})
    people.edit_marketo(lead_link.marketo_id, {"firstName": "Dry"})
    people.edit_marketo(nameless.marketo_id, {"lastName": ""})  # breaks Dynamics' required last name
    before_marks, before_dynamics = _marks(fresh_state), people.read_dynamics("lead", lead_link.dynamics_id)

    dry_cycle = run("dynamics_incremental_sync", {"dry_run": True})
    assert str(dry_cycle.state) == "success"
    lead = _load_result(dry_cycle, "lead")
    assert lead["dynamics_to_marketo"]["would_write"] == {"update": 1}
    assert lead["dynamics_to_marketo"]["sample"][0]["payload"]["title"] == "Dry title"
    assert lead["marketo_to_dynamics"]["would_write"] == {"update": 1}
    assert lead["marketo_to_dynamics"]["sample"][0]["payload"] == {"firstname": "Dry"}
    assert lead["marketo_to_dynamics"]["would_reject"] == 1, lead["marketo_to_dynamics"]
    assert fresh_state.activities(activity_type="rejected_by_validation") == [], "nothing logged as done"
    assert _marks(fresh_state) == before_marks, "no watermark moved"
    assert people.read_dynamics("lead", lead_link.dynamics_id)["firstname"] == before_dynamics["firstname"]
    assert people.read_marketo(lead_link.marketo_id)["title"] != "Dry title"
    assert fresh_state.summaries("dynamics_incremental_sync", dry_cycle.run_id) == []

    real = run("dynamics_incremental_sync")
    assert str(real.state) == "success", "the real cycle after it still finds every change"
    assert people.read_dynamics("lead", lead_link.dynamics_id)["firstname"] == "Dry"
    assert people.read_marketo(lead_link.marketo_id)["title"] == "Dry title"


def _leads(store: StateStore) -> list[Any]:
    from dynamics_sync.state import record_links

    with store.engine.connect() as conn:
        return list(conn.execute(record_links.select().where(record_links.c.entity == "lead")
                                 .order_by(record_links.c.id)))
