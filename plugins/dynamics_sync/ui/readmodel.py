"""What the Sync page shows, read from the state store: per-entity health and the activity log search.

Definitions, so that a number on the page always means the same thing:

- last successful sync: the latest moment an entity's load (or idle cycle) committed a run_summary row, or
  advanced one of its watermarks, whichever is later. A failed run commits neither.
- lag: now minus the last successful sync.
- open failure: an activity_log row of a failure type (state.RECORD_FAILURES) that no replay resolved and
  that no later success of the same record superseded (its link's snapshot was written after the row was
  logged: a failed record's snapshot is left untouched, so a newer one means the record synced since).
- backlog: the records waiting, i.e. the distinct records with an open failure, plus a budget stop
  (a `budget_spent` row the entity has not committed a load after); the age of the oldest of them.
- moved in the last day: created + updated in run_summary over the last 24 h, per direction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, and_, cast, exists, func, or_, select
from sqlalchemy.engine import Connection

from dynamics_sync.state import (
    RECORD_FAILURES,
    StateStore,
    activity_log,
    record_links,
    run_summary,
    snapshots,
    watermarks,
)

BUDGET_STOP = "budget_spent"
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# The activity types the sync writes (README, "Activity types"); the search offers these.
ACTIVITY_TYPES = (
    "collision_resolved", "rejected_by_validation", "refused_by_marketo", "refused_by_dynamics",
    "ambiguous_match", "already_linked", "deleted_upstream", "deleted_in_marketo", "merged_in_marketo",
    "inaccessible_field", "schema_drift", "unresolved_reference", "skipped_by_sync_filter", "converted",
    "sync_person_created", "sync_person_skipped", BUDGET_STOP,
)
WATERMARK_SIDES = ("dynamics", "marketo")  # not the schema baseline, which moves with any extract


def aware(moment: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands datetimes back without their zone; the store only ever writes UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def open_failure() -> Any:
    """The SQL condition "this activity_log row is an open failure" (see the module docstring)."""
    a = activity_log
    by_dynamics_link, by_dynamics_snap = record_links.alias("ld"), snapshots.alias("sd")
    by_marketo_link, by_marketo_snap = record_links.alias("lm"), snapshots.alias("sm")
    synced_later_by_dynamics = exists().where(
        by_dynamics_link.c.entity == a.c.entity, by_dynamics_link.c.dynamics_id == a.c.dynamics_id,
        by_dynamics_snap.c.link_id == by_dynamics_link.c.id, by_dynamics_snap.c.synced_at > a.c.logged_at)
    synced_later_by_marketo = exists().where(
        by_marketo_link.c.marketo_id == a.c.marketo_id,
        by_marketo_snap.c.link_id == by_marketo_link.c.id, by_marketo_snap.c.synced_at > a.c.logged_at)
    return and_(a.c.activity_type.in_(sorted(RECORD_FAILURES)), a.c.resolved_at.is_(None),
                ~synced_later_by_dynamics, ~synced_later_by_marketo)


def open_budget_stop() -> Any:
    """A budget stop the entity has not committed a load after: its changes are still waiting."""
    loaded_after = exists().where(run_summary.c.entity == activity_log.c.entity,
                                  run_summary.c.finished_at > activity_log.c.logged_at)
    return and_(activity_log.c.activity_type == BUDGET_STOP, ~loaded_after)


@dataclass
class EntityStatus:
    """One row of the page's entity table."""

    entity: str
    last_sync: dt.datetime | None = None
    last_run: tuple[str, str] | None = None  # (dag_id, run_id) of the latest run_summary row
    moved_24h: dict[str, int] = field(default_factory=dict)  # direction -> created + updated
    open_failures: int = 0
    waiting_records: int = 0
    oldest_failure: dt.datetime | None = None
    budget_stopped_since: dt.datetime | None = None

    def lag(self, now: dt.datetime) -> dt.timedelta | None:
        return None if self.last_sync is None else max(now - self.last_sync, dt.timedelta(0))

    @property
    def moved_total(self) -> int:
        return sum(self.moved_24h.values())

    @property
    def oldest_waiting(self) -> dt.datetime | None:
        moments = [m for m in (self.oldest_failure, self.budget_stopped_since) if m is not None]
        return min(moments) if moments else None

    def as_json(self, now: dt.datetime) -> dict[str, Any]:
        lag, oldest = self.lag(now), self.oldest_waiting
        return {
            "entity": self.entity,
            "last_sync": _iso(self.last_sync),
            "last_run": {"dag_id": self.last_run[0], "run_id": self.last_run[1]} if self.last_run else None,
            "lag_s": None if lag is None else round(lag.total_seconds(), 1),
            "moved_24h": dict(self.moved_24h),
            "moved_24h_total": self.moved_total,
            "open_failures": self.open_failures,
            "backlog": {
                "records": self.waiting_records,
                "budget_stopped_since": _iso(self.budget_stopped_since),
                "oldest": _iso(oldest),
                "oldest_age_s": None if oldest is None else round((now - oldest).total_seconds(), 1),
            },
        }


