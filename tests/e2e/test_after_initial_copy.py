"""The first cycle after an initial copy: cheap whatever the copy's size, and blind to nothing.

Marketo's lead-changes feed holds a New Lead activity for every person the copy created; reading them
back would cost a call per 300 people copied. The first cycle reads only field changes up to the copy's
end (Change Data Value activities), so a person edited in Marketo while the copy ran still syncs.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from dynamics_sync.extract import MarketoMark
from dynamics_sync.state import StateStore, record_links, watermarks
from include.demo.people import People
from include.runtime.run_dag import run

pytestmark = pytest.mark.e2e
LEADS = 1500  # five lead-changes pages of the copy's own New Lead activities, were they read back


def _reset_counters(sandboxes: Any) -> None:
    sandboxes.post("marketo", "/_sandbox/limits", {"reset_counters": True})


def _feed_calls(sandboxes: Any) -> dict[str, int]:
    stats = sandboxes.get("marketo", "/_sandbox/stats")["by_endpoint"]
    return {endpoint: n for endpoint, n in stats.items() if "/activities" in endpoint}


def test_the_first_cycle_reads_no_new_lead_pages_and_sees_an_edit_made_during_the_copy(sandboxes, fresh_state):
    sandboxes.post("dynamics", "/_sandbox/reset")
    sandboxes.post("marketo", "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": LEADS, "contacts": 0, "seed": 11})
    assert str(run("dynamics_initial_sync").state) == "success"
    store: StateStore = fresh_state
    with store.engine.connect() as conn:
        dynamics_id, marketo_id = conn.execute(
            record_links.select().with_only_columns(record_links.c.dynamics_id, record_links.c.marketo_id)
            .where(record_links.c.entity == "lead").limit(1)).one()

    # An edit "during the copy": made now, then the copy's recorded end is moved past it.
    people = People(sandboxes)
    people.edit_marketo(marketo_id, {"title": "Edited while copying"})
    with store.engine.begin() as conn:
        value = conn.execute(watermarks.select().with_only_columns(watermarks.c.value).where(
            watermarks.c.entity == "lead", watermarks.c.side == "marketo")).scalar_one()
        mark = MarketoMark.loads(value)
        assert mark.copied_until is not None, "the initial copy records where its own writes end"
        mark.copied_until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        conn.execute(watermarks.update().where(watermarks.c.entity == "lead", watermarks.c.side == "marketo")
                     .values(value=mark.dumps()))

    _reset_counters(sandboxes)
    assert str(run("dynamics_incremental_sync").state) == "success"
    calls = _feed_calls(sandboxes)
    # One lead-changes page per person entity (lead, contact), not one per 300 people the copy created.
    assert calls.get("GET /rest/v1/activities/leadchanges.json", 0) <= 2, calls
    assert sum(calls.values()) <= 12, f"feed calls grow with the copy's size: {calls}"
    assert people.read_dynamics("lead", dynamics_id)["jobtitle"] == "Edited while copying"
    after = MarketoMark.loads(store.watermark("lead", "marketo") or json.dumps({}))
    assert after.token and after.copied_until is None, "from now on the feeds resume from their tokens"


def test_a_copy_goes_part_by_part_and_a_rerun_leaves_what_it_copied_alone(sandboxes, fresh_state, monkeypatch):
    """No step holds a whole table: the copy reads, plans, validates and loads a part (whole pages) at a
    time, committing each part; a second run finds every record copied with its values and writes none."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    conn = json.loads(__import__("os").environ["AIRFLOW_CONN_DYNAMICS_DEFAULT"])
    conn["extra"] = {**conn["extra"], "page_size": 200}
    monkeypatch.setenv("AIRFLOW_CONN_DYNAMICS_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("DYNAMICS_SYNC_PART_ROWS", "1")  # every page a part
    sandboxes.post("dynamics", "/_sandbox/reset")
    sandboxes.post("marketo", "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 500, "contacts": 0, "seed": 12})
    first = run("dynamics_initial_sync")
    assert str(first.state) == "success"
    with create_session() as session:
        extracted = session.scalars(XComModel.get_many(run_id=first.run_id, dag_ids="dynamics_initial_sync",
                                                       task_ids="lead.load")).first().value
        parts = session.scalars(XComModel.get_many(run_id=first.run_id, dag_ids="dynamics_initial_sync",
                                                   task_ids="lead.extract")).first().value["dynamics"]
    assert len(parts) == 3, "500 leads at 200 a page are three parts"
    assert extracted["to_marketo"]["created"] == 500
    store: StateStore = fresh_state
    assert store.count_links("lead") == 500
    [summary] = [s for s in store.summaries("dynamics_initial_sync", first.run_id)
                 if s["entity"] == "lead" and s["direction"] == "dynamics_to_marketo"]
    assert summary["created"] == 500, "one run_summary row for the whole entity, written with the last part"

    _reset_counters(sandboxes)
    again = run("dynamics_initial_sync", {"force": True, "entities": ["lead"]})
    assert str(again.state) == "success"
    writes = sandboxes.get("marketo", "/_sandbox/stats")["by_endpoint"].get("POST /rest/v1/leads.json", 0)
    assert writes == 0, "a record copied already with the same values is not written again"
    assert store.count_links("lead") == 500
