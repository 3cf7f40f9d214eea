"""Both sides' schemas, read at the start of every run: what each configured field is, and may be.

The entity's EntityDefinitions attributes say which columns exist, which the sync user may read and
write, which are required (SystemRequired, or Business Required, which Dataverse itself never enforces
on API writes), their types, maximum lengths and choice values; Marketo's describe says which fields
exist there and their types. Validation rules come from here, merged with the config.

Three outcomes for a configured field:
- fine: synced, with the Dynamics rules merged into it;
- a problem of this run (a column deleted or renamed, closed to the sync user, or whose type changed
  since the last run): reported (task warning and activity_log) and left out, never a crash;
- a config error (two types that cannot be mapped onto each other, on a field never seen working):
  the run fails with every mismatch named, because guessing would garble data.

The schema travels between tasks in XCom as plain JSON, limited to the configured fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from dynamics_sync.entities import ConfigError, EntitySpec
from dynamics_sync.fieldtypes import TEXT, TEXT_TYPES, incompatibility
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook

log = logging.getLogger(__name__)
ATTRIBUTE_SELECT = (
    "LogicalName,AttributeType,RequiredLevel,MaxLength,IsValidForCreate,IsValidForUpdate,IsValidForRead,IsSecured"
)
REQUIRED_LEVELS = ("SystemRequired", "ApplicationRequired")
CHOICE_CASTS = ("PicklistAttributeMetadata", "StateAttributeMetadata", "StatusAttributeMetadata")


@dataclass(frozen=True)
class FieldProblem:
    field: str  # Marketo name
    column: str  # Dynamics logical name
    reason: str
    kind: str = "inaccessible_field"  # or "schema_drift"


def _label(option: dict[str, Any]) -> str:
    label = (option.get("Label") or {}).get("UserLocalizedLabel") or {}
    return str(label.get("Label") or option.get("Value"))


def describe(hook: DynamicsHook, spec: EntitySpec, picklists: bool = True) -> dict[str, dict[str, Any]]:
    """The entity's columns as plain JSON: type, required, max length, choices, access."""
    base = f"EntityDefinitions(LogicalName='{spec.logical_name}')/Attributes"
    attributes = hook.request("GET", base, params={"$select": ATTRIBUTE_SELECT}).json().get("value", [])
    types = {a["LogicalName"]: a.get("AttributeType") for a in attributes}
    wanted = {f.dynamics for f in spec.fields}
    labels: dict[str, dict[int, str]] = {}
    # One call per choice type actually mapped (none at all for most entities).
    for cast in CHOICE_CASTS if picklists else ():
        if not any(types.get(c) == cast.removesuffix("AttributeMetadata") for c in wanted):
            continue
        for item in hook.request(
            "GET", f"{base}/Microsoft.Dynamics.CRM.{cast}",
            params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
        ).json().get("value", []):
            options = (item.get("OptionSet") or {}).get("Options") or []
            labels[item["LogicalName"]] = {int(o["Value"]): _label(o) for o in options}
    columns = {}
    for a in attributes:
        level = (a.get("RequiredLevel") or {}).get("Value")
        choices = labels.get(a["LogicalName"])
        columns[a["LogicalName"]] = {
            "type": a.get("AttributeType"),
            "required": level in REQUIRED_LEVELS,
            "required_level": level,
            "max_length": a.get("MaxLength"),
            "options": list(choices) if choices else None,
            "labels": [[k, v] for k, v in choices.items()] if choices else None,
            "readable": a.get("IsValidForRead", True) is not False,
            "creatable": a.get("IsValidForCreate", True) is not False,
            "updatable": a.get("IsValidForUpdate", True) is not False,
            "secured": bool(a.get("IsSecured")),
        }
    return columns


def describe_marketo(hook: MarketoHook, spec: EntitySpec) -> dict[str, dict[str, Any]]:
    """The Marketo fields of the entity's target (people or an object): type, length, writable."""
    if spec.is_person:
        return {
            item["rest"]["name"]: {"type": item.get("dataType"), "length": item.get("length"),
                                   "updateable": not item["rest"].get("readOnly", False)}
            for item in hook.describe_leads() if item.get("rest")
        }
    described = hook.describe_object(spec.marketo_object)
    keys = {name for group in described.get("dedupeFields") or [] for name in
            (group if isinstance(group, list) else [group])}
    return {
        item["name"]: {"type": item.get("dataType"), "length": item.get("length"),
                       "updateable": item.get("updateable", True), "key": item["name"] in keys}
        for item in described.get("fields") or []
    }


