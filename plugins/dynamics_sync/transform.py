"""Transform and conflict-resolve: turn both sides' changes into a write plan, with no API call.

The plan holds, per target side, one row per record to write: which fields to send, the record's full
values after the write (what validation checks), and the snapshot values to record if the write
succeeds. Decisions that need no write (collisions, echoes, ambiguous matches, upstream deletes) become
activity rows or counts. Keeping this step pure is what makes it testable as a table of cases.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dynamics_sync.conflict import DYNAMICS, MARKETO, initial_values, merge, normalize, same
from dynamics_sync.entities import EntitySpec
from dynamics_sync.state import Activity, Link

# converted_from: for a "convert" write, the Dynamics lead the contact was qualified from.
WRITE_META = ["op", "marketo_id", "dynamics_id", "write_fields", "snap_dynamics", "snap_marketo", "converted_from"]
REFRESH_COLUMNS = ["marketo_id", "dynamics_id", "snap_dynamics", "snap_marketo", "deleted_side", "paused"]
CONVERTED = "converted"  # deleted_side of a lead link whose person now follows the contact it became
TO_MARKETO, TO_DYNAMICS = "dynamics_to_marketo", "marketo_to_dynamics"
FRAMES = ("marketo_writes", "dynamics_writes", "refresh")  # what Plan.frames returns, by name


@dataclass
class Plan:
    marketo_writes: list[dict[str, Any]] = field(default_factory=list)
    dynamics_writes: list[dict[str, Any]] = field(default_factory=list)
    refresh: list[dict[str, Any]] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def frames(self, spec: EntitySpec) -> dict[str, pd.DataFrame]:
        columns = [*WRITE_META, *spec.marketo_fields]
        return {
            "marketo_writes": pd.DataFrame(self.marketo_writes, columns=columns),
            "dynamics_writes": pd.DataFrame(self.dynamics_writes, columns=columns),
            "refresh": pd.DataFrame(self.refresh, columns=REFRESH_COLUMNS),
        }


def _write(op: str, marketo_id: Any, dynamics_id: str, fields: list[str], post_image: dict[str, Any],
           snap_dynamics: dict[str, Any], snap_marketo: dict[str, Any],
           converted_from: str | None = None) -> dict[str, Any]:
    return {
        "op": op,
        "marketo_id": marketo_id,
        "dynamics_id": dynamics_id,
        "write_fields": json.dumps(fields),
        "snap_dynamics": json.dumps(snap_dynamics),
        "snap_marketo": json.dumps(snap_marketo),
        "converted_from": converted_from,
        **post_image,
    }


def _refresh(marketo_id: Any, dynamics_id: str, snap: dict[str, Any] | None = None,
             deleted_side: str | None = None, paused: bool | None = None) -> dict[str, Any]:
    """A link change needing no write: snapshot values, a deletion, or the sync filter's pause."""
    text = json.dumps(snap or {})
    return {"marketo_id": marketo_id, "dynamics_id": dynamics_id, "snap_dynamics": text, "snap_marketo": text,
            "deleted_side": deleted_side, "paused": paused}


def _values(row: dict[str, Any], spec: EntitySpec) -> dict[str, Any]:
    return {name: normalize(row.get(name)) for name in spec.marketo_fields}


