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
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from dynamics_sync import dry_run, extract, load, marketo_activity, memory, metadata, references, transform, validate
from dynamics_sync.entities import EntitySpec, load_entities, load_priority, sync_extract_order
from dynamics_sync.errors import ChangeTrackingExpired, RefusedToRun
from dynamics_sync.failpoints import crash_point
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook
from dynamics_sync.modes import INCREMENTAL, INITIAL
from dynamics_sync.staging import read_frame, run_dir, write_frame
from dynamics_sync.state import Activity, Link, RunContext, StateStore, as_text

log = logging.getLogger(__name__)
SCHEMA = "schema"  # watermarks side holding the Dynamics column types of the last run (schema drift)
MARKETO_OVERLAP = dt.timedelta(seconds=60)
# An entity's lock outlives a crashed run by this much at most; a healthy run releases it at its load commit.
LOCK_TTL = dt.timedelta(seconds=float(os.environ.get("DYNAMICS_SYNC_LOCK_TTL_S", 3600)))
# Rows per part of an initial copy: what one step holds in memory at a time (whole Dataverse pages).
PART_ROWS_ENV, PART_ROWS = "DYNAMICS_SYNC_PART_ROWS", 25_000
# An extract's XCom marks lookups it left as Dynamics ids (references.follow) for transform to resolve;
# replay and reconcile resolve in their extracts, which wait for the entities they point at.
UNRESOLVED = "unresolved"


@dataclass
class RunInfo:
    """What a step needs to know about the Airflow run it is part of."""

    dag_id: str
    run_id: str
    task_id: str | None = None
    interval_start: dt.datetime | None = None
    interval_end: dt.datetime | None = None
    # Plan and validate as always, write nothing (no API write, no state-store commit, no watermark).
    dry_run: bool = False
    run_type: str | None = None  # Airflow's: "scheduled", "manual", "backfill", ...

    @property
    def ctx(self) -> RunContext:
        return RunContext(self.dag_id, self.run_id, self.task_id)


def stage(run: RunInfo, spec: EntitySpec, name: str, frame: pd.DataFrame) -> str:
    return write_frame(frame, run_dir(run.dag_id, run.run_id, spec.name) / f"{name}.parquet")


def activities_frame(activities: list[Activity]) -> pd.DataFrame:
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


def sync_schema(dynamics: DynamicsHook, marketo: MarketoHook, spec: EntitySpec,
                last: dict[str, Any] | None) -> tuple[dict[str, Any], EntitySpec]:
    """Read both schemas; warn about each field left out; return the schema and the spec this run syncs."""
    schema = metadata.read_schema(dynamics, marketo, spec, last)
    for problem in metadata.problems(spec, schema):
        log.warning("%s.%s is left out of this run: %s", spec.name, problem.field, problem.reason)
    return schema, metadata.effective(spec, schema)


def last_schema(store: StateStore, entity: str) -> dict[str, Any] | None:
    """The schema the entity's last load recorded: what a new read is compared with (drift, new problems)."""
    text = store.watermark(entity, SCHEMA)
    return json.loads(text) if text else None


