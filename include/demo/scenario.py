"""The demo scenario: seed, initial copy, people's edits on both sides, one cycle, sync person, report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dynamics_sync.state import StateStore, record_links
from include.demo.people import People
from include.runtime import connections
from include.runtime.run_dag import run

PLAIN_EDITS = 20
ACCOUNTS, USERS, TEAMS, PROJECTS, FILTERED = 300, 12, 3, 120, 5
DUPLICATE = "lead00001@example.com"


@dataclass
class Scenario:
    boxes: Any
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    runs: list[tuple[str, str, str, float]] = field(default_factory=list)

    def run(self, leads: int, contacts: int, people: int, overlap_leads: int, overlap_contacts: int) -> bool:
        self.boxes.post("dynamics", "/_sandbox/reset")
        self.boxes.post("marketo", "/_sandbox/reset")
        for body in (
            {"entity": "systemuser", "count": USERS, "seed": 42},
            {"entity": "team", "count": TEAMS, "seed": 42},
            {"entity": "lead", "count": leads, "seed": 42, "owners": "users", "owner_teams": 10},
            {"entity": "contact", "count": contacts, "seed": 42, "owners": "users"},
            # Accounts with one contact each (numbered after the others) and one opportunity each.
            {"entity": "account", "count": ACCOUNTS, "seed": 42, "owners": "users", "contacts_per_account": 1,
             "contact_start": contacts, "opportunities_per_account": 1},
            {"entity": "new_project", "count": PROJECTS, "seed": 42},
        ):
            self.boxes.post("dynamics", "/_sandbox/seed", body)
        self.boxes.post("marketo", "/_sandbox/seed", {"people": people, "overlap_leads": overlap_leads,
                                                      "overlap_contacts": overlap_contacts, "seed": 42})
        print(f"Seeded Dynamics with {USERS} users, {TEAMS} teams, {leads} leads, {contacts + ACCOUNTS} contacts, "
              f"{ACCOUNTS} accounts with an opportunity each and {PROJECTS} projects (a custom entity); "
              f"Marketo with {people} people "
              f"({overlap_leads + overlap_contacts} share an email with a Dynamics record)", flush=True)
        connections.use_sandboxes(self.boxes, override=True)
        self.people = People(self.boxes)
        self.store = StateStore.from_connection()
        # A marketer created a second person with a Dynamics lead's email: the sync must not guess.
        self.people.marketo.sync_leads([{"email": DUPLICATE, "firstName": "Second", "lastName": "Copy"}],
                                       action="createDuplicate", lookup_field="email")
        self._prepare_dynamics()

        if not self._run("dynamics_initial_sync"):
            return self._finish()
        self.check("every Dynamics lead and contact is linked to a Marketo person, but the ambiguous and the "
                   "filtered-out ones",
                   self.store.count_links("lead") == leads - 1 - FILTERED
                   and self.store.count_links("contact") == contacts + ACCOUNTS,
                   f"{self.store.count_links('lead')} leads, {self.store.count_links('contact')} contacts linked")
        self._check_every_entity()
        self.check("the lead whose email two Marketo people share was linked to neither and reported",
                   any(a["activity_type"] == "ambiguous_match" for a in self.store.activities(email=DUPLICATE)),
                   DUPLICATE)
        self.check("every Dynamics account became a Marketo company",
                   self.store.count_links("account") == ACCOUNTS, f"{self.store.count_links('account')} companies")
        self.check("people sharing an email were linked, not duplicated",
                   len(self.people.find_marketo("lead00000@example.com")) == 1, "lead00000@example.com")

        edits = self._make_changes()
        if not self._run("dynamics_incremental_sync"):
            return self._finish()
        self._check_changes(edits)
        self._check_semantics(edits)

        newcomer = self.people.create_marketo(
            {"email": "jane.newcomer@example.com", "firstName": "Jane", "lastName": "Newcomer", "title": "CTO"})
        nameless = self.people.create_marketo({"email": "no.lastname@example.com", "firstName": "Nolan"})
        self._run("sync_person_to_dynamics", {"marketo_lead_id": newcomer})
        self._run("sync_person_to_dynamics", {"marketo_lead_id": newcomer})
        self._run("sync_person_to_dynamics", {"marketo_lead_id": nameless})
        self.check("sync person created the lead in Dynamics once",
                   len(self.people.find_dynamics("lead", "jane.newcomer@example.com")) == 1, f"person {newcomer}")
        self.check("sync person refused a person without a last name",
                   not self.people.find_dynamics("lead", "no.lastname@example.com")
                   and any(a["activity_type"] == "rejected_by_validation"
                           for a in self.store.activities(marketo_id=nameless)), f"person {nameless}")

        if self._run("dynamics_incremental_sync"):
            echo_writes = sum(s["updated"] + s["created"] for s in self._summaries(self.runs[-1][1]))
            self.check("the sync's own writes were not bounced back next cycle", echo_writes == 0,
                       f"{echo_writes} writes in the following cycle")
        return self._finish()

    # ---- every entity ------------------------------------------------------------------------------

    def _prepare_dynamics(self) -> None:
        """What salespeople did before the sync was switched on: primary contacts, a role, sync filters."""
        p = self.people
        accounts = p.list_dynamics("account", ["_primarycontactid_value"])
        contacts = p.list_dynamics("contact", ["_parentcustomerid_value"], "_parentcustomerid_value ne null")
        first = {c["_parentcustomerid_value"]: c["contactid"] for c in reversed(contacts)}
        for account in accounts[: ACCOUNTS // 2]:
            p.edit_dynamics("account", account["accountid"],
                            {"primarycontactid@odata.bind": f"/contacts({first[account['accountid']]})"})
        for opp in p.list_dynamics("opportunity", ["_parentaccountid_value"])[:50]:
            p.edit_dynamics("opportunity", opp["opportunityid"],
                            {"parentcontactid@odata.bind": f"/contacts({first[opp['_parentaccountid_value']]})"})
        self.filtered = [row["leadid"] for row in p.list_dynamics("lead", ["emailaddress1"])[-FILTERED:]]
        for lead_id in self.filtered:
            p.edit_dynamics("lead", lead_id, {"new_synctomkto": False})

    def _count_objects(self, entity: str) -> int:
        spec = self.people.entities[entity]
        keys = self._dynamics_ids(entity)
        found = 0
        for start in range(0, len(keys), 200):
            body = self.people.marketo.call("GET", f"/v1/{spec.marketo_object}.json", params={
                "filterType": spec.key_field, "filterValues": ",".join(keys[start : start + 200]),
                "fields": spec.key_field, "batchSize": 300})
            found += len(body.get("result") or [])
        return found

    def _dynamics_ids(self, entity: str) -> list[str]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(record_links.select().where(record_links.c.entity == entity)).fetchall()
        return [row.dynamics_id for row in rows]

    def _check_every_entity(self) -> None:
        p = self.people
        for entity, label, expected in (
            ("user", "Dynamics users became Marketo sales persons", len(p.list_dynamics("user", ["fullname"]))),
            ("team", "teams became msdynTeam_c custom objects", len(p.list_dynamics("team", ["name"]))),
            ("account", "accounts became Marketo companies", ACCOUNTS),
            ("opportunity", "opportunities became Marketo opportunities", ACCOUNTS),
            ("opportunity_role", "opportunities with a contact got an opportunity role", 50),
            ("project", "projects (a custom entity) became msdynProject_c custom objects", PROJECTS),
        ):
            found = self._count_objects(entity)
            self.check(label, found == expected, f"{found} of {expected} in Marketo")
        contact = p.list_dynamics("contact", ["_parentcustomerid_value"], "_parentcustomerid_value ne null")[0]
        [link] = self.store.links_by_dynamics("contact", [contact["contactid"]]).values()
        got = p.marketo.get_leads("id", [link.marketo_id], ["externalCompanyId", "company", "leadOwnerEmail"])[0]
        self.check("a contact's person shows its account's company and its owner as sales person",
                   got.get("externalCompanyId") == contact["_parentcustomerid_value"] and bool(got.get("company"))
                   and bool(got.get("leadOwnerEmail")), f"person {link.marketo_id}: {got}")
        skipped = self.store.activities(activity_type="skipped_by_sync_filter")
        self.check("leads whose new_synctomkto is No stayed out of Marketo, each logged",
                   len(skipped) == FILTERED and not p.find_marketo(self._email("lead", self.filtered[0])),
                   f"{len(skipped)} skipped_by_sync_filter rows")

    def _email(self, entity: str, row_id: str) -> str:
        return self.people.read_dynamics(entity, row_id)["emailaddress1"]

    def _check_semantics(self, e: dict[str, Any]) -> None:
        p = self.people
        self.check("a lead whose sync filter turned to Yes reached Marketo",
                   len(p.find_marketo(self._email("lead", self.filtered[0]))) == 1, self.filtered[0])
        _, marketo_id = e["qualified"]
        person = p.read_marketo(marketo_id)
        self.check("a qualified lead's person now follows its new contact (no duplicate person)",
                   person.get("msdynType") == "Contact" and len(p.find_marketo(person.get("email", ""))) == 1,
                   f"person {marketo_id}: type {person.get('msdynType')}, contact {person.get('msdynContactId')}")
        company = p.read_object("account", e["renamed_account"])
        self.check("an account renamed in Dynamics renamed its Marketo company",
                   company.get("company") == "Renamed in Dynamics", str(company.get("company")))

    # ---- changes made by people ---------------------------------------------------------------------

    def _links(self, entity: str, count: int) -> list[tuple[str, int]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                record_links.select().where(record_links.c.entity == entity)
                .order_by(record_links.c.id).limit(count)
            ).fetchall()
        return [(row.dynamics_id, row.marketo_id) for row in rows]

    def _make_changes(self) -> dict[str, Any]:
        p = self.people
        leads, contacts = self._links("lead", 3 * PLAIN_EDITS + 2), self._links("contact", 2 * PLAIN_EDITS + 1)
        lead_collision, contact_collision, lead_invalid = leads[0], contacts[0], leads[1]
        p.edit_dynamics("lead", lead_collision[0], {"jobtitle": "VP Sales (set in Dynamics)"})
        p.edit_marketo(lead_collision[1], {"title": "CMO (set in Marketo)"})
        p.edit_dynamics("contact", contact_collision[0], {"telephone1": "+1 555 0100"})
        p.edit_marketo(contact_collision[1], {"phone": "+1 555 0199"})
        p.edit_marketo(lead_invalid[1], {"lastName": "", "title": "Title with no last name"})
        for dynamics_id, _ in leads[2 : 2 + PLAIN_EDITS]:
            p.edit_dynamics("lead", dynamics_id, {"jobtitle": "Edited in Dynamics"})
        for _, marketo_id in leads[2 + PLAIN_EDITS : 2 + 2 * PLAIN_EDITS]:
            p.edit_marketo(marketo_id, {"title": "Edited in Marketo"})
        for dynamics_id, _ in contacts[1 : 1 + PLAIN_EDITS]:
            p.edit_dynamics("contact", dynamics_id, {"telephone1": "+44 20 7946 0000"})
        for _, marketo_id in contacts[1 + PLAIN_EDITS : 1 + 2 * PLAIN_EDITS]:
            p.edit_marketo(marketo_id, {"title": "Edited in Marketo"})
        new_lead = p.create_dynamics("lead", {"firstname": "Nina", "lastname": "Newlead",
                                              "emailaddress1": "nina.newlead@example.com", "subject": "Demo"})
        p.edit_dynamics("lead", self.filtered[0], {"new_synctomkto": True})
        qualified = leads[-1]
        p.qualify_lead(qualified[0])
        renamed_account = self._dynamics_ids("account")[0]
        p.edit_dynamics("account", renamed_account, {"name": "Renamed in Dynamics"})
        print(f"People made {4 * PLAIN_EDITS} plain edits, 2 collisions, 1 edit that blanks a required field, "
              "created 1 Dynamics lead, qualified 1 lead into a contact, turned 1 lead's sync filter to Yes and "
              "renamed 1 account", flush=True)
        return {"lead_collision": lead_collision, "contact_collision": contact_collision,
                "lead_invalid": lead_invalid, "leads": leads, "contacts": contacts, "new_lead": new_lead,
                "qualified": qualified, "renamed_account": renamed_account}

    def _check_changes(self, e: dict[str, Any]) -> None:
        p = self.people
        lead_d = p.read_dynamics("lead", e["lead_collision"][0])
        lead_m = p.read_marketo(e["lead_collision"][1])
        self.check("lead collision: Marketo won on both sides",
                   lead_d.get("jobtitle") == lead_m.get("title") == "CMO (set in Marketo)",
                   f"Dynamics {lead_d.get('jobtitle')!r}, Marketo {lead_m.get('title')!r}")
        contact_d = p.read_dynamics("contact", e["contact_collision"][0])
        contact_m = p.read_marketo(e["contact_collision"][1])
        self.check("contact collision: Dynamics won on both sides",
                   contact_d.get("telephone1") == contact_m.get("phone") == "+1 555 0100",
                   f"Dynamics {contact_d.get('telephone1')!r}, Marketo {contact_m.get('phone')!r}")
        moved_d = p.read_marketo(e["leads"][2][1]).get("title") == "Edited in Dynamics"
        moved_m = p.read_dynamics("lead", e["leads"][2 + PLAIN_EDITS][0]).get("jobtitle") == "Edited in Marketo"
        self.check("plain edits moved both ways", moved_d and moved_m, "lead edits in each direction")
        invalid_d = p.read_dynamics("lead", e["lead_invalid"][0])
        rejected = [a for a in self.store.activities(dynamics_id=e["lead_invalid"][0])
                    if a["activity_type"] == "rejected_by_validation"]
        self.check("the lead with a blanked last name was not written, and the reason is logged",
                   bool(invalid_d.get("lastname")) and bool(rejected)
                   and invalid_d.get("jobtitle") != "Title with no last name",
                   rejected[0]["reason"] if rejected else "no activity_log row")
        self.check("a lead created in Dynamics reached Marketo",
                   len(p.find_marketo("nina.newlead@example.com")) == 1, "nina.newlead@example.com")

    # ---- runs, checks, report -----------------------------------------------------------------------

    def _run(self, dag_id: str, conf: dict[str, Any] | None = None) -> bool:
        print(f"\n=== {dag_id} {conf or ''}", flush=True)
        started = time.monotonic()
        dag_run = run(dag_id, conf)
        seconds = time.monotonic() - started
        self.runs.append((dag_id, dag_run.run_id, str(dag_run.state), seconds))
        ok = str(dag_run.state) == "success"
        self.check(f"{dag_id} run succeeded", ok, f"{dag_run.state} in {seconds:.1f} s")
        return ok

    def check(self, what: str, ok: bool, detail: str) -> None:
        self.checks.append((what, ok, detail))

    def _summaries(self, run_id: str) -> list[dict[str, Any]]:
        return [s for dag_id, rid, _, _ in self.runs if rid == run_id
                for s in self.store.summaries(dag_id, run_id)]

    def _duplicates_report(self) -> None:
        """Records the sync would not guess about: several people share an email, or a person is taken."""
        rows = [a for a in self.store.activities() if a["activity_type"] in ("ambiguous_match", "already_linked")]
        print(f"\nDuplicates report ({len(rows)} records not linked; resolve them in Marketo or Dynamics):")
        for a in rows:
            print(f"  {a['entity']:8s} {a['dynamics_id']} <{a['email']}>: {a['reason']}")

    def _finish(self) -> bool:
        print("\n" + "=" * 100 + "\nREPORT\n" + "=" * 100)
        for dag_id, run_id, state, seconds in self.runs:
            print(f"\n{dag_id}  [{state}, {seconds:.1f} s]")
            rows = self.store.summaries(dag_id, run_id)
            if rows:
                print(f"  {'entity':17s} {'direction':20s} {'created':>8s} {'updated':>8s} {'rejected':>8s} "
                      f"{'collisions':>10s} {'echoes':>7s}")
            for s in rows:
                print(f"  {s['entity']:17s} {s['direction']:20s} {s['created']:8d} {s['updated']:8d} "
                      f"{s['rejected']:8d} {s['collisions']:10d} {s['echoes']:7d}")
            for a in self.store.activities(dag_id=dag_id, run_id=run_id):
                if a["activity_type"] == "collision_resolved":
                    print(f"  collision   {a['entity']} {a['dynamics_id']} field {a['field']}: {a['reason']}")
                elif a["activity_type"] in ("rejected_by_validation", "refused_by_marketo", "refused_by_dynamics"):
                    print(f"  rejected    {a['entity']} {a['dynamics_id'] or a['marketo_id']}: {a['reason']}")
                elif a["activity_type"] in ("ambiguous_match", "already_linked"):
                    print(f"  duplicate   {a['entity']} {a['dynamics_id']} <{a['email']}>: {a['reason']}")
                elif a["activity_type"].startswith("sync_person"):
                    print(f"  {a['activity_type']}  person {a['marketo_id']}: {a['reason']}")
        self._duplicates_report()
        print("\nChecks:")
        for what, ok, detail in self.checks:
            print(f"  [{'ok' if ok else 'FAIL'}] {what} ({detail})")
        self.store.dispose()
        return all(ok for _, ok, _ in self.checks)
