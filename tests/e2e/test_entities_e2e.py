"""Every entity type, and the native sync's semantics, end to end: real DAG runs against both sandboxes.

One scenario: users, teams, accounts with contacts and opportunities, leads and a custom entity are seeded
in Dynamics; the initial copy runs; people then qualify a lead, flip sync filters, rename a user and an
account and pick a lead source in Marketo; two incremental cycles run. Each test asserts one behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dynamics_sync.entities import DEFAULT_CONFIG
from dynamics_sync.state import StateStore, record_links
from include.demo.people import People
from include.runtime.run_dag import run

pytestmark = pytest.mark.e2e
ACCOUNTS, LEADS, PROJECTS = 6, 8, 6


def _rows(people: People, entity: str, select: list[str], filter_: str | None = None) -> list[dict[str, Any]]:
    return people.list_dynamics(entity, select, filter_)


def _link(store: StateStore, entity: str, dynamics_id: str) -> Any:
    return store.links_by_dynamics(entity, [dynamics_id]).get(dynamics_id)


@pytest.fixture(scope="module")
def world(sandboxes: Any, new_state: Any) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_STATE", json.dumps(new_state("entities")))
        for box in ("dynamics", "marketo"):
            sandboxes.post(box, "/_sandbox/reset")
        seed = [
            {"entity": "systemuser", "count": 4, "seed": 3},
            {"entity": "team", "count": 2, "seed": 3},
            {"entity": "account", "count": ACCOUNTS, "seed": 3, "contacts_per_account": 2,
             "opportunities_per_account": 1, "owners": "users"},
            {"entity": "lead", "count": LEADS, "seed": 3, "owners": "users"},
            {"entity": "new_project", "count": PROJECTS, "seed": 3},
        ]
        for body in seed:
            sandboxes.post("dynamics", "/_sandbox/seed", body)
        people = People(sandboxes)
        store = StateStore.from_connection()
        w: dict[str, Any] = {"people": people, "store": store, "runs": {}}
        accounts = _rows(people, "account", ["name"])
        contacts = _rows(people, "contact", ["emailaddress1", "_parentcustomerid_value"])
        leads = _rows(people, "lead", ["emailaddress1"])
        opportunities = _rows(people, "opportunity", ["_parentaccountid_value"])
        w.update(accounts=accounts, contacts=contacts, leads=leads, opportunities=opportunities)
        first_contact = {c["_parentcustomerid_value"]: c["contactid"] for c in reversed(contacts)}
        w["primary"] = {a["accountid"]: first_contact[a["accountid"]] for a in accounts[:3]}
        for account_id, contact_id in w["primary"].items():
            people.edit_dynamics("account", account_id, {"primarycontactid@odata.bind": f"/contacts({contact_id})"})
        opp = opportunities[0]
        w["role_contact"] = first_contact[opp["_parentaccountid_value"]]
        people.edit_dynamics("opportunity", opp["opportunityid"],
                             {"parentcontactid@odata.bind": f"/contacts({w['role_contact']})"})
        people.edit_dynamics("lead", leads[0]["leadid"], {"new_synctomkto": False})
        people.edit_dynamics("lead", leads[1]["leadid"], {"leadsourcecode": 8})
        w["runs"]["initial"] = run("dynamics_initial_sync")

        # People's changes.
        people.edit_dynamics("lead", leads[0]["leadid"], {"new_synctomkto": True})
        people.edit_dynamics("lead", leads[2]["leadid"], {"new_synctomkto": False, "jobtitle": "Stale in Marketo"})
        w["qualified"] = people.qualify_lead(leads[3]["leadid"])
        users = _rows(people, "user", ["lastname"], "applicationid eq null")
        w["user"] = users[0]["systemuserid"]
        people.dynamics.update("systemusers", w["user"], {"lastname": "Renamed"})
        people.edit_dynamics("account", accounts[0]["accountid"], {"name": "Renamed Account"})
        people.edit_marketo(_link(store, "lead", leads[1]["leadid"]).marketo_id, {"leadSource": "Advertisement"})
        w["runs"]["incremental"] = run("dynamics_incremental_sync")
        w["runs"]["echo"] = run("dynamics_incremental_sync")
        yield w
        store.dispose()


def test_every_run_succeeded(world):
    assert {name: str(r.state) for name, r in world["runs"].items()} == dict.fromkeys(world["runs"], "success")


def test_users_become_sales_persons_and_owners_point_at_them(world):
    people, store = world["people"], world["store"]
    person = people.read_object("user", world["user"])
    assert person["lastName"] == "Renamed", "a Dynamics rename reaches the sales person"
    lead = people.list_dynamics("lead", ["_ownerid_value"], f"leadid eq {world['leads'][1]['leadid']}")[0]
    marketo_id = _link(store, "lead", lead["leadid"]).marketo_id
    got = people.marketo.get_leads("id", [marketo_id], ["externalSalesPersonId", "leadOwnerEmail"])[0]
    assert got["externalSalesPersonId"] == lead["_ownerid_value"]
    assert got["leadOwnerEmail"] == people.read_object("user", lead["_ownerid_value"])["email"]


def test_teams_reach_their_custom_object(world):
    people = world["people"]
    teams = people.list_dynamics("team", ["name"])
    assert all(people.read_object("team", t["teamid"]).get("name") == t["name"] for t in teams)


def test_accounts_become_companies_and_contacts_show_their_company(world):
    people, store = world["people"], world["store"]
    account = world["accounts"][0]
    assert people.read_object("account", account["accountid"])["company"] == "Renamed Account"
    contact = next(c for c in world["contacts"] if c["_parentcustomerid_value"] == account["accountid"])
    marketo_id = _link(store, "contact", contact["contactid"]).marketo_id
    got = people.marketo.get_leads("id", [marketo_id], ["externalCompanyId", "company"])[0]
    assert (got["externalCompanyId"], got["company"]) == (account["accountid"], "Renamed Account")


def test_opportunities_and_the_role_of_their_contact(world):
    people, store = world["people"], world["store"]
    opp = world["opportunities"][0]
    got = people.read_object("opportunity", opp["opportunityid"])
    assert got["externalCompanyId"] == opp["_parentaccountid_value"] and got["amount"]
    role = people.read_object("opportunity_role", opp["opportunityid"])
    assert (role["leadId"], role["role"]) == (_link(store, "contact", world["role_contact"]).marketo_id, "Contact")
    without = [a for a in store.activities(entity="opportunity_role") if a["activity_type"] == "rejected_by_validation"]
    assert {a["dynamics_id"] for a in without} == {o["opportunityid"] for o in world["opportunities"][1:]}


def test_a_custom_entity_reaches_its_person_two_levels_away(world):
    people, store = world["people"], world["store"]
    projects = people.list_dynamics("project", ["new_name", "_new_accountid_value", "new_startdate", "new_hours"])
    assert len(projects) == PROJECTS
    for project in projects:
        got = people.read_object("project", project["new_projectid"])
        assert got["name"] == project["new_name"] and got.get("hours") == project.get("new_hours")
        primary = world["primary"].get(project["_new_accountid_value"])
        expected = _link(store, "contact", primary).marketo_id if primary else None
        assert got.get("leadId") == expected
        if project.get("new_startdate"):
            assert got["startDate"] == project["new_startdate"][:10]
    unresolved = [a for a in store.activities(entity="project") if a["activity_type"] == "unresolved_reference"]
    assert unresolved and all("whose primarycontactid is empty" in a["reason"] for a in unresolved)


def test_a_field_closed_to_the_sync_user_is_reported_once(world):
    reported = [a for a in world["store"].activities(entity="project") if a["activity_type"] == "inaccessible_field"]
    assert [a["field"] for a in reported] == ["budget"], "once, not every cycle"


def test_the_sync_filter(world):
    people, store, leads = world["people"], world["store"], world["leads"]
    skipped = [a for a in store.activities(dynamics_id=leads[0]["leadid"])
               if a["activity_type"] == "skipped_by_sync_filter"]
    assert skipped, "an explicit No kept the lead out of the initial copy"
    assert len(people.find_marketo(leads[0]["emailaddress1"])) == 1, "turned to Yes: synced"
    paused = _link(store, "lead", leads[2]["leadid"])
    assert paused.paused and people.read_marketo(paused.marketo_id)["title"] != "Stale in Marketo"


def test_a_qualified_lead_becomes_its_contact_without_a_duplicate_person(world):
    people, store, lead = world["people"], world["store"], world["leads"][3]
    [contact_id] = [r["contactid"] for r in world["qualified"] if "contactid" in r]
    [person] = people.find_marketo(lead["emailaddress1"])
    got = people.read_marketo(person["id"])
    assert (got["msdynType"], got["msdynContactId"]) == ("Contact", contact_id)
    assert store.links_by_marketo([person["id"]])[person["id"]].entity == "contact"
    assert _link(store, "lead", lead["leadid"]).deleted_side == "converted"


def test_a_choice_travels_both_ways_by_its_label(world):
    people, store, lead = world["people"], world["store"], world["leads"][1]
    marketo_id = _link(store, "lead", lead["leadid"]).marketo_id
    assert people.read_dynamics("lead", lead["leadid"])["leadsourcecode"] == 1, "the label's value, Advertisement"
    [person] = people.marketo.get_leads("id", [marketo_id], ["leadSource"])
    assert person["leadSource"] == "Advertisement"
    initial = [a for a in store.activities(marketo_id=marketo_id) if a["activity_type"] == "collision_resolved"]
    assert initial == [], "no collision: only Marketo changed it"


def test_nothing_is_bounced_back_across_entities(world):
    run_ = world["runs"]["echo"]
    summaries = world["store"].summaries(run_.dag_id, run_.run_id)
    assert {s["entity"] for s in summaries} >= {"user", "team", "account", "opportunity", "project"}
    assert sum(s["created"] + s["updated"] for s in summaries) == 0


def test_a_custom_entity_added_by_config_alone_is_onboarded_by_the_initial_dag(world, tmp_path, monkeypatch):
    config = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    config["entities"]["subscription"] = {
        "direction": "dynamics_to_marketo",
        "dynamics": {"logical_name": "new_subscription", "entity_set": "new_subscriptions",
                     "key": "new_subscriptionid"},
        "marketo": {"object": "customobjects/msdynSubscription_c", "key_field": "subscriptionId"},
        "fields": [{"marketo": "name", "dynamics": "new_name"}, {"marketo": "plan", "dynamics": "new_plan"},
                   {"marketo": "seats", "dynamics": "new_seats"},
                   {"marketo": "leadId", "dynamics": "new_contactid", "lookup": "contact"}],
    }
    path = tmp_path / "entities.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DYNAMICS_SYNC_CONFIG", str(path))
    people, store = world["people"], world["store"]
    contact = world["contacts"][0]["contactid"]
    created = people.dynamics.create("new_subscriptions", {"new_name": "Gold", "new_plan": 100000001, "new_seats": 5,
                                                           "new_ContactId@odata.bind": f"/contacts({contact})"})
    dag_run = run("dynamics_initial_sync", {"entities": ["subscription"]})
    assert str(dag_run.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["subscription.load"] == "success" and states["lead.load"] == "skipped"
    got = people.read_object("subscription", created)
    assert (got["name"], got["plan"], got["seats"]) == ("Gold", "Pro", 5)
    assert got["leadId"] == _link(store, "contact", contact).marketo_id
    with store.engine.connect() as conn:
        kinds = {r.entity for r in conn.execute(record_links.select())}
    assert "subscription" in kinds


def test_a_field_added_to_the_config_is_backfilled_by_the_next_cycle(world, tmp_path, monkeypatch):
    """Like the native Quick Sync: every record gets the new field once, nothing else is rewritten."""
    config = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    config["entities"]["account"]["fields"].append({"marketo": "billingCity", "dynamics": "address1_city"})
    path = tmp_path / "entities.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DYNAMICS_SYNC_CONFIG", str(path))
    people, store = world["people"], world["store"]
    cities = {a["accountid"]: a.get("address1_city") for a in people.list_dynamics("account", ["address1_city"])}
    assert any(cities.values()), "the seed gives accounts a city"
    dag_run = run("dynamics_incremental_sync")
    assert str(dag_run.state) == "success"
    for account_id, city in cities.items():
        assert people.read_object("account", account_id).get("billingCity") == city
    [summary] = [s for s in store.summaries(dag_run.dag_id, dag_run.run_id) if s["entity"] == "account"]
    assert summary["updated"] == sum(1 for c in cities.values() if c), "only the records the new field changes"
    again = run("dynamics_incremental_sync")
    [after] = [s for s in store.summaries(again.dag_id, again.run_id) if s["entity"] == "account"]
    assert (str(again.state), after["updated"]) == ("success", 0), "then back to reading changes only"


def test_an_idle_cycle_costs_one_dynamics_call_and_at_most_three_marketo_calls_per_entity(world, sandboxes):
    assert str(run("dynamics_incremental_sync").state) == "success"  # settle anything left by earlier tests
    sandboxes.post("marketo", "/_sandbox/stats/reset")
    sandboxes.post("dynamics", "/_sandbox/limits", {"reset_counters": True})
    dag_run = run("dynamics_incremental_sync")
    assert str(dag_run.state) == "success"
    entities = {s["entity"] for s in world["store"].summaries(dag_run.dag_id, dag_run.run_id)}
    marketo = sandboxes.get("marketo", "/_sandbox/stats")["by_endpoint"]
    rest_calls = sum(n for endpoint, n in marketo.items() if "/identity/" not in endpoint)
    dynamics_calls = sandboxes.get("dynamics", "/_sandbox/stats")["requests"]
    assert len(entities) == 8
    assert dynamics_calls <= len(entities), f"{dynamics_calls} Dynamics calls for {len(entities)} entities"
    assert rest_calls <= 3 * len(entities), marketo
