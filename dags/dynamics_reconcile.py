"""
### Reconcile, daily

Change detection can only see what a feed reports. A bulk load that bypassed change tracking, a Marketo
edit that logged no activity or a lost delta token leave records that differ between the systems while
nothing tells the 5-minute cycle. This DAG reads every entity in full on both sides (Dynamics: every
row; Marketo: the linked people, 300 a call), compares each side with the values the sync last synced
there, and repairs what drifted **through the normal merge rules**: the differing records go through the
incremental cycle's own `transform`, `validate` and `load`, so a change flows to the other side, a field
changed on both sides goes to its authority (Marketo for leads, Dynamics for contacts), rules are checked
by Great Expectations and every decision lands in `activity_log` as always.

- A Dynamics record with no link is copied as new; a linked Marketo person that is gone is a Marketo
  delete (or a merge, when another person carries the record's Dynamics id); a linked Dynamics record
  that is gone (404) is a Dynamics delete; a sync filter turned No or Yes pauses or resumes the link.
- Records with an open failure are left to `dynamics_replay`, records the sync filter keeps out stay out.

**What it reports**: a `reconcile_drift` row per difference (side, field, last-synced and current value)
and a `reconcile_repaired` row per repaired one (the value both sides hold now) in `activity_log`; the
load's `run_summary` per entity; each entity's `report` task, and the last task `reconcile_summary`,
return `checked`, `drifted`, `repaired`, `failed` and `left_to_replay` per entity (the extract's XCom
`reconcile` holds the counts by kind).

The entity lock keeps this DAG and `dynamics_incremental_sync` from working on an entity at once (the
later one waits, retried). **No watermark moves**: the cycle's feeds go on where they were and see the
reconcile's writes as echoes. Params: `entities` (default all), `dry_run` (report the drift and the writes
that would repair it, write nothing). Schedule: `DYNAMICS_SYNC_RECONCILE_SCHEDULE` (cron, default
03:00 UTC daily, a new deployment's first run being the next 03:00; `none` for triggered runs only).
`max_active_runs=1`, no catchup. Cost: the Dynamics pages of every entity, one Marketo call per 300
linked people (a million people: about 3,300 of Marketo's 50,000 daily calls) and one Dynamics GET per
linked record missing from the read.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task
from airflow.sdk.definitions.timetables.trigger import CronTriggerTimetable

from dynamics_sync.entities import entity_names
from dynamics_sync.modes import RECONCILE
from dynamics_sync.taskgroups import FINISH, default_args, dry_run_param, entity_syncs

CRON = os.environ.get("DYNAMICS_SYNC_RECONCILE_SCHEDULE", "0 3 * * *")

with DAG(
    dag_id="dynamics_reconcile",
    # Never a run at once for a time already past (a new deployment waits for the next 03:00).
    schedule=None if CRON == "none" else CronTriggerTimetable(CRON, timezone="UTC", run_immediately=dt.timedelta(0)),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "entities": Param([], type="array", items={"type": "string"},
                          description="Reconcile only these entities (default: every entity copied before)."),
        "dry_run": dry_run_param(),
    },
    doc_md=__doc__,
    tags=["dynamics-sync"],
):

    @task
    def select_entities(params: dict | None = None) -> list[str]:
        """The entities to compare: the named ones, or all, whose initial copy has finished."""
        from dynamics_sync import reconcile

        return reconcile.select_entities((params or {}).get("entities"))

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def reconcile_summary() -> dict[str, Any]:
        """Per entity: checked, drifted, repaired, failed, left_to_replay (None: skipped or failed; see its group)."""
        ti = get_current_context()["ti"]
        return {name: ti.xcom_pull(task_ids=f"{name}.{FINISH[RECONCILE]}") for name in entity_names()}

    # One group per entity, dependencies first, as in the sync DAGs (what a record points at is repaired
    # before it): compare both sides >> transform >> validate >> load >> report.
    groups = entity_syncs(RECONCILE, selected=select_entities())
    list(groups.values()) >> reconcile_summary()
