"""Extract: read what changed on each side, renamed to Marketo field names, as DataFrames.

Dynamics changes come from change tracking (a delta link per entity), not from a UI-only log, so bulk
loads and database-level updates are seen too. Marketo changes come from the lead-changes activity feed
since the last watermark; the current values of the changed people are then read, because the feed
only tells which fields changed, and a person may have changed several times.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dynamics_sync import fieldtypes
from dynamics_sync.conflict import same
from dynamics_sync.entities import EntitySpec
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook
from dynamics_sync.state import StateStore

# sync_filter: the record's sync filter value (None when unset or not configured); converted_from: the
# Dynamics record it was qualified from (lead conversion).
DYN_META = ["dynamics_id", "modified_by", "deleted", "sync_filter", "converted_from"]
MKTO_META = ["marketo_id"]


CHANGE_DATA_VALUE, MERGE_LEADS, DELETE_LEAD = 13, 32, 37
EVENT_COLUMNS = ["kind", "marketo_id", "losers", "date"]


@dataclass
class MarketoMark:
    """Where Marketo's two feeds were left (field changes; merges and deletes): paging tokens, or a time.

    `copied_until`: the end of an initial copy (set by its load). Between `since` and then, Marketo's
    lead-changes feed holds a New Lead activity for every person the copy created (a million pages' worth
    after a big copy); the first cycle reads only field changes there (Change Data Value activities), then
    the lead-changes feed from `copied_until` on.
    """

    token: str | None = None
    events_token: str | None = None
    since: dt.datetime | None = None
    copied_until: dt.datetime | None = None

    def dumps(self) -> str:
        return json.dumps({"token": self.token, "events_token": self.events_token,
                           "since": self.since.isoformat() if self.since else None,
                           "copied_until": self.copied_until.isoformat() if self.copied_until else None})

    @classmethod
    def loads(cls, text: str) -> MarketoMark:
        raw = json.loads(text)
        return cls(token=raw.get("token"), events_token=raw.get("events_token"),
                   since=_parse(raw["since"]) if raw.get("since") else None,
                   copied_until=_parse(raw["copied_until"]) if raw.get("copied_until") else None)


@dataclass
class DynamicsExtract:
    rows: pd.DataFrame
    delta_link: str | None
    deleted: int = 0


@dataclass
class MarketoExtract:
    rows: pd.DataFrame
    watermark: str | None
    events: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EVENT_COLUMNS))
    activities: int = 0
    unlinked: int = 0
    echoes: int = 0  # linked people whose changes all ended at the last-synced values (not read back)


def _converted_column(spec: EntitySpec) -> str | None:
    return f"_{spec.converted_from[1]}_value" if spec.converted_from else None


def _select(spec: EntitySpec) -> str:
    extra = [c for c in (spec.sync_filter, _converted_column(spec)) if c]
    columns = [spec.key, *[f.read_column for f in spec.fields], *extra, "modifiedon", "_modifiedby_value"]
    return ",".join(dict.fromkeys(columns))


def marketo_values(spec: EntitySpec, row: dict[str, Any]) -> dict[str, Any]:
    """A Dynamics row's mapped values, renamed and converted to the form Marketo holds them in.

    Lookups stay Dynamics ids here; references.resolve turns them into what Marketo knows the target by.
    """
    values = {}
    for f in spec.fields:
        value = row.get(f.read_column)
        if not f.lookup:
            value = fieldtypes.to_marketo(value, f.dynamics_type, f.marketo_type, dict(f.labels or ()))
        values[f.marketo] = value
    return values


def _dynamics_frame(spec: EntitySpec, raw_rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    records = []
    converted = _converted_column(spec)
    for row in raw_rows:
        if str(row.get("@odata.context", "")).endswith("$deletedEntity"):
            records.append({"dynamics_id": row["id"], "modified_by": None, "deleted": True})
            continue
        records.append(
            {
                "dynamics_id": row[spec.key],
                "modified_by": row.get("_modifiedby_value"),
                "deleted": False,
                "sync_filter": row.get(spec.sync_filter) if spec.sync_filter else None,
                "converted_from": row.get(converted) if converted else None,
                **marketo_values(spec, row),
            }
        )
    return pd.DataFrame(records, columns=[*DYN_META, *spec.marketo_fields])


def select_changed(spec: EntitySpec, delta_link: str) -> bool:
    """Whether the delta link reads other columns than this run needs (a field was added to the config).

    A delta link keeps the $select it was issued for, so a newly configured field would never be read;
    the caller re-reads the entity once with the new columns, like the native sync's Quick Sync.
    """
    from urllib.parse import parse_qs, urlsplit

    issued = parse_qs(urlsplit(delta_link).query).get("$select")
    return bool(issued) and set(issued[0].split(",")) != set(_select(spec).split(","))


def dynamics_record(hook: DynamicsHook, spec: EntitySpec, record_id: str) -> pd.DataFrame:
    """One record, as a one-row frame like the change reads give (e.g. right after sync person created it)."""
    row = hook.request("GET", f"{spec.entity_set}({record_id})", params={"$select": _select(spec)}).json()
    return _dynamics_frame(spec, [row])


def dynamics_full_parts(hook: DynamicsHook, spec: EntitySpec, part_rows: int) -> Iterator[DynamicsExtract]:
    """Every row of the entity, `part_rows` rows a frame (whole pages), so no step holds the whole table.

    Change tracking is on, so the last page (and so the last part) hands back the delta link.
    """
    rows: list[dict[str, Any]] = []
    parts = 0
    for page, delta_link in hook.pages(spec.entity_set, params={"$select": _select(spec)}, track_changes=True):
        rows.extend(page)
        del page
        if delta_link or len(rows) >= part_rows:
            parts += 1
            # The page rows are let go of once the frame is built, not when the next part starts.
            yield DynamicsExtract(_dynamics_frame(spec, _taken(rows)), delta_link)
    if rows or not parts:  # always at least one part, so the later steps always commit
        yield DynamicsExtract(_dynamics_frame(spec, _taken(rows)), None)


def _taken(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, leaving the list empty: only the caller holds them."""
    taken = rows.copy()
    rows.clear()
    return taken


