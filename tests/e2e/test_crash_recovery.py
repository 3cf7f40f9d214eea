"""A load that wrote to Marketo and crashed before its state-store commit is safe to run again."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dynamics_sync.state import record_links, snapshots, watermarks
from include.demo.people import People
from include.runtime.run_dag import run

pytestmark = pytest.mark.e2e


def test_rerun_after_a_crash_before_the_commit_links_its_own_creates_without_duplicates(sandboxes, fresh_state):
    sandboxes.post("dynamics", "/_sandbox/reset")
    sandboxes.post("marketo", "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 40, "contacts": 10, "seed": 11})
    assert str(run("dynamics_initial_sync").state) == "success"
    def people_links() -> int:
        return fresh_state.count_links("lead") + fresh_state.count_links("contact")

    assert people_links() == 50
    # The crash: everything reached Marketo, nothing of it reached the state store.
    with fresh_state.engine.begin() as conn:
        for table in (snapshots, record_links, watermarks):
            conn.execute(sa.delete(table))
    assert str(run("dynamics_initial_sync").state) == "success"
    assert people_links() == 50
    assert [a for a in fresh_state.activities() if a["activity_type"] == "refused_by_marketo"] == []
    emails = [f"lead{i:05d}@example.com" for i in range(40)] + [f"contact{i:05d}@example.com" for i in range(10)]
    people = People(sandboxes).marketo.get_leads("email", emails, ["id", "email"])
    assert sorted(p["email"] for p in people) == sorted(emails), "one Marketo person per record, no duplicate"
