"""A worker killed (SIGKILL) at each step boundary: the next run finishes the work, nothing lost or doubled.

Each kill is real: the DAG runs in a child process that kills itself at a named failpoint
(dynamics_sync.failpoints), so no handler, callback or commit after that point runs. The next run then
goes in this process, as the next scheduled run would. Checked through both APIs afterwards: every edit
made before the crash is on both sides, one Marketo person per email, one Dynamics lead per email, the
lead collision went to Marketo, and a further cycle has nothing left to write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynamics_sync.state import StateStore
from include.demo.people import People
from include.runtime.environment import ROOT
from include.runtime.run_dag import run
from tests.support import link_ids

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # minutes: `make test-slow` (CI runs it)
LEADS, CONTACTS = 20, 10


def _killed_run(dag_id: str, point: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the DAG in a child process that SIGKILLs itself at `point`; its entity lock outlives it 1 s."""
    env = {**os.environ, "DYNAMICS_SYNC_CRASH_AT": point, "DYNAMICS_SYNC_LOCK_TTL_S": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "include.runtime.run_dag", dag_id], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _links(store: StateStore, entity: str) -> list[tuple[str, int]]:
    return link_ids(store, entity, live_only=True)


@pytest.fixture(scope="module")
def world(sandboxes: Any, new_state: Any, people_config: Path) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DYNAMICS_SYNC_CONFIG", str(people_config))
        patch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_STATE", json.dumps(new_state("crash")))
        for box in ("dynamics", "marketo"):
            sandboxes.post(box, "/_sandbox/reset")
        sandboxes.post("dynamics", "/_sandbox/seed", {"leads": LEADS, "contacts": CONTACTS, "seed": 21})
        store = StateStore.from_connection()
        # The initial copy, killed right after its first part's commit (one 10-row page a part).
        conn = json.loads(os.environ["AIRFLOW_CONN_DYNAMICS_DEFAULT"])
        paged = json.dumps({**conn, "extra": {**conn["extra"], "page_size": 10}})
        killed = _killed_run("dynamics_initial_sync", "lead:load.committed",
                             {"DYNAMICS_SYNC_PART_ROWS": "1", "AIRFLOW_CONN_DYNAMICS_DEFAULT": paged})
        world = {"store": store, "people": People(sandboxes), "killed_copy": killed,
                 "links_after_kill": len(_links(store, "lead"))}
        world["copy"] = run("dynamics_initial_sync")
        yield world
        store.dispose()


def test_a_copy_killed_after_a_committed_part_is_finished_by_the_next_run_without_duplicates(world, sandboxes):
    assert world["killed_copy"].returncode == -signal.SIGKILL, world["killed_copy"].stderr[-2000:]
    assert 0 < world["links_after_kill"] < LEADS, "the kill left the copy half done"
    assert str(world["copy"].state) == "success"
    leads, contacts = _links(world["store"], "lead"), _links(world["store"], "contact")
    assert (len(leads), len(contacts)) == (LEADS, CONTACTS)
    emails = [f"lead{i:05d}@example.com" for i in range(LEADS)] + [f"contact{i:05d}@example.com"
                                                                    for i in range(CONTACTS)]
    found = world["people"].marketo.get_leads("email", emails, ["id", "email"])
    assert sorted(p["email"] for p in found) == sorted(emails), "one Marketo person per record"


@pytest.mark.parametrize("point", ["lead:extract.staged", "lead:validate.staged", "lead:load.written",
                                   "lead:load.committed"])
def test_a_cycle_killed_at_a_step_boundary_loses_and_doubles_nothing(world, point):
    people, store = world["people"], world["store"]
    assert str(world["copy"].state) == "success"
    leads = _links(store, "lead")
    tag = point.split(":")[1].replace(".", "-")
    (d_lead, _), (_, m_lead), (c_lead, c_marketo) = leads[0], leads[1], leads[2]
    people.edit_dynamics("lead", d_lead, {"jobtitle": f"D {tag}"})
    people.edit_marketo(m_lead, {"firstName": f"M {tag}"})
    people.edit_dynamics("lead", c_lead, {"jobtitle": f"D wins? {tag}"})
    people.edit_marketo(c_marketo, {"title": f"M wins {tag}"})                    # a lead collision
    new_email = f"new-{tag}@example.com"
    new_lead = people.create_dynamics("lead", {"firstname": "New", "lastname": tag, "emailaddress1": new_email,
                                               "subject": "crash"})

    killed = _killed_run("dynamics_incremental_sync", point)
    assert killed.returncode == -signal.SIGKILL, f"the run was not killed at {point}: {killed.stderr[-2000:]}"
    again = run("dynamics_incremental_sync")
    assert str(again.state) == "success"

    assert people.read_dynamics("lead", d_lead)["jobtitle"] == f"D {tag}"
    assert people.read_marketo(leads[0][1])["title"] == f"D {tag}"
    assert people.read_dynamics("lead", leads[1][0])["firstname"] == f"M {tag}"
    assert people.read_dynamics("lead", c_lead)["jobtitle"] == f"M wins {tag}", "Marketo wins for leads"
    assert people.read_marketo(c_marketo)["title"] == f"M wins {tag}"
    [person] = people.find_marketo(new_email)
    assert person["msdynLeadId"] == new_lead, "the new lead reached Marketo once, linked"
    assert len(people.list_dynamics("lead", ["leadid"], f"emailaddress1 eq '{new_email}'")) == 1

    quiet = run("dynamics_incremental_sync")
    moved = [s for s in store.summaries("dynamics_incremental_sync", quiet.run_id) if s["created"] or s["updated"]]
    assert moved == [], f"the cycle after the recovery still had writes to make: {moved}"
