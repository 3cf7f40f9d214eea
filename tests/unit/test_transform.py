"""The write plan for the sync filter, lead conversion and one-way fields, as a table of pure cases."""

from __future__ import annotations

import json

import pandas as pd

from dynamics_sync.entities import load_entities
from dynamics_sync.extract import DYN_META, marketo_people_empty
from dynamics_sync.state import Link
from dynamics_sync.transform import plan_incremental, plan_initial

CONTACT = load_entities()["contact"]
VALUES = {"email": "ana@example.com", "firstName": "Ana", "lastName": "Diaz", "phone": "1", "title": "CTO",
          "externalCompanyId": None, "externalSalesPersonId": None}


def _dynamics(*rows: dict) -> pd.DataFrame:
    base = {"modified_by": "someone", "deleted": False, "sync_filter": None, "converted_from": None, **VALUES}
    return pd.DataFrame([{**base, **row} for row in rows], columns=[*DYN_META, *CONTACT.marketo_fields])


def _marketo(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{**VALUES, **row} for row in rows], columns=marketo_people_empty(CONTACT).columns)


def _link(dynamics_id: str = "c1", marketo_id: int = 7, **kw) -> Link:
    return Link("contact", dynamics_id, marketo_id, dict(VALUES), dict(VALUES), **kw)


def _incremental(dynamics: pd.DataFrame, marketo: pd.DataFrame | None = None, links=(), converted=None):
    links = {link.dynamics_id: link for link in links}
    by_marketo = {link.marketo_id: link for link in links.values() if link.marketo_id is not None}
    return plan_incremental(CONTACT, dynamics, marketo if marketo is not None else _marketo().iloc[0:0],
                            links, by_marketo, None, converted=converted)


def test_only_an_explicit_no_keeps_a_record_out():
    plan = plan_initial(CONTACT, _dynamics({"dynamics_id": "c1", "sync_filter": False},
                                           {"dynamics_id": "c2", "sync_filter": None, "email": "b@example.com"},
                                           {"dynamics_id": "c3", "sync_filter": True, "email": "c@example.com"}),
                        {})
    assert sorted(w["dynamics_id"] for w in plan.marketo_writes) == ["c2", "c3"]
    [skipped] = plan.activities
    assert (skipped.activity_type, skipped.dynamics_id) == ("skipped_by_sync_filter", "c1")


def test_turning_the_filter_off_pauses_without_touching_marketo_and_on_again_resumes():
    off = _incremental(_dynamics({"dynamics_id": "c1", "sync_filter": False, "title": "New"}), links=[_link()])
    assert off.marketo_writes == [] and off.refresh[0]["paused"] is True
    assert "Marketo copy is kept" in off.activities[0].reason

    marketo_edit = _incremental(_dynamics().iloc[0:0], _marketo({"marketo_id": 7, "title": "Marketo edit"}),
                                links=[_link(paused=True)])
    assert marketo_edit.dynamics_writes == [], "a paused record moves in neither direction"

    on = _incremental(_dynamics({"dynamics_id": "c1", "sync_filter": True, "title": "New"}),
                      links=[_link(paused=True)])
    assert [r["paused"] for r in on.refresh] == [False]
    [write] = on.marketo_writes
    assert (write["op"], json.loads(write["write_fields"]), write["title"]) == ("update", ["title"], "New")


def test_a_contact_qualified_from_a_linked_lead_takes_over_its_person():
    lead_link = Link("lead", "l1", 7, {"email": "ana@example.com"}, {"email": "ana@example.com", "phone": "9"})
    plan = _incremental(_dynamics({"dynamics_id": "c9", "converted_from": "l1", "phone": None}),
                        converted={"l1": lead_link})
    [write] = plan.marketo_writes
    assert (write["op"], write["marketo_id"], write["converted_from"]) == ("convert", 7, "l1")
    assert write["phone"] == "9", "a value only Marketo holds is kept"
    assert plan.activities[0].activity_type == "converted"


def test_a_marketo_edit_of_a_one_way_field_never_reaches_dynamics():
    plan = _incremental(_dynamics().iloc[0:0],
                        _marketo({"marketo_id": 7, "externalCompanyId": "elsewhere", "title": "Edited"}),
                        links=[_link()])
    [write] = plan.dynamics_writes
    assert json.loads(write["write_fields"]) == ["title"]


def test_a_create_marketo_refused_for_an_existing_email_links_its_only_person_or_reports_why():
    from dynamics_sync.transform import match_existing

    creates = [
        {"dynamics_id": "c1", **VALUES, "phone": None},  # one person has the email: linked
        {"dynamics_id": "c2", **VALUES, "email": "two@example.com"},  # two people have it: neither
        {"dynamics_id": "c3", **VALUES, "email": "taken@example.com"},  # its person mirrors a lead
        {"dynamics_id": "c4", **VALUES, "email": "gone@example.com"},  # nobody after all
    ]
    people = _marketo({"marketo_id": 7, "phone": "555"}, {"marketo_id": 8, "email": "TWO@example.com"},
                      {"marketo_id": 9, "email": "two@example.com"}, {"marketo_id": 10, "email": "taken@example.com"})
    plan, unmatched = match_existing(CONTACT, creates, people, {10: Link("lead", "l1", 10)})
    [link] = plan.marketo_writes
    assert (link["op"], link["marketo_id"], link["dynamics_id"]) == ("link", 7, "c1")
    assert link["phone"] == "555", "a Dynamics null never blanks a value Marketo holds"
    assert "phone" not in json.loads(link["write_fields"])
    assert [(a.activity_type, a.dynamics_id) for a in plan.activities] == [
        ("ambiguous_match", "c2"), ("already_linked", "c3")]
    assert "lead l1" in plan.activities[1].reason
    assert [row["dynamics_id"] for row in unmatched] == ["c4"]
