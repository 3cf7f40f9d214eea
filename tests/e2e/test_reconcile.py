"""The reconcile DAG finds what the change feeds never showed the sync, and repairs it by the normal rules.

The drift is made behind the sync's back, in the sandboxes' own SQLite stores, the way a bulk load or a
lost delta token leaves it: raw SQL, because Marketo's store API (Store.sync_leads) logs a Change Data
Value activity for every change, which the lead-changes feed reports, while a raw UPDATE logs nothing;
Dataverse's change tracking reports rows whose versionnumber moved past the delta token, which only the
Web API's writes bump (records.changed_row), so a raw UPDATE, INSERT (with an old versionnumber) or DELETE
(with no tombstone) is invisible to it. The incremental cycle is shown not to see any of it first.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dynamics_sync.state import RunContext, StateStore, watermarks
from include.demo.people import People
from include.runtime.run_dag import run
from include.sandbox.dynamics.store import DB_FILE as DYNAMICS_DB
from tests.support import link_rows

pytestmark = pytest.mark.e2e
MARKETO_DB = "marketo.db"  # include/sandbox/marketo/app.py: state_dir / "marketo.db"


def _links(store: StateStore, entity: str) -> list[Any]:
    return link_rows(store, entity)


def _link(store: StateStore, entity: str, dynamics_id: str) -> Any:
    [link] = [r for r in _links(store, entity) if r.dynamics_id == dynamics_id]
    return link


def _marks(store: StateStore) -> list[tuple]:
    """The change feeds' watermarks (not the schema baseline, which any load records)."""
    query = watermarks.select().where(watermarks.c.side.in_(["dynamics", "marketo"]))
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(watermarks.c.entity, watermarks.c.side))]


def _sql(sandboxes: Any, side: str, statement: str, params: tuple = ()) -> list[sqlite3.Row]:
    """A statement straight on a sandbox's store, next to the running server (both use WAL)."""
    path = sandboxes.box(side).state_dir / (DYNAMICS_DB if side == "dynamics" else MARKETO_DB)
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(statement, params))


def _copy_row(sandboxes: Any, side: str, table: str, where: str, params: tuple, changes: dict[str, Any]) -> None:
    """Insert a copy of one row with `changes` (its versionnumber, if any, is the old one)."""
    [row] = _sql(sandboxes, side, f"SELECT * FROM {table} WHERE {where}", params)
    values = {**dict(row), **changes}
    if side == "marketo":
        del values["id"]  # Marketo ids are AUTOINCREMENT: the copy is a new person
    names = ", ".join(f'"{name}"' for name in values)
    _sql(sandboxes, side, f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(values))})",
         tuple(values.values()))


def _xcom(dag_run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id,
                                                 key="return_value")).first()
        return XComModel.deserialize_value(row)