def dynamics_full(hook: DynamicsHook, spec: EntitySpec) -> DynamicsExtract:
    """Every row of the entity in one frame, and the delta link to read changes from next time."""
    [whole] = dynamics_full_parts(hook, spec, part_rows=sys.maxsize)  # one part: the last page ends it
    return whole


def dynamics_full_compare(hook: DynamicsHook, spec: EntitySpec, linked: Iterable[str]) -> DynamicsExtract:
    """Every row, plus a deletion for each linked record the table no longer holds: what a delta read would
    have reported since an expired change-tracking token, found by comparing instead (with a new delta link).

    The rows then meet the snapshots in the three-way merge like any change, so only what differs is written.
    """
    full = dynamics_full(hook, spec)
    present = set(full.rows["dynamics_id"])
    gone = [{"@odata.context": f"$metadata#{spec.entity_set}/$deletedEntity", "id": dynamics_id}
            for dynamics_id in dict.fromkeys(linked) if dynamics_id not in present]
    if not gone:
        return full
    rows = pd.concat([full.rows, _dynamics_frame(spec, gone)], ignore_index=True)
    return DynamicsExtract(rows, full.delta_link, deleted=len(gone))


def dynamics_delta(hook: DynamicsHook, delta_link: str) -> tuple[list[dict[str, Any]], str | None]:
    """Raw rows created, changed or deleted since `delta_link`, and the link to use next time.

    Raw, so that an idle cycle costs this one call: the schema (needed to convert values) is read only
    when something changed.
    """
    rows: list[dict[str, Any]] = []
    delta = None
    for page, delta_link_next in hook.pages(delta_link, track_changes=True):
        rows.extend(page)
        delta = delta_link_next or delta
    return rows, delta


def dynamics_frame(spec: EntitySpec, raw_rows: list[dict[str, Any]], delta_link: str | None) -> DynamicsExtract:
    frame = _dynamics_frame(spec, raw_rows)
    return DynamicsExtract(frame, delta_link, deleted=int(frame["deleted"].sum()) if len(frame) else 0)


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


def _read_feed(
    pages: Iterable[tuple[list[dict[str, Any]], str]], token: str | None, until: dt.datetime | None
) -> tuple[list[dict[str, Any]], str | None]:
    """All activities of a feed (before `until`, if given) and the token to resume from."""
    read: list[dict[str, Any]] = []
    for activities, next_token in pages:
        for activity in activities:
            date = activity.get("activityDate")
            if until is not None and date and _parse(date) >= until:
                return read, token
            read.append(activity)
        token = next_token
    return read, token


def _event(activity: dict[str, Any]) -> dict[str, Any]:
    """A Merge Leads or Delete Lead activity as (kind, person, merged-away people, date)."""
    attributes = {a.get("name"): a.get("value") for a in activity.get("attributes") or []}
    losers: list[int] = []
    if activity.get("activityTypeId") == MERGE_LEADS:
        text = str(attributes.get("Merge IDs") or "").strip("[]")
        losers = [int(x) for x in text.replace(" ", "").split(",") if x.isdigit()]
    return {
        "kind": "merge" if activity.get("activityTypeId") == MERGE_LEADS else "delete",
        "marketo_id": int(activity.get("primaryAttributeValueId") or activity["leadId"]),
        "losers": json.dumps(losers),
        "date": activity.get("activityDate"),
    }