def staged_records(run: RunInfo, spec: EntitySpec, configured: EntitySpec, schema: dict[str, Any],
                   dynamics: pd.DataFrame, marketo: pd.DataFrame, *, events: pd.DataFrame | None = None,
                   activities: list[Activity] | None = None, sync_user_id: str | None = None,
                   counts: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Records a DAG chose to re-sync (not a change feed's), in the shape of an incremental extract's XCom.

    Replay and reconcile read the records they were asked about and hand them to the cycle's own
    transform, validate and load. "interval" tells those steps that no watermark moves, as for an older
    interval: the change feeds go on from where they were.
    """
    if events is None:
        events = pd.DataFrame(columns=extract.EVENT_COLUMNS)
    return {
        "entity": spec.name, "mode": INCREMENTAL, "interval": True, "sync_user_id": sync_user_id,
        "dynamics": [stage(run, spec, _part("dynamics_rows", 0), dynamics)],
        "extract_activities": [stage(run, spec, _part("extract_activities", 0), activities_frame(activities or []))],
        "marketo": stage(run, spec, "marketo_rows", marketo),
        "events": stage(run, spec, "marketo_events", events),
        "marks": {}, "schema": schema,
        # Reported here when this run is the first to see them (the load records the schema baseline).
        "field_problems": [asdict(p) for p in metadata.new_problems(configured, schema)],
        "counts": {"dynamics_rows": len(dynamics), "marketo_rows": len(marketo), **(counts or {})},
        **extra,
    }


@memory.part_by_part()
def extract_step(entity: str, mode: str, run: RunInfo) -> dict[str, Any]:
    configured = load_entities()[entity]
    store = StateStore.from_connection()
    if not run.dry_run:  # a dry run writes nothing, so it may look while a real run works
        store.acquire_lock(configured.name, run.ctx, LOCK_TTL)
    dynamics, marketo = DynamicsHook(), MarketoHook(priority=load_priority(entity))
    started = _now()
    last = last_schema(store, configured.name)
    schema: dict[str, Any] | None = None
    marks: dict[str, str | None] = {}
    interval = False
    raw: list[dict[str, Any]] = []  # a delta read's rows, before the schema says how to convert them
    delta: str | None = None
    spec = metadata.assumed(configured, last)
    mkto_rows, events = extract.marketo_people_empty(spec), pd.DataFrame(columns=extract.EVENT_COLUMNS)
    mkto_info: dict[str, Any] = {}
    dyn = extract.dynamics_frame(spec, [], None)
    notes: list[Activity] = []  # what the extract itself has to say in activity_log (a fallback it took)
    if mode == INITIAL:
        schema, spec = sync_schema(dynamics, marketo, configured, last)
        if spec.is_person:
            marks["marketo"] = extract.MarketoMark(since=started - MARKETO_OVERLAP).dumps()
    else:
        delta_link, synced_at = store.watermark_row(spec.name, "dynamics")
        marketo_mark = store.watermark(spec.name, "marketo")
        if not delta_link or (spec.is_person and not marketo_mark):
            raise RefusedToRun(
                f"{spec.name}: no watermark in the state store; run the dynamics_initial_sync DAG first"
            )
        # A backfill, or a cleared run of an interval the sync has passed since: re-sync that interval.
        interval = bool(run.interval_start and run.interval_end and (
            run.run_type == "backfill" or (synced_at and run.interval_end < synced_at)))
        mark = extract.MarketoMark.loads(marketo_mark) if marketo_mark else None
        if mark is not None and mark.copied_until is not None:
            mark.copied_until = _copies_end(store, mark.copied_until)
        if interval:
            log.info("%s: re-syncing the older interval %s .. %s (watermarks stay where they are)",
                     spec.name, run.interval_start, run.interval_end)
            schema, spec = sync_schema(dynamics, marketo, configured, last)
            dyn = extract.dynamics_interval(dynamics, spec, run.interval_start, run.interval_end)
            mark = extract.MarketoMark(since=run.interval_start)
        elif extract.select_changed(spec, delta_link):
            log.warning("%s: the synced fields changed since the last run; every record is read once with the "
                        "new fields (like the native Quick Sync), and only what differs is written", spec.name)
            schema, spec = sync_schema(dynamics, marketo, configured, last)
            dyn = extract.dynamics_full(dynamics, spec)
            marks = {"dynamics": dyn.delta_link}
        else:
            try:
                raw, delta = extract.dynamics_delta(dynamics, delta_link)
                marks = {"dynamics": delta}
                dyn = extract.dynamics_frame(spec, [], delta)
            except ChangeTrackingExpired as exc:
                # Dataverse no longer knows what changed since the link: compare every record instead.
                schema, spec = sync_schema(dynamics, marketo, configured, last)
                dyn = extract.dynamics_full_compare(dynamics, spec, store.live_dynamics_ids(spec.name))
                marks = {"dynamics": dyn.delta_link}
                reason = (f"Dynamics change tracking expired ({exc.message}); full compare instead: all "
                          f"{len(dyn.rows) - dyn.deleted} records read and compared with the last-synced snapshots "
                          f"(only what differs is written), {dyn.deleted} linked records no longer in Dynamics "
                          "taken as deleted; a new delta link is kept")
                log.warning("%s: %s", spec.name, reason)
                notes.append(Activity("change_tracking_expired", spec.name, transform.TO_MARKETO, reason=reason))
        if spec.is_person:  # Marketo objects sync one way: Marketo is not read for them
            mk = extract.marketo_changes(marketo, store, spec, mark, run.interval_end if interval else None)
            mkto_rows, events = mk.rows, mk.events
            mkto_info = {"marketo_activities": mk.activities, "marketo_unlinked": mk.unlinked,
                         "marketo_merges_deletes": len(mk.events), "marketo_echoes_not_read": mk.echoes}
            if not interval:
                marks["marketo"] = mk.watermark
        if schema is None and (raw or len(mkto_rows) or len(events)):
            # Something changed: now the schema is worth its calls (types, rules, access, drift).
            schema, spec = sync_schema(dynamics, marketo, configured, last)
            dyn = extract.dynamics_frame(spec, raw, delta)
    if mode == INCREMENTAL and not interval and schema is None:
        # Nothing changed on either side: record the cycle and the new watermarks here, and end the entity's
        # run (the task returns nothing, so transform, validate and load are skipped without starting).
        echoes = {transform.TO_MARKETO: {"echoes": int(mkto_info.get("marketo_echoes_not_read", 0))}}
        if not run.dry_run:
            store.commit_load(run.ctx, summaries=run_summaries(spec, echoes), release=spec.name,
                              marks={(spec.name, side): v for side, v in marks.items() if v})
        store.dispose()
        log.info("%s extract: nothing changed on either side (Dynamics calls %d, Marketo calls %d); %s",
                 spec.name, dynamics.calls, marketo.calls,
                 "a dry run: no watermark moved" if run.dry_run else "watermarks advanced, nothing else to do")
        return {}
    # The initial copy reads the table a part at a time; every later step works part by part too.
    parts = (extract.dynamics_full_parts(dynamics, spec, int(os.environ.get(PART_ROWS_ENV, PART_ROWS)))
             if mode == INITIAL else [dyn])
    staged: dict[str, list[str]] = {"dynamics": [], "extract_activities": []}
    rows = deleted = 0
    # Lookups stay Dynamics ids until transform, which waits for the entities they point at to load,
    # unless this extract waited for them itself (entities.sync_extract_order).
    resolve_here = bool(sync_extract_order()[entity])
    for i, part in enumerate(parts):
        reference_activities: list[Activity] = []
        if resolve_here:
            frame, reference_activities = references.resolve(part.rows, spec, store, dynamics)
        else:
            frame = references.follow(part.rows, spec, dynamics)
        staged["dynamics"].append(stage(run, spec, _part("dynamics_rows", i), frame))
        staged["extract_activities"].append(stage(run, spec, _part("extract_activities", i),
                                                  activities_frame([*(notes if i == 0 else []),
                                                                    *reference_activities])))
        rows, deleted = rows + len(frame), deleted + part.deleted
        if mode == INITIAL and part.delta_link:
            marks["dynamics"] = part.delta_link
        del frame, part
        if mode == INITIAL:  # parts are read as they go: free this one before the next is read
            memory.release()
    counts = {"dynamics_rows": rows, "dynamics_deleted": deleted, "marketo_rows": len(mkto_rows), **mkto_info}
    log.info("%s extract: %s in %d part(s) (Dynamics calls %d, Marketo calls %d)", spec.name, counts,
             len(staged["dynamics"]), dynamics.calls, marketo.calls)
    store.dispose()
    crash_point("extract.staged", spec.name)
    return {
        "entity": spec.name,
        "mode": mode,
        "interval": interval,
        # Only to tell echoes of the sync's own Dynamics writes apart in the counts: asked only when needed.
        "sync_user_id": dynamics.who_am_i() if mode == INCREMENTAL and rows else None,
        **staged,
        **({} if resolve_here else {"references": UNRESOLVED}),
        "marketo": stage(run, spec, "marketo_rows", mkto_rows),
        "events": stage(run, spec, "marketo_events", events),
        "marks": {k: v for k, v in marks.items() if v},
        "schema": schema,
        "field_problems": [asdict(p) for p in metadata.new_problems(configured, schema)] if schema else [],
        "counts": counts,
    }


def _copies_end(store: StateStore, own: dt.datetime) -> dt.datetime:
    """When the last initial copy of a person entity ended, if its first cycle is still to come.

    Leads and contacts are people in one Marketo database: the New Lead activities of the contact copy
    come after the lead copy's end, so every person entity reads field changes only up to the latest end.
    """
    ends = [own]
    for spec in load_entities().values():
        text = store.watermark(spec.name, "marketo") if spec.is_person else None
        other = extract.MarketoMark.loads(text) if text else None
        if other is not None and other.token is None and other.copied_until is not None:
            ends.append(other.copied_until)
    return max(ends)


def _part(name: str, index: int) -> str:
    return f"{name}_{index:04d}"


# ---- transform / conflict-resolve ----------------------------------------------------------------------


def _spec(entity: str, xcom: dict[str, Any]) -> EntitySpec:
    """The entity as this run syncs it: the config narrowed and sharpened by the metadata read in extract."""
    return metadata.effective(load_entities()[entity], xcom.get("schema"))


@memory.part_by_part()
def transform_step(entity: str, extracted: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    spec = _spec(entity, extracted)
    store = StateStore.from_connection()
    staged: dict[str, list[str]] = {name: [] for name in (*transform.FRAMES, "plan_activities")}
    counts: Counter[str] = Counter()
    for i, (dynamics_path, activities_path) in enumerate(zip(extracted["dynamics"], extracted["extract_activities"],
                                                             strict=True)):
        if i:
            memory.release()
        dynamics, references_unresolved = read_frame(dynamics_path), []
        if extracted.get("references") == UNRESOLVED:
            dynamics, references_unresolved = references.resolve(dynamics, spec, store, None)
        # Marketo's side (incremental runs only, which have a single part) is planned with the first part.
        plan = _plan(spec, extracted, store, dynamics, first=i == 0)
        plan.activities[:0] = [*_activities(read_frame(activities_path)), *references_unresolved]
        if i == 0:
            plan.activities[:0] = [
                Activity(p["kind"], spec.name, None, field=p["field"], reason=p["reason"] + "; left out of this run")
                for p in extracted.get("field_problems") or []
            ]
            plan.counts["echoes"] += int(extracted["counts"].get("marketo_echoes_not_read", 0))
        frames = plan.frames(spec)
        for name in frames:
            staged[name].append(stage(run, spec, _part(name, i), frames[name]))
        staged["plan_activities"].append(stage(run, spec, _part("plan_activities", i),
                                               activities_frame(plan.activities)))
        counts.update({"to_marketo": len(frames["marketo_writes"]), "to_dynamics": len(frames["dynamics_writes"]),
                       "snapshot_refresh": len(frames["refresh"]), **plan.counts})
        del dynamics, plan, frames
    store.dispose()
    log.info("%s transform: %s in %d part(s)", spec.name, dict(counts), len(extracted["dynamics"]))
    crash_point("transform.staged", spec.name)
    return {
        **{k: extracted[k] for k in ("entity", "mode", "interval", "marks", "schema")},
        **staged,
        "counts": dict(counts),
    }


def _plan(spec: EntitySpec, extracted: dict[str, Any], store: StateStore, dynamics: pd.DataFrame,
          first: bool) -> transform.Plan:
    """The write plan of one part, against the links the state store holds for its records."""
    marketo = read_frame(extracted["marketo"]) if first else pd.DataFrame()
    links = store.links_by_dynamics(spec.name, dynamics.get("dynamics_id", pd.Series(dtype=object)))
    linked_marketo = store.links_by_marketo(int(m) for m in marketo.get("marketo_id", []) if m is not None)
    links.update({link.dynamics_id: link for link in linked_marketo.values() if link.entity == spec.name})
    converted: dict[str, Link] = {}
    if spec.converted_from and "converted_from" in dynamics:
        sources = [v for v in dynamics["converted_from"].dropna().unique() if v]
        converted = store.links_by_dynamics(spec.converted_from[0], sources)
    if extracted["mode"] == INITIAL:
        return transform.plan_initial(spec, dynamics, links, converted)
    events = read_frame(extracted["events"])
    event_ids = [int(e["marketo_id"]) for e in events.to_dict("records")]
    event_ids += [int(x) for e in events.to_dict("records") for x in json.loads(e["losers"])]
    linked_marketo.update(store.links_by_marketo(event_ids))
    if marketo.empty:
        marketo = extract.marketo_people_empty(spec)
    return transform.plan_incremental(
        spec, dynamics, marketo, links, linked_marketo, extracted.get("sync_user_id"), events, converted
    )


# ---- validate --------------------------------------------------------------------------------------------


@memory.part_by_part()
def validate_step(entity: str, transformed: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    spec = _spec(entity, transformed)
    keep = ("entity", "mode", "interval", "marks", "schema", "refresh", "plan_activities")
    out: dict[str, Any] = {k: transformed[k] for k in keep}
    counts = dict(transformed["counts"])
    validated = 0  # parts of either side so far
    for name, side in (("marketo_writes", "marketo"), ("dynamics_writes", "dynamics")):
        out[name], out[f"{name}_rejected"] = [], []
        counts[f"{name}_valid"] = counts[f"{name}_rejected"] = 0
        paths = transformed[name]
        for i, path in enumerate(paths):
            if validated:
                memory.release()
            validated += 1
            # Data Docs show the suite's last run: rebuilt once, with the last part.
            split = validate.split_invalid(read_frame(path), spec, side, data_docs=i == len(paths) - 1)
            out[name].append(stage(run, spec, _part(f"{name}_valid", i), split.good))
            out[f"{name}_rejected"].append(stage(run, spec, _part(f"{name}_rejected", i), split.bad))
            counts[f"{name}_valid"] += len(split.good)
            counts[f"{name}_rejected"] += len(split.bad)
            del split
    log.info("%s validate: %s", spec.name, counts)
    crash_point("validate.staged", spec.name)
    return {**out, "counts": counts}


# ---- load ------------------------------------------------------------------------------------------------


LOAD_INPUTS = ("plan_activities", "marketo_writes_rejected", "dynamics_writes_rejected", "marketo_writes",
               "dynamics_writes", "refresh")


@memory.part_by_part()
def load_step(entity: str, validated: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    """Write each part and commit what it did; the last part's commit also advances the watermarks.

    A part's links, snapshots and activity rows are committed as soon as it is written, so a copy that
    stops (a crash, the daily budget) keeps what landed: its rerun finds those records linked and leaves
    the ones whose values it already holds alone. The watermarks move only with the last part.
    """
    spec = _spec(entity, validated)
    parts = list(zip(*(validated[name] for name in LOAD_INPUTS), strict=True))
    if run.dry_run:
        read = [dict(zip(LOAD_INPUTS, (read_frame(path) for path in paths), strict=True)) for paths in parts]
        result = dry_run.report(spec, read)
        log.info("%s dry run, nothing written: %s", spec.name, json.dumps(
            {d: {k: v for k, v in result[d].items() if k != "sample"} for d in (transform.TO_MARKETO,
                                                                                 transform.TO_DYNAMICS)}))
        return result
    store = StateStore.from_connection()
    marketo, dynamics = MarketoHook(priority=load_priority(entity)), DynamicsHook()
    done = {transform.TO_MARKETO: Counter(), transform.TO_DYNAMICS: Counter()}
    collisions: list[Activity] = []
    logged, advanced = 0, []

    def commit(i: int, links: list[Link], activities: list[Activity], summaries: list[dict[str, Any]],
               marks: dict[tuple[str, str], str | None], last: bool) -> None:
        store.commit_load(run.ctx, links=links, activities=activities, summaries=summaries, marks=marks,
                          release=spec.name if last else None)
        crash_point("load.committed", spec.name)
        marketo_activity.post_failures(marketo, activities)
        if len(parts) > 1:
            log.info("%s load: part %d of %d committed", spec.name, i + 1, len(parts))

    # A part's commit runs beside the next part's writes, so the API's rate window never waits on the
    # state store. Commits stay in part order (each waits for the one before), and a load that stops
    # between them has its written parts found linked, or linked by their Dynamics id, on the rerun.
    pending: Future[None] | None = None

    def linked_people(ids: list[int]) -> dict[int, Link]:
        if pending is not None:  # a person an earlier part linked must be seen as linked
            pending.result()
        return store.links_by_marketo(ids)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-commit") as committer:
        for i, paths in enumerate(parts):
            if i:
                memory.release()
            frames = dict(zip(LOAD_INPUTS, (read_frame(path) for path in paths), strict=True))
            activities = _activities(frames["plan_activities"])
            activities += load.rejected_activities(spec, frames["marketo_writes_rejected"], transform.TO_MARKETO)
            activities += load.rejected_activities(spec, frames["dynamics_writes_rejected"], transform.TO_DYNAMICS)
            to_marketo = load.load_marketo(marketo, spec, frames["marketo_writes"], linked_people)
            to_dynamics = load.LoadResult()
            if not frames["dynamics_writes"].empty:
                to_dynamics = load.load_dynamics(dynamics, spec, frames["dynamics_writes"])
            now = dt.datetime.now(dt.UTC)
            activities += to_marketo.activities + to_dynamics.activities
            collisions += [a for a in activities if a.activity_type == "collision_resolved"]
            done[transform.TO_MARKETO].update(created=to_marketo.created, updated=to_marketo.updated,
                                              rejected=len(frames["marketo_writes_rejected"]) + to_marketo.refused)
            done[transform.TO_DYNAMICS].update(updated=to_dynamics.updated,
                                               rejected=len(frames["dynamics_writes_rejected"]) + to_dynamics.refused)
            last = i == len(parts) - 1
            marks = _load_marks(spec, validated, entity) if last else {}
            summaries = run_summaries(spec, {
                transform.TO_MARKETO: {**done[transform.TO_MARKETO], "echoes": validated["counts"].get("echoes", 0)},
                transform.TO_DYNAMICS: dict(done[transform.TO_DYNAMICS]),
            }, collisions) if last else []
            crash_point("load.written", spec.name)
            # Converted leads let go of their person first: one person mirrors one record.
            links = [*_released_leads(spec, frames["marketo_writes"], to_marketo.links, now), *to_marketo.links,
                     *to_dynamics.links, *_refresh_links(spec, frames["refresh"], now)]
            if pending is not None:
                pending.result()  # the part before is committed (or its failure ends the load here)
            pending = committer.submit(commit, i, links, activities, summaries, marks, last)
            if last:
                advanced = sorted(side for _, side in marks)
            logged += len(activities)
            if len(parts) > 1:
                log.info("%s load: part %d of %d written (%s)", spec.name, i + 1, len(parts),
                         {d: dict(c) for d, c in done.items()})
            del frames, activities, links, to_marketo, to_dynamics
        if pending is not None:
            pending.result()
    store.dispose()
    result = {
        "entity": spec.name,
        "to_marketo": {k: done[transform.TO_MARKETO][k] for k in ("created", "updated", "rejected")},
        "to_dynamics": {k: done[transform.TO_DYNAMICS][k] for k in ("updated", "rejected")},
        "collisions": len(collisions),
        "echoes": validated["counts"].get("echoes", 0),
        "activities": logged,
        "watermarks_advanced": advanced,
    }
    log.info("%s load: %s", spec.name, result)
    return result


def _load_marks(spec: EntitySpec, validated: dict[str, Any], entity: str) -> dict[tuple[str, str], str | None]:
    """The watermarks a load advances (none for an older interval), plus the schema baseline."""
    marks = {} if validated["interval"] else {(spec.name, side): v for side, v in validated["marks"].items()}
    if validated["mode"] == INITIAL and (spec.name, "marketo") in marks:
        # The copy's own creates end here: the first cycle reads only field changes up to this moment.
        mark = extract.MarketoMark.loads(marks[(spec.name, "marketo")])
        mark.copied_until = dt.datetime.now(dt.UTC)
        marks[(spec.name, "marketo")] = mark.dumps()
    if validated.get("schema"):
        marks[(spec.name, SCHEMA)] = json.dumps(metadata.baseline(load_entities()[entity], validated["schema"]))
    return marks


def _refresh_links(spec: EntitySpec, refresh: pd.DataFrame, now: dt.datetime) -> list[Link]:
    return [
        Link(spec.name, r["dynamics_id"], int(r["marketo_id"]) if r["marketo_id"] is not None else None,
             _json(r["snap_dynamics"]), _json(r["snap_marketo"]), deleted_at=now if r.get("deleted_side") else None,
             deleted_side=r.get("deleted_side"), marketo_object=spec.marketo_object,
             paused=None if r.get("paused") is None else bool(r["paused"]))
        for r in refresh.to_dict("records")
    ]


def run_summaries(spec: EntitySpec, done: dict[str, dict[str, int]],
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
