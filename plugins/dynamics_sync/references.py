"""Lookups: turn a Dynamics reference into what Marketo knows the referenced record by.

A lookup column holds a Dynamics id. In Marketo a person is known by its Marketo id (an opportunity role's
or custom object's leadId) and a company, sales person or object by its external id, which is our
Dynamics id. So a reference resolves through the state store's links: it is written only when the
record it points at has been synced (it exists in Marketo), and otherwise left empty and reported, so
Marketo never holds a dangling reference (the native sync, for one, leaves owner fields empty when the
Dynamics owner is a team, not a user).

A field may reach its target two levels away (`through`): a custom entity's account, then that account's
primary contact. The middle rows are read from Dynamics 300 ids a query (Microsoft.Dynamics.CRM.In, about
14 KB of the GET URL's 32 KB): a copy of 50,000 projects reads its accounts in 167 calls, not 1,250.

The two halves run apart in a sync: `follow` (Dynamics only) in extract, `resolve` (the links) in
transform, so an entity reads Dynamics while the entities it points at still load, and only its
transform waits for their links.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from dynamics_sync.entities import EntitySpec, FieldMap, load_entities
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.state import Activity, StateStore

CHUNK = 300
POINTER = "__points_at"  # suffix of the column `follow` adds: the far record a `through` field reaches


def _pointer_column(f: FieldMap) -> str:
    return f"{f.marketo}{POINTER}"


def _values(column: pd.Series) -> pd.Series:
    """A column's values with None for every kind of missing (NaN, NaT, pd.NA)."""
    return column.astype(object).where(column.notna(), None)


def _without_pointers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns if str(c).endswith(POINTER)])


def _middle(hook: DynamicsHook, f: FieldMap, ids: Iterable[str]) -> dict[str, str | None]:
    """For each id of the middle table, the id its `through.column` lookup points at."""
    through = f.through
    assert through is not None
    ids = list(dict.fromkeys(ids))
    found: dict[str, str | None] = {}
    column = f"_{through.column}_value"
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        values = ",".join(f"'{i}'" for i in chunk)
        params = {"$select": f"{through.key},{column}",
                  "$filter": f"Microsoft.Dynamics.CRM.In(PropertyName='{through.key}',PropertyValues=[{values}])"}
        for rows, _ in hook.pages(through.entity_set, params=params):
            found.update({row[through.key]: row.get(column) for row in rows})
    return found


def follow(frame: pd.DataFrame, spec: EntitySpec, hook: DynamicsHook) -> pd.DataFrame:
    """Take each `through` field's second hop in Dynamics now; `resolve` then needs only the links.

    The field keeps the id Dynamics holds (for the report of what cannot be resolved); the far id goes
    to a column of its own, which `resolve` uses and drops.
    """
    through = [f for f in spec.fields if f.lookup and f.through is not None]
    if frame.empty or not through:
        return frame
    frame = frame.copy()
    for f in through:
        raw = _values(frame[f.marketo])
        middle = _middle(hook, f, raw.dropna().unique())
        frame[_pointer_column(f)] = [middle.get(v) if v is not None else None for v in raw]
    return frame


def resolve(frame: pd.DataFrame, spec: EntitySpec, store: StateStore,
            hook: DynamicsHook | None) -> tuple[pd.DataFrame, list[Activity]]:
    """Replace each lookup field's Dynamics id with the target's Marketo key; report what cannot be.

    A `through` field uses the far ids `follow` read, or reads them now with `hook`.
    """
    lookups = [f for f in spec.fields if f.lookup]
    if frame.empty or not lookups:
        return _without_pointers(frame), []
    frame = frame.copy()
    entities = load_entities()
    activities: list[Activity] = []
    for f in lookups:
        raw = _values(frame[f.marketo])
        pointers: dict[Any, Any] = {v: v for v in raw.dropna().unique()}
        if f.through is not None and _pointer_column(f) in frame:
            followed = _values(frame[_pointer_column(f)])
            pointers = {v: p for v, p in zip(raw, followed, strict=True) if v is not None}
        elif f.through is not None and pointers and hook is not None:
            middle = _middle(hook, f, pointers)
            pointers = {v: middle.get(v) for v in pointers}
        target = entities[f.lookup]  # checked by load_entities
        links = store.links_by_dynamics(target.name, [p for p in pointers.values() if p])
        keys: dict[Any, Any] = {}
        for value, pointer in pointers.items():
            link = links.get(pointer) if pointer else None
            if link is not None and link.deleted_at is None and (link.marketo_id is not None or not target.is_person):
                keys[value] = link.marketo_id if target.is_person else link.dynamics_id
        for row_id, value in zip(frame["dynamics_id"], raw, strict=True):
            if value is not None and value not in keys:
                pointer = pointers.get(value)
                where = f"{f.dynamics} points at {value}"
                if f.through is not None:
                    where += f", whose {f.through.column} is {pointer or 'empty'}"
                activities.append(Activity(
                    "unresolved_reference", spec.name, "dynamics_to_marketo", dynamics_id=row_id, field=f.marketo,
                    new_value=pointer,
                    reason=f"{where}: not a synced {target.name} (not in Marketo yet, filtered out, deleted, or "
                           f"another kind of record); {f.marketo} is left empty",
                ))
        frame[f.marketo] = [keys.get(v) if v is not None else None for v in raw]
    return _without_pointers(frame), activities
