"""Sync Person to Microsoft: create one Marketo person as a Dynamics lead now, or do nothing if it exists.

Like the native flow action, it never updates an existing record: if the person is already linked, or a
Dynamics lead or contact has the same email, the run does nothing and says why (in the task log, the
returned XCom and activity_log). The load step looks Dynamics up by email once more right before creating,
so a retried task never creates the lead twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dynamics_sync import extract, metadata, validate
from dynamics_sync.entities import EntitySpec, load_entities
from dynamics_sync.errors import RefusedToRun
from dynamics_sync.hooks.dynamics import DynamicsHook, quote
from dynamics_sync.hooks.marketo import MarketoHook
from dynamics_sync.load import TYPE_FIELD, rejected_activities
from dynamics_sync.staging import read_frame
from dynamics_sync.state import Activity, Link, StateStore
from dynamics_sync.steps import RunInfo, stage
from dynamics_sync.transform import TO_DYNAMICS

log = logging.getLogger(__name__)
ENTITY = "lead"
MATCH_ENTITIES = ("lead", "contact")


def _spec(xcom: dict[str, Any] | None = None) -> EntitySpec:
    """The lead entity, narrowed and sharpened by the metadata the extract step read (see metadata.py)."""
    return metadata.effective(load_entities()[ENTITY], (xcom or {}).get("columns"))


def existing_in_dynamics(hook: DynamicsHook, email: str) -> tuple[str, str] | None:
    """(entity, id) of a Dynamics lead or contact with this email, if any."""
    entities = load_entities()
    for name in MATCH_ENTITIES:
        spec = entities.get(name)
        if spec is None:
            continue
        params = {"$select": spec.key, "$filter": f"emailaddress1 eq {quote(email)}", "$top": "1"}
        for rows, _ in hook.pages(spec.entity_set, params=params):
            if rows:
                return name, rows[0][spec.key]
    return None


def extract_step(marketo_lead_id: int, run: RunInfo) -> dict[str, Any]:
    columns = metadata.describe(DynamicsHook(), _spec())
    spec = metadata.effective(_spec(), columns)
    person = extract.marketo_people(MarketoHook(), spec, "id", [marketo_lead_id])
    if person.empty:
        raise RefusedToRun(f"Marketo person {marketo_lead_id} does not exist")
    store = StateStore.from_connection()
    try:
        link = store.links_by_marketo([marketo_lead_id]).get(marketo_lead_id)
    finally:
        store.dispose()
    skip = None
    if link is not None and link.deleted_at is not None:
        skip = (f"its Dynamics {link.entity} {link.dynamics_id} was deleted ({link.deleted_at:%Y-%m-%d %H:%M} "
                "UTC); sync person does not silently re-create deleted records")
    elif link is not None:
        skip = f"already linked to Dynamics {link.entity} {link.dynamics_id}"
    elif person.iloc[0]["email"]:
        found = existing_in_dynamics(DynamicsHook(), str(person.iloc[0]["email"]))
        if found:
            skip = f"a Dynamics {found[0]} with the same email already exists ({found[1]})"
    return {"marketo_id": marketo_lead_id, "skip": skip, "person": stage(run, spec, "person", person),
            "columns": {f.dynamics: columns[f.dynamics] for f in spec.fields}}


def transform_step(extracted: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    spec = _spec(extracted)
    person = read_frame(extracted["person"])
    if extracted["skip"]:
        return {**extracted, "plan": None}
    plan = person[["marketo_id", *spec.marketo_fields]].assign(op="create", dynamics_id=None)
    return {**extracted, "plan": stage(run, spec, "create_plan", plan)}


def validate_step(transformed: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    if not transformed["plan"]:
        return {**transformed, "rejected": None}
    spec = _spec(transformed)
    split = validate.split_invalid(read_frame(transformed["plan"]), spec, "dynamics")
    return {
        **transformed,
        "plan": stage(run, spec, "create_valid", split.good),
        "rejected": stage(run, spec, "create_rejected", split.bad),
    }


def load_step(validated: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    spec = _spec(validated)
    marketo_id = validated["marketo_id"]
    store = StateStore.from_connection()
    try:
        outcome = _load(spec, validated, store, run)
    finally:
        store.dispose()
    log.info("sync person %s: %s", marketo_id, outcome["message"])
    return outcome


def _load(spec: EntitySpec, validated: dict[str, Any], store: StateStore, run: RunInfo) -> dict[str, Any]:
    marketo_id = validated["marketo_id"]
    if validated["skip"]:
        store.commit_load(run.ctx, activities=[Activity(
            "sync_person_skipped", spec.name, TO_DYNAMICS, marketo_id=marketo_id, reason=validated["skip"],
        )])
        return {"status": "skipped", "marketo_id": marketo_id, "message": f"did nothing: {validated['skip']}"}
    bad = read_frame(validated["rejected"])
    if not bad.empty:
        activities = rejected_activities(spec, bad, TO_DYNAMICS)
        store.commit_load(run.ctx, activities=activities)
        reasons = "; ".join(r["reason"] for r in json.loads(bad.iloc[0]["reasons"]))
        return {"status": "rejected", "marketo_id": marketo_id, "message": f"not created: {reasons}"}
    row = read_frame(validated["plan"]).iloc[0].to_dict()
    values = {name: row.get(name) for name in spec.marketo_fields}
    dynamics = DynamicsHook()
    found = existing_in_dynamics(dynamics, values["email"]) if values.get("email") else None
    if found:  # created by an earlier try of this task, or by someone in the meantime
        store.commit_load(run.ctx, activities=[Activity(
            "sync_person_skipped", spec.name, TO_DYNAMICS, dynamics_id=found[1], marketo_id=marketo_id,
            email=values.get("email"), reason=f"a Dynamics {found[0]} with the same email exists ({found[1]})",
        )])
        return {"status": "skipped", "marketo_id": marketo_id, "message": f"did nothing: {found[0]} {found[1]} exists"}
    body = {column: value for column, value in spec.to_dynamics(values).items() if value is not None}
    lead_id = dynamics.create(spec.entity_set, body)
    MarketoHook().sync_leads(
        [{"id": int(marketo_id), spec.link_field: lead_id, TYPE_FIELD: spec.type_value}],
        action="updateOnly", lookup_field="id",
    )
    store.commit_load(
        run.ctx,
        links=[Link(spec.name, lead_id, int(marketo_id), values, values)],
        activities=[Activity("sync_person_created", spec.name, TO_DYNAMICS, dynamics_id=lead_id,
                             marketo_id=marketo_id, email=values.get("email"),
                             reason="created as a Dynamics lead by sync person")],
        summaries=[{"entity": spec.name, "direction": TO_DYNAMICS, "created": 1, "updated": 0,
                    "rejected": 0, "collisions": 0, "echoes": 0}],
    )
    return {"status": "created", "marketo_id": marketo_id, "dynamics_id": lead_id,
            "message": f"created Dynamics lead {lead_id}"}
