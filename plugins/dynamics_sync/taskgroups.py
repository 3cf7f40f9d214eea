"""TaskFlow building blocks the DAG files compose: one task group per entity with its four steps.

Tasks stay one-line calls into dynamics_sync.steps, imported inside each task: a DAG file parses (in the
dag-processor every 30 s, and in every task process) without pandas, pyarrow or the hooks. API-bound steps
run in Airflow pools that encode each API's concurrency limit, and every task shares one retry policy:
refused credentials or a malformed config fail at once (a retry cannot help), an unreachable API is retried
with exponential backoff.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import (
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    TaskGroup,
    TriggerRule,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException

from dynamics_sync.entities import ConfigError, entity_names, entity_order, extract_order, sync_extract_order
from dynamics_sync.errors import (
    ApiError,
    AuthError,
    BudgetSpent,
    EntityLocked,
    QuotaExhausted,
    RefusedToRun,
    ServiceUnavailable,
)
from dynamics_sync.modes import INITIAL, RECONCILE, REPLAY
from dynamics_sync.notify import SyncFailureNotifier

if TYPE_CHECKING:
    from dynamics_sync.steps import RunInfo

MARKETO_POOL = "marketo_api"
DYNAMICS_POOL = "dynamics_api"
EXTRACT_POOL = "sync_extracts"

RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception=[AuthError, ConfigError], action=RetryAction.FAIL,
                  reason="credentials or config refused; fix the connection or config, then clear the task"),
        RetryRule(exception=RefusedToRun, action=RetryAction.FAIL, reason="refused on purpose; see the message"),
        RetryRule(exception=QuotaExhausted, action=RetryAction.FAIL,
                  reason="daily API quota spent; the next run resumes from the unchanged watermark"),
        RetryRule(exception=[ServiceUnavailable, ApiError, EntityLocked], action=RetryAction.RETRY),
    ]
)


def dry_run_param() -> Param:
    return Param(False, type="boolean", description="Plan and validate as always; report every write the run "
                 "would make (counts and a sample per entity, in each load task's result) and write nothing.")


def default_args() -> dict[str, Any]:
    """Retries with exponential backoff; the base delay is settable so tests never sit idle for minutes."""
    return {
        "retries": int(os.environ.get("DYNAMICS_SYNC_RETRIES", 3)),
        "retry_delay": dt.timedelta(seconds=float(os.environ.get("DYNAMICS_SYNC_RETRY_DELAY_S", 60))),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=15),
        "retry_policy": RETRY_POLICY,
    }


def run_info() -> RunInfo:
    from dynamics_sync.steps import RunInfo

    context = get_current_context()
    dag_run = context["dag_run"]
    return RunInfo(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        task_id=context["ti"].task_id,
        interval_start=context.get("data_interval_start"),
        interval_end=context.get("data_interval_end"),
        dry_run=bool((context.get("params") or {}).get("dry_run")),
        run_type=str(getattr(dag_run, "run_type", "") or "") or None,
    )


def release_lock_on_failure(entity: str) -> Any:
    """A task of this entity failed for good: free the entity for the next run at once, not after the TTL."""

    def callback(context: Any) -> None:
        from dynamics_sync.state import StateStore

        store = StateStore.from_connection()
        try:
            store.release_lock(entity, context["dag_run"].run_id)
        finally:
            store.dispose()

    return callback


# The task that ends an entity's group in the DAGs that re-sync chosen records: replay marks each failure
# it retried, reconcile reports what it found and repaired. The four steps themselves are the same.
FINISH = {REPLAY: "resolve", RECONCILE: "report"}
RECONCILE_COUNTS = "reconcile"  # the reconcile extract's XCom of counts, pushed even when nothing drifted


def _read(entity: str, mode: str, params: dict[str, Any]) -> dict[str, Any]:
    """What an entity's extract hands on in each DAG: a change feed's read (initial copy, cycle), the
    failures chosen to replay, or the drift a full compare found (the reconcile's counts go to XCom too)."""
    if mode == REPLAY:
        from dynamics_sync import replay

        return replay.extract_step(entity, params, run_info())
    if mode == RECONCILE:
        from dynamics_sync import reconcile

        staged, counts = reconcile.extract_step(entity, run_info())
        get_current_context()["ti"].xcom_push(key=RECONCILE_COUNTS, value=counts)
        return staged
    from dynamics_sync import steps

    return steps.extract_step(entity, mode, run_info())


def _finish(entity: str, mode: str, validated: dict[str, Any] | None, loaded: dict[str, Any] | None) -> dict[str, Any]:
    ti = get_current_context()["ti"]
    extracted = ti.xcom_pull(task_ids=f"{entity}.extract") or {}
    if mode == REPLAY:
        if not extracted or loaded is None:  # nothing to replay, or the load stopped for the budget
            raise AirflowSkipException(f"no {entity} failure was replayed in this run")
        from dynamics_sync import replay

        return replay.resolve_step(entity, extracted, run_info())
    from dynamics_sync import reconcile

    counts = ti.xcom_pull(task_ids=f"{entity}.extract", key=RECONCILE_COUNTS)
    if counts is None:
        raise AirflowSkipException(f"{entity} was not reconciled in this run")
    return reconcile.report_step(entity, counts, validated, loaded, extracted.get("drift"), run_info())


def entity_sync(entity: str, mode: str, selected: Any = None, after: list[TaskGroup] | None = None,
                before_transform: list[TaskGroup] | None = None) -> TaskGroup:
    """extract >> transform (conflict-resolve) >> validate (Great Expectations) >> load, for one entity.

    `mode` says what extract reads (modes.INITIAL, INCREMENTAL, REPLAY or RECONCILE); replay and
    reconcile end the group with their FINISH task. `selected` (an upstream task's list of entity names)
    skips the whole group when the entity is not in it. `after`: the groups of the entities that load
    before this one extracts; `before_transform`: those that load before it transforms, so its extract
    overlaps their loads. Each list waits behind one gate, `after_upstream_entities` ahead of the first
    step that waits at all, `after_converted_from` ahead of transform when extract waits too. Returns
    the group.
    """
    # A task that failed for good frees its entity and tells people at once (dynamics_sync.notify).
    released = [release_lock_on_failure(entity), SyncFailureNotifier(entity)]
    with TaskGroup(group_id=entity, tooltip=f"{mode} {entity}: extract, transform, validate, load") as group:

        # A short circuit: an idle cycle's extract returns nothing and the entity's other steps are skipped
        # without a process each; only its own downstream, so other entities' trigger rules still apply.
        # A copy's extracts all start at once and read for minutes: their own pool keeps executor slots
        # for the steps on the way to the first loads. A cycle's extracts are short and run in parallel.
        @task.short_circuit(pool=EXTRACT_POOL if mode == INITIAL else MARKETO_POOL, on_failure_callback=released,
                            ignore_downstream_trigger_rules=False)
        def extract(selected: list[str] | None = None, params: dict | None = None) -> dict[str, Any]:
            if selected is not None and entity not in selected:
                raise AirflowSkipException(f"{entity} is not among the entities this run syncs: {selected}")
            return _read(entity, mode, params or {})

        @task(on_failure_callback=released)
        def transform(extracted: dict[str, Any]) -> dict[str, Any]:
            from dynamics_sync import steps

            return steps.transform_step(entity, extracted, run_info())

        @task(on_failure_callback=released)
        def validate(transformed: dict[str, Any]) -> dict[str, Any]:
            from dynamics_sync import steps

            return steps.validate_step(entity, transformed, run_info())

        @task(pool=MARKETO_POOL, on_failure_callback=released)
        def load(validated: dict[str, Any]) -> dict[str, Any]:
            from dynamics_sync import steps

            try:
                return steps.load_step(entity, validated, run_info())
            except BudgetSpent as exc:  # a clean stop, not a failure: resumes after the quota resets
                steps.stop_for_budget(entity, run_info(), str(exc))
                raise AirflowSkipException(str(exc)) from None

        extracted = extract(selected)
        if after:
            _gate("after_upstream_entities", "Waits for the entities this one points at: ", after) >> extracted
        transformed = transform(extracted)
        if before_transform:
            _gate("after_converted_from" if after else "after_upstream_entities",
                  "Waits, before transform, for these entities to load: ", before_transform) >> transformed
        validated = validate(transformed)
        loaded = load(validated)
        if mode in FINISH:
            # Not downstream of extract (a short circuit skips only its direct downstream): it runs when
            # nothing was read too, and reads the extract's result from XCom.
            @task(task_id=FINISH[mode], trigger_rule=TriggerRule.NONE_FAILED, on_failure_callback=released)
            def finish(validated: dict[str, Any] | None, loaded: dict[str, Any] | None) -> dict[str, Any]:
                return _finish(entity, mode, validated, loaded)

            finish(validated, loaded)
    return group


def _gate(task_id: str, doc: str, upstream: list[TaskGroup]) -> EmptyOperator:
    """all_done: an entity whose upstream entity failed still syncs (its references to the failed entity's
    records are left empty and reported), so one bad entity never stalls the others."""
    gate = EmptyOperator(task_id=task_id, trigger_rule=TriggerRule.ALL_DONE,
                         doc_md=doc + ", ".join(g.group_id for g in upstream))
    for group in upstream:
        group >> gate
    return gate


def entity_syncs(mode: str, selected: Any = None) -> dict[str, TaskGroup]:
    """One group per configured entity, ordered so that what an entity points at is loaded before it.

    Accounts and users come before the people and opportunities that reference them, a lead before the
    contact it may be qualified into (see entities.entity_order). In the sync DAGs an extract reads
    Dynamics and Marketo only and lookups resolve in transform, so every entity extracts at once and only
    its transform waits for what it points at (a copy's opportunity roles are read while the contacts
    load); a contact's extract still waits for its lookups, as its transform waits for the leads anyway
    (entities.sync_extract_order). Replay and reconcile resolve lookups in extract, which waits.
    """
    order = entity_order()
    reads = extract_order() if mode in (REPLAY, RECONCILE) else sync_extract_order()
    groups: dict[str, TaskGroup] = {}
    pending = list(entity_names())
    while pending:  # dependencies first (entity_order has no cycles)
        name = next(n for n in pending if all(d in groups for d in order[n]))
        pending.remove(name)
        groups[name] = entity_sync(name, mode, selected=selected, after=[groups[d] for d in reads[name]],
                                   before_transform=[groups[d] for d in order[name] if d not in reads[name]])
    watcher, report = failed_entities(), report_run()
    for group in groups.values():
        group >> [watcher, report]
    return groups


@task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
def report_run() -> dict[str, Any]:
    """After every entity, failed or not: alert on the records that did not sync and on lagging entities."""
    from dynamics_sync.notify import run_report

    info = run_info()
    return run_report(info.dag_id, info.run_id, list(entity_names()))


@task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
def failed_entities() -> None:
    """Fails the run when any entity failed (the watcher pattern).

    The `after_upstream_entities` gates let other entities go on past a failed one, so the run's last
    tasks may all succeed; without this leaf the run would show green with an entity left unsynced.
    """
    from airflow.sdk.exceptions import AirflowException

    raise AirflowException("an entity of this run failed; see its task group (the other entities went on)")