@pytest.fixture(scope="module")
def world(sandboxes: Any, new_state: Any, people_config: Path) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DYNAMICS_SYNC_CONFIG", str(people_config))
        patch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_STATE", json.dumps(new_state("reconcile")))
        for box in ("dynamics", "marketo"):
            sandboxes.post(box, "/_sandbox/reset")
        sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 30, "contacts": 20, "seed": 4})
        sandboxes.post("dynamics", "/_sandbox/seed", {"entity": "account", "count": 2, "seed": 4})
        people, store = People(sandboxes), StateStore.from_connection()
        w: dict[str, Any] = {"people": people, "store": store, "runs": {"initial": run("dynamics_initial_sync")}}
        leads = [r for r in _links(store, "lead") if r.deleted_at is None]
        contacts = [r for r in _links(store, "contact") if r.deleted_at is None]
        [account, *_] = _links(store, "account")
        w.update(lead=leads[0], collided=leads[1], lead_gone=leads[2], contact=contacts[0],
                 contact_gone=contacts[1], contact_merged=contacts[2], new_account=str(uuid.uuid4()))
        w["before"] = {
            "lead_title": people.read_dynamics("lead", leads[0].dynamics_id)["jobtitle"],
            "contact_phone": people.read_marketo(contacts[0].marketo_id)["phone"],
        }

        # Behind the sync's back. A marketer's bulk edit of a lead's title in Marketo:
        _sql(sandboxes, "marketo", "UPDATE leads SET title = ? WHERE id = ?", ("Bulk title", leads[0].marketo_id))
        # a database-level fix of a contact's phone in Dynamics:
        _sql(sandboxes, "dynamics", "UPDATE contact SET telephone1 = ? WHERE contactid = ?",
             ("+1 555 0100", contacts[0].dynamics_id))
        # the same lead field changed differently on both sides (a collision: Marketo wins for leads):
        _sql(sandboxes, "dynamics", "UPDATE lead SET jobtitle = ? WHERE leadid = ?", ("D title", leads[1].dynamics_id))
        _sql(sandboxes, "marketo", "UPDATE leads SET title = ? WHERE id = ?", ("M title", leads[1].marketo_id))
        # an account bulk-loaded into Dynamics past change tracking:
        _copy_row(sandboxes, "dynamics", "account", "accountid = ?", (account.dynamics_id,),
                  {"accountid": w["new_account"], "name": "Loaded Behind Co"})
        # a lead deleted in Dynamics with no tombstone, a person deleted in Marketo with no Delete Lead activity,
        # and a person merged in Marketo with no Merge Leads activity (the survivor carries the contact id):
        _sql(sandboxes, "dynamics", "DELETE FROM lead WHERE leadid = ?", (leads[2].dynamics_id,))
        _sql(sandboxes, "marketo", "DELETE FROM leads WHERE id = ?", (contacts[1].marketo_id,))
        _copy_row(sandboxes, "marketo", "leads", "id = ?", (contacts[2].marketo_id,), {"title": "Survivor title"})
        _sql(sandboxes, "marketo", "DELETE FROM leads WHERE id = ?", (contacts[2].marketo_id,))

        w["runs"]["blind_cycle"] = run("dynamics_incremental_sync")
        w["blind"] = {
            "lead_title": people.read_dynamics("lead", leads[0].dynamics_id)["jobtitle"],
            "contact_phone": people.read_marketo(contacts[0].marketo_id)["phone"],
            "collided": (people.read_dynamics("lead", leads[1].dynamics_id)["jobtitle"],
                         people.read_marketo(leads[1].marketo_id)["title"]),
            "account": people.read_object("account", w["new_account"]),
            "lead_gone_flag": people.read_marketo(leads[2].marketo_id).get("msdynIsDeleted"),
            "links": {r.dynamics_id: (r.marketo_id, r.deleted_side) for r in _links(store, "contact")},
        }
        w["marks"] = _marks(store)
        # A cycle holds the lead lock: the reconcile of leads waits (retried), then gives up, touching nothing.
        store.acquire_lock("lead", RunContext("dynamics_incremental_sync", "cycle-at-work"), dt.timedelta(minutes=5))
        w["locked"] = run("dynamics_reconcile", {"entities": ["lead"]})
        w["locked_state"] = (store.lock_holder("lead"), people.read_dynamics("lead", leads[0].dynamics_id)["jobtitle"])
        store.release_lock("lead", "cycle-at-work")
        w["runs"]["dry_run"] = run("dynamics_reconcile", {"dry_run": True, "entities": ["lead"]})
        w["after_dry_run"] = (people.read_dynamics("lead", leads[0].dynamics_id)["jobtitle"],
                              people.read_dynamics("lead", leads[1].dynamics_id)["jobtitle"])
        w["runs"]["reconcile"] = run("dynamics_reconcile")
        w["marks_after"] = _marks(store)
        w["runs"]["second_reconcile"] = run("dynamics_reconcile")
        w["runs"]["echo_cycle"] = run("dynamics_incremental_sync")
        yield w
        store.dispose()


def test_every_run_succeeded(world):
    assert {name: str(r.state) for name, r in world["runs"].items()} == dict.fromkeys(world["runs"], "success")


