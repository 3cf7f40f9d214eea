"""Load: apply a validated write plan to each side and collect a result for every record.

A record the API refuses becomes an activity row with the API's own code and message; it does not fail
the batch. Failures of the whole call (auth, outage, quota) raise, so the task fails before anything is
committed to the state store and the retry redoes the work: Marketo updates by id and Dynamics
If-Match updates are idempotent, and a retried create finds the person its earlier try made (by email,
carrying our Dynamics id) and links it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dynamics_sync import extract
from dynamics_sync.entities import EntitySpec
from dynamics_sync.errors import ApiError
from dynamics_sync.fieldtypes import payload_value
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import BATCH, MarketoHook
from dynamics_sync.state import Activity, Link
from dynamics_sync.transform import TO_DYNAMICS, TO_MARKETO, match_existing

TYPE_FIELD = "msdynType"
RECORD_LEVEL_STATUS = {400, 403, 404, 409, 412, 413}
LinkedPeople = Callable[[list[int]], dict[int, Link]]
DYNAMICS_CHUNK = 100  # records per UpdateMultiple call (Microsoft suggests 100-1,000 for standard tables)


@dataclass
class LoadResult:
    links: list[Link] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    refused: int = 0


def _fields(row: dict[str, Any]) -> list[str]:
    return json.loads(row["write_fields"])


def _link_update(spec: EntitySpec, row: dict[str, Any], marketo_id: int | None) -> Link:
    return Link(
        entity=spec.name,
        dynamics_id=row["dynamics_id"],
        marketo_id=int(marketo_id) if marketo_id is not None and spec.is_person else None,
        marketo_object=spec.marketo_object,
        dynamics_values=json.loads(row["snap_dynamics"]),
        marketo_values=json.loads(row["snap_marketo"]),
        deleted_at=dt.datetime.now(dt.UTC) if row["op"] == "flag_deleted" else None,
        deleted_side="dynamics" if row["op"] == "flag_deleted" else None,
    )


def _payload_values(spec: EntitySpec, row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {name: payload_value(row.get(name), spec.marketo_types.get(name)) for name in names}


def marketo_payload(spec: EntitySpec, row: dict[str, Any]) -> dict[str, Any]:
    """What Marketo's sync call gets for one planned write."""
    if row["op"] == "flag_deleted":
        return {"id": int(row["marketo_id"]), spec.deleted_field: True}
    # A create sends every value it has; the other writes send the fields the plan changes.
    names = [n for n in spec.marketo_fields if row.get(n) is not None] if row["op"] == "create" else _fields(row)
    payload = _payload_values(spec, row, names)
    if row["op"] in ("create", "link", "convert"):
        payload[spec.link_field] = row["dynamics_id"]
        payload[TYPE_FIELD] = spec.type_value
    if row["op"] != "create":
        payload["id"] = int(row["marketo_id"])
    return payload


def object_payload(spec: EntitySpec, row: dict[str, Any]) -> dict[str, Any]:
    """What Marketo's object upsert gets for one planned write (keyed by our Dynamics id)."""
    return {spec.key_field: row["dynamics_id"], **dict(spec.constants), **_payload_values(spec, row, _fields(row))}


def dynamics_body(spec: EntitySpec, row: dict[str, Any]) -> dict[str, Any]:
    """What Dynamics' update gets for one planned write: the changed fields, as Dataverse columns."""
    return spec.to_dynamics({n: row.get(n) for n in _fields(row)})


