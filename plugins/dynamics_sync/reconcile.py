"""Reconcile: find what the change feeds never showed the sync, and repair it through the normal steps.

Change detection sees only what a feed reports: a bulk load that bypassed change tracking, a Marketo edit
that logged no activity, or a lost delta token leave records whose values differ from the sync's
snapshots with nothing to say so. The reconcile reads each entity in full (Dynamics: every row; Marketo:
the linked people by id, 300 a call), compares each side with its own last-synced snapshot, and hands
exactly the records that differ to the incremental cycle's own transform, validate and load steps, as
changes. So a value changed on one side flows to the other, a field changed on both sides is a collision
decided by its authority, rules are checked by Great Expectations and every decision is in activity_log,
as in any cycle.

What counts as drift is the merge's own change test (conflict.same of a side's value against that side's
snapshot), so everything reported is acted on and a second reconcile finds nothing. A digest of the
synced fields is the fast path: equal digests mean no field differs. The two sides are not compared with
each other directly: they may legitimately differ (a value only Marketo held, which the initial copy
kept), and their snapshots say which side moved.

- A Dynamics record with no link (created outside change tracking) is planned as a create, unless its
  sync filter is No or it has an open failure (both are known to the sync: replay retries failures).
- A linked Marketo person that is gone is a Marketo delete (the link remembers it, Dynamics keeps its
  record), or, when another person now carries the record's Dynamics id, a merge the link follows.
- A linked Dynamics record that is gone (its GET answers 404) is a Dynamics delete: the person is flagged.
- A sync filter turned to No or back to Yes pauses or resumes the link.
- Marketo edits of one-way fields (and of Marketo objects) are not drift: the sync never moves them.

Each difference is a `reconcile_drift` row (side, field, snapshot value, current value), committed with
the repairs in the load's transaction; `report_step` then adds a `reconcile_repaired` row per repaired
difference (the value both sides hold now). The entity lock keeps a reconcile and the 5-minute cycle
apart; no watermark moves (a reconcile is not a change feed: the cycle's feeds go on from where they were,
and the reconcile's own writes come back to them as echoes of the snapshots it recorded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import select

from dynamics_sync import extract, references, steps, transform
from dynamics_sync.conflict import DYNAMICS, MARKETO, normalize, same
from dynamics_sync.entities import EntitySpec, load_entities
from dynamics_sync.errors import ApiError, RefusedToRun
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import BATCH, MarketoHook
from dynamics_sync.staging import read_frame
from dynamics_sync.state import RECORD_FAILURES, Activity, Link, StateStore, as_text, record_links

log = logging.getLogger(__name__)
DRIFT, REPAIRED = "reconcile_drift", "reconcile_repaired"
# What a difference is: a value changed, a record with no link, a record gone, the sync filter turned.
CHANGED, CREATED, VANISHED, MERGED, FILTER = "changed", "created", "vanished", "merged", "sync_filter"
DRIFT_COLUMNS = ["dynamics_id", "marketo_id", "side", "kind", "field", "old_value", "new_value", "email"]
COUNT_KEYS = ("checked", "drifted", "repaired", "failed", "left_to_replay")


@dataclass
class Difference:
    """One thing the sync missed about one record, on one side."""

    dynamics_id: str
    marketo_id: int | None
    side: str  # "dynamics" or "marketo": where it happened
    kind: str
    field: str | None = None
    old_value: Any = None  # the snapshot's value (what the sync believes the side holds)
    new_value: Any = None  # what the side holds now
    email: str | None = None


@dataclass
class Findings:
    """What a comparison found: the records to feed the cycle's steps as changes, and why each one."""

    dynamics_rows: list[dict[str, Any]] = field(default_factory=list)
    marketo_rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    checked: int = 0
    left_to_replay: int = 0  # records that differ but have an open failure: dynamics_replay's to retry

    def add(self, other: Findings) -> None:
        for name in ("dynamics_rows", "marketo_rows", "events", "differences"):
            getattr(self, name).extend(getattr(other, name))
        self.checked += other.checked
        self.left_to_replay += other.left_to_replay

    @property
    def drifted(self) -> int:
        return len({d.dynamics_id for d in self.differences})


def digest(values: dict[str, Any], fields: Sequence[str]) -> str:
    """A hash of the fields' values as the merge compares them (normalized, as text).

    Equal digests mean conflict.same holds for every field (equal text is the same value for it), so a
    record whose side digests like its snapshot needs no field-by-field look.
    """
    canonical = [None if (v := normalize(values.get(name))) is None else str(v) for name in fields]
    return hashlib.sha1(json.dumps(canonical).encode()).hexdigest()


