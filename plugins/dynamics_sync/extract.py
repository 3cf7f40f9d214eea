"""Extract: read what changed on each side, renamed to Marketo field names, as DataFrames.

Dynamics changes come from change tracking (a delta link per entity), not from a UI-only log, so bulk
loads and database-level updates are seen too. Marketo changes come from the lead-changes activity feed
since the last watermark; the current values of the changed people are then read, because the feed
only tells which fields changed, and a person may have changed several times.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dynamics_sync.entities import EntitySpec
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook
from dynamics_sync.state import StateStore

DYN_META = ["dynamics_id", "modified_by", "deleted"]
MKTO_META = ["marketo_id"]


@dataclass
class MarketoMark:
    """Where the Marketo change feed was left: a paging token, or a time to get one for."""

    token: str | None = None
    since: dt.datetime | None = None

    def dumps(self) -> str:
        return json.dumps({"token": self.token, "since": self.since.isoformat() if self.since else None})

    @classmethod
    def loads(cls, text: str) -> MarketoMark:
        raw = json.loads(text)
        return cls(token=raw.get("token"), since=_parse(raw["since"]) if raw.get("since") else None)


@dataclass
class DynamicsExtract:
    rows: pd.DataFrame
    delta_link: str | None
    deleted: int = 0


@dataclass
class MarketoExtract:
    rows: pd.DataFrame
    watermark: str | None
    activities: int = 0
    unlinked: int = 0
    lead_ids: list[int] = field(default_factory=list)


def _select(spec: EntitySpec) -> str:
    return ",".join([spec.key, *spec.dynamics_columns, "modifiedon", "_modifiedby_value"])


def _dynamics_frame(spec: EntitySpec, raw_rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    records = []
    for row in raw_rows:
        if str(row.get("@odata.context", "")).endswith("$deletedEntity"):
            records.append({"dynamics_id": row["id"], "modified_by": None, "deleted": True})
            continue
        records.append(
            {
                "dynamics_id": row[spec.key],
                "modified_by": row.get("_modifiedby_value"),
                "deleted": False,
                **spec.to_marketo(row),
            }
        )
    return pd.DataFrame(records, columns=[*DYN_META, *spec.marketo_fields])


def dynamics_full(hook: DynamicsHook, spec: EntitySpec) -> DynamicsExtract:
    """Every row of the entity, with change tracking on so the last page hands back a delta link."""
    rows: list[dict[str, Any]] = []
    delta = None
    for page, delta_link in hook.pages(spec.entity_set, params={"$select": _select(spec)}, track_changes=True):
        rows.extend(page)
        delta = delta_link or delta
    return DynamicsExtract(_dynamics_frame(spec, rows), delta)


def dynamics_changes(hook: DynamicsHook, spec: EntitySpec, delta_link: str) -> DynamicsExtract:
    """Rows created, changed or deleted since `delta_link`, and the link to use next time."""
    rows: list[dict[str, Any]] = []
    delta = None
    for page, delta_link_next in hook.pages(delta_link, track_changes=True):
        rows.extend(page)
        delta = delta_link_next or delta
    frame = _dynamics_frame(spec, rows)
    return DynamicsExtract(frame, delta, deleted=int(frame["deleted"].sum()) if len(frame) else 0)


def dynamics_interval(
    hook: DynamicsHook, spec: EntitySpec, start: dt.datetime, end: dt.datetime
) -> DynamicsExtract:
    """Rows modified in [start, end): how a backfill run re-syncs an older interval (no delta link)."""
    def stamp(moment: dt.datetime) -> str:
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    params = {
        "$select": _select(spec),
        "$filter": f"modifiedon ge {stamp(start)} and modifiedon lt {stamp(end)}",
    }
    rows = [row for page, _ in hook.pages(spec.entity_set, params=params) for row in page]
    return DynamicsExtract(_dynamics_frame(spec, rows), None)


def marketo_people(hook: MarketoHook, spec: EntitySpec, filter_type: str, values: Iterable[Any]) -> pd.DataFrame:
    """Current values of the people whose `filter_type` is in `values` (id or email)."""
    fields = ["id", *[f for f in spec.marketo_fields if f != "id"], spec.link_field]
    people = hook.get_leads(filter_type, list(values), fields)
    frame = pd.DataFrame(people, columns=fields)
    return frame.rename(columns={"id": "marketo_id"})


def marketo_changes(
    hook: MarketoHook,
    store: StateStore,
    spec: EntitySpec,
    watermark: MarketoMark,
    until: dt.datetime | None = None,
) -> MarketoExtract:
    """People linked to this entity whose synced fields changed after `watermark` (and before `until`)."""
    lead_ids: dict[int, None] = {}
    count = 0
    token = watermark.token
    pages = hook.lead_changes(spec.marketo_fields, token=watermark.token, since=watermark.since)
    for activities, next_token in pages:
        done = False
        for activity in activities:
            date = activity.get("activityDate")
            if until is not None and date and _parse(date) >= until:
                done = True
                break
            count += 1
            lead_ids[int(activity["leadId"])] = None
        token = next_token
        if done:
            break
    links = store.links_by_marketo(lead_ids)
    mine = [mid for mid, link in links.items() if link.entity == spec.name]
    rows = marketo_people(hook, spec, "id", mine) if mine else marketo_people_empty(spec)
    return MarketoExtract(
        rows=rows,
        watermark=MarketoMark(token=token).dumps() if token else None,
        activities=count,
        unlinked=sum(1 for mid in lead_ids if mid not in links),
        lead_ids=list(lead_ids),
    )


def marketo_people_empty(spec: EntitySpec) -> pd.DataFrame:
    return pd.DataFrame(columns=["marketo_id", *[f for f in spec.marketo_fields if f != "id"], spec.link_field])


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
