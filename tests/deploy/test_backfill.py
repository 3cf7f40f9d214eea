"""`airflow backfill create` over a past range, run by a real scheduler: the intervals are re-synced, idempotently.

A LocalExecutor deployment (api-server, scheduler, dag-processor; metadata DB and state store in PostgreSQL
databases of this module's own) runs the incremental DAG every minute (the data interval stays 5 minutes).
A Dynamics lead and a Marketo person are edited; the schedule syncs both. Then a user backfills the past
range around the edits with the CLI, reprocessing the runs the schedule already made there, as after an
outage or to be sure. The test shows what users rely on:

- every run of the range re-runs as a backfill run and succeeds, alongside the still-running schedule (the
  entity lock makes one wait for the other; Airflow retries the waiting task);
- each backfill run re-reads what changed in its own data interval on both sides (the edits in it, and
  nothing edited after the range), finds it in step and writes nothing again: no second update, no new
  record in either system;
- the watermarks stay with the schedule's runs, and the scheduled cycles after the backfill go on from them.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import link_rows, postgres_state, reseed

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

INITIAL, INCREMENTAL = "dynamics_initial_sync", "dynamics_incremental_sync"
LEADS, CONTACTS = 12, 6


@dataclass
class World:
    airflow: Any  # include.runtime.deployment.Deployment
    boxes: Any
    store: Any  # the deployment's state store
    people: Any


@pytest.fixture(scope="module")
def world(sandboxes: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 5432)) != 0:
            pytest.skip("needs PostgreSQL at 127.0.0.1:5432")
    from dynamics_sync.state import StateStore
    from include.demo.people import People
    from include.runtime.deployment import (
        Deployment,
        drop_postgres_database,
        postgres_url,
        recreate_postgres_database,
    )
    from include.runtime.sandboxes import free_port

    suffix = uuid.uuid4().hex[:8]
    meta_db, state_db = f"dsync_backfill_meta_{suffix}", f"dsync_backfill_state_{suffix}"
    reseed(sandboxes, LEADS, CONTACTS, seed=7)
    airflow = Deployment(
        home=tmp_path_factory.mktemp("backfill") / "airflow", db_url=postgres_url(meta_db), port=free_port(),
        extra_env={
            "AIRFLOW_CONN_DYNAMICS_SYNC_STATE": json.dumps(postgres_state(state_db)),
            "DYNAMICS_SYNC_SCHEDULE": "* * * * *",  # a run a minute; each still covers 5 minutes
            "DYNAMICS_SYNC_RECONCILE_SCHEDULE": "none",
            # A backfill run and a scheduled one meet on the entity lock: the later one waits by retrying.
            "DYNAMICS_SYNC_RETRIES": "8",
            "DYNAMICS_SYNC_RETRY_DELAY_S": "3",
        },
    )
    store = None
    try:
        recreate_postgres_database(meta_db)
        recreate_postgres_database(state_db)
        airflow.prepare()
        airflow.start()
        airflow.wait_for_dag(INITIAL, timeout=180)
        # The schedule starts once the initial copy has left watermarks (before, a cycle refuses to run).
        airflow.wait_for_dag(INCREMENTAL, timeout=180, unpause=False)
        airflow.pause(INCREMENTAL)
        state, _ = airflow.run(INITIAL, timeout=300)
        assert state == "success", f"the initial copy ended {state}"
        airflow.pause(INCREMENTAL, False)
        store = StateStore.from_url(postgres_url(state_db))
        yield World(airflow, sandboxes, store, People(sandboxes))
    finally:
        airflow.stop()
        if store is not None:
            store.dispose()
        drop_postgres_database(meta_db)
        drop_postgres_database(state_db)


def _wait(what: str, check: Any, airflow: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        airflow.check_alive()
        found = check()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"no {what} within {timeout:.0f} s; see {airflow.logs}")


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _when(run: dict[str, Any], key: str) -> dt.datetime:
    return dt.datetime.fromisoformat(run[key].replace("Z", "+00:00"))


def _result(airflow: Any, run_id: str, task_id: str) -> dict[str, Any]:
    """A task's result (its XCom) as the REST API shows it; {} when the task left none (skipped)."""
    try:
        entry = airflow.api("GET", f"/dags/{INCREMENTAL}/dagRuns/{run_id}/taskInstances/{task_id}/"
                            "xcomEntries/return_value", params={"deserialize": True})
    except RuntimeError as exc:
        if "HTTP 404" in str(exc):
            return {}
        raise
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else (value or {})


def _read_ids(extracted: dict[str, Any]) -> set[str]:
    from dynamics_sync.staging import read_frame

    return {i for path in extracted.get("dynamics") or [] for i in read_frame(path)["dynamics_id"]}


def _feed_owners(store: Any, entity: str) -> set[str]:
    """The runs that last moved the entity's change-feed watermarks (Dynamics delta link, Marketo token)."""
    from dynamics_sync.state import watermarks

    with store.engine.connect() as conn:
        rows = conn.execute(watermarks.select().where(watermarks.c.entity == entity,
                                                      watermarks.c.side.in_(["dynamics", "marketo"])))
        return {row.run_id for row in rows}


