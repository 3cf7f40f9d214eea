"""Replay: retry the records activity_log says did not sync, once their cause is fixed.

A failed record left its snapshot untouched, so the difference between its current values and the
snapshot is still there to be synced. The replay's extract reads exactly those records from both sides
(by id, now) and hands them to the normal transform, validate and load steps, which decide as every cycle
does (collision authority, validation, activity_log); as for an older interval, no watermark moves.
`resolve` then marks each replayed failure "resolved", or "still_failing" when the same record failed
again in this run (whose own activity_log row, with the reason as it stands now, is the open one).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd

from dynamics_sync import extract, references, steps
from dynamics_sync.entities import load_entities
from dynamics_sync.errors import ApiError
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook
from dynamics_sync.state import StateStore

log = logging.getLogger(__name__)


def _moment(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def selected_failures(store: StateStore, entity: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The open failures of `entity` the run's params choose (a run id, a time range, or all of them)."""
    return store.open_failures(entity=entity, run_id=params.get("failed_run_id") or None,
                               since=_moment(params.get("since")), until=_moment(params.get("until")))


def extract_step(entity: str, params: dict[str, Any], run: steps.RunInfo) -> dict[str, Any]:
    """Read the failed records of `entity` from both sides; the same XCom shape as a cycle's extract."""
    configured = load_entities()[entity]
    store = StateStore.from_connection()
    try:
        failures = selected_failures(store, entity, params)
        if not failures:
            log.info("%s: no open failure matches %s; nothing to replay", entity, params)
            return {}
        store.acquire_lock(configured.name, run.ctx, steps.LOCK_TTL)
        dynamics, marketo = DynamicsHook(), MarketoHook()
        schema, spec = steps.sync_schema(dynamics, marketo, configured, steps.last_schema(store, entity))
        by_marketo = store.links_by_marketo(int(f["marketo_id"]) for f in failures if f["marketo_id"] is not None)
        dynamics_ids = {f["dynamics_id"] for f in failures if f["dynamics_id"]}
        dynamics_ids |= {link.dynamics_id for link in by_marketo.values() if link.entity == entity}
        links = store.links_by_dynamics(entity, dynamics_ids)
        frames = []
        for record_id in sorted(dynamics_ids):
            try:
                frames.append(extract.dynamics_record(dynamics, spec, record_id))
            except ApiError as exc:  # gone since it failed: the next cycle's change feed reports the delete
                log.warning("%s %s cannot be read from Dynamics (%s); left to the change feed", entity, record_id,
                            exc)
        rows = pd.concat(frames, ignore_index=True) if frames else extract.dynamics_frame(spec, [], None).rows
        frame, reference_activities = references.resolve(rows, spec, store, dynamics)
        marketo_ids = sorted({link.marketo_id for link in links.values() if link.marketo_id is not None})
        mkto = (extract.marketo_people(marketo, spec, "id", marketo_ids) if spec.is_person and marketo_ids
                else extract.marketo_people_empty(spec))
        return steps.staged_records(
            run, spec, configured, schema, frame, mkto, activities=reference_activities,
            sync_user_id=dynamics.who_am_i(), counts={"replayed_failures": len(failures)},
            replayed=[int(f["id"]) for f in failures],
        )
    finally:
        store.dispose()


def resolve_step(entity: str, extracted: dict[str, Any], run: steps.RunInfo) -> dict[str, Any]:
    """Mark each replayed failure resolved, or still failing when its record failed again in this run."""
    from dynamics_sync.state import RECORD_FAILURES

    store = StateStore.from_connection()
    try:
        replayed = {int(i) for i in extracted.get("replayed") or []}
        rows = [a for a in store.open_failures(entity=entity) if a["id"] in replayed]
        again = [a for a in store.activities(dag_id=run.dag_id, run_id=run.run_id)
                 if a["activity_type"] in RECORD_FAILURES and a["entity"] == entity]
        failed_ids = {a["dynamics_id"] for a in again if a["dynamics_id"]} | {a["marketo_id"] for a in again
                                                                                if a["marketo_id"] is not None}
        outcomes = {
            int(a["id"]): "still_failing" if (a["dynamics_id"] in failed_ids or a["marketo_id"] in failed_ids)
            else "resolved"
            for a in rows
        }
        store.resolve_failures(outcomes, run.run_id)
        store.release_lock(entity, run.run_id)
    finally:
        store.dispose()
    counts = {"resolved": sum(v == "resolved" for v in outcomes.values()),
              "still_failing": sum(v == "still_failing" for v in outcomes.values())}
    log.info("%s replay: %s", entity, counts)
    return {"entity": entity, **counts}
