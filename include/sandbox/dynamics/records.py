"""Converting between Web API JSON and stored rows, with Dataverse's write rules.

Why: create, update, upsert, the *Multiple actions and $batch parts must all apply the same
rules, so they live here once: unknown properties and type errors (0x80048d19), MaxLength
(0x80044331), choice values, ``@odata.bind`` lookups, columns not valid for create/update being
silently ignored, platform-stamped columns (createdon/modifiedon/createdby/modifiedby/
versionnumber/ownerid), computed ``fullname``, statecode/statuscode pairing and RequiredLevel
checks (SystemRequired always; ApplicationRequired only in the sandbox's strict mode, since real
Dataverse does not enforce it). Rendering adds ``@odata.etag`` and the formatted-value and lookup
annotations requested with ``Prefer: odata.include-annotations``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from . import tables as t
from .metadata import edm_of
from .odata_filter import format_datetime, parse_datetime
from .protocol import (
    ASSOCIATED_NAV,
    FORMATTED_VALUE,
    LOOKUP_LOGICAL_NAME,
    ApiError,
    Prefer,
    payload_error,
)
from .store import Store

GUID_RE = re.compile(r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$")
_BIND_RE = re.compile(r"(?:^|/)([A-Za-z_][\w]*)\(([^()]*)\)$")

UNSET = object()


def parse_guid(text: str) -> str | None:
    m = GUID_RE.match(text.strip())
    return m.group(1).lower() if m else None


def now_utc() -> str:
    return format_datetime(dt.datetime.now(dt.UTC))


def not_found(table: t.Table, row_id: str) -> ApiError:
    return ApiError(404, "0x80040217", f"{table.logical_name} With Id = {row_id} Does Not Exist")


MIN_DATE = dt.datetime(1753, 1, 1, tzinfo=dt.UTC)


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def out_of_range(table: t.Table, col: t.Column, value: Any, low: str, high: str) -> ApiError:
    # Message shape follows the documented MaxLength / choice validation errors; the exact text and code
    # for numeric and date ranges could not be confirmed.
    return ApiError(
        400, "0x80044331",
        f"A validation error occurred.  The value {value} of '{col.name}' on record of type '{table.logical_name}' "
        f"is outside the valid range. Accepted Range: {low} to {high}",
    )


def required_error(col: t.Column) -> ApiError:
    # Code 0x80040203 (InvalidArgument) is what Dataverse answers for argument validation failures;
    # the exact message for a missing SystemRequired column could not be confirmed.
    return ApiError(400, "0x80040203", f"Attribute: {col.name} cannot be set to NULL")


class RecordCodec:
    """Validates payloads into stored values and renders stored rows as Web API JSON."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.by_set = {table.entity_set: table for table in store.tables.values()}

    # ------------------------------------------------------------------ payload → values
    def _convert(self, table: t.Table, col: t.Column, value: Any) -> Any:
        if value is None:
            return None
        edm = edm_of(col)

        def bad() -> ApiError:
            shown = str(value).lower() if isinstance(value, bool) else value
            return payload_error(
                table.entity_set,
                f"Microsoft.OData.ODataException: Cannot convert the literal '{shown}' to the expected type '{edm}'.",
            )

        if col.type in (t.STRING, t.MEMO):
            if not isinstance(value, str):
                raise bad()
            if col.max_length is not None and len(value) > col.max_length:
                raise ApiError(
                    400, "0x80044331",
                    f"A validation error occurred.  The length of the '{col.name}' attribute of the "
                    f"'{table.logical_name}' entity exceeded the maximum allowed length of '{col.max_length}'.",
                )
            return value
        if col.type in (t.INTEGER, t.BIGINT) or col.type in t.CHOICE_TYPES:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
                    value = int(value)
                else:
                    raise bad()
            limit = (-2**31, 2**31 - 1) if col.type != t.BIGINT else (-2**63, 2**63 - 1)
            if not limit[0] <= value <= limit[1]:
                raise bad()
            if col.type == t.INTEGER:
                self._check_range(table, col, value)
            if col.type in t.CHOICE_TYPES and value not in {o.value for o in col.options}:
                accepted = ",".join(str(o.value) for o in col.options)
                raise ApiError(
                    400, "0x80044331",
                    f"A validation error occurred.  The value {value} of '{col.name}' on record of type "
                    f"'{table.logical_name}' is outside the valid range. Accepted Values: {accepted}",
                )
            return value
        if col.type == t.BOOLEAN:
            if not isinstance(value, bool):
                raise bad()
            return 1 if value else 0
        if col.type in ("Decimal", "Money", "Double"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise bad()
            self._check_range(table, col, value)
            return float(value)
        if col.type == t.DATETIME:
            if not isinstance(value, str):
                raise bad()
            if col.behavior == "DateOnly":
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                    raise bad()
                try:
                    day = dt.date.fromisoformat(value)
                except ValueError:
                    raise bad() from None
                if day < MIN_DATE.date():
                    raise out_of_range(table, col, value, "1753-01-01", "9999-12-30")
                return day.isoformat()
            try:
                when = parse_datetime(value)
            except ValueError:
                raise bad() from None
            if when < MIN_DATE:
                raise out_of_range(table, col, value, "1753-01-01T00:00:00Z", "9999-12-30T23:59:59Z")
            return format_datetime(when)
        if col.type == t.UNIQUEIDENTIFIER:
            guid = parse_guid(value) if isinstance(value, str) else None
            if guid is None:
                raise bad()
            return guid
        raise bad()

    @staticmethod
    def _check_range(table: t.Table, col: t.Column, value: float) -> None:
        low = col.min_value if col.min_value is not None else (
            -922337203685477 if col.type == t.MONEY else None)
        high = col.max_value if col.max_value is not None else (
            922337203685477 if col.type == t.MONEY else None)
        if (low is not None and value < low) or (high is not None and value > high):
            raise out_of_range(table, col, value, _num(low), _num(high))

    def _bind(self, table: t.Table, col: t.Column, nav: str, value: Any,
              targets: tuple[str, ...] | None = None) -> str | None:
        if value is None:
            return None
        m = _BIND_RE.search(value) if isinstance(value, str) else None
        guid = parse_guid(m.group(2)) if m else None
        if m is None or guid is None:
            raise payload_error(
                table.entity_set,
                f"Microsoft.OData.ODataException: The value '{value}' of the '{nav}@odata.bind' annotation is not "
                "a valid entity reference.",
            )
        target_set = m.group(1)
        target = self.by_set.get(target_set)
        target_logical = target.logical_name if target else target_set.rstrip("s")
        if target_logical not in (targets or col.targets):
            raise payload_error(
                table.entity_set,
                f"Microsoft.OData.ODataException: The entity set '{target_set}' is not a valid target of the "
                f"navigation property '{nav}'.",
            )
        if target is None or self.store.get(target, guid) is None:
            raise ApiError(404, "0x80040217", f"{target_logical} With Id = {guid} Does Not Exist")
        return guid


    def parse_payload(self, table: t.Table, body: Any, creating: bool, role: str) -> dict[str, Any]:
        """Values the payload sets, by column name; columns not valid for the operation are dropped."""
        if not isinstance(body, dict):
            raise payload_error(table.entity_set,
                                "Microsoft.OData.ODataException: A resource was expected in the payload.")
        values: dict[str, Any] = {}
        for key, raw in body.items():
            if "@" in key:
                name, _, annotation = key.partition("@")
                if annotation != "odata.bind" or not name:
                    continue  # instance annotations such as @odata.type are not data
                found = table.nav_column(name)
                if found is None:
                    raise payload_error(
                        table.entity_set,
                        f"Microsoft.OData.ODataException: An undeclared property '{name}' which only has property "
                        "annotations in the payload but no property value was found in the payload. In OData, only "
                        "declared navigation properties and declared named streams can be represented as properties "
                        "without values.",
                    )
                col, targets = found
                value = self._bind(table, col, name, raw, targets)
            else:
                col = table.column_by_json_name(key)
                if col is None:
                    lookup = table.column(key)
                    if lookup is not None and lookup.is_lookup:
                        raise payload_error(
                            table.entity_set,
                            "CRM do not support direct update of Entity Reference properties, Use Navigation "
                            "properties instead.",
                        )
                    raise payload_error(
                        table.entity_set,
                        f"Microsoft.OData.ODataException: The property '{key}' does not exist on type "
                        f"'{table.edm_type}'. Make sure to only use property names that are defined by the type or "
                        "mark the type as open type.",
                    )
                if isinstance(raw, (dict, list)):
                    raise payload_error(
                        table.entity_set,
                        f"Microsoft.OData.ODataException: A value of a complex or collection type was found for the "
                        f"primitive property '{key}'.",
                    )
                value = self._convert(table, col, raw)
            allowed = col.create if creating else col.update
            if col.name == table.primary_id:
                allowed = creating
            if not allowed:
                continue  # Dataverse silently ignores columns not valid for the operation
            if col.secured and role not in col.grants:
                if creating:
                    raise ApiError(403, "0x8004f502", "The user does not have create permissions to a secured "
                                   "field. The requested operation could not be completed.")
                raise ApiError(403, "0x8004f507", "The user doesn't have AttributePrivilegeUpdate and not granted "
                               "shared access for a secured attribute during update operation")
            values[col.name] = value
        return values

    # ------------------------------------------------------------------ rules applied to a whole row
    @staticmethod
    def _compute(table: t.Table, row: dict[str, Any]) -> None:
        for col in table.columns:
            if col.compute:
                parts = [str(row.get(name)).strip() for name in col.compute if row.get(name)]
                row[col.name] = " ".join(p for p in parts if p) or None

    @staticmethod
    def _state_status(table: t.Table, row: dict[str, Any], changes: dict[str, Any], row_id: str) -> None:
        state_col, status_col = table.column("statecode"), table.column("statuscode")
        if state_col is None or status_col is None:
            return
        if "statecode" in changes and "statuscode" not in changes and changes["statecode"] is not None:
            default = next((o.default_status for o in state_col.options if o.value == changes["statecode"]), None)
            row["statuscode"] = changes["statuscode"] = default
        elif "statuscode" in changes and "statecode" not in changes and changes["statuscode"] is not None:
            state = next((o.state for o in status_col.options if o.value == changes["statuscode"]), None)
            if state is not None and state != row.get("statecode"):
                row["statecode"] = changes["statecode"] = state
        status, state = row.get("statuscode"), row.get("statecode")
        if status is None or state is None:
            return
        allowed = {o.value for o in status_col.options if o.state == state}
        if status not in allowed:
            state_name = next((o.invariant_name or o.label for o in state_col.options if o.value == state), str(state))
            raise ApiError(
                400, "0x80048408",
                f"{status} is not a valid status code for state code {table.schema_name}State.{state_name} on "
                f"{table.logical_name} with Id {row_id}.",
            )

    @staticmethod
    def _check_required(table: t.Table, row: dict[str, Any], names: Any, strict: bool) -> None:
        for name in names:
            col = table.column(name)
            if col is None or col.auto in ("createdon", "modifiedon", "createdby", "modifiedby", "version"):
                continue
            levels = (t.SYSTEM_REQUIRED, t.APPLICATION_REQUIRED) if strict else (t.SYSTEM_REQUIRED,)
            if col.required in levels and row.get(col.name) in (None, ""):
                raise required_error(col)

    def new_row(self, table: t.Table, values: dict[str, Any], caller_id: str, strict: bool) -> dict[str, Any]:
        """A complete row for a create: defaults, platform stamps, computed columns, checks."""
        row: dict[str, Any] = {}
        stamp = now_utc()
        for col in table.columns:
            if col.name in values:
                row[col.name] = values[col.name]
            elif col.auto == "caller":
                row[col.name] = caller_id
            else:
                row[col.name] = col.default
            if col.auto in ("createdon", "modifiedon"):
                row[col.name] = stamp
            elif col.auto in ("createdby", "modifiedby"):
                row[col.name] = caller_id
        if not row.get(table.primary_id):
            row[table.primary_id] = str(uuid.uuid4())
        state_col = table.column("statecode")
        if "statuscode" not in values and state_col is not None:
            default = next((o.default_status for o in state_col.options if o.value == row.get("statecode")), None)
            if default is not None:
                row["statuscode"] = default
        self._state_status(table, row, {}, row[table.primary_id])
        self._compute(table, row)
        self._check_required(table, row, [c.name for c in table.columns if c.create or c.auto == "caller"], strict)
        row["versionnumber"] = self.store.allocate_versions(1)
        return row

    def changed_row(self, table: t.Table, existing: dict[str, Any], values: dict[str, Any], caller_id: str,
                    strict: bool) -> dict[str, Any]:
        """The column changes for an update (including stamps and recomputed columns)."""
        row = dict(existing)
        changes = dict(values)
        row.update(changes)
        self._state_status(table, row, changes, existing[table.primary_id])
        self._compute(table, row)
        self._check_required(table, row, list(changes), strict)
        stamp = now_utc()
        for col in table.columns:
            if col.auto == "modifiedon":
                row[col.name] = stamp
            elif col.auto == "modifiedby":
                row[col.name] = caller_id
        row["versionnumber"] = self.store.allocate_versions(1)
        return {k: v for k, v in row.items() if existing.get(k) != v or k in changes}

    # ------------------------------------------------------------------ rows → JSON
    def lookup_names(self, table: t.Table, rows: list[dict[str, Any]],
                     columns: list[t.Column]) -> dict[str, tuple[str, str | None]]:
        """id → (logical name, primary name) for the lookup values on a page."""
        out: dict[str, tuple[str, str | None]] = {}
        for col in columns:
            if not col.is_lookup:
                continue
            ids = {r.get(col.name) for r in rows if r.get(col.name)}
            for target in col.targets:
                missing = [i for i in ids if i not in out]
                if not missing:
                    break
                for row_id, name in self.store.names(target, missing).items():
                    out[row_id] = (target, name)
            for row_id in ids:
                out.setdefault(row_id, (col.targets[0], None))
        return out

    @staticmethod
    def _formatted(col: t.Column, value: Any) -> str | None:
        if col.type in t.CHOICE_TYPES:
            return next((o.label for o in col.options if o.value == value), None)
        if col.type == t.BOOLEAN:
            labels = {o.value: o.label for o in col.options} or {0: "No", 1: "Yes"}
            return labels.get(int(value), "Yes" if value else "No")
        if col.type == t.DATETIME:
            d = parse_datetime(value)
            hour = d.hour % 12 or 12
            return f"{d.month}/{d.day}/{d.year} {hour}:{d.minute:02d} {'AM' if d.hour < 12 else 'PM'}"
        return None

    def render(self, table: t.Table, row: dict[str, Any], columns: list[t.Column], prefer: Prefer,
               names: dict[str, tuple[str, str | None]], role: str) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.etag": f'W/"{row.get("versionnumber")}"'}
        want_fv = prefer.wants(FORMATTED_VALUE)
        want_ll = prefer.wants(LOOKUP_LOGICAL_NAME)
        want_nav = prefer.wants(ASSOCIATED_NAV)
        for col in columns:
            value = row.get(col.name)
            if (col.secured and role not in col.grants) or not col.read:
                value = None
            key = col.json_name
            if value is not None:
                if col.is_lookup:
                    logical, name = names.get(value, (col.targets[0], None))
                    if want_fv and name is not None:
                        out[f"{key}@{FORMATTED_VALUE}"] = name
                    if want_nav:
                        out[f"{key}@{ASSOCIATED_NAV}"] = col.name
                    if want_ll:
                        out[f"{key}@{LOOKUP_LOGICAL_NAME}"] = logical
                elif want_fv:
                    formatted = self._formatted(col, value)
                    if formatted is not None:
                        out[f"{key}@{FORMATTED_VALUE}"] = formatted
                if col.type == t.BOOLEAN:
                    value = bool(value)
            out[key] = value
        if table.primary_id not in out:
            out[table.primary_id] = row.get(table.primary_id)
        return out
