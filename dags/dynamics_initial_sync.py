"""
### Initial full copy: Dynamics to Marketo

Copies every record of every configured Dynamics entity into Marketo, once. A Dynamics lead or contact
whose email already belongs to exactly one Marketo person is linked to that person instead of creating a
duplicate (values Marketo holds where Dynamics has none are kept). Seeds the state store's snapshots and
both watermarks, so `dynamics_incremental_sync` then moves only what changed.

**Refuses to copy an entity whose copy finished before** (it would re-copy everything); trigger with
`{"force": true}` to re-run it on purpose, e.g. after a Dynamics change-tracking token expired. A copy
that stopped part-way (a killed worker, the Marketo daily budget) is simply triggered again: it resumes,
and leaves the records it copied already alone.

**Onboarding an entity**: trigger with `{"entities": ["new_project"]}` to copy only the named entities
(the others are skipped). Their whole history is copied here, never through the 5-minute cycle.

**Dry run**: `{"dry_run": true}` reports what the copy would create and link (counts and a sample per
entity, in each `load` task's result) and writes nothing.

Per entity: `extract` (Dynamics change-tracking read + Marketo lookups by email) >> `transform`
(plan creates and links) >> `validate` (Great Expectations; failing rows go to `activity_log`) >> `load`
(Marketo upserts, then links, snapshots and watermarks in one state-store transaction).
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from dynamics_sync.modes import INITIAL
from dynamics_sync.taskgroups import default_args, dry_run_param, entity_syncs

with DAG(
    dag_id="dynamics_initial_sync",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "force": Param(False, type="boolean", description="Run even though the state store is populated."),
        "entities": Param([], type="array", items={"type": "string"},
                          description="Copy only these entities (default: every configured entity)."),
        "dry_run": dry_run_param(),
    },
    doc_md=__doc__,
    tags=["dynamics-sync"],
):

    @task
    def check_state_store(params: dict | None = None) -> list[str]:
        """Which entities to copy: refuse any whose copy exists already, unless the run says force."""
        from dynamics_sync.guards import select_for_initial_copy

        params = params or {}
        return select_for_initial_copy(params.get("entities"), force=bool(params.get("force")))

    entity_syncs(INITIAL, selected=check_state_store())
