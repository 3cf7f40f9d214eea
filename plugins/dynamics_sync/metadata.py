"""Dynamics metadata, read at the start of every run: what each configured column is, and may be.

The entity's EntityDefinitions attributes say which columns exist, which the sync user may read and
write, which are required (SystemRequired, or Business Required, which Dataverse itself never enforces
on API writes), their maximum lengths and picklist values. Validation rules come from here, merged with
the config; a configured field that disappeared, changed, or is closed to the sync user is reported
(task warning and activity_log) and left out of the run, never silently dropped or guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from dynamics_sync.entities import ConfigError, EntitySpec
from dynamics_sync.hooks.dynamics import DynamicsHook

log = logging.getLogger(__name__)
ATTRIBUTE_SELECT = (
    "LogicalName,AttributeType,RequiredLevel,MaxLength,IsValidForCreate,IsValidForUpdate,IsValidForRead,IsSecured"
)
REQUIRED_LEVELS = ("SystemRequired", "ApplicationRequired")
TEXT_TYPES = ("String", "Memo")


@dataclass(frozen=True)
class FieldProblem:
    field: str  # Marketo name
    column: str  # Dynamics logical name
    reason: str
    kind: str = "inaccessible_field"  # or "schema_drift"


def describe(hook: DynamicsHook, spec: EntitySpec) -> dict[str, dict[str, Any]]:
    """The entity's columns as plain JSON (for XCom): type, required, max length, options, access."""
    base = f"EntityDefinitions(LogicalName='{spec.logical_name}')/Attributes"
    attributes = hook.request("GET", base, params={"$select": ATTRIBUTE_SELECT}).json().get("value", [])
    picklists = hook.request(
        "GET", f"{base}/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
    ).json().get("value", [])
    options = {
        p["LogicalName"]: [o["Value"] for o in (p.get("OptionSet") or {}).get("Options") or []] for p in picklists
    }
    columns = {}
    for a in attributes:
        level = (a.get("RequiredLevel") or {}).get("Value")
        columns[a["LogicalName"]] = {
            "type": a.get("AttributeType"),
            "required": level in REQUIRED_LEVELS,
            "required_level": level,
            "max_length": a.get("MaxLength"),
            "options": options.get(a["LogicalName"]),
            "readable": a.get("IsValidForRead", True) is not False,
            "creatable": a.get("IsValidForCreate", True) is not False,
            "updatable": a.get("IsValidForUpdate", True) is not False,
            "secured": bool(a.get("IsSecured")),
        }
    return columns


def problems(spec: EntitySpec, columns: dict[str, dict[str, Any]]) -> list[FieldProblem]:
    """Configured fields the run cannot sync as configured, each with the reason in words."""
    found = []
    for f in spec.fields:
        column = columns.get(f.dynamics)
        if column is None:
            found.append(FieldProblem(f.marketo, f.dynamics, f"Dynamics has no column {f.dynamics!r} on "
                                      f"{spec.logical_name} (deleted or renamed?)", "schema_drift"))
        elif column["secured"] or not column["readable"]:
            found.append(FieldProblem(f.marketo, f.dynamics, f"{f.dynamics} is secured or not readable by the sync "
                                      "user; a secured column reads as null, which cannot be told from empty"))
        elif spec.two_way and not column["updatable"]:
            found.append(FieldProblem(f.marketo, f.dynamics, f"{f.dynamics} is not valid for update by the sync "
                                      "user, so Marketo changes could not be written back"))
        elif f.max_length and column["type"] not in TEXT_TYPES and column["type"] is not None:
            found.append(FieldProblem(f.marketo, f.dynamics, f"{f.dynamics} is now of type {column['type']}, "
                                      "not text, but the config gives it a text length", "schema_drift"))
    if any(p.field == "email" for p in found):
        [email] = [p for p in found if p.field == "email"]
        raise ConfigError(f"{spec.name}: people are matched by email, and {email.reason}")
    return found


def effective(spec: EntitySpec, columns: dict[str, dict[str, Any]] | None) -> EntitySpec:
    """The spec this run syncs: fields with a problem left out, Dynamics rules merged into each field."""
    if not columns:
        return spec
    skip = {p.field for p in problems(spec, columns)}
    fields = []
    for f in spec.fields:
        if f.marketo in skip:
            continue
        column = columns[f.dynamics]
        lengths = [n for n in (f.max_length, column.get("max_length")) if n]
        fields.append(replace(
            f,
            required=f.required or bool(column.get("required")),
            max_length=min(lengths) if lengths else None,
            options=tuple(column["options"]) if column.get("options") else f.options,
        ))
    return replace(spec, fields=tuple(fields))
