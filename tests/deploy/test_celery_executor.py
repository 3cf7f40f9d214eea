"""The compose topology, run for real here: CeleryExecutor on this machine's Redis and PostgreSQL.

The api-server, scheduler, dag-processor and a Celery worker run as separate processes (each in a process
group of its own), the broker is the Redis at 127.0.0.1:6379 (a database number and a queue of this
module's own), the metadata DB and the state store are two PostgreSQL databases of their own. The initial
copy and an incremental cycle are triggered through the REST API, as a user would from the UI, and the
test proves the work happened in the worker: every task that ran was queued on this deployment's queue,
the worker's log names it, Celery's result backend holds its result, and the state store and Marketo hold
what the tasks wrote. Everything started here is stopped at the end, also when an assertion fails.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import postgres_state, reseed

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

LEADS, CONTACTS = 20, 10
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# A Redis database number of this test's own (other Celery users of the machine's Redis use 0 by default);
# the queue name is unique per run as well, so two runs of this test never take each other's tasks.
REDIS_DB = int(os.environ.get("DYNAMICS_SYNC_TEST_REDIS_DB", "13"))
INITIAL, INCREMENTAL = "dynamics_initial_sync", "dynamics_incremental_sync"


def _reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class CeleryWorld:
    """The running deployment and what the test needs to look at it from the outside."""

    airflow: Any  # include.runtime.deployment.Deployment
    boxes: Any
    queue: str
    meta_url: str
    state_url: str
    groups: list[int]  # each component's process group (its pid: started with start_new_session)

    def worker_log(self) -> str:
        return (self.airflow.logs / "celery-worker.log").read_text(errors="replace")

    def celery_results(self) -> dict[str, str]:
        """Celery task id -> status, from the result backend (the metadata DB's celery_taskmeta table)."""
        engine = sa.create_engine(self.meta_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT task_id, status FROM celery_taskmeta")).fetchall()
        finally:
            engine.dispose()
        return {row.task_id: row.status for row in rows}


@pytest.fixture(scope="module")
def world(sandboxes: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorld]:
    if not _reachable("127.0.0.1", 5432) or not _reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip("needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379")
    import redis

    from include.runtime.deployment import (
        Deployment,
        drop_postgres_database,
        postgres_url,
        recreate_postgres_database,
    )
    from include.runtime.sandboxes import free_port

    suffix = uuid.uuid4().hex[:8]
    meta_db, state_db, queue = f"dsync_celery_meta_{suffix}", f"dsync_celery_state_{suffix}", f"dsync-{suffix}"
    broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    reseed(sandboxes, LEADS, CONTACTS, seed=1)
    airflow = Deployment(
        home=tmp_path_factory.mktemp("celery") / "airflow", db_url=postgres_url(meta_db), port=free_port(),
        executor="CeleryExecutor", broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}", queue=queue,
        worker_concurrency=4,
        extra_env={"AIRFLOW_CONN_DYNAMICS_SYNC_STATE": json.dumps(postgres_state(state_db)),
                   "DYNAMICS_SYNC_SCHEDULE": "none"},
    )
    try:
        recreate_postgres_database(meta_db)
        recreate_postgres_database(state_db)
        airflow.prepare()
        airflow.start()
        for dag_id in (INITIAL, INCREMENTAL):
            airflow.wait_for_dag(dag_id, timeout=120)
        yield CeleryWorld(airflow, sandboxes, queue, postgres_url(meta_db), postgres_url(state_db),
                          [proc.pid for proc in airflow.procs.values()])
    finally:
        airflow.stop()
        # Only what this deployment made: its queue and the bindings of its exchange (named after it).
        for key in broker.scan_iter(match=f"*{queue}*"):
            broker.delete(key)
        broker.close()
        drop_postgres_database(meta_db)
        drop_postgres_database(state_db)


def _ran_on_worker(world: CeleryWorld, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Assert every task of the run that ran went through this deployment's Celery worker; returns them."""
    tis = world.airflow.task_instances(dag_id, run_id)
    # EmptyOperator gates never reach an executor: the scheduler marks them done itself.
    ran = [ti for ti in tis if ti["state"] == "success" and ti["operator"] != "EmptyOperator"]
    assert ran, f"no task of {dag_id} {run_id} ran: {[(ti['task_id'], ti['state']) for ti in tis]}"
    assert {ti["queue"] for ti in ran} == {world.queue}
    # The worker logs "[<celery task id>] Executing workload in Celery: ExecuteTask(... ti=TaskInstanceDTO(
    # ... task_id='lead.extract', dag_id=..., run_id=...))" for every task it takes from the broker.
    log = world.worker_log()
    executed = {}
    for line in log.splitlines():
        if "Executing workload in Celery" not in line or f"run_id='{run_id}'" not in line:
            continue
        celery_id = re.search(r"\[([0-9a-f-]{36})\]", line)
        task_id = re.search(r"task_id='([^']+)'", line)
        if celery_id and task_id:
            executed[task_id.group(1)] = celery_id.group(1)
    missing = sorted({ti["task_id"] for ti in ran} - set(executed))
    assert not missing, f"tasks that did not go through the Celery worker: {missing}"
    # ... and the worker reported each one done through Celery's result backend. The task process reports
    # its own state to the API server first, so the run can be green a moment before the last result lands.
    deadline = time.monotonic() + 30
    while True:
        results = world.celery_results()
        statuses = {task_id: results.get(celery_id) for task_id, celery_id in executed.items()}
        if set(statuses.values()) == {"SUCCESS"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert statuses == dict.fromkeys(executed, "SUCCESS")
    return ran


def test_components_are_separate_processes(world: CeleryWorld) -> None:
    procs = world.airflow.procs
    assert set(procs) == {"api-server", "scheduler", "dag-processor", "celery-worker"}
    assert len({proc.pid for proc in procs.values()}) == 4
    world.airflow.check_alive()
    # Celery retitles its main process "[celeryd: celery@<host>:MainProcess] -active- (celery worker ...)".
    title = Path(f"/proc/{procs['celery-worker'].pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert f"celery worker --queues {world.queue} " in title, title
    scheduler_log = (world.airflow.logs / "scheduler.log").read_text(errors="replace")
    assert "Loaded executor: :CeleryExecutor:" in scheduler_log
    deadline = time.monotonic() + 30
    while "ready." not in world.worker_log() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert f"Connected to redis://:**@{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}" in world.worker_log()
    assert "ready." in world.worker_log()


def test_initial_copy_and_a_cycle_run_on_the_celery_worker(world: CeleryWorld) -> None:
    from dynamics_sync.state import StateStore
    from include.demo.people import People

    airflow = world.airflow
    run_id = airflow.trigger(INITIAL)
    assert airflow.wait_for_run(INITIAL, run_id, timeout=300) == "success"
    ran = _ran_on_worker(world, INITIAL, run_id)
    assert {"lead.load", "contact.load"} <= {ti["task_id"] for ti in ran}

    # The worker's tasks wrote the links into the PostgreSQL state store, and the people into Marketo.
    store = StateStore.from_url(world.state_url)
    try:
        assert (store.count_links("lead"), store.count_links("contact")) == (LEADS, CONTACTS)
        lead = store.links_by_dynamics("lead", [_first_lead(store)])
        [link] = lead.values()

        people = People(world.boxes)
        people.edit_dynamics("lead", link.dynamics_id, {"jobtitle": "Celery cycle"})
        run_id = airflow.trigger(INCREMENTAL)
        assert airflow.wait_for_run(INCREMENTAL, run_id, timeout=300) == "success"
        ran = _ran_on_worker(world, INCREMENTAL, run_id)
        assert "lead.load" in {ti["task_id"] for ti in ran}
        assert people.read_marketo(link.marketo_id)["title"] == "Celery cycle"
    finally:
        store.dispose()


def _first_lead(store: Any) -> str:
    from dynamics_sync.state import record_links

    with store.engine.connect() as conn:
        return conn.execute(sa.select(record_links.c.dynamics_id).where(record_links.c.entity == "lead")
                            .order_by(record_links.c.id).limit(1)).scalar_one()


def test_stop_ends_every_process_it_started(world: CeleryWorld) -> None:
    ports = [world.airflow.port, world.airflow.log_server_port]
    world.airflow.stop()
    for group in world.groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
    assert [port for port in ports if _reachable("127.0.0.1", port)] == []