def entity_statuses(store: StateStore, entities: Sequence[str], now: dt.datetime) -> list[EntityStatus]:
    """The health of every configured entity, in config order (a handful of grouped queries)."""
    statuses = {name: EntityStatus(name) for name in entities}
    with store.engine.connect() as conn:
        _last_syncs(conn, statuses)
        since = now - dt.timedelta(days=1)
        moved = (select(run_summary.c.entity, run_summary.c.direction,
                        func.sum(run_summary.c.created + run_summary.c.updated))
                 .where(run_summary.c.finished_at >= since).group_by(run_summary.c.entity, run_summary.c.direction))
        for entity, direction, count in conn.execute(moved):
            if entity in statuses and count:
                statuses[entity].moved_24h[direction] = int(count)
        record = func.coalesce(activity_log.c.dynamics_id, cast(activity_log.c.marketo_id, String),
                               cast(activity_log.c.id, String))
        failures = (select(activity_log.c.entity, func.count(), func.count(record.distinct()),
                           func.min(activity_log.c.logged_at))
                    .where(open_failure()).group_by(activity_log.c.entity))
        for entity, rows, records, oldest in conn.execute(failures):
            if entity in statuses:
                status = statuses[entity]
                status.open_failures, status.waiting_records, status.oldest_failure = rows, records, aware(oldest)
        stops = (select(activity_log.c.entity, func.min(activity_log.c.logged_at))
                 .where(open_budget_stop()).group_by(activity_log.c.entity))
        for entity, oldest in conn.execute(stops):
            if entity in statuses:
                statuses[entity].budget_stopped_since = aware(oldest)
    return list(statuses.values())


def _last_syncs(conn: Connection, statuses: dict[str, EntityStatus]) -> None:
    latest = (select(run_summary.c.entity, func.max(run_summary.c.finished_at).label("at"))
              .group_by(run_summary.c.entity).subquery())
    runs = (select(run_summary.c.entity, run_summary.c.dag_id, run_summary.c.run_id, run_summary.c.finished_at)
            .join(latest, and_(latest.c.entity == run_summary.c.entity, latest.c.at == run_summary.c.finished_at)))
    for entity, dag_id, run_id, finished_at in conn.execute(runs):
        if entity in statuses:
            statuses[entity].last_sync, statuses[entity].last_run = aware(finished_at), (dag_id, run_id)
    marks = (select(watermarks.c.entity, func.max(watermarks.c.updated_at))
             .where(watermarks.c.side.in_(WATERMARK_SIDES)).group_by(watermarks.c.entity))
    for entity, updated_at in conn.execute(marks):
        status = statuses.get(entity)
        moment = aware(updated_at)
        if status is not None and moment is not None and (status.last_sync is None or moment > status.last_sync):
            status.last_sync = moment


