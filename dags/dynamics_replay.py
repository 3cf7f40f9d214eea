"""
### Replay failed records

Retries the records `activity_log` says did not sync (rejected by validation, refused by Marketo or
Dynamics, ambiguous matches), after their cause was fixed: a last name added in Marketo, a field
length raised in the config, a privilege granted to the sync user. Choose them with the params:

- `entity`: one entity (default: every entity with open failures);
- `failed_run_id`: only the failures logged by that run (e.g. a `dynamics_incremental_sync` run id);
- `since` / `until`: only the failures logged in that time range (ISO 8601, UTC by default).

Per entity: `extract` reads exactly those records from both sides, now, by id; `transform`, `validate` and
`load` are the incremental cycle's own steps (same merge rules, collision authority, validation and
activity_log); `resolve` marks each replayed failure **resolved**, or **still_failing** when the record
failed again (this run's own new activity_log row, with today's reason, is then the open failure).
No watermark moves; the entity lock keeps a replay and the 5-minute cycle from working on an entity at once.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from dynamics_sync.modes import REPLAY
from dynamics_sync.taskgroups import default_args, entity_syncs

with DAG(
    dag_id="dynamics_replay",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "entity": Param(None, type=["null", "string"], description="Replay only this entity's failures."),
        "failed_run_id": Param(None, type=["null", "string"], description="Only failures logged by this run."),
        "since": Param(None, type=["null", "string"], description="Only failures logged at or after (ISO 8601)."),
        "until": Param(None, type=["null", "string"], description="Only failures logged before (ISO 8601)."),
    },
    doc_md=__doc__,
    tags=["dynamics-sync"],
):

    @task
    def select_entities(params: dict | None = None) -> list[str]:
        """The entities with open failures matching the params (an unknown entity fails here, clearly)."""
        from dynamics_sync.guards import select_for_replay

        return select_for_replay(params or {})

    entity_syncs(REPLAY, selected=select_entities())
