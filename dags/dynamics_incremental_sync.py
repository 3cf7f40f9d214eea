"""
### Incremental sync, every 5 minutes

Moves only what changed since the last successful run, in both directions where the entity allows it:
Dynamics changes come from change tracking (delta links), Marketo changes from the lead-changes activity
feed. A field changed on both sides is a collision: **Marketo wins for leads, Dynamics wins for
contacts**; every decision is written to `activity_log`. The sync's own writes come back next cycle and
are recognised as echoes by comparison with the last-synced snapshot, never bounced back.

Rows that break a Dynamics rule (required field, length, email format) are not written: the reason goes
to `activity_log` and the rest of the batch goes on. Watermarks advance only in the transaction that
records what was loaded.

**Dry run**: trigger with `{"dry_run": true}` to see every write the cycle would make (counts and a
sample payload per entity and direction, in each `load` task's result and log) without writing anything
or moving a watermark.

A run for an older data interval (a backfill, or a cleared old run) re-syncs records modified in that
interval and leaves the watermarks alone. `max_active_runs=1`, no catchup.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG
from airflow.sdk.definitions.timetables.trigger import CronTriggerTimetable

from dynamics_sync.modes import INCREMENTAL
from dynamics_sync.taskgroups import default_args, dry_run_param, entity_syncs

# DYNAMICS_SYNC_SCHEDULE: another cron (the interval stays 5 minutes), or "none" for triggered runs only
# (the benchmarks trigger their own cycles).
CRON = os.environ.get("DYNAMICS_SYNC_SCHEDULE", "*/5 * * * *")

with DAG(
    dag_id="dynamics_incremental_sync",
    # A run at T covers the data interval [T - 5 min, T): what a backfill of that run re-syncs.
    schedule=None if CRON == "none" else CronTriggerTimetable(CRON, timezone="UTC",
                                                              interval=dt.timedelta(minutes=5)),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={"dry_run": dry_run_param()},
    doc_md=__doc__,
    tags=["dynamics-sync"],
):
    entity_syncs(INCREMENTAL)