def read_schema(dynamics: DynamicsHook, marketo: MarketoHook | None, spec: EntitySpec,
                baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both sides' schema for the configured fields, plus what the last run saw (see `baseline`)."""
    columns = describe(dynamics, spec)
    marketo_fields = describe_marketo(marketo, spec) if marketo is not None else {}
    wanted = {f.dynamics for f in spec.fields}
    return {
        "dynamics": {name: col for name, col in columns.items() if name in wanted},
        "marketo": {f.marketo: marketo_fields[f.marketo] for f in spec.fields if f.marketo in marketo_fields},
        "marketo_read": marketo is not None,
        "baseline": baseline or {},
    }


def problems(spec: EntitySpec, schema: dict[str, Any]) -> list[FieldProblem]:
    """Configured fields the run cannot sync as configured, each with the reason in words.

    Raises ConfigError for type mismatches that are the config's, not this run's, and when the field
    people are matched by (email) is unusable.
    """
    columns, marketo = schema.get("dynamics") or {}, schema.get("marketo") or {}
    baseline = (schema.get("baseline") or {}).get("types") or {}
    found, mismatches = [], []
    for f in spec.fields:
        column = columns.get(f.dynamics)
        expected = f.declared_type or baseline.get(f.dynamics)
        if column is None:
            found.append(FieldProblem(f.marketo, f.dynamics, f"Dynamics has no column {f.dynamics!r} on "
                                      f"{spec.logical_name} (deleted or renamed?)", "schema_drift"))
        elif expected and column["type"] and column["type"] != expected:
            found.append(FieldProblem(f.marketo, f.dynamics, f"{f.dynamics} is now of type {column['type']}, not "
                                      f"{expected} as before", "schema_drift"))
        elif column["secured"] or not column["readable"]:
            found.append(FieldProblem(f.marketo, f.dynamics, f"{f.dynamics} is secured or not readable by the sync "
                                      "user; a secured column reads as null, which cannot be told from empty"))
        elif spec.two_way and not f.one_way and not column["updatable"]:
            found.append(FieldProblem(f.marketo, f.dynamics, f"{f.dynamics} is not valid for update by the sync "
                                      "user, so Marketo changes could not be written back"))
        elif schema.get("marketo_read") and f.marketo not in marketo:
            found.append(FieldProblem(f.marketo, f.dynamics, f"Marketo has no field {f.marketo!r} on "
                                      f"{spec.marketo_object} (deleted or renamed?)", "schema_drift"))
        elif f.max_length and column["type"] not in TEXT_TYPES and column["type"] is not None and not expected:
            mismatches.append(f"{f.marketo}: the config gives a text length, but {f.dynamics} is a "
                              f"{column['type']} column")
        else:
            why = incompatibility(column["type"], (marketo.get(f.marketo) or {}).get("type"))
            if why:
                mismatches.append(f"{f.marketo} <- {f.dynamics}: {why}")
    if mismatches:
        raise ConfigError(f"{spec.name}: {len(mismatches)} mapped field(s) have types that do not match: "
                          + "; ".join(mismatches))
    if spec.is_person and any(p.field == "email" for p in found):
        [email] = [p for p in found if p.field == "email"]
        raise ConfigError(f"{spec.name}: people are matched by email, and {email.reason}")
    return found


def baseline(spec: EntitySpec, schema: dict[str, Any]) -> dict[str, Any]:
    """What the next run compares with: the Dynamics types (a drifted field keeps its old one, so it stays
    flagged until the config says otherwise) and the problems already reported (each is logged once)."""
    found = problems(spec, schema)
    drifted = {p.column for p in found if p.kind == "schema_drift"}
    old = (schema.get("baseline") or {}).get("types") or {}
    types = {
        f.dynamics: (old.get(f.dynamics) if f.dynamics in drifted else col["type"])
        for f in spec.fields
        if (col := (schema.get("dynamics") or {}).get(f.dynamics)) and (f.dynamics not in drifted or f.dynamics in old)
    }
    return {"types": types, "problems": {p.field: p.reason for p in found}}


def new_problems(spec: EntitySpec, schema: dict[str, Any]) -> list[FieldProblem]:
    """Problems the last run did not have: the ones to write to activity_log (the task log warns every run)."""
    seen = (schema.get("baseline") or {}).get("problems") or {}
    return [p for p in problems(spec, schema) if seen.get(p.field) != p.reason]


def assumed(spec: EntitySpec, last: dict[str, Any] | None) -> EntitySpec:
    """The spec as the last run synced it (its problem fields left out), for a cycle that reads no schema."""
    skip = set((last or {}).get("problems") or {})
    return replace(spec, fields=tuple(f for f in spec.fields if f.marketo not in skip))


def effective(spec: EntitySpec, schema: dict[str, Any] | None) -> EntitySpec:
    """The spec this run syncs: fields with a problem left out, both sides' rules and types merged in."""
    if not schema:
        return spec
    skip = {p.field for p in problems(spec, schema)}
    columns, marketo = schema.get("dynamics") or {}, schema.get("marketo") or {}
    fields = []
    for f in spec.fields:
        if f.marketo in skip:
            continue
        column = columns[f.dynamics]
        target = marketo.get(f.marketo) or {}
        text = column["type"] in TEXT_TYPES
        lengths = [n for n in (f.max_length, column.get("max_length") if text else None) if n]
        labels = {int(k): v for k, v in column.get("labels") or []} or None
        options = column.get("options")
        if options and labels and target.get("type") in TEXT:
            options = [labels[o] for o in options]
        fields.append(replace(
            f,
            required=f.required or bool(column.get("required")),
            max_length=min(lengths) if lengths else None,
            options=tuple(options) if options else f.options,
            dynamics_type=column.get("type"),
            marketo_type=target.get("type"),
            labels=tuple(labels.items()) if labels else None,
            marketo_required=bool(target.get("key")),
        ))
    return replace(spec, fields=tuple(fields))