def test_the_incremental_cycle_does_not_see_what_changed_behind_its_back(world):
    """The drift is real: the change feeds report none of it, so the cycle moves nothing."""
    blind, w = world["blind"], world
    assert blind["lead_title"] == w["before"]["lead_title"] != "Bulk title"
    assert blind["contact_phone"] == w["before"]["contact_phone"] != "+1 555 0100"
    assert blind["collided"] == ("D title", "M title")
    assert blind["account"] == {}
    assert not blind["lead_gone_flag"]
    assert blind["links"][w["contact_gone"].dynamics_id] == (w["contact_gone"].marketo_id, None)
    assert blind["links"][w["contact_merged"].dynamics_id] == (w["contact_merged"].marketo_id, None)
    cycle = w["runs"]["blind_cycle"]
    moved = [s for s in w["store"].summaries(cycle.dag_id, cycle.run_id) if s["created"] or s["updated"]]
    assert moved == []


def test_a_dry_run_reports_the_drift_of_the_chosen_entities_and_writes_nothing(world):
    dry, store = world["runs"]["dry_run"], world["store"]
    summary = _xcom(dry, "reconcile_summary")
    assert summary["lead"]["drifted"] == summary["lead"]["would_repair"] == 3
    assert summary["user"] is summary["contact"] is summary["account"] is None, "not chosen: skipped"
    assert store.activities(run_id=dry.run_id) == [] and store.summaries(dry.dag_id, dry.run_id) == []
    assert world["after_dry_run"] == (world["before"]["lead_title"], "D title")
    assert store.lock_holder("lead") is None


def test_an_entity_the_cycle_holds_is_not_reconciled_at_the_same_time(world):
    locked, store = world["locked"], world["store"]
    states = {ti.task_id: str(ti.state) for ti in locked.get_task_instances()}
    assert str(locked.state) == "failed" and states["lead.extract"] == "failed"
    assert world["locked_state"] == ("cycle-at-work", world["before"]["lead_title"]), "the cycle's lock is kept"
    assert store.activities(run_id=locked.run_id) == []


def test_a_change_on_one_side_reaches_the_other(world):
    people, lead, contact = world["people"], world["lead"], world["contact"]
    assert people.read_dynamics("lead", lead.dynamics_id)["jobtitle"] == "Bulk title"
    assert people.read_marketo(contact.marketo_id)["phone"] == "+1 555 0100"


def test_a_collision_goes_to_the_entitys_authority(world):
    people, store, lead = world["people"], world["store"], world["collided"]
    assert people.read_dynamics("lead", lead.dynamics_id)["jobtitle"] == "M title"
    assert people.read_marketo(lead.marketo_id)["title"] == "M title"
    run_id = world["runs"]["reconcile"].run_id
    [collision] = [a for a in store.activities(run_id=run_id, activity_type="collision_resolved")]
    assert (collision["dynamics_id"], collision["field"], collision["new_value"]) == (lead.dynamics_id, "title",
                                                                                      "M title")
    assert "marketo wins" in collision["reason"]


def test_a_record_created_behind_the_back_is_copied(world):
    company = world["people"].read_object("account", world["new_account"])
    assert company["company"] == "Loaded Behind Co"
    assert _link(world["store"], "account", world["new_account"]).deleted_at is None


def test_gone_records_follow_the_deletion_rules(world):
    """A Marketo delete keeps the Dynamics record; a merge moves the link; a Dynamics delete flags the person."""
    people, store = world["people"], world["store"]
    gone, merged = world["contact_gone"], world["contact_merged"]
    assert _link(store, "contact", gone.dynamics_id).deleted_side == "marketo"
    assert people.read_dynamics("contact", gone.dynamics_id)["lastname"]
    survivor = _link(store, "contact", merged.dynamics_id)
    assert survivor.marketo_id != merged.marketo_id and survivor.deleted_at is None
    assert people.read_marketo(survivor.marketo_id)["msdynContactId"] == merged.dynamics_id
    # The survivor's Marketo-side change flows to Dynamics as any Marketo change does.
    assert people.read_dynamics("contact", merged.dynamics_id)["jobtitle"] == "Survivor title"
    assert people.read_marketo(world["lead_gone"].marketo_id)["msdynIsDeleted"] is True
    assert _link(store, "lead", world["lead_gone"].dynamics_id).deleted_side == "dynamics"


