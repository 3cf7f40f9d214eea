"""The four steps of an entity's sync, as plain functions of (entity, previous step's XCom, run info).

The TaskFlow tasks in taskgroups.py are one-line calls into these, so a DAG file reads like the pipeline
diagram and this module holds the wiring between hooks, staging, the pure transform and the state store.
Every step returns only paths and counts for XCom; rows live in run-scoped Parquet files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from dynamics_sync import extract, load, marketo_activity, metadata, references, transform, validate
from dynamics_sync.entities import EntitySpec, load_entities
from dynamics_sync.errors import RefusedToRun
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook
from dynamics_sync.staging import read_frame, run_dir, write_frame
from dynamics_sync.state import Activity, Link, RunContext, StateStore, as_text

log = logging.getLogger(__name__)
INITIAL, INCREMENTAL = "initial", "incremental"
SCHEMA = "schema"  # watermarks side holding the Dynamics column types of the last run (schema drift)
MARKETO_OVERLAP = dt.timedelta(seconds=60)
# An entity's lock outlives a crashed run by this much at most; a healthy run releases it at its load commit.
LOCK_TTL = dt.timedelta(seconds=float(os.environ.get("DYNAMICS_SYNC_LOCK_TTL_S", 3600)))


@dataclass
class RunInfo:
    """What a step needs to know about the Airflow run it is part of."""

    dag_id: str
    run_id: str
    task_id: str | None = None
    interval_start: dt.datetime | None = None
    interval_end: dt.datetime | None = None

    @property
    def ctx(self) -> RunContext:
        return RunContext(self.dag_id, self.run_id, self.task_id)


def stage(run: RunInfo, spec: EntitySpec, name: str, frame: pd.DataFrame) -> str:
    return write_frame(frame, run_dir(run.dag_id, run.run_id, spec.name) / f"{name}.parquet")


def _activities_frame(activities: list[Activity]) -> pd.DataFrame:
    """Activities as a frame; values are text, as activity_log stores them (a column may mix types)."""
    columns = list(Activity.__dataclass_fields__)
    rows = [
        {**asdict(a), "old_value": as_text(a.old_value), "new_value": as_text(a.new_value)} for a in activities
    ]
    return pd.DataFrame(rows, columns=columns).astype(object)



def _activities(frame: pd.DataFrame) -> list[Activity]:
    return [Activity(**row) for row in frame.to_dict("records")]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---- extract -------------------------------------------------------------------------------------------


def _schema(dynamics: DynamicsHook, marketo: MarketoHook, spec: EntitySpec,
            last: dict[str, Any] | None) -> tuple[dict[str, Any], EntitySpec]:
    """Read both schemas; warn about each field left out; return the schema and the spec this run syncs."""
    schema = metadata.read_schema(dynamics, marketo, spec, last)
    for problem in metadata.problems(spec, schema):
        log.warning("%s.%s is left out of this run: %s", spec.name, problem.field, problem.reason)
    return schema, metadata.effective(spec, schema)


def extract_step(entity: str, mode: str, run: RunInfo) -> dict[str, Any]:
    configured = load_entities()[entity]
    store = StateStore.from_connection()
    store.acquire_lock(configured.name, run.ctx, LOCK_TTL)
    dynamics, marketo = DynamicsHook(), MarketoHook()
    started = _now()
    last_text = store.watermark(configured.name, SCHEMA)
    last = json.loads(last_text) if last_text else None
    schema: dict[str, Any] | None = None
    marks: dict[str, str | None] = {}
    interval = False
    raw: list[dict[str, Any]] = []  # a delta read's rows, before the schema says how to convert them
    delta: str | None = None
    spec = metadata.assumed(configured, last)
    mkto_rows, events = extract.marketo_people_empty(spec), pd.DataFrame(columns=extract.EVENT_COLUMNS)
    mkto_info: dict[str, Any] = {}
    if mode == INITIAL:
        schema, spec = _schema(dynamics, marketo, configured, last)
        dyn = extract.dynamics_full(dynamics, spec)
        marks = {"dynamics": dyn.delta_link}
        if spec.is_person:
            marks["marketo"] = extract.MarketoMark(since=started - MARKETO_OVERLAP).dumps()
    else:
        delta_link, synced_at = store.watermark_row(spec.name, "dynamics")
        marketo_mark = store.watermark(spec.name, "marketo")
        if not delta_link or (spec.is_person and not marketo_mark):
            raise RefusedToRun(
                f"{spec.name}: no watermark in the state store; run the dynamics_initial_sync DAG first"
            )
        interval = bool(run.interval_end and synced_at and run.interval_start and run.interval_end < synced_at)
        mark = extract.MarketoMark.loads(marketo_mark) if marketo_mark else None
        if interval:
            log.info("%s: re-syncing the older interval %s .. %s (watermarks stay where they are)",
                     spec.name, run.interval_start, run.interval_end)
            schema, spec = _schema(dynamics, marketo, configured, last)
            dyn = extract.dynamics_interval(dynamics, spec, run.interval_start, run.interval_end)
            mark = extract.MarketoMark(since=run.interval_start)
        elif extract.select_changed(spec, delta_link):
            log.warning("%s: the synced fields changed since the last run; every record is read once with the "
                        "new fields (like the native Quick Sync), and only what differs is written", spec.name)
            schema, spec = _schema(dynamics, marketo, configured, last)
            dyn = extract.dynamics_full(dynamics, spec)
            marks = {"dynamics": dyn.delta_link}
        else:
            raw, delta = extract.dynamics_delta(dynamics, delta_link)
            marks = {"dynamics": delta}
            dyn = extract.dynamics_frame(spec, [], delta)
        if spec.is_person:  # Marketo objects sync one way: Marketo is not read for them
            mk = extract.marketo_changes(marketo, store, spec, mark, run.interval_end if interval else None)
            mkto_rows, events = mk.rows, mk.events
            mkto_info = {"marketo_activities": mk.activities, "marketo_unlinked": mk.unlinked,
                         "marketo_merges_deletes": len(mk.events), "marketo_echoes_not_read": mk.echoes}
            if not interval:
                marks["marketo"] = mk.watermark
        if schema is None and (raw or len(mkto_rows) or len(events)):
            # Something changed: now the schema is worth its calls (types, rules, access, drift).
            schema, spec = _schema(dynamics, marketo, configured, last)
            dyn = extract.dynamics_frame(spec, raw, delta)
    dyn.rows, reference_activities = references.resolve(dyn.rows, spec, store, dynamics)
    counts = {
        "dynamics_rows": len(dyn.rows),
        "dynamics_deleted": dyn.deleted,
        "marketo_rows": len(mkto_rows),
        **mkto_info,
    }
    log.info("%s extract: %s (Dynamics calls %d, Marketo calls %d)", spec.name, counts, dynamics.calls, marketo.calls)
    if mode == INCREMENTAL and not interval and schema is None:
        # Nothing changed on either side: record the cycle and the new watermarks here, and end the entity's
        # run (the task returns nothing, so transform, validate and load are skipped without starting).
        echoes = {transform.TO_MARKETO: {"echoes": int(mkto_info.get("marketo_echoes_not_read", 0))}}
        store.commit_load(run.ctx, summaries=_summaries(spec, echoes), release=spec.name,
                          marks={(spec.name, side): v for side, v in marks.items() if v})
        store.dispose()
        log.info("%s: nothing changed on either side; watermarks advanced, nothing else to do", spec.name)
        return {}
    store.dispose()
    return {
        "entity": spec.name,
        "mode": mode,
        "interval": interval,
        # Only to tell echoes of the sync's own Dynamics writes apart in the counts: asked only when needed.
        "sync_user_id": dynamics.who_am_i() if mode == INCREMENTAL and len(dyn.rows) else None,
        "dynamics": stage(run, spec, "dynamics_rows", dyn.rows),
        "marketo": stage(run, spec, "marketo_rows", mkto_rows),
        "events": stage(run, spec, "marketo_events", events),
        "marks": {k: v for k, v in marks.items() if v},
        "schema": schema,
        "field_problems": [asdict(p) for p in metadata.new_problems(configured, schema)] if schema else [],
        "extract_activities": stage(run, spec, "extract_activities", _activities_frame(reference_activities)),
        "counts": counts,
    }


# ---- transform / conflict-resolve ----------------------------------------------------------------------


def _spec(entity: str, xcom: dict[str, Any]) -> EntitySpec:
    """The entity as this run syncs it: the config narrowed and sharpened by the metadata read in extract."""
    return metadata.effective(load_entities()[entity], xcom.get("schema"))


def transform_step(entity: str, extracted: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    spec = _spec(entity, extracted)
    store = StateStore.from_connection()
    dynamics = read_frame(extracted["dynamics"])
    marketo = read_frame(extracted["marketo"])
    links = store.links_by_dynamics(spec.name, dynamics.get("dynamics_id", pd.Series(dtype=object)))
    linked_marketo = store.links_by_marketo(int(m) for m in marketo.get("marketo_id", []) if m is not None)
    links.update({link.dynamics_id: link for link in linked_marketo.values() if link.entity == spec.name})
    converted: dict[str, Link] = {}
    if spec.converted_from and "converted_from" in dynamics:
        sources = [v for v in dynamics["converted_from"].dropna().unique() if v]
        converted = store.links_by_dynamics(spec.converted_from[0], sources)
    if extracted["mode"] == INITIAL:
        plan = transform.plan_initial(spec, dynamics, links, converted)
    else:
        events = read_frame(extracted["events"])
        event_ids = [int(e["marketo_id"]) for e in events.to_dict("records")]
        event_ids += [int(x) for e in events.to_dict("records") for x in json.loads(e["losers"])]
        linked_marketo.update(store.links_by_marketo(event_ids))
        plan = transform.plan_incremental(
            spec, dynamics, marketo, links, linked_marketo, extracted.get("sync_user_id"), events, converted
        )
    store.dispose()
    plan.activities[:0] = [
        Activity(p["kind"], spec.name, None, field=p["field"], reason=p["reason"] + "; left out of this run")
        for p in extracted.get("field_problems") or []
    ] + _activities(read_frame(extracted.get("extract_activities")))
    plan.counts["echoes"] += int(extracted["counts"].get("marketo_echoes_not_read", 0))
    frames = plan.frames(spec)
    counts = {
        "to_marketo": len(frames["marketo_writes"]),
        "to_dynamics": len(frames["dynamics_writes"]),
        "snapshot_refresh": len(frames["refresh"]),
        **dict(plan.counts),
    }
    log.info("%s transform: %s", spec.name, counts)
    return {
        **{k: extracted[k] for k in ("entity", "mode", "interval", "marks", "schema")},
        **{name: stage(run, spec, name, frame) for name, frame in frames.items()},
        "plan_activities": stage(run, spec, "plan_activities", _activities_frame(plan.activities)),
        "counts": counts,
    }


# ---- validate --------------------------------------------------------------------------------------------


def validate_step(entity: str, transformed: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    spec = _spec(entity, transformed)
    keep = ("entity", "mode", "interval", "marks", "schema", "refresh", "plan_activities")
    out = {k: transformed[k] for k in keep}
    counts = dict(transformed["counts"])
    for name, side in (("marketo_writes", "marketo"), ("dynamics_writes", "dynamics")):
        split = validate.split_invalid(read_frame(transformed[name]), spec, side)
        out[name] = stage(run, spec, f"{name}_valid", split.good)
        out[f"{name}_rejected"] = stage(run, spec, f"{name}_rejected", split.bad)
        counts[f"{name}_valid"], counts[f"{name}_rejected"] = len(split.good), len(split.bad)
    log.info("%s validate: %s", spec.name, counts)
    return {**out, "counts": counts}


# ---- load ------------------------------------------------------------------------------------------------


def load_step(entity: str, validated: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    spec = _spec(entity, validated)
    store = StateStore.from_connection()
    activities = _activities(read_frame(validated["plan_activities"]))
    rejected_m = read_frame(validated["marketo_writes_rejected"])
    rejected_d = read_frame(validated["dynamics_writes_rejected"])
    activities += load.rejected_activities(spec, rejected_m, transform.TO_MARKETO)
    activities += load.rejected_activities(spec, rejected_d, transform.TO_DYNAMICS)

    marketo_writes = read_frame(validated["marketo_writes"])
    to_marketo = load.load_marketo(MarketoHook(), spec, marketo_writes, store)
    to_dynamics = load.LoadResult()
    dynamics_writes = read_frame(validated["dynamics_writes"])
    if not dynamics_writes.empty:
        to_dynamics = load.load_dynamics(DynamicsHook(), spec, dynamics_writes)
    now = dt.datetime.now(dt.UTC)
    refresh = [
        Link(spec.name, r["dynamics_id"], int(r["marketo_id"]) if r["marketo_id"] is not None else None,
             _json(r["snap_dynamics"]), _json(r["snap_marketo"]), deleted_at=now if r.get("deleted_side") else None,
             deleted_side=r.get("deleted_side"), marketo_object=spec.marketo_object,
             paused=None if r.get("paused") is None else bool(r["paused"]))
        for r in read_frame(validated["refresh"]).to_dict("records")
    ]
    activities += to_marketo.activities + to_dynamics.activities
    counts = validated["counts"]
    collisions = [a for a in activities if a.activity_type == "collision_resolved"]
    summaries = _summaries(spec, {
        transform.TO_MARKETO: {"created": to_marketo.created, "updated": to_marketo.updated,
                               "rejected": len(rejected_m) + to_marketo.refused,
                               "echoes": counts.get("echoes", 0)},
        transform.TO_DYNAMICS: {"updated": to_dynamics.updated, "rejected": len(rejected_d) + to_dynamics.refused},
    }, collisions)
    marks = {} if validated["interval"] else {(spec.name, side): v for side, v in validated["marks"].items()}
    if validated["mode"] == INITIAL and (spec.name, "marketo") in marks:
        # The copy's own creates end here: the first cycle reads only field changes up to this moment.
        mark = extract.MarketoMark.loads(marks[(spec.name, "marketo")])
        mark.copied_until = dt.datetime.now(dt.UTC)
        marks[(spec.name, "marketo")] = mark.dumps()
    if validated.get("schema"):
        marks[(spec.name, SCHEMA)] = json.dumps(metadata.baseline(load_entities()[entity], validated["schema"]))
    store.commit_load(
        run.ctx,
        # Converted leads let go of their person first: one person mirrors one record.
        links=[*_released_leads(spec, marketo_writes, to_marketo.links, now), *to_marketo.links,
               *to_dynamics.links, *refresh],
        activities=activities,
        summaries=summaries,
        marks=marks,
        release=spec.name,
    )
    store.dispose()
    marketo_activity.post_failures(MarketoHook(), activities)
    result = {
        "entity": spec.name,
        "to_marketo": {"created": to_marketo.created, "updated": to_marketo.updated,
                       "rejected": summaries[0]["rejected"]},
        "to_dynamics": {"updated": to_dynamics.updated, "rejected": len(rejected_d) + to_dynamics.refused},
        "collisions": len(collisions),
        "echoes": counts.get("echoes", 0),
        "activities": len(activities),
        "watermarks_advanced": sorted(side for _, side in marks),
    }
    log.info("%s load: %s", spec.name, result)
    return result


def _summaries(spec: EntitySpec, done: dict[str, dict[str, int]],
               collisions: list[Activity] | None = None) -> list[dict[str, Any]]:
    """run_summary rows: one per direction the entity has (a one-way entity has no Marketo-to-Dynamics)."""
    directions = [transform.TO_MARKETO, transform.TO_DYNAMICS][: 2 if spec.two_way else 1]
    return [
        {"entity": spec.name, "direction": d, "created": 0, "updated": 0, "rejected": 0, "echoes": 0,
         **done.get(d, {}), "collisions": sum(1 for c in collisions or [] if c.direction == d)}
        for d in directions
    ]


def stop_for_budget(entity: str, run: RunInfo, reason: str) -> None:
    """A load the daily budget does not allow: log it, free the entity; the watermark stays for the next run."""
    store = StateStore.from_connection()
    try:
        store.commit_load(run.ctx, activities=[Activity("budget_spent", entity, transform.TO_MARKETO, reason=reason)],
                          release=entity)
    finally:
        store.dispose()
    log.warning("%s: %s", entity, reason)


def _json(text: Any) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _released_leads(spec: EntitySpec, writes: pd.DataFrame, loaded: list[Link], now: dt.datetime) -> list[Link]:
    """The lead links whose person a landed conversion write moved to the contact."""
    if not spec.converted_from or writes.empty:
        return []
    landed = {link.dynamics_id for link in loaded}
    return [
        Link(spec.converted_from[0], row["converted_from"], None, deleted_at=now,
             deleted_side=transform.CONVERTED)
        for row in writes.to_dict("records")
        if row["op"] == "convert" and row["dynamics_id"] in landed and row.get("converted_from")
    ]
