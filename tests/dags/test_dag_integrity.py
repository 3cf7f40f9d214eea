"""Every DAG imports cleanly, looks up no connection or Variable at parse time, and has its shape."""

from __future__ import annotations

import itertools

import pytest

from dynamics_sync.entities import entity_order, extract_order, load_entities
from include.runtime.environment import ROOT

STEPS = ("extract", "transform", "validate", "load")


@pytest.fixture(scope="module")
def dagbag(airflow_db: None, monkeypatch_module: pytest.MonkeyPatch):
    from airflow.dag_processing.dagbag import DagBag

    for name in ("AIRFLOW_CONN_MARKETO_DEFAULT", "AIRFLOW_CONN_DYNAMICS_DEFAULT", "AIRFLOW_CONN_DYNAMICS_SYNC_STATE"):
        monkeypatch_module.delenv(name, raising=False)
    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


HEAVY = ("pandas", "pyarrow", "great_expectations", "msal", "dynamics_sync.steps", "dynamics_sync.hooks.marketo")


@pytest.mark.parametrize("dag_file", sorted(p.name for p in (ROOT / "dags").glob("*.py")))
def test_a_dag_file_parses_without_the_libraries_only_its_tasks_need(dag_file):
    """The dag-processor re-parses every file every 30 s, and each task process parses its DAG's file
    first: neither pays for pandas, pyarrow, Great Expectations or the hooks (imported inside the tasks)."""
    import json
    import subprocess
    import sys

    code = ("import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('d', sys.argv[1]); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "dags" / dag_file)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_no_import_errors_even_without_connections(dagbag):
    assert dagbag.import_errors == {}
    assert {"dynamics_initial_sync", "dynamics_incremental_sync", "sync_person_to_dynamics",
            "dynamics_replay"} <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", ["dynamics_initial_sync", "dynamics_incremental_sync", "dynamics_replay"])
def test_one_group_with_four_steps_per_entity(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    for entity in load_entities():
        ids = [f"{entity}.{step}" for step in STEPS]
        assert set(ids) <= set(dag.task_dict)
        for upstream, downstream in itertools.pairwise(ids):
            assert downstream in dag.task_dict[upstream].downstream_task_ids


def _waits_for(dag, task_id: str) -> set[str]:
    """The entities whose group (its load, or its last step) a task waits for, through its gates."""
    gates = [dag.task_dict[t] for t in dag.task_dict[task_id].upstream_task_ids if ".after_" in t]
    return {t.split(".")[0] for g in gates for t in g.upstream_task_ids}


@pytest.mark.parametrize("dag_id", ["dynamics_initial_sync", "dynamics_incremental_sync"])
def test_a_sync_extracts_every_entity_at_once_and_transforms_after_what_it_points_at(dagbag, dag_id):
    """Lookups resolve in transform: a copy reads the opportunity roles while the contacts still load.

    A contact transforms only after the leads load, so its extract waits for its lookups (accounts,
    owners) and resolves them meanwhile, off the path to the contact load."""
    dag, order = dagbag.get_dag(dag_id), entity_order()
    for entity in load_entities():
        if entity == "contact":
            continue
        assert _waits_for(dag, f"{entity}.extract") == set()
        assert _waits_for(dag, f"{entity}.transform") == set(order[entity])
    assert _waits_for(dag, "opportunity_role.transform") == {"contact", "opportunity"}
    assert _waits_for(dag, "contact.extract") == {"account", "user"}
    assert _waits_for(dag, "contact.transform") == {"lead"}


def test_a_copy_reads_two_entities_at_a_time_and_writes_within_marketos_concurrency(dagbag):
    """The copy's extracts (all ready at once, reading for minutes) get their own pool, so the user chain
    and the first loads find executor slots; a cycle's short extracts share the Marketo pool with loads."""
    from include.runtime.environment import POOLS

    copy, cycle = dagbag.get_dag("dynamics_initial_sync"), dagbag.get_dag("dynamics_incremental_sync")
    for entity in load_entities():
        assert copy.task_dict[f"{entity}.extract"].pool == "sync_extracts"
        assert cycle.task_dict[f"{entity}.extract"].pool == "marketo_api"
        assert copy.task_dict[f"{entity}.load"].pool == cycle.task_dict[f"{entity}.load"].pool == "marketo_api"
    assert POOLS["sync_extracts"][0] < 4, "fewer than the executor's slots"
    # each load keeps 2 calls in flight and an extract 1 (its describe): within Marketo's 10
    assert POOLS["marketo_api"][0] * 2 + POOLS["sync_extracts"][0] <= 10


def test_replay_and_reconcile_extract_after_what_they_point_at(dagbag):
    """Their extracts resolve lookups against the links, so they wait; a contact's lead only holds transform."""
    reads = extract_order()
    for dag_id in ("dynamics_replay", "dynamics_reconcile"):
        dag = dagbag.get_dag(dag_id)
        assert _waits_for(dag, "opportunity_role.extract") == set(reads["opportunity_role"]) >= {"contact"}
        assert _waits_for(dag, "contact.transform") == {"lead"}


def test_the_initial_copy_guard_runs_before_any_entity_step(dagbag):
    dag = dagbag.get_dag("dynamics_initial_sync")
    for entity in load_entities():
        assert "check_state_store" in dag.task_dict[f"{entity}.extract"].upstream_task_ids


def test_schedules(dagbag):
    initial = dagbag.get_dag("dynamics_initial_sync")
    incremental = dagbag.get_dag("dynamics_incremental_sync")
    person = dagbag.get_dag("sync_person_to_dynamics")
    assert type(initial.timetable).__name__ == type(person.timetable).__name__ == "NullTimetable"
    assert incremental.timetable.expression == "*/5 * * * *"
    assert incremental.max_active_runs == 1 and incremental.catchup is False
    assert "force" in initial.params and "marketo_lead_id" in person.params
    assert initial.params["dry_run"] is False and incremental.params["dry_run"] is False
    assert {f"person.{step}" for step in STEPS} == set(person.task_dict)
    assert {"sync_as", "owner"} <= set(person.params)


def test_every_dag_documents_itself_and_retries_with_backoff(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and len(dag.doc_md) > 200
        for task in dag.tasks:
            if task.task_id in ("failed_entities", "report_run"):  # they only report; a retry would delay that
                assert task.trigger_rule in ("one_failed", "all_done") and task.retries == 0
                continue
            assert task.retries >= 1 and task.retry_exponential_backoff
            assert task.retry_policy is not None