def _index_matches(matches: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    by_email: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for person in matches.to_dict("records"):
        if person.get("email"):
            by_email[str(person["email"]).lower()].append(person)
    return by_email


def _link_new(plan: Plan, spec: EntitySpec, dyn: dict[str, Any], converted: dict[str, Link] | None = None) -> None:
    """A Dynamics record with no link yet: plan its Marketo person's creation.

    A Marketo object (company, opportunity, ...) is simply upserted by its dedupe key, our Dynamics id.
    A contact qualified from a linked lead takes over that lead's person (see _convert). A person is created
    with createOnly by email, so Marketo itself says when someone has the email already; the load then
    links that person instead (match_existing). Asking Marketo first would cost a lookup call per 300
    records that, in an initial copy, mostly finds nobody.
    """
    values = _values(dyn, spec)
    dynamics_id = dyn["dynamics_id"]
    if not spec.is_person:
        plan.marketo_writes.append(_write("upsert", None, dynamics_id, list(values), values, values, values))
        return
    source = (converted or {}).get(dyn.get("converted_from") or "")
    if source is not None and source.marketo_id is not None and source.deleted_at is None:
        _convert(plan, spec, dyn, values, source)
        return
    writes, after = initial_values(spec.marketo_fields, values, None)
    plan.marketo_writes.append(_write("create", None, dynamics_id, list(writes), after, values, after))


def match_existing(spec: EntitySpec, creates: list[dict[str, Any]], people: pd.DataFrame,
                   linked_marketo: dict[int, Link]) -> tuple[Plan, list[dict[str, Any]]]:
    """Planned creates Marketo refused because a person has the email: link each to its only such person.

    The link merges like the initial copy (Dynamics values, but a Dynamics null never blanks a Marketo
    value); the values written are the create's, which validation has passed. An email shared by several
    people links none (ambiguous_match), and a person already linked to another record is left to it
    (already_linked). Returns the plan (link writes, activities) and the creates no person was found for.
    """
    plan = Plan()
    by_email = _index_matches(people)
    unmatched = []
    for row in creates:
        values = _values(row, spec)
        dynamics_id = row["dynamics_id"]
        candidates = by_email.get((values.get("email") or "").lower(), [])
        free = [p for p in candidates if int(p["marketo_id"]) not in linked_marketo]
        if not candidates:
            unmatched.append(row)
        elif len(candidates) > 1:
            plan.activities.append(Activity(
                "ambiguous_match", spec.name, TO_MARKETO, dynamics_id=dynamics_id, email=values.get("email"),
                reason=f"{len(candidates)} Marketo people share this email "
                       f"({', '.join(str(p['marketo_id']) for p in candidates)}); linked none",
            ))
            plan.counts["ambiguous"] += 1
        elif not free:
            other = linked_marketo[int(candidates[0]["marketo_id"])]
            plan.activities.append(Activity(
                "already_linked", spec.name, TO_MARKETO, dynamics_id=dynamics_id,
                marketo_id=int(candidates[0]["marketo_id"]), email=values.get("email"),
                reason=f"the Marketo person with this email is already linked to {other.entity} {other.dynamics_id}",
            ))
            plan.counts["already_linked"] += 1
        else:
            person = free[0]
            writes, after = initial_values(spec.marketo_fields, values, _values(person, spec))
            plan.marketo_writes.append(
                _write("link", int(person["marketo_id"]), dynamics_id, list(writes), after, values, after)
            )
    return plan, unmatched


def _convert(plan: Plan, spec: EntitySpec, dyn: dict[str, Any], values: dict[str, Any], source: Link) -> None:
    """Lead conversion: the person of the qualified lead now mirrors the contact, with contact rules.

    No second person is created; the lead's link is released when the write lands (load step), so the
    lead's later changes (it is read-only once qualified) no longer touch the person.
    """
    writes, after = initial_values(spec.marketo_fields, values, source.marketo_values)
    plan.marketo_writes.append(_write(
        "convert", source.marketo_id, dyn["dynamics_id"], list(writes), after, values, after,
        converted_from=source.dynamics_id,
    ))
    plan.activities.append(Activity(
        "converted", spec.name, TO_MARKETO, dynamics_id=dyn["dynamics_id"], marketo_id=source.marketo_id,
        email=values.get("email"), old_value=source.dynamics_id, new_value=dyn["dynamics_id"],
        reason=f"Dynamics {source.entity} {source.dynamics_id} was qualified into this {spec.name}; Marketo person "
               f"{source.marketo_id} now follows the {spec.name} ({spec.name} rules from now on)",
    ))
    plan.counts["converted"] += 1


def same_values(snapshot: dict[str, Any], values: dict[str, Any]) -> bool:
    """Whether a snapshot holds exactly these values (every field of `values`, compared as the merge does)."""
    return all(name in snapshot and same(snapshot[name], value) for name, value in values.items())


def explicit_no(value: Any) -> bool:
    """Two Options read back as true/false; staged frames may hand back numpy booleans or 0/1."""
    if value is None or (isinstance(value, float) and value != value):
        return False
    return str(value).strip().lower() in ("false", "0", "no")


def _filtered_out(plan: Plan, spec: EntitySpec, dyn: dict[str, Any], link: Link | None) -> bool:
    """The sync filter: only an explicit No keeps a record out; turning it off pauses, never deletes.

    Returns True when the record is not synced this run.
    """
    if not explicit_no(dyn.get("sync_filter")):
        if link is not None and link.paused:
            plan.refresh.append(_refresh(link.marketo_id, link.dynamics_id, paused=False))
            link.paused = False  # this run merges it again
        return False
    plan.counts["sync_filter_skipped"] += 1
    values = _values(dyn, spec)
    if link is not None and not link.paused:
        plan.refresh.append(_refresh(link.marketo_id, link.dynamics_id, paused=True))
        reason = (f"{spec.sync_filter} turned to No: the record stops syncing; the Marketo copy is kept as it was")
    else:
        reason = f"{spec.sync_filter} is No: the record is not synced"
    plan.activities.append(Activity(
        "skipped_by_sync_filter", spec.name, TO_MARKETO, dynamics_id=dyn["dynamics_id"],
        marketo_id=link.marketo_id if link else None, email=values.get("email"), field=spec.sync_filter,
        new_value=False, reason=reason,
    ))
    return True


def plan_initial(spec: EntitySpec, dynamics: pd.DataFrame, links: dict[str, Link],
                 converted: dict[str, Link] | None = None) -> Plan:
    """The initial copy: every Dynamics record to Marketo (same-email people are linked at load, see
    match_existing)."""
    plan = Plan()
    for dyn in dynamics.to_dict("records"):
        if dyn.get("deleted"):
            continue
        link = links.get(dyn["dynamics_id"])
        if _filtered_out(plan, spec, dyn, link):
            continue
        if link is None:
            _link_new(plan, spec, dyn, converted)
            continue
        values = _values(dyn, spec)
        writes, after = initial_values(spec.marketo_fields, values, link.marketo_values)
        if not writes and same_values(link.dynamics_values, values) and same_values(link.marketo_values, after):
            # Copied already with these values (a copy resumed after a stop, or run again): nothing to do.
            plan.counts["already_copied"] += 1
            continue
        plan.marketo_writes.append(
            _write("link", link.marketo_id, link.dynamics_id, list(writes), after, values, after)
        )
    return plan


def plan_incremental(spec: EntitySpec, dynamics: pd.DataFrame, marketo: pd.DataFrame,
                     links: dict[str, Link], linked_marketo: dict[int, Link], sync_user_id: str | None,
                     events: pd.DataFrame | None = None, converted: dict[str, Link] | None = None) -> Plan:
    """Follow Marketo merges and deletes, then merge both sides' changes (see conflict.merge for the rules)."""
    plan = Plan()
    if events is not None:
        _follow_marketo_events(plan, spec, events, links, linked_marketo)
    dyn_by_id = {row["dynamics_id"]: row for row in dynamics.to_dict("records")}
    mkto_by_link: dict[str, dict[str, Any]] = {}
    for row in marketo.to_dict("records"):
        link = linked_marketo.get(int(row["marketo_id"]))
        if link is not None and link.entity == spec.name:
            mkto_by_link[link.dynamics_id] = row
    for dynamics_id in dict.fromkeys([*dyn_by_id, *mkto_by_link]):
        dyn = dyn_by_id.get(dynamics_id)
        link = links.get(dynamics_id)
        if dyn is not None and dyn.get("deleted"):
            if link is not None and link.deleted_at is None and spec.is_person:
                _flag_deleted(plan, spec, link)
            elif link is not None and link.deleted_at is None:
                _relink(plan, link, link.marketo_id, deleted_side=DYNAMICS)
                plan.activities.append(Activity(
                    "deleted_upstream", spec.name, TO_MARKETO, dynamics_id=dynamics_id,
                    reason=f"deleted in Dynamics; the Marketo {spec.marketo_object} record is kept",
                ))
            continue
        if dyn is not None and _filtered_out(plan, spec, dyn, link):
            continue
        if link is None:
            if dyn is not None:
                _link_new(plan, spec, dyn, converted)
            continue
        if link.deleted_side == CONVERTED:
            plan.counts["converted_skipped"] += 1
            continue
        if link.deleted_at is not None:
            _skip_deleted(plan, spec, link)
            continue
        if link.paused:  # a Marketo change to a record the sync filter keeps out
            plan.counts["sync_filter_skipped"] += 1
            continue
        _merge_linked(plan, spec, link, dyn, mkto_by_link.get(dynamics_id), sync_user_id)
    return plan


def _skip_deleted(plan: Plan, spec: EntitySpec, link: Link) -> None:
    """Deletions stick: a change on the surviving side is logged, never used to re-create the other."""
    when = f"{link.deleted_at:%Y-%m-%d %H:%M} UTC"
    if link.deleted_side == MARKETO:
        direction = TO_MARKETO
        reason = (f"the Marketo person was deleted or merged away ({when}); changes to the Dynamics {spec.name} "
                  "are not copied to Marketo")
    else:
        direction = TO_DYNAMICS
        reason = f"the Dynamics {spec.name} was deleted ({when}); changes to its Marketo person are not written back"
    plan.activities.append(Activity(
        "deleted_upstream", spec.name, direction, dynamics_id=link.dynamics_id, marketo_id=link.marketo_id,
        reason=reason,
    ))
    plan.counts["deleted_skipped"] += 1


def _relink(plan: Plan, link: Link, marketo_id: int, deleted_side: str | None = None) -> None:
    plan.refresh.append(_refresh(marketo_id, link.dynamics_id, deleted_side=deleted_side))


def _follow_marketo_events(plan: Plan, spec: EntitySpec, events: pd.DataFrame, links: dict[str, Link],
                           linked_marketo: dict[int, Link]) -> None:
    """People deleted in Marketo stop syncing (Dynamics keeps its record); merged people are re-linked.

    A person merged into a survivor that is not linked takes the survivor as its Marketo side, so the
    link follows the merge and no orphan is left; when the survivor is already linked to another record,
    that link stays and this record stops syncing, reported (the native sync keeps merges in Marketo).
    """
    for event in events.to_dict("records"):
        survivor = int(event["marketo_id"])
        if event["kind"] == "delete":
            link = linked_marketo.get(survivor)
            if link is not None and link.entity == spec.name and link.deleted_at is None:
                _relink(plan, link, survivor, deleted_side=MARKETO)
                plan.activities.append(Activity(
                    "deleted_in_marketo", spec.name, TO_DYNAMICS, dynamics_id=link.dynamics_id, marketo_id=survivor,
                    reason=f"the Marketo person was deleted; the Dynamics {spec.name} is kept (deletes never flow "
                           "to Dynamics) and stops syncing",
                ))
                plan.counts["deleted_in_marketo"] += 1
            continue
        for loser in json.loads(event["losers"]):
            link = linked_marketo.get(int(loser))
            if link is None or link.entity != spec.name:
                continue
            owner = linked_marketo.get(survivor)
            if owner is not None and (owner.entity, owner.dynamics_id) != (link.entity, link.dynamics_id):
                _relink(plan, link, int(loser), deleted_side=MARKETO)
                reason = (f"Marketo merged person {loser} into {survivor}, which is linked to {owner.entity} "
                          f"{owner.dynamics_id}; this {spec.name} stops syncing (merge the Dynamics records to match)")
            else:
                moved = Link(link.entity, link.dynamics_id, survivor, link.dynamics_values, link.marketo_values,
                             id=link.id)
                linked_marketo[survivor] = links[link.dynamics_id] = moved
                _relink(plan, link, survivor)
                reason = f"Marketo merged person {loser} into {survivor}; the link follows the surviving person"
            plan.activities.append(Activity(
                "merged_in_marketo", spec.name, TO_DYNAMICS, dynamics_id=link.dynamics_id, marketo_id=survivor,
                reason=reason,
            ))
            plan.counts["merged_in_marketo"] += 1


def _flag_deleted(plan: Plan, spec: EntitySpec, link: Link) -> None:
    """A Dynamics delete flags the Marketo person (the native "Microsoft is Deleted"), never deletes it."""
    plan.marketo_writes.append(_write(
        "flag_deleted", link.marketo_id, link.dynamics_id, [], {}, {}, {},
    ))
    plan.activities.append(Activity(
        "deleted_upstream", spec.name, TO_MARKETO, dynamics_id=link.dynamics_id, marketo_id=link.marketo_id,
        field=spec.deleted_field, new_value=True,
        reason=f"deleted in Dynamics; the Marketo person is kept and flagged {spec.deleted_field}=true",
    ))
    plan.counts["deleted"] += 1


def _merge_linked(plan: Plan, spec: EntitySpec, link: Link, dyn: dict[str, Any] | None,
                  mkto: dict[str, Any] | None, sync_user_id: str | None) -> None:
    result = merge(
        spec.marketo_fields,
        authority=spec.collision_authority,
        field_authority=spec.field_authority,
        two_way=spec.two_way,
        dynamics_current=_values(dyn, spec) if dyn else None,
        # Marketo edits of one-way fields (lookups, fields marked one way) never flow back.
        marketo_current={k: v for k, v in _values(mkto, spec).items() if k in spec.two_way_fields} if mkto else None,
        dynamics_snapshot=link.dynamics_values,
        marketo_snapshot=link.marketo_values,
    )
    if result.is_echo:
        own = dyn is not None and sync_user_id and dyn.get("modified_by") == sync_user_id
        plan.counts["echoes" if (own or mkto is not None) else "unchanged"] += 1
        return
    for c in result.collisions:
        plan.activities.append(Activity(
            "collision_resolved", spec.name, TO_DYNAMICS if c.winner == MARKETO else TO_MARKETO,
            dynamics_id=link.dynamics_id, marketo_id=link.marketo_id,
            email=(mkto or dyn or {}).get("email"), field=c.field,
            old_value=c.dynamics_value if c.winner == MARKETO else c.marketo_value,
            new_value=c.winning_value,
            reason=f"changed on both sides: Marketo {c.marketo_value!r}, Dynamics {c.dynamics_value!r}; "
                   + (f"{c.winner} wins for {spec.name}s" if c.field not in spec.field_authority
                      else f"{c.winner} wins for this field"),
        ))
    plan.counts["collisions"] += len(result.collisions)
    if result.refresh:
        plan.refresh.append(_refresh(link.marketo_id, link.dynamics_id, result.refresh))
    if result.to_marketo:
        post = {**link.marketo_values, **(_values(mkto, spec) if mkto else {}), **result.to_marketo}
        plan.marketo_writes.append(_write(
            "update", link.marketo_id, link.dynamics_id, list(result.to_marketo),
            {k: post.get(k) for k in spec.marketo_fields}, result.to_marketo, result.to_marketo,
        ))
    if result.to_dynamics:
        post = {**link.dynamics_values, **(_values(dyn, spec) if dyn else {}), **result.to_dynamics}
        plan.dynamics_writes.append(_write(
            "update", link.marketo_id, link.dynamics_id, list(result.to_dynamics),
            {k: post.get(k) for k in spec.marketo_fields}, result.to_dynamics, result.to_dynamics,
        ))