def marketo_changes(
    hook: MarketoHook,
    store: StateStore,
    spec: EntitySpec,
    watermark: MarketoMark,
    until: dt.datetime | None = None,
) -> MarketoExtract:
    """What happened in Marketo to people linked to this entity after `watermark` (and before `until`).

    Two feeds: field changes (leadchanges, only the synced fields), and merges and deletes (activities of
    types 32 and 37), so a merged or deleted person is followed, never left as an orphan link.
    """
    fields = spec.two_way_fields or ["email"]
    changes: list[dict[str, Any]] = []
    since = watermark.since
    if watermark.token is None and watermark.copied_until is not None and since is not None:
        end = min(watermark.copied_until, until) if until else watermark.copied_until
        changes = _field_changes(hook, fields, since, end)
        since = end
    if until is None or since is None or since < until:
        more, token = _read_feed(hook.lead_changes(fields, token=watermark.token, since=since), watermark.token,
                                 until)
        changes += more
    else:
        token = None
    raw_events, events_token = _read_feed(
        hook.activities([MERGE_LEADS, DELETE_LEAD], token=watermark.events_token, since=watermark.since),
        watermark.events_token, until,
    )
    lead_ids = list(dict.fromkeys(int(a["leadId"]) for a in changes))
    events = [_event(a) for a in raw_events]
    involved = {e["marketo_id"] for e in events} | {x for e in events for x in json.loads(e["losers"])}
    links = store.links_by_marketo([*lead_ids, *involved])

    def mine(marketo_id: int) -> bool:
        link = links.get(marketo_id)
        return link is not None and link.entity == spec.name

    events = [e for e in events if mine(e["marketo_id"]) or any(mine(x) for x in json.loads(e["losers"]))]
    # A person whose every reported change ends at the value last synced is at its snapshot: an echo of the
    # sync's own write (or a change undone), so it is not read back. The feed carries the new values.
    latest: dict[int, dict[str, Any]] = {}
    for activity in changes:
        for changed in activity.get("fields") or []:
            latest.setdefault(int(activity["leadId"]), {})[changed.get("name")] = changed.get("newValue")

    def at_snapshot(marketo_id: int) -> bool:
        snapshot = links[marketo_id].marketo_values
        return all(same(value, snapshot.get(name)) for name, value in latest.get(marketo_id, {}).items()
                   if name in spec.two_way_fields)

    changed_people = [m for m in lead_ids if mine(m)]
    echoes = [m for m in changed_people if at_snapshot(m)]
    # Merge winners are read too: their values become the linked record's Marketo side.
    wanted = [m for m in changed_people if m not in set(echoes)]
    wanted += [e["marketo_id"] for e in events if e["kind"] == "merge"]
    wanted = list(dict.fromkeys(wanted))
    rows = marketo_people(hook, spec, "id", wanted) if wanted else marketo_people_empty(spec)
    mark = MarketoMark(token=token, events_token=events_token)
    return MarketoExtract(
        rows=rows,
        watermark=mark.dumps() if token and events_token else None,
        events=pd.DataFrame(events, columns=EVENT_COLUMNS),
        activities=len(changes) + len(raw_events),
        unlinked=sum(1 for mid in lead_ids if mid not in links),
        echoes=len(echoes),
    )


def _field_changes(hook: MarketoHook, fields: list[str], since: dt.datetime,
                   until: dt.datetime) -> list[dict[str, Any]]:
    """Change Data Value activities of `fields` in [since, until), shaped like lead-changes items.

    Read from the activities feed, which (unlike lead changes) leaves out New Lead activities; its items
    name the field by id (primaryAttributeValueId), mapped to the REST name through describe.
    """
    names = {item.get("id"): (item.get("rest") or {}).get("name") for item in hook.describe_leads()}
    wanted = set(fields)
    read, _ = _read_feed(hook.activities([CHANGE_DATA_VALUE], since=since), None, until)
    changes = []
    for activity in read:
        name = names.get(activity.get("primaryAttributeValueId"))
        if name not in wanted:
            continue
        attributes = {a.get("name"): a.get("value") for a in activity.get("attributes") or []}
        changes.append({**activity, "fields": [{"name": name, "newValue": attributes.get("New Value"),
                                                "oldValue": attributes.get("Old Value")}]})
    return changes


def marketo_people_empty(spec: EntitySpec) -> pd.DataFrame:
    columns = ["marketo_id", *[f for f in spec.marketo_fields if f != "id"]]
    return pd.DataFrame(columns=[*columns, spec.link_field] if spec.link_field else columns)


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
