"""The three DAGs run for real (dag.test) against both sandboxes; both systems are then read through their APIs.

One scenario per module: seed, initial copy, people's edits on both sides, an incremental cycle, sync
person twice, and a second cycle. Each test asserts one behaviour users rely on.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dynamics_sync.staging import read_frame
from dynamics_sync.state import StateStore
from include.demo.people import People
from include.runtime.run_dag import run
from tests.support import link_ids

pytestmark = pytest.mark.e2e
LEADS, CONTACTS = 300, 200


def _links(store: StateStore, entity: str) -> list[tuple[str, int]]:
    return link_ids(store, entity)


@pytest.fixture(scope="module")
def world(sandboxes: Any, new_state: Any) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_STATE", json.dumps(new_state("e2e")))
        sandboxes.post("dynamics", "/_sandbox/reset")
        sandboxes.post("marketo", "/_sandbox/reset")
        sandboxes.post("dynamics", "/_sandbox/seed", {"leads": LEADS, "contacts": CONTACTS, "seed": 7})
        sandboxes.post("marketo", "/_sandbox/seed", {"people": 80, "overlap_leads": 30, "overlap_contacts": 20,
                                                     "seed": 7})
        people = People(sandboxes)
        store = StateStore.from_connection()
        w: dict[str, Any] = {"people": people, "store": store, "runs": {},
                             "started": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)}
        w["runs"]["initial"] = run("dynamics_initial_sync")
        leads, contacts = _links(store, "lead"), _links(store, "contact")
        w["leads"], w["contacts"] = leads, contacts

        # People's changes on both sides.
        people.edit_dynamics("lead", leads[0][0], {"jobtitle": "D-title"})
        people.edit_marketo(leads[0][1], {"title": "M-title"})                     # lead collision
        people.edit_dynamics("contact", contacts[0][0], {"telephone1": "D-phone"})
        people.edit_marketo(contacts[0][1], {"phone": "M-phone"})                  # contact collision
        people.edit_dynamics("lead", leads[1][0], {"companyname": "Dyn Co"})       # Dynamics -> Marketo
        people.edit_marketo(leads[2][1], {"firstName": "Mara"})                    # Marketo -> Dynamics
        people.edit_marketo(leads[3][1], {"lastName": "", "title": "Nameless"})    # breaks a required field
        people.edit_marketo(leads[4][1], {"title": "Same batch, valid"})           # same batch as the bad one
        people.delete_dynamics("lead", leads[8][0])                                # deleted in Dynamics
        w["gone"] = {people.read_marketo(leads[i][1])["email"] for i in (9, 10)}
        w["survivor"] = people.create_marketo({"email": "survivor@example.com", "lastName": "Survivor",
                                               "title": "Survivor title"})
        people.merge_marketo(w["survivor"], leads[9][1])                           # merged in Marketo
        people.delete_marketo(leads[10][1])                                        # deleted in Marketo
        w["new_lead"] = people.create_dynamics("lead", {"firstname": "Nia", "lastname": "New",
                                                        "emailaddress1": "nia.new@example.com", "subject": "t"})
        w["runs"]["incremental"] = run("dynamics_incremental_sync")

        w["person"] = people.create_marketo({"email": "solo@example.com", "firstName": "So", "lastName": "Lo"})
        w["runs"]["person_1"] = run("sync_person_to_dynamics", {"marketo_lead_id": w["person"]})
        w["runs"]["person_2"] = run("sync_person_to_dynamics", {"marketo_lead_id": w["person"]})
        w["runs"]["echo_cycle"] = run("dynamics_incremental_sync")
        yield w
        store.dispose()


def test_every_run_succeeded(world):
    assert {name: str(r.state) for name, r in world["runs"].items()} == dict.fromkeys(world["runs"], "success")


def test_initial_copy_links_every_record_once(world):
    people, leads, contacts = world["people"], world["leads"], world["contacts"]
    assert (len(leads), len(contacts)) == (LEADS, CONTACTS)
    gone = world["gone"]  # people merged or deleted in Marketo later in the scenario
    emails = [f"lead{i:05d}@example.com" for i in range(LEADS)]
    emails += [f"contact{i:05d}@example.com" for i in range(CONTACTS)]
    found = people.marketo.get_leads("email", emails, ["id", "email", "msdynLeadId", "msdynContactId"])
    by_email: dict[str, list[dict]] = {}
    for person in found:
        by_email.setdefault(person["email"], []).append(person)
    assert all(len(by_email.get(e, [])) == 1 for e in emails if e not in gone), "one Marketo person per record"
    linked = dict(leads)
    for email in emails[:LEADS]:
        if email not in gone:
            person = by_email[email][0]
            assert linked[person["msdynLeadId"]] == person["id"]


def test_initial_copy_refuses_a_populated_state_store(world):
    before = world["store"].count_links()
    dag_run = run("dynamics_initial_sync")
    assert str(dag_run.state) == "failed"
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["check_state_store"] == "failed" and states["lead.extract"] == "upstream_failed"
    assert world["store"].count_links() == before


def test_lead_collision_goes_to_marketo(world):
    dynamics_id, marketo_id = world["leads"][0]
    assert world["people"].read_dynamics("lead", dynamics_id)["jobtitle"] == "M-title"
    assert world["people"].read_marketo(marketo_id)["title"] == "M-title"
    [collision] = [a for a in world["store"].activities(dynamics_id=dynamics_id)
                   if a["activity_type"] == "collision_resolved"]
    assert (collision["field"], collision["old_value"], collision["new_value"]) == ("title", "D-title", "M-title")
    assert "marketo wins" in collision["reason"]


def test_contact_collision_goes_to_dynamics(world):
    dynamics_id, marketo_id = world["contacts"][0]
    assert world["people"].read_dynamics("contact", dynamics_id)["telephone1"] == "D-phone"
    assert world["people"].read_marketo(marketo_id)["phone"] == "D-phone"


def test_plain_edits_move_both_ways(world, sandboxes):
    people, leads = world["people"], world["leads"]
    assert people.read_marketo(leads[1][1])["company"] == "Dyn Co"
    written = people.read_dynamics("lead", leads[2][0])
    assert written["firstname"] == "Mara"
    assert written["_modifiedby_value"] == sandboxes.dynamics_info()["sync_user_id"]


def test_invalid_record_is_logged_and_the_rest_of_its_batch_loads(world):
    people, store, leads = world["people"], world["store"], world["leads"]
    bad = people.read_dynamics("lead", leads[3][0])
    assert bad["lastname"] and bad["jobtitle"] != "Nameless", "the record breaking a rule was not written"
    rejections = [
        a for a in store.activities(dynamics_id=leads[3][0]) if a["activity_type"] == "rejected_by_validation"
    ]
    [rejection] = rejections  # logged once, not again by the next cycle
    assert rejection["field"] == "lastName" and "lastname is required" in rejection["reason"]
    assert rejection["direction"] == "marketo_to_dynamics" and rejection["marketo_id"] == leads[3][1]
    # ...and marketers see it on the person in Marketo, as with the native sync.
    types = {t["name"]: t["id"] for t in people.marketo.call("GET", "/v1/activities/types.json")["result"]}
    seen = [a for page, _ in people.marketo.activities([types["Dynamics Sync Failed"]], since=world["started"])
            for a in page if a["leadId"] == leads[3][1]]
    assert seen and "lastname is required" in str(seen[0]["attributes"])
    assert people.read_dynamics("lead", leads[4][0])["jobtitle"] == "Same batch, valid"


def test_new_dynamics_lead_reaches_marketo(world):
    [person] = world["people"].find_marketo("nia.new@example.com")
    assert person["msdynLeadId"] == world["new_lead"]


def test_sync_person_creates_once_then_does_nothing(world):
    people, store = world["people"], world["store"]
    [lead] = people.find_dynamics("lead", "solo@example.com")
    assert (lead["firstname"], lead["lastname"]) == ("So", "Lo")
    assert people.read_marketo(world["person"])["msdynLeadId"] == lead["leadid"]
    kinds = [a["activity_type"] for a in store.activities(marketo_id=world["person"])]
    assert kinds == ["sync_person_created", "sync_person_skipped"]


def test_sync_person_as_a_contact_with_an_owner(world, sandboxes):
    people, store = world["people"], world["store"]
    owner = sandboxes.dynamics_info()["user_id"]
    person = people.create_marketo({"email": "as.contact@example.com", "firstName": "Cy", "lastName": "Contact"})
    conf = {"marketo_lead_id": person, "sync_as": "contact", "owner": owner}
    assert str(run("sync_person_to_dynamics", conf).state) == "success"
    [contact] = people.find_dynamics("contact", "as.contact@example.com")
    row = people.dynamics.request("GET", f"contacts({contact['contactid']})", params={"$select": "_ownerid_value"})
    assert row.json()["_ownerid_value"] == owner
    assert store.links_by_marketo([person])[person].entity == "contact", "contact rules from now on"
    assert people.read_marketo(person)["msdynContactId"] == contact["contactid"]
    assert people.find_dynamics("lead", "as.contact@example.com") == []


def test_sync_person_with_an_unknown_owner_is_refused_and_logged(world):
    people, store = world["people"], world["store"]
    person = people.create_marketo({"email": "bad.owner@example.com", "lastName": "Owner"})
    conf = {"marketo_lead_id": person, "owner": "00000000-0000-0000-0000-000000000001"}
    assert str(run("sync_person_to_dynamics", conf).state) == "success"
    assert people.find_dynamics("lead", "bad.owner@example.com") == []
    [refused] = store.activities(marketo_id=person)
    assert refused["activity_type"] == "refused_by_dynamics" and "refused to create" in refused["reason"]


def test_the_syncs_own_writes_are_not_bounced_back(world):
    run_ = world["runs"]["echo_cycle"]
    summaries = world["store"].summaries(run_.dag_id, run_.run_id)
    assert summaries and sum(s["created"] + s["updated"] for s in summaries) == 0
    assert sum(s["echoes"] for s in summaries) > 0


def test_a_dynamics_delete_flags_the_person_and_sticks(world):
    people, store, leads = world["people"], world["store"], world["leads"]
    marketo_id = leads[8][1]
    person = people.read_marketo(marketo_id)
    assert person["msdynIsDeleted"] is True and person["email"], "flagged, not deleted"
    assert store.links_by_marketo([marketo_id])[marketo_id].deleted_at is not None
    people.edit_marketo(marketo_id, {"title": "Edited after the delete"})
    assert str(run("dynamics_incremental_sync").state) == "success"
    assert str(run("sync_person_to_dynamics", {"marketo_lead_id": marketo_id}).state) == "success"
    kinds = [a["activity_type"] for a in store.activities(marketo_id=marketo_id)]
    assert kinds == ["deleted_upstream", "deleted_upstream", "sync_person_skipped"]
    assert "not written back" in store.activities(marketo_id=marketo_id)[1]["reason"]
    assert people.find_dynamics("lead", person["email"]) == [], "the deleted lead was not re-created"


def test_a_marketo_merge_moves_the_link_to_the_surviving_person(world):
    people, store, leads = world["people"], world["store"], world["leads"]
    dynamics_id, loser = leads[9]
    link = store.links_by_dynamics("lead", [dynamics_id])[dynamics_id]
    assert link.marketo_id == world["survivor"] and link.deleted_at is None
    assert store.links_by_marketo([loser]) == {}, "no orphan link to the merged-away person"
    assert people.read_dynamics("lead", dynamics_id)["jobtitle"] == "Survivor title"
    found = people.find_dynamics("lead", "survivor@example.com")
    assert [row["leadid"] for row in found] == [dynamics_id], "the survivor's values, no duplicate lead"
    [merged] = [a for a in store.activities(dynamics_id=dynamics_id) if a["activity_type"] == "merged_in_marketo"]
    assert str(world["survivor"]) in merged["reason"]


def test_a_marketo_delete_deletes_nothing_in_dynamics_and_sticks(world):
    people, store, leads = world["people"], world["store"], world["leads"]
    dynamics_id, marketo_id = leads[10]
    assert people.read_dynamics("lead", dynamics_id)["lastname"], "the Dynamics lead is kept"
    assert [a["activity_type"] for a in store.activities(marketo_id=marketo_id)] == ["deleted_in_marketo"]
    email = people.read_dynamics("lead", dynamics_id)["emailaddress1"]
    people.edit_dynamics("lead", dynamics_id, {"jobtitle": "Edited after the Marketo delete"})
    assert str(run("dynamics_incremental_sync").state) == "success"
    assert people.find_marketo(email) == [], "the deleted person was not silently re-created"
    kinds = [a["activity_type"] for a in store.activities(dynamics_id=dynamics_id)]
    assert kinds == ["deleted_in_marketo", "deleted_upstream"]


def test_a_failed_load_leaves_the_watermark_and_the_change_for_the_next_run(world, sandboxes, monkeypatch):
    """Refused credentials fail the run at once; nothing advances; the next good run moves the change."""
    from include.runtime import connections

    people, store, leads = world["people"], world["store"], world["leads"]
    mark = store.watermark("lead", "dynamics")
    people.edit_dynamics("lead", leads[5][0], {"jobtitle": "After the outage"})
    bad = connections.marketo_connection({**sandboxes.marketo_info(), "client_secret": "WRONG-SECRET-123"})
    monkeypatch.setenv("AIRFLOW_CONN_MARKETO_DEFAULT", json.dumps(bad))
    failed = run("dynamics_incremental_sync")
    assert str(failed.state) == "failed"
    assert store.watermark("lead", "dynamics") == mark
    assert store.lock_holder("lead") is None, "a run that gave up frees its entities at once"
    assert people.read_marketo(leads[5][1])["title"] != "After the outage"
    monkeypatch.undo()
    connections.use_sandboxes(sandboxes, override=True)
    assert str(run("dynamics_incremental_sync").state) == "success"
    assert people.read_marketo(leads[5][1])["title"] == "After the outage"
    assert store.watermark("lead", "dynamics") != mark


def _xcom(dag_run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id,
                                                 key="return_value")).first()
        return XComModel.deserialize_value(row)


def test_a_run_for_an_older_interval_resyncs_that_interval_only(world):
    """A backfill re-reads what changed in its data interval and leaves the watermarks alone."""
    import datetime as dt

    from include.runtime.run_dag import load_dag

    people, store, leads = world["people"], world["store"], world["leads"]
    dag = load_dag("dynamics_incremental_sync")
    people.edit_dynamics("lead", leads[6][0], {"jobtitle": "Edited inside the interval"})
    time.sleep(1.1)
    logical = dt.datetime.now(dt.UTC)  # the backfilled interval is [logical - 5 min, logical)
    time.sleep(1.1)
    people.edit_dynamics("lead", leads[7][0], {"jobtitle": "Edited after the interval"})
    assert str(run("dynamics_incremental_sync").state) == "success"  # the schedule moves on past `logical`
    marks = {side: store.watermark("lead", side) for side in ("dynamics", "marketo")}
    backfill = dag.test(logical_date=logical)
    assert str(backfill.state) == "success"
    extracted = _xcom(backfill, "lead.extract")
    assert extracted["interval"] is True and extracted["marks"] == {}
    ids = {i for path in extracted["dynamics"] for i in read_frame(path)["dynamics_id"]}
    assert leads[6][0] in ids and leads[7][0] not in ids
    assert {side: store.watermark("lead", side) for side in ("dynamics", "marketo")} == marks


def test_no_secret_or_token_in_task_logs_xcom_or_activity_log(world, sandboxes, capfd):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from dynamics_sync.hooks.marketo import MarketoHook

    marketo, dynamics = sandboxes.marketo_info(), sandboxes.dynamics_info()
    secrets = [marketo["client_secret"], marketo["user_client_secret"], dynamics["client_secret"],
               dynamics["user_client_secret"], MarketoHook()._access_token()]
    capfd.readouterr()
    world["people"].edit_dynamics("lead", world["leads"][11][0], {"jobtitle": "Secret scan"})
    dag_run = run("dynamics_incremental_sync")
    out, err = capfd.readouterr()
    assert str(dag_run.state) == "success"
    with create_session() as session:
        xcoms = [str(row.value) for row in session.scalars(XComModel.get_many(run_id=dag_run.run_id,
                                                                              dag_ids=dag_run.dag_id))]
        rendered = [str(row.rendered_fields) for row in session.query(RenderedTaskInstanceFields).filter(
            RenderedTaskInstanceFields.dag_id == dag_run.dag_id, RenderedTaskInstanceFields.run_id == dag_run.run_id)]
    assert xcoms and rendered, "the run's XComs and rendered templates were read"
    texts = {"task logs": out + err, "xcom": "\n".join(xcoms), "rendered templates": "\n".join(rendered),
             "activity_log": "\n".join(str(a) for a in world["store"].activities())}
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret or token leaked into {where}"


def test_a_run_never_syncs_an_entity_another_run_holds(world):
    import datetime as dt

    from dynamics_sync.state import RunContext

    store = world["store"]
    other = RunContext("dynamics_incremental_sync", "backfill__overlapping")
    store.acquire_lock("lead", other, dt.timedelta(minutes=10))
    mark = store.watermark("lead", "dynamics")
    blocked = run("dynamics_incremental_sync")
    states = {ti.task_id: str(ti.state) for ti in blocked.get_task_instances()}
    assert states["lead.extract"] == "failed" and states["contact.extract"] == "success", "the others go on"
    assert str(blocked.state) == "failed" and states["failed_entities"] == "failed", "and the run says so"
    assert store.watermark("lead", "dynamics") == mark and store.lock_holder("lead") == other.run_id
    store.commit_load(other, release="lead")  # the other run finishes
    assert str(run("dynamics_incremental_sync").state) == "success"
    assert store.lock_holder("lead") is None


def test_accounts_reach_marketo_companies_one_way(world, sandboxes):
    people = world["people"]
    sandboxes.post("dynamics", "/_sandbox/seed", {"entity": "account", "count": 15, "seed": 4})
    assert str(run("dynamics_incremental_sync").state) == "success"
    accounts = [row for rows, _ in people.dynamics.pages("accounts", params={"$select": "accountid,name"})
                for row in rows]
    ids = [a["accountid"] for a in accounts]
    found = people.marketo.call("GET", "/v1/companies.json", params={
        "filterType": "externalCompanyId", "filterValues": ",".join(ids), "fields": "externalCompanyId,company"})
    companies = {c["externalCompanyId"]: c["company"] for c in found["result"]}
    assert companies == {a["accountid"]: a["name"] for a in accounts}
    # Dynamics wins: a Dynamics rename flows; a Marketo edit does not flow back.
    people.edit_dynamics("account", ids[0], {"name": "Renamed in Dynamics"})
    people.marketo.call("POST", "/v1/companies.json", json={"action": "updateOnly", "dedupeBy": "dedupeFields",
                        "input": [{"externalCompanyId": ids[1], "company": "Renamed in Marketo"}]})
    assert str(run("dynamics_incremental_sync").state) == "success"
    found = people.marketo.call("GET", "/v1/companies.json", params={
        "filterType": "externalCompanyId", "filterValues": ",".join(ids[:2]), "fields": "externalCompanyId,company"})
    assert {c["externalCompanyId"]: c["company"] for c in found["result"]}[ids[0]] == "Renamed in Dynamics"
    assert people.read_dynamics("account", ids[1])["name"] != "Renamed in Marketo"
