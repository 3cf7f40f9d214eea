"""Bad input fails clearly and loses nothing: a malformed config fails the run's tasks, naming the problem."""

from __future__ import annotations

import pytest

from dynamics_sync.entities import config_path
from include.runtime.run_dag import run

pytestmark = pytest.mark.e2e


def test_malformed_config_fails_the_tasks_and_names_the_problem(sandboxes, fresh_state, tmp_path, monkeypatch,
                                                                capfd):
    bad = tmp_path / "entities.yaml"
    bad.write_text(config_path().read_text().replace("collision_authority: marketo", "collision_authority: both"))
    monkeypatch.setenv("DYNAMICS_SYNC_CONFIG", str(bad))
    dag_run = run("dynamics_initial_sync")
    assert str(dag_run.state) == "failed"
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["check_state_store"] == "failed", "the first task that reads the config fails"
    assert states["lead.extract"] == "upstream_failed"
    out, err = capfd.readouterr()
    assert "entities.lead.collision_authority must be one of" in out + err
    assert fresh_state.count_links() == 0 and not fresh_state.is_populated()


def test_a_configured_column_missing_in_dynamics_is_reported_and_the_rest_syncs(sandboxes, fresh_state, tmp_path,
                                                                              monkeypatch):
    drifted = tmp_path / "entities.yaml"
    drifted.write_text(config_path().read_text().replace(
        "      - {marketo: company, dynamics: companyname, max_length: 100}",
        "      - {marketo: company, dynamics: companyname, max_length: 100}\n"
        "      - {marketo: billingCity, dynamics: new_favouritecolour, max_length: 40}",
    ))
    monkeypatch.setenv("DYNAMICS_SYNC_CONFIG", str(drifted))
    sandboxes.post("dynamics", "/_sandbox/reset")
    sandboxes.post("marketo", "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 20, "contacts": 5, "seed": 5})
    assert str(run("dynamics_initial_sync").state) == "success"
    assert fresh_state.count_links("lead") == 20
    [drift] = fresh_state.activities(activity_type="schema_drift")
    assert drift["field"] == "billingCity" and "no column 'new_favouritecolour'" in drift["reason"]


def test_an_entity_is_onboarded_alone_by_the_initial_copy(sandboxes, fresh_state):
    """Naming entities copies only those; one already copied is refused without force."""
    sandboxes.post("dynamics", "/_sandbox/reset")
    sandboxes.post("marketo", "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 12, "contacts": 8, "seed": 9})
    first = run("dynamics_initial_sync", {"entities": ["lead"]})
    states = {ti.task_id: str(ti.state) for ti in first.get_task_instances()}
    assert str(first.state) == "success" and states["contact.load"] == "skipped"
    assert (fresh_state.count_links("lead"), fresh_state.count_links("contact")) == (12, 0)
    assert str(run("dynamics_initial_sync", {"entities": ["contact"]}).state) == "success"
    assert fresh_state.count_links("contact") == 8
    again = run("dynamics_initial_sync", {"entities": ["lead"]})
    assert str(again.state) == "failed" and fresh_state.count_links("lead") == 12
