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
    assert states["lead.extract"] == "failed" and states["check_state_store"] == "success"
    out, err = capfd.readouterr()
    assert "entities.lead.collision_authority must be one of" in out + err
    assert fresh_state.count_links() == 0 and not fresh_state.is_populated()