@dataclass
class ActivityQuery:
    """The activity log search: free text (an email, or a Dynamics or Marketo record id), type, run, entity."""

    q: str = ""
    activity_type: str = ""
    run_id: str = ""
    entity: str = ""
    open_only: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    def __post_init__(self) -> None:
        self.q, self.activity_type = self.q.strip(), self.activity_type.strip()
        self.run_id, self.entity = self.run_id.strip(), self.entity.strip()
        self.limit = min(max(int(self.limit), 1), MAX_LIMIT)
        self.offset = max(int(self.offset), 0)

    def conditions(self) -> list[Any]:
        a, where = activity_log, []
        if self.q:
            # Email: any part of it, case-insensitive. Ids: exactly (Dynamics GUIDs are lower case).
            matches = [a.c.email.icontains(self.q, autoescape=True), a.c.dynamics_id == self.q.lower()]
            if self.q.isdigit() and len(self.q) < 19:  # fits Marketo's (BigInteger) ids
                matches.append(a.c.marketo_id == int(self.q))
            where.append(or_(*matches))
        if self.activity_type:
            where.append(a.c.activity_type == self.activity_type)
        if self.run_id:
            where.append(a.c.run_id == self.run_id)
        if self.entity:
            where.append(a.c.entity == self.entity)
        if self.open_only:
            where.append(open_failure())
        return where

    def params(self, **changes: Any) -> dict[str, str]:
        """The query as URL parameters (only those set), e.g. for the next page's link."""
        values: dict[str, Any] = {"q": self.q, "type": self.activity_type, "run_id": self.run_id,
                                  "entity": self.entity, "open": 1 if self.open_only else 0,
                                  "limit": 0 if self.limit == DEFAULT_LIMIT else self.limit, "offset": self.offset}
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in ("", 0, None)}


@dataclass
class ActivityPage:
    rows: list[dict[str, Any]]
    query: ActivityQuery
    has_more: bool


ROW_COLUMNS = ("id", "logged_at", "dag_id", "run_id", "task_id", "entity", "direction", "dynamics_id", "marketo_id",
               "email", "activity_type", "field", "old_value", "new_value", "reason", "resolved_at", "resolution",
               "resolved_by_run")


def search_activity(store: StateStore, query: ActivityQuery, dag_ids: Sequence[str]) -> ActivityPage:
    """Newest first, limited, and only rows written by the DAGs the user may read (`dag_ids`)."""
    statement = (select(*(activity_log.c[c] for c in ROW_COLUMNS))
                 .where(activity_log.c.dag_id.in_(list(dag_ids)), *query.conditions())
                 .order_by(activity_log.c.id.desc()).limit(query.limit + 1).offset(query.offset))
    with store.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(statement)]
    for row in rows:
        row["logged_at"], row["resolved_at"] = aware(row["logged_at"]), aware(row["resolved_at"])
    return ActivityPage(rows=rows[: query.limit], query=query, has_more=len(rows) > query.limit)


def recent_runs(store: StateStore, dag_ids: Sequence[str], limit: int = 20) -> list[tuple[str, str]]:
    """(dag_id, run_id) of the latest runs that committed anything, newest first: the run filter's choices."""
    last = func.max(run_summary.c.finished_at)
    statement = (select(run_summary.c.dag_id, run_summary.c.run_id).where(run_summary.c.dag_id.in_(list(dag_ids)))
                 .group_by(run_summary.c.dag_id, run_summary.c.run_id).order_by(last.desc()).limit(limit))
    with store.engine.connect() as conn:
        return [(dag_id, run_id) for dag_id, run_id in conn.execute(statement)]


def activity_types(store: StateStore) -> list[str]:
    """The types the search offers: the documented ones and any other the log holds (a newer DAG's)."""
    with store.engine.connect() as conn:
        found = set(conn.execute(select(activity_log.c.activity_type).distinct()).scalars())
    return [*ACTIVITY_TYPES, *sorted(found - set(ACTIVITY_TYPES))]


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
