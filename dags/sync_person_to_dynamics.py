"""
### Sync Person to Microsoft

Creates one Marketo person in Dynamics now, in seconds, like Marketo's "Sync Person to Microsoft" flow
action: as a **lead** by default, or as a contact with `"sync_as": "contact"` (it then follows contact
rules), optionally owned by a Dynamics user (`"owner"`: a systemuser id). Trigger with
`{"marketo_lead_id": 1234}`.

Does nothing, and says so, when the person is already linked to a Dynamics record or a Dynamics lead or
contact has the same email. A person that breaks a Dynamics rule (e.g. no last name) is not created: the
reason is in the `load` task's result and in `activity_log`. From then on the incremental sync keeps the
new lead and the person in step.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, task, task_group

from dynamics_sync.taskgroups import MARKETO_POOL, default_args, run_info

with DAG(
    dag_id="sync_person_to_dynamics",
    schedule=None,
    catchup=False,
    default_args=default_args(),
    params={
        "marketo_lead_id": Param(
            None, type="integer", minimum=1, description="Marketo person (lead) id to create in Dynamics."
        ),
        "sync_as": Param("lead", enum=["lead", "contact"], description="Create a Dynamics lead or contact."),
        "owner": Param(None, type=["null", "string"], description="Dynamics systemuser id to own the record."),
    },
    doc_md=__doc__,
    tags=["dynamics-sync"],
):

    @task_group(group_id="person", tooltip="extract, transform, validate, load one Marketo person")
    def person() -> Any:
        @task(pool=MARKETO_POOL)
        def extract(params: dict | None = None) -> dict[str, Any]:
            from dynamics_sync import sync_person

            return sync_person.extract_step(
                int(params["marketo_lead_id"]), run_info(), params.get("sync_as") or "lead", params.get("owner")
            )

        @task
        def transform(extracted: dict[str, Any]) -> dict[str, Any]:
            from dynamics_sync import sync_person

            return sync_person.transform_step(extracted, run_info())

        @task
        def validate(transformed: dict[str, Any]) -> dict[str, Any]:
            from dynamics_sync import sync_person

            return sync_person.validate_step(transformed, run_info())

        @task(pool=MARKETO_POOL)
        def load(validated: dict[str, Any]) -> dict[str, Any]:
            from dynamics_sync import sync_person

            return sync_person.load_step(validated, run_info())

        return load(validate(transform(extract())))

    person()