def test_a_backfill_over_a_past_range_resyncs_its_intervals_idempotently(world: World) -> None:
    airflow, store, people = world.airflow, world.store, world.people
    dyn_lead, mkto_lead = link_rows(store, "lead")[:2]
    edited_at = dt.datetime.now(dt.UTC)
    people.edit_dynamics("lead", dyn_lead.dynamics_id, {"jobtitle": "Edited in Dynamics before the backfill"})
    people.edit_marketo(mkto_lead.marketo_id, {"title": "Edited in Marketo before the backfill"})

    def synced() -> bool:
        return (people.read_marketo(dyn_lead.marketo_id)["title"] == "Edited in Dynamics before the backfill"
                and people.read_dynamics("lead", mkto_lead.dynamics_id)["jobtitle"]
                == "Edited in Marketo before the backfill")

    _wait("scheduled sync of both edits", synced, airflow, timeout=240)
    # `backfill create` takes the range as the runs' tick times; the run at tick T covers [T - 5 min, T). The
    # tick of the edits' minute ends its interval before them; the next two ticks' intervals hold them.
    minute = edited_at.replace(second=0, microsecond=0)
    start, end = minute, minute + dt.timedelta(minutes=2)
    # Airflow backfills only intervals that are over, and leaves a run of the range still in flight to
    # itself ("in flight", not re-run). Once the next tick has passed, the scheduler makes no more runs
    # for the range's ticks (no catchup: it only ever runs the latest tick); then its last ones finish.
    over = end + dt.timedelta(minutes=1, seconds=5)
    _wait("the tick after the range to pass", lambda: dt.datetime.now(dt.UTC) > over, airflow, timeout=360)

    def schedule_done_with_the_range() -> bool:
        return not [r for r in airflow.runs(INCREMENTAL, run_type="scheduled")
                    if r["state"] in ("queued", "running") and _when(r, "data_interval_end") <= end]

    _wait("the schedule's runs of the range to finish", schedule_done_with_the_range, airflow, timeout=300)
    late_edit = people.create_dynamics("lead", {"firstname": "Late", "lastname": "Lead",
                                                "emailaddress1": f"late-{uuid.uuid4().hex[:6]}@example.com",
                                                "companyname": "After The Range"})
    before = {"dyn": people.read_marketo(dyn_lead.marketo_id)["title"],
              "mkto": people.read_dynamics("lead", mkto_lead.dynamics_id)["jobtitle"]}

    out = airflow.airflow("backfill", "create", "--dag-id", INCREMENTAL, "--from-date", start.isoformat(),
                          "--to-date", end.isoformat(), "--reprocess-behavior", "completed",
                          "--max-active-runs", "1")
    [backfill] = airflow.api("GET", "/backfills", params={"dag_id": INCREMENTAL})["backfills"]
    assert backfill["reprocess_behavior"] == "completed", out

    def finished() -> dict[str, Any] | None:
        current = airflow.api("GET", f"/backfills/{backfill['id']}")
        return current if current.get("completed_at") else None

    _wait("the backfill to complete", finished, airflow, timeout=900)
    created = _when(backfill, "created_at")
    runs = airflow.runs(INCREMENTAL, run_type="backfill")
    assert runs, "the backfill made runs"
    assert {run["state"] for run in runs} == {"success"}, [(r["dag_run_id"], r["state"]) for r in runs]
    ticks = sorted(_when(run, "data_interval_end") for run in runs)
    assert ticks == [start, start + dt.timedelta(minutes=1), end], f"one run per tick of the range: {ticks}"

    covering = 0
    for run in runs:
        lo, hi = _when(run, "data_interval_start"), _when(run, "data_interval_end")
        extracted = _result(airflow, run["dag_run_id"], "lead.extract")
        assert extracted.get("interval") is True and extracted.get("marks") == {}, run["dag_run_id"]
        ids = _read_ids(extracted)
        assert late_edit not in ids, "a change after the run's interval is not the backfill's"
        if lo <= edited_at < hi:
            covering += 1
            assert dyn_lead.dynamics_id in ids, f"{run['dag_run_id']} re-read the Dynamics edit of its interval"
            # The Marketo edit's change activity is read too; its person ends at the value last synced, so
            # it is known in step without reading the person (an echo of the snapshot).
            counts = extracted["counts"]
            assert counts["marketo_activities"] >= 1 and counts["marketo_echoes_not_read"] >= 1, counts
        # Re-synced, not re-written: every record of the interval was found in step with the other side. A
        # reprocessed run keeps its run id, so only what it summed up since the backfill began is its own.
        wrote = {(s["entity"], s["direction"]): (s["created"], s["updated"])
                 for s in store.summaries(INCREMENTAL, run["dag_run_id"])
                 if _aware(s["finished_at"]) >= created and (s["created"] or s["updated"])}
        assert wrote == {}, f"{run['dag_run_id']} wrote again: {wrote}"
        loaded = _result(airflow, run["dag_run_id"], "lead.load")
        # The change feeds' watermarks stay with the schedule (the schema baseline may be recorded: the
        # Dynamics column types this run read, which only tells later runs what drifted).
        moved = set(loaded.get("watermarks_advanced") or []) & {"dynamics", "marketo"}
        assert not moved, f"{run['dag_run_id']} moved a watermark: {loaded}"
    assert covering == 2, "two backfilled intervals held the edits"

    # Both systems as the schedule left them: the same values, no second record for either person.
    assert people.read_marketo(dyn_lead.marketo_id)["title"] == before["dyn"]
    assert people.read_dynamics("lead", mkto_lead.dynamics_id)["jobtitle"] == before["mkto"]
    for link in (dyn_lead, mkto_lead):
        email = people.read_dynamics("lead", link.dynamics_id)["emailaddress1"]
        assert len(people.find_marketo(email)) == 1 and len(people.find_dynamics("lead", email)) == 1

    # The schedule's next cycles go on from their own watermarks and sync the late lead; the runs that
    # moved the feeds' watermarks last are the schedule's (a reprocessed run keeps its id, so this is
    # asked once a cycle after the backfill has run).
    _wait("the schedule to sync the lead created after the range",
          lambda: store.links_by_dynamics("lead", [late_edit]), airflow, timeout=240)
    backfill_ids = {run["dag_run_id"] for run in runs}
    assert not _feed_owners(store, "lead") & backfill_ids, "no backfill run moved a watermark"