def load_objects(hook: MarketoHook, spec: EntitySpec, writes: pd.DataFrame) -> LoadResult:
    """Upsert Marketo objects (companies, opportunities, ...) keyed by our Dynamics id."""
    result = LoadResult()
    rows = writes.to_dict("records")
    if rows:
        hook.reserve(-(-len(rows) // BATCH), f"{len(rows)} {spec.marketo_object} upserts")
    payloads = [object_payload(spec, row) for row in rows]
    for row, answer in zip(rows, hook.sync_objects(spec.marketo_object, payloads) if rows else [], strict=True):
        status = answer.get("status")
        if status in ("created", "updated"):
            result.links.append(_link_update(spec, row, None))
            result.created += status == "created"
            result.updated += status == "updated"
            continue
        reasons = "; ".join(f"{r.get('code')} {r.get('message')}" for r in answer.get("reasons") or [])
        result.refused += 1
        result.activities.append(Activity(
            "refused_by_marketo", spec.name, TO_MARKETO, dynamics_id=row["dynamics_id"],
            reason=f"Marketo skipped the {spec.marketo_object} record: {reasons or status}",
        ))
    return result


def load_marketo(hook: MarketoHook, spec: EntitySpec, writes: pd.DataFrame,
                 linked_people: LinkedPeople | None = None) -> LoadResult:
    """`linked_people(ids)`: the state store's links of those Marketo people (store.links_by_marketo, or a
    caller's view that first lets its earlier commits land), for creates Marketo answers "already exists"."""
    if not spec.is_person:
        return load_objects(hook, spec, writes)
    result = LoadResult()
    rows = writes.to_dict("records")
    creates = [r for r in rows if r["op"] == "create"]
    updates = [r for r in rows if r["op"] != "create"]
    if rows:
        hook.reserve(_calls(len(creates)) + _calls(len(updates)), f"{len(rows)} {spec.name} writes")
    if creates:
        answers = hook.sync_leads([marketo_payload(spec, r) for r in creates], action="createOnly",
                                  lookup_field="email")
        refused = _apply(spec, creates, answers, result)
        exists = [pair for pair in refused if "1005" in _codes(pair[1])]  # someone has the email already
        refused = [pair for pair in refused if "1005" not in _codes(pair[1])]
        links, unmatched = _link_existing(hook, spec, [row for row, _ in exists], result, linked_people)
        updates += links
        refused += [pair for pair in exists if pair[0]["dynamics_id"] in unmatched]
        _report(spec, refused, "createOnly", result)
    if updates:
        answers = hook.sync_leads([marketo_payload(spec, r) for r in updates], action="updateOnly", lookup_field="id")
        _report(spec, _apply(spec, updates, answers, result), "updateOnly", result)
    return result


def _calls(records: int) -> int:
    return -(-records // BATCH)


def _codes(answer: dict[str, Any]) -> set[str]:
    return {str(r.get("code")) for r in answer.get("reasons") or []}


def _apply(spec: EntitySpec, rows: list[dict[str, Any]], answers: list[dict[str, Any]],
           result: LoadResult) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Link the records Marketo created or updated; return the others with Marketo's answer."""
    skipped = []
    for row, answer in zip(rows, answers, strict=True):
        status = answer.get("status")
        if status in ("created", "updated"):
            result.links.append(_link_update(spec, row, answer.get("id") or row["marketo_id"]))
            result.created += status == "created"
            result.updated += status == "updated"
        else:
            skipped.append((row, answer))
    return skipped


def _report(spec: EntitySpec, refused: list[tuple[dict[str, Any], dict[str, Any]]], action: str,
            result: LoadResult) -> None:
    for row, answer in refused:
        reasons = "; ".join(f"{r.get('code')} {r.get('message')}" for r in answer.get("reasons") or [])
        result.refused += 1
        result.activities.append(Activity(
            "refused_by_marketo", spec.name, TO_MARKETO, dynamics_id=row["dynamics_id"],
            marketo_id=int(row["marketo_id"]) if row.get("marketo_id") is not None else None,
            email=row.get("email"),
            reason=f"Marketo {action} skipped the record: {reasons or answer.get('status')}",
        ))


def _link_existing(hook: MarketoHook, spec: EntitySpec, rows: list[dict[str, Any]], result: LoadResult,
                   linked_people: LinkedPeople | None) -> tuple[list[dict[str, Any]], set[str]]:
    """Creates answered "1005 Lead already exists": someone in Marketo has the email.

    A person whose link field holds this record's Dynamics id is one an earlier, crashed try of this load
    created: it is linked as created. The others go through transform.match_existing (link the only
    same-email person, report ambiguous and already linked ones). Returns the link writes to send as
    updates, and the Dynamics ids for which no person was found after all.
    """
    if not rows:
        return [], set()
    hook.reserve(_calls(len(rows)), f"{len(rows)} {spec.name} lookups of people Marketo already had")
    people = extract.marketo_people(hook, spec, "email", [row["email"] for row in rows])
    people = people.astype(object).where(people.notna(), None)
    ours = {str(p[spec.link_field]): int(p["marketo_id"]) for p in people.to_dict("records")
            if p.get(spec.link_field)}
    rest = []
    for row in rows:
        if row["dynamics_id"] in ours:
            result.links.append(_link_update(spec, row, ours[row["dynamics_id"]]))
            result.created += 1
        else:
            rest.append(row)
    ids = [int(m) for m in people["marketo_id"]]
    linked = linked_people(ids) if linked_people is not None and ids else {}
    # People this load has just linked (two records of the batch sharing an email) are taken too.
    linked.update({link.marketo_id: link for link in result.links if link.marketo_id is not None})
    plan, unmatched = match_existing(spec, rest, people, linked)
    result.activities += plan.activities
    if plan.marketo_writes:
        hook.reserve(_calls(len(plan.marketo_writes)),
                     f"{len(plan.marketo_writes)} {spec.name} links to people Marketo already had")
    return plan.marketo_writes, {row["dynamics_id"] for row in unmatched}


def load_dynamics(hook: DynamicsHook, spec: EntitySpec, writes: pd.DataFrame) -> LoadResult:
    """Updates in chunks of UpdateMultiple (one call per chunk); a chunk Dynamics refuses is redone record by
    record, so the one bad record is reported and the rest of its chunk still lands."""
    result = LoadResult()
    rows = writes.to_dict("records")
    for start in range(0, len(rows), DYNAMICS_CHUNK):
        chunk = rows[start : start + DYNAMICS_CHUNK]
        bodies = [(row["dynamics_id"], dynamics_body(spec, row)) for row in chunk]
        if len(chunk) > 1:
            try:
                hook.update_multiple(spec.entity_set, spec.logical_name, spec.key, bodies)
            except ApiError as exc:
                if exc.status not in RECORD_LEVEL_STATUS:
                    raise
            else:
                result.updated += len(chunk)
                result.links.extend(_link_update(spec, row, row["marketo_id"]) for row in chunk)
                continue
        for row, (row_id, body) in zip(chunk, bodies, strict=True):
            _update_one(hook, spec, row, row_id, body, result)
    return result


def _update_one(hook: DynamicsHook, spec: EntitySpec, row: dict[str, Any], row_id: str, body: dict[str, Any],
                result: LoadResult) -> None:
    try:
        hook.update(spec.entity_set, row_id, body)
    except ApiError as exc:
        if exc.status not in RECORD_LEVEL_STATUS:
            raise
        result.refused += 1
        result.activities.append(Activity(
            "refused_by_dynamics", spec.name, TO_DYNAMICS, dynamics_id=row_id,
            marketo_id=int(row["marketo_id"]), email=row.get("email"),
            reason=f"Dynamics refused the update (HTTP {exc.status} {exc.code}): {exc.message}",
        ))
        return
    result.updated += 1
    result.links.append(_link_update(spec, row, row["marketo_id"]))


def rejected_activities(spec: EntitySpec, bad: pd.DataFrame, direction: str) -> list[Activity]:
    """One activity row per failed rule of each row the validate step set aside."""
    activities = []
    for row in bad.to_dict("records"):
        for problem in json.loads(row["reasons"]):
            activities.append(Activity(
                "rejected_by_validation", spec.name, direction, dynamics_id=row.get("dynamics_id"),
                marketo_id=int(row["marketo_id"]) if row.get("marketo_id") is not None else None,
                email=row.get("email"), field=problem["field"], new_value=problem["value"],
                reason=f"{problem['reason']}; not written",
            ))
    return activities