def test_activity_log_reports_each_drift_and_its_repair(world):
    store, run_id = world["store"], world["runs"]["reconcile"].run_id
    rows = store.activities(run_id=run_id)
    drift = {(a["entity"], a["dynamics_id"], a["field"], a["direction"]): a for a in rows
             if a["activity_type"] == "reconcile_drift"}
    repaired = {(a["entity"], a["dynamics_id"], a["field"]): a for a in rows
                if a["activity_type"] == "reconcile_repaired"}
    lead, contact, collided = world["lead"], world["contact"], world["collided"]
    marketo_side = drift[("lead", lead.dynamics_id, "title", "marketo_to_dynamics")]
    assert (marketo_side["old_value"], marketo_side["new_value"]) == (world["before"]["lead_title"], "Bulk title")
    assert "in Marketo" in marketo_side["reason"]
    dynamics_side = drift[("contact", contact.dynamics_id, "phone", "dynamics_to_marketo")]
    assert dynamics_side["new_value"] == "+1 555 0100" and "in Dynamics" in dynamics_side["reason"]
    # A collision is a difference on each side; the repair says which value both now hold and which way it went.
    assert {("lead", collided.dynamics_id, "title", d) for d in ("marketo_to_dynamics", "dynamics_to_marketo")} \
        <= set(drift)
    assert repaired[("lead", collided.dynamics_id, "title")]["new_value"] == "M title"
    assert repaired[("lead", collided.dynamics_id, "title")]["direction"] == "marketo_to_dynamics"
    assert repaired[("lead", lead.dynamics_id, "title")]["new_value"] == "Bulk title"
    assert repaired[("contact", contact.dynamics_id, "phone")]["direction"] == "dynamics_to_marketo"
    assert ("account", world["new_account"], None) in repaired
    for record in (world["lead_gone"], world["contact_gone"], world["contact_merged"]):
        assert any(key[1] == record.dynamics_id for key in repaired), record
    assert {a["activity_type"] for a in rows} >= {"deleted_in_marketo", "merged_in_marketo", "deleted_upstream"}


def test_the_last_task_counts_what_was_checked_drifted_and_repaired(world):
    summary = _xcom(world["runs"]["reconcile"], "reconcile_summary")
    assert {e: (s["drifted"], s["repaired"], s["failed"]) for e, s in summary.items()} == {
        "user": (0, 0, 0), "account": (1, 1, 0), "lead": (3, 3, 0), "contact": (3, 3, 0)}
    assert summary["lead"]["checked"] == 30 and summary["contact"]["checked"] == 20
    assert summary["lead"]["by_kind"] == {"changed_in_marketo": 2, "changed_in_dynamics": 1,
                                          "vanished_in_dynamics": 1}


def test_a_second_reconcile_finds_nothing_to_repair(world):
    second, store = world["runs"]["second_reconcile"], world["store"]
    summary = _xcom(second, "reconcile_summary")
    assert {e: s["drifted"] for e, s in summary.items()} == dict.fromkeys(summary, 0)
    assert [a for a in store.activities(run_id=second.run_id) if a["activity_type"].startswith("reconcile")] == []
    states = {ti.task_id: str(ti.state) for ti in second.get_task_instances()}
    assert states["lead.extract"] == "success" and states["lead.load"] == "skipped"
    assert {s["entity"] for s in store.summaries(second.dag_id, second.run_id)} == set(summary)


def test_no_watermark_moves_and_the_next_cycle_sees_the_repairs_as_echoes(world):
    assert world["marks_after"] == world["marks"]
    cycle, store = world["runs"]["echo_cycle"], world["store"]
    assert [s for s in store.summaries(cycle.dag_id, cycle.run_id) if s["created"] or s["updated"]] == []
