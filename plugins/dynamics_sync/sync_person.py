"""Sync Person to Microsoft: create one Marketo person in Dynamics now, or do nothing if it exists.

Like the native flow action it creates a lead (or, with sync_as="contact", a contact, which then follows
contact rules), optionally owned by a given Dynamics user, and never updates an existing record: if the
person is already linked, or a Dynamics lead or contact has the same email, the run does nothing and says
why (task log, returned XCom, activity_log). The load step looks Dynamics up by email once more right
before creating, so a retried task never creates the record twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dynamics_sync import extract, marketo_activity, metadata, references, validate
from dynamics_sync.entities import INTERACTIVE_PRIORITY, EntitySpec, load_entities
from dynamics_sync.errors import ApiError, RefusedToRun
from dynamics_sync.hooks.dynamics import DynamicsHook, quote
from dynamics_sync.hooks.marketo import MarketoHook
from dynamics_sync.load import RECORD_LEVEL_STATUS, TYPE_FIELD, rejected_activities
from dynamics_sync.staging import read_frame
from dynamics_sync.state import Activity, Link, StateStore
from dynamics_sync.steps import RunInfo, stage
from dynamics_sync.transform import TO_DYNAMICS

log = logging.getLogger(__name__)
SYNC_AS = ("lead", "contact")
MATCH_ENTITIES = ("lead", "contact")


def _marketo() -> MarketoHook:
    """Someone is waiting for this person: its calls go first in a rate window an initial copy keeps full."""
    return MarketoHook(priority=INTERACTIVE_PRIORITY)


def _spec(xcom: dict[str, Any]) -> EntitySpec:
    """The entity to create, narrowed and sharpened by the metadata the extract step read (see metadata.py)."""
    return metadata.effective(load_entities()[xcom["sync_as"]], xcom.get("schema"))


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


def extract_step(marketo_lead_id: int, run: RunInfo, sync_as: str = "lead", owner: str | None = None) -> dict[str, Any]:
    if sync_as not in SYNC_AS or sync_as not in load_entities():
        raise RefusedToRun(f"sync_as must be one of {SYNC_AS} (and configured), not {sync_as!r}")
    configured = load_entities()[sync_as]
    schema = metadata.read_schema(DynamicsHook(), _marketo(), configured)
    spec = metadata.effective(configured, schema)
    person = extract.marketo_people(_marketo(), spec, "id", [marketo_lead_id])
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
            "sync_as": sync_as, "owner": owner or None,
            "schema": schema}


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
    # The suite is the entity's own (lead_to_dynamics): its Data Docs keep showing the sync's last batch,
    # not one person, and the run saves the 1-2 s of rendering them.
    split = validate.split_invalid(read_frame(transformed["plan"]), spec, "dynamics", data_docs=False)
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
        logged = store.activities(dag_id=run.dag_id, run_id=run.run_id)
        fields = Activity.__dataclass_fields__
        marketo_activity.post_failures(_marketo(), [Activity(**{f: row[f] for f in fields}) for row in logged])
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
    # Lookups and one-way fields are Dynamics' to set; the person carries only what flows both ways.
    values = {name: row.get(name) for name in spec.two_way_fields}
    dynamics = DynamicsHook()
    found = existing_in_dynamics(dynamics, values["email"]) if values.get("email") else None
    if found:  # created by an earlier try of this task, or by someone in the meantime
        store.commit_load(run.ctx, activities=[Activity(
            "sync_person_skipped", spec.name, TO_DYNAMICS, dynamics_id=found[1], marketo_id=marketo_id,
            email=values.get("email"), reason=f"a Dynamics {found[0]} with the same email exists ({found[1]})",
        )])
        return {"status": "skipped", "marketo_id": marketo_id, "message": f"did nothing: {found[0]} {found[1]} exists"}
    body = {column: value for column, value in spec.to_dynamics(values).items() if value is not None}
    if validated.get("owner"):
        body["ownerid@odata.bind"] = f"/systemusers({validated['owner']})"
    try:
        record_id = dynamics.create(spec.entity_set, body)
    except ApiError as exc:
        if exc.status not in RECORD_LEVEL_STATUS:
            raise
        store.commit_load(run.ctx, activities=[Activity(
            "refused_by_dynamics", spec.name, TO_DYNAMICS, marketo_id=marketo_id, email=values.get("email"),
            reason=f"Dynamics refused to create the {spec.name} (HTTP {exc.status} {exc.code}): {exc.message}",
        )])
        return {"status": "refused", "marketo_id": marketo_id, "message": f"not created: {exc.message}"}
    # What Dynamics filled in itself (the owner, a lookup) reaches the person now, in the same call that links it.
    created = extract.dynamics_record(dynamics, spec, record_id)
    created, unresolved = references.resolve(created, spec, store, dynamics)
    one_way = {f.marketo: created.iloc[0][f.marketo] for f in spec.fields if f.one_way}
    one_way = {name: value for name, value in one_way.items() if value is not None and value == value}
    _marketo().sync_leads(
        [{"id": int(marketo_id), spec.link_field: record_id, TYPE_FIELD: spec.type_value, **one_way}],
        action="updateOnly", lookup_field="id",
    )
    synced = {**values, **one_way}
    store.commit_load(
        run.ctx,
        links=[Link(spec.name, record_id, int(marketo_id), synced, synced)],
        activities=[Activity("sync_person_created", spec.name, TO_DYNAMICS, dynamics_id=record_id,
                             marketo_id=marketo_id, email=values.get("email"),
                             reason=f"created as a Dynamics {spec.name} by sync person"), *unresolved],
        summaries=[{"entity": spec.name, "direction": TO_DYNAMICS, "created": 1, "updated": 0,
                    "rejected": 0, "collisions": 0, "echoes": 0}],
    )
    return {"status": "created", "marketo_id": marketo_id, "dynamics_id": record_id, "entity": spec.name,
            "message": f"created Dynamics {spec.name} {record_id}"}