def changed_fields(current: dict[str, Any], snapshot: dict[str, Any], fields: Sequence[str]) -> list[str]:
    """The fields whose current value the merge would see as changed against the snapshot."""
    if digest(current, fields) == digest(snapshot, fields):
        return []
    return [name for name in fields if not same(current.get(name), snapshot.get(name))]


def _clean(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def compare(spec: EntitySpec, dynamics: pd.DataFrame, people: pd.DataFrame, links: dict[str, Link],
            failing: set[Any]) -> Findings:
    """Compare one part of the Dynamics read (and its linked Marketo people) with the snapshots.

    `people`: the current Marketo values of the part's linked people (persons only); a linked person
    missing from it is gone from Marketo. `failing`: Dynamics and Marketo ids with open failures.
    Pure, so the rules are readable in one place; extract_step does the reading.
    """
    found = Findings()
    by_id = {int(p["marketo_id"]): p for p in _clean(people)}
    for dyn in _clean(dynamics):
        found.checked += 1
        dynamics_id, link = dyn["dynamics_id"], links.get(dyn["dynamics_id"])
        filtered_out = transform.explicit_no(dyn.get("sync_filter"))
        email = dyn.get("email")
        if link is None:
            if filtered_out:
                continue  # the sync filter keeps it out, as in every cycle
            if dynamics_id in failing:
                found.left_to_replay += 1
                continue
            found.dynamics_rows.append(dyn)
            found.differences.append(Difference(dynamics_id, None, DYNAMICS, CREATED, email=email))
            continue
        if link.deleted_at is not None or (link.paused and filtered_out):
            continue  # deletions and conversions stick; a paused record moves nothing while its filter is No
        differences = []
        if bool(link.paused) != filtered_out:
            differences.append(Difference(dynamics_id, link.marketo_id, DYNAMICS, FILTER, spec.sync_filter,
                                          not link.paused, not filtered_out, email))
        differences += [
            Difference(dynamics_id, link.marketo_id, DYNAMICS, CHANGED, name, link.dynamics_values.get(name),
                       dyn.get(name), email)
            for name in changed_fields(dyn, link.dynamics_values, spec.marketo_fields)
        ]
        person = by_id.get(link.marketo_id) if spec.is_person and link.marketo_id is not None else None
        gone = spec.is_person and link.marketo_id is not None and person is None
        if gone:  # the deletion decides; the Dynamics values are not written to a person that is gone
            differences = [Difference(dynamics_id, link.marketo_id, MARKETO, VANISHED, email=email)]
        elif person is not None:
            differences += [
                Difference(dynamics_id, link.marketo_id, MARKETO, CHANGED, name, link.marketo_values.get(name),
                           person.get(name), email)
                for name in changed_fields(person, link.marketo_values, spec.two_way_fields)
            ]
        if not differences:
            continue
        if dynamics_id in failing or link.marketo_id in failing:
            found.left_to_replay += 1
            continue
        found.differences += differences
        if gone:
            found.events.append({"kind": "delete", "marketo_id": link.marketo_id, "losers": "[]", "date": None})
            continue
        if any(d.side == DYNAMICS for d in differences):
            found.dynamics_rows.append(dyn)
        if any(d.side == MARKETO for d in differences):
            found.marketo_rows.append(person)
    return found


# ---- reading both sides ---------------------------------------------------------------------------------


def select_entities(requested: Iterable[str] | None) -> list[str]:
    """The entities to reconcile: the named ones (default all) whose initial copy finished."""
    configured = list(load_entities())
    chosen = list(dict.fromkeys(requested or configured))
    unknown = [name for name in chosen if name not in configured]
    if unknown:
        raise RefusedToRun(f"unknown entities {unknown}; configured: {configured}")
    store = StateStore.from_connection()
    try:
        copied = [name for name in chosen if store.watermark(name, "dynamics") is not None]
    finally:
        store.dispose()
    if len(copied) < len(chosen):
        log.warning("not reconciling %s: their initial copy has not finished (nothing to compare with)",
                    [name for name in chosen if name not in copied])
    return copied


def _linked_ids(store: StateStore, entity: str) -> set[str]:
    """The Dynamics ids of the entity's live links (deleted and converted ones stay as they are)."""
    query = select(record_links.c.dynamics_id).where(record_links.c.entity == entity,
                                                    record_links.c.deleted_at.is_(None))
    with store.engine.connect() as conn:
        return set(conn.execute(query).scalars())


def _failing(store: StateStore, entity: str) -> set[Any]:
    rows = store.open_failures(entity=entity)
    return {r["dynamics_id"] for r in rows if r["dynamics_id"]} | {
        int(r["marketo_id"]) for r in rows if r["marketo_id"] is not None}


def _people(hook: MarketoHook, spec: EntitySpec, links: Iterable[Link]) -> pd.DataFrame:
    """The current values of the live linked people among `links` (300 ids a call)."""
    ids = sorted({link.marketo_id for link in links if link.marketo_id is not None and link.deleted_at is None})
    if not spec.is_person or not ids:
        return extract.marketo_people_empty(spec)
    hook.reserve(-(-len(ids) // BATCH), f"the reconcile's reads of {len(ids)} {spec.name} people")
    return extract.marketo_people(hook, spec, "id", ids)


def _gone_from_dynamics(hook: DynamicsHook, spec: EntitySpec, links: Iterable[Link],
                        failing: set[Any]) -> Findings:
    """Linked records the full read did not return: deleted when their GET says 404, else left alone.

    A record the sync user can no longer see (a security change) is not a delete: it is only warned about.
    """
    found = Findings()
    for link in links:
        if link.deleted_at is not None:
            continue
        found.checked += 1
        try:
            extract.dynamics_record(hook, spec, link.dynamics_id)
        except ApiError as exc:
            if exc.status != 404:
                log.warning("%s %s was not in the full read and cannot be read (%s): left alone", spec.name,
                            link.dynamics_id, exc)
                continue
        else:
            continue  # created or made visible during the read: the next reconcile compares it
        if link.dynamics_id in failing or link.marketo_id in failing:
            found.left_to_replay += 1
            continue
        found.dynamics_rows.append({"dynamics_id": link.dynamics_id, "deleted": True})
        found.differences.append(Difference(link.dynamics_id, link.marketo_id, DYNAMICS, VANISHED))
    return found


def _follow_merges(hook: MarketoHook, spec: EntitySpec, found: Findings) -> None:
    """A gone person whose Dynamics id another person now carries was merged into it: follow the merge.

    Marketo keeps the link field on the merge's survivor, so one read by that field (300 ids a call) tells
    a merge from a delete; the survivor's values are then the record's Marketo side, as in a cycle.
    """
    gone = {d.dynamics_id.lower(): d for d in found.differences if d.side == MARKETO and d.kind == VANISHED}
    if not gone or not spec.link_field:
        return
    hook.reserve(-(-len(gone) // BATCH), f"the reconcile's search for {len(gone)} merged {spec.name} people")
    for person in _clean(extract.marketo_people(hook, spec, spec.link_field, list(gone))):
        difference = gone.get(str(person.get(spec.link_field) or "").lower())
        if difference is None or int(person["marketo_id"]) == difference.marketo_id:
            continue
        survivor = int(person["marketo_id"])
        event = next(e for e in found.events if e["kind"] == "delete" and e["marketo_id"] == difference.marketo_id)
        event.update(kind="merge", marketo_id=survivor, losers=json.dumps([difference.marketo_id]))
        difference.kind, difference.new_value = MERGED, survivor
        found.marketo_rows.append(person)
        del gone[difference.dynamics_id.lower()]


def extract_step(entity: str, run: steps.RunInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read both sides in full and stage the differences as a cycle's extract would stage its changes.

    Returns (the XCom for transform, or {} when nothing differs; the counts). With nothing to repair, the
    run's summary is committed and the entity lock released here.
    """
    configured = load_entities()[entity]
    store = StateStore.from_connection()
    try:
        if store.watermark(entity, "dynamics") is None:
            raise RefusedToRun(f"{entity}: no initial copy to compare with; run the dynamics_initial_sync DAG first")
        if not run.dry_run:
            store.acquire_lock(entity, run.ctx, steps.LOCK_TTL)
        dynamics, marketo = DynamicsHook(), MarketoHook()
        schema, spec = steps.sync_schema(dynamics, marketo, configured, steps.last_schema(store, entity))
        failing, unseen = _failing(store, entity), _linked_ids(store, entity)
        found, reference_activities = Findings(), []
        part_rows = int(os.environ.get(steps.PART_ROWS_ENV, steps.PART_ROWS))
        for part in extract.dynamics_full_parts(dynamics, spec, part_rows):
            frame, activities = references.resolve(part.rows, spec, store, dynamics)
            ids = list(frame["dynamics_id"])
            unseen.difference_update(ids)
            links = store.links_by_dynamics(entity, ids)
            part_found = compare(spec, frame, _people(marketo, spec, links.values()), links, failing)
            fed = {row["dynamics_id"] for row in part_found.dynamics_rows}
            reference_activities += [a for a in activities if a.dynamics_id in fed]
            found.add(part_found)
        found.add(_gone_from_dynamics(dynamics, spec, store.links_by_dynamics(entity, unseen).values(), failing))
        if spec.is_person:
            _follow_merges(marketo, spec, found)
        counts = {"checked": found.checked, "drifted": found.drifted, "left_to_replay": found.left_to_replay,
                  "by_kind": dict(Counter(f"{d.kind}_in_{d.side}" for d in found.differences)),
                  "dynamics_calls": dynamics.calls, "marketo_calls": marketo.calls}
        log.info("%s reconcile: %s", entity, counts)
        for d in found.differences[:20]:
            log.info("  %s %s %s %s: %r -> %r", d.side, d.kind, d.dynamics_id, d.field or "", d.old_value,
                     d.new_value)
        if not found.differences:
            if not run.dry_run:
                store.commit_load(run.ctx, summaries=steps.run_summaries(spec, {}), release=entity)
            return {}, counts
        return _staged(spec, run, schema, configured, found, reference_activities), counts
    finally:
        store.dispose()


def _staged(spec: EntitySpec, run: steps.RunInfo, schema: dict[str, Any], configured: EntitySpec,
            found: Findings, reference_activities: list[Activity]) -> dict[str, Any]:
    """The differences in the shape of a cycle's extract XCom (as an older interval: no watermark moves)."""
    dyn = pd.DataFrame(found.dynamics_rows, columns=[*extract.DYN_META, *spec.marketo_fields])
    dyn["deleted"] = dyn["deleted"].astype(bool)  # every fed row says (compare: False, a delete: True)
    people = extract.marketo_people_empty(spec)
    if found.marketo_rows:
        people = pd.DataFrame(found.marketo_rows, columns=list(people.columns))
    drift = pd.DataFrame([{**asdict(d), "old_value": as_text(d.old_value), "new_value": as_text(d.new_value)}
                          for d in found.differences], columns=DRIFT_COLUMNS).astype(object)
    events = pd.DataFrame(found.events, columns=extract.EVENT_COLUMNS)
    return steps.staged_records(
        run, spec, configured, schema, dyn, people, events=events,
        activities=[*drift_activities(spec, found.differences), *reference_activities],
        drift=steps.stage(run, spec, "reconcile_drift", drift),
    )


# ---- reporting ------------------------------------------------------------------------------------------


def _direction(side: str) -> str:
    """Where a side's change has to go: a Dynamics change to Marketo, a Marketo change to Dynamics."""
    return transform.TO_MARKETO if side == DYNAMICS else transform.TO_DYNAMICS


def _where(side: str) -> str:
    return "in Dynamics" if side == DYNAMICS else "in Marketo"


def drift_activities(spec: EntitySpec, differences: Iterable[Difference]) -> list[Activity]:
    """One reconcile_drift row per difference: which side, which field, the snapshot's and the current value."""
    rows = []
    for d in differences:
        what = {
            CHANGED: f"{d.field} changed {_where(d.side)} outside the change feed: the sync last synced "
                     f"{d.old_value!r}, it now holds {d.new_value!r}",
            CREATED: f"the Dynamics {spec.name} has no link (created outside change tracking): to be copied",
            VANISHED: (f"the Marketo person {d.marketo_id} is gone with no delete the sync read: handled as a "
                       "Marketo delete" if d.side == MARKETO else
                       f"the Dynamics {spec.name} is gone with no delete in change tracking: handled as deleted"),
            MERGED: f"the Marketo person {d.marketo_id} is gone and person {d.new_value} now carries this "
                    f"{spec.name}'s id: handled as a Marketo merge",
            FILTER: f"{d.field} turned {'Yes' if d.new_value else 'No'} outside change tracking",
        }[d.kind]
        rows.append(Activity(DRIFT, spec.name, _direction(d.side), dynamics_id=d.dynamics_id,
                             marketo_id=d.marketo_id, email=d.email, field=d.field, old_value=d.old_value,
                             new_value=d.new_value, reason=what + "; handed to the normal merge rules"))
    return rows


def _after(validated: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per record, the values the planned writes and snapshot refreshes leave on both sides."""
    after: dict[str, dict[str, Any]] = {}
    for name in ("marketo_writes", "dynamics_writes", "refresh"):
        for path in (validated or {}).get(name) or []:
            for row in read_frame(path).to_dict("records"):
                after.setdefault(row["dynamics_id"], {}).update(json.loads(row["snap_marketo"] or "{}"))
    return after


def _rejected_ids(validated: dict[str, Any] | None) -> set[Any]:
    """The records the validate step set aside (their Dynamics and Marketo ids)."""
    ids: set[Any] = set()
    for name in ("marketo_writes_rejected", "dynamics_writes_rejected"):
        for path in (validated or {}).get(name) or []:
            for row in read_frame(path).to_dict("records"):
                ids |= {row["dynamics_id"], int(row["marketo_id"]) if row.get("marketo_id") is not None else None}
    return ids - {None}


def repaired_activity(spec: EntitySpec, d: dict[str, Any], now: dict[str, Any], link: Link | None) -> Activity:
    """The reconcile_repaired row of one difference: what both sides hold now, and which way it went."""
    direction, value = _direction(d["side"]), d["new_value"]
    if d["kind"] == CHANGED:
        value = now.get(d["field"], d["new_value"])
        if not same(as_text(value), d["new_value"]):  # the other side's value won (a collision)
            direction = _direction(MARKETO if d["side"] == DYNAMICS else DYNAMICS)
        reason = f"both sides now hold {as_text(value)!r} for {d['field']}"
    elif d["kind"] == CREATED:
        value = link.marketo_id if link is not None and link.marketo_id is not None else d["dynamics_id"]
        reason = f"copied to Marketo ({'person ' + str(value) if spec.is_person else spec.marketo_object})"
    elif d["kind"] == MERGED:
        reason = f"the link follows the surviving Marketo person {value}"
    elif d["kind"] == VANISHED:
        value = True
        reason = ("the link remembers the Marketo delete; the Dynamics record is kept" if d["side"] == MARKETO
                  else f"the link remembers the Dynamics delete; the Marketo {spec.marketo_object} record is kept"
                  + (f" and flagged {spec.deleted_field}" if spec.is_person else ""))
    else:
        reason = f"the link is {'resumed' if d['new_value'] == 'True' else 'paused'} as {d['field']} says"
    marketo_id = link.marketo_id if link is not None and link.marketo_id is not None else d["marketo_id"]
    return Activity(REPAIRED, spec.name, direction, dynamics_id=d["dynamics_id"], marketo_id=marketo_id,
                    email=d["email"], field=d["field"], old_value=d["old_value"], new_value=value, reason=reason)


def report_step(entity: str, counts: dict[str, Any], validated: dict[str, Any] | None,
                loaded: dict[str, Any] | None, drift_path: str | None, run: steps.RunInfo) -> dict[str, Any]:
    """Tell each difference repaired (no failure of its record in this run) or failed; log the repairs.

    The failures themselves (rejected by validation, refused by either API) are the load's own
    activity_log rows, as in any cycle; a load that did not run (the daily budget) repaired nothing.
    """
    result = {"entity": entity, **{k: counts.get(k, 0) for k in COUNT_KEYS}, "by_kind": counts.get("by_kind", {}),
              "dry_run": run.dry_run}
    drift = read_frame(drift_path)
    if drift.empty:
        return result
    if run.dry_run:  # nothing was written: what validation would let through, and what it would set aside
        rejected = _rejected_ids(validated)
        would_fail = {d["dynamics_id"] for d in drift.to_dict("records")
                      if {d["dynamics_id"], d["marketo_id"]} & rejected}
        del result["repaired"], result["failed"]
        return {**result, "would_repair": result["drifted"] - len(would_fail), "would_fail": len(would_fail)}
    spec = load_entities()[entity]
    store = StateStore.from_connection()
    try:
        failures = [a for a in store.activities(dag_id=run.dag_id, run_id=run.run_id)
                    if a["entity"] == entity and a["activity_type"] in RECORD_FAILURES]
        failed_ids = {a["dynamics_id"] for a in failures if a["dynamics_id"]} | {
            int(a["marketo_id"]) for a in failures if a["marketo_id"] is not None}
        links = store.links_by_dynamics(entity, drift["dynamics_id"])
        after = _after(validated)
        activities, repaired, failed, logged = [], set(), set(), set()
        for d in drift.to_dict("records"):
            link = links.get(d["dynamics_id"])
            if (d["dynamics_id"], d["kind"], d["field"]) in logged:
                continue  # a collision is a difference on each side, and one repair
            logged.add((d["dynamics_id"], d["kind"], d["field"]))
            ids = {d["dynamics_id"], d["marketo_id"], link.marketo_id if link else None}
            if loaded is None or ids & failed_ids:
                failed.add(d["dynamics_id"])
                continue
            repaired.add(d["dynamics_id"])
            activities.append(repaired_activity(spec, d, after.get(d["dynamics_id"], {}), link))
        store.commit_load(run.ctx, activities=activities)
    finally:
        store.dispose()
    result.update(repaired=len(repaired - failed), failed=len(failed))
    log.info("%s reconcile report: %s", entity, result)
    return result
