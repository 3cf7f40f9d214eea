"""Companies, opportunities, opportunity roles, sales persons and custom objects: types and storage.

Why one generic store: all five share Marketo's "lead database object" pattern (describe with
``idField``/``dedupeFields``/``searchableFields``, get by filter, sync with ``action``/``dedupeBy``,
delete with ``deleteBy``), so one table (``objects``, JSON documents keyed by type and dedupe key) and
one code path serve them, and they cannot drift apart.

Documented facts used: keys (``externalCompanyId``, ``externalOpportunityId``, role dedupe
``externalOpportunityId,leadId,role``, ``externalSalesPersonId``), ``idField`` (``id`` for companies and
sales persons, ``marketoGUID`` for the others), results with ``seq`` and ``id``/``marketoGUID`` or
``reasons``, ``1036`` duplicate key in one input, ``1018`` "CRM Enabled" for writes to the CRM-owned
objects when a native CRM sync is on (``crm_enabled`` switch in ``/_sandbox/limits``).

References (documented for roles: "Both the opportunity and lead link ID fields must exist in the target
instance for the record to be created"): a role whose ``leadId`` names no lead is skipped with ``1004``
"Lead not found" (the code Adobe's custom object sync example shows), one whose ``externalOpportunityId``
names no opportunity with ``1013`` "Object not found" (sandbox choice of code). Custom object ``link``
fields declared in ``relationships`` (``relatedTo`` ``Lead``, by ``id`` or ``email``) are checked the
same way (``1004``). Only values a record sends are checked; a null non-key link is allowed.

Sandbox choices (unconfirmed): createOnly on an existing key → ``1017`` "Object already exists";
updateOnly or delete of a missing record → ``1013`` "Object not found"; a missing dedupe field →
``1003``; an unknown field → ``1006``; ``1018`` is given per record; key matching is exact (case-sensitive).
Custom object types come from ``custom_objects.json`` next to this module (or ``$MARKETO_SANDBOX_CUSTOM_OBJECTS``).
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import links
from .fields import COLUMNS, FieldDef, FieldValueError, coerce, type_error
from .store import Store, now_iso

CONFIG = Path(__file__).with_name("custom_objects.json")
STAMP = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class ObjField:
    name: str
    display_name: str
    data_type: str
    length: int | None = None
    updateable: bool = True

    def describe(self) -> dict[str, Any]:
        item: dict[str, Any] = {"name": self.name, "displayName": self.display_name, "dataType": self.data_type}
        if self.length is not None:
            item["length"] = self.length
        item["updateable"] = self.updateable
        return item


@dataclass(frozen=True)
class Ref:
    """A field that must name an existing record: a lead (``target`` ``"lead"``, matched on lead column
    ``column``) or an object of type path ``target`` (matched on its single-field dedupe key ``column``)."""

    field: str
    target: str
    column: str = "id"


@dataclass(frozen=True)
class ObjType:
    path: str  # "companies", "opportunities", "opportunities/roles", "salespersons", "customobjects/<name>"
    name: str
    display_name: str
    id_field: str
    dedupe: tuple[str, ...]
    searchable: tuple[tuple[str, ...], ...]
    fields: tuple[ObjField, ...]
    crm_owned: bool = False
    custom: bool = False
    description: str = ""
    plural: str = ""
    relationships: tuple[dict[str, Any], ...] = ()
    refs: tuple[Ref, ...] = ()

    @property
    def by_name(self) -> dict[str, ObjField]:
        return {f.name: f for f in self.fields}

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "displayName": self.display_name}
        if self.custom:
            out.update({"pluralName": self.plural, "description": self.description})
        out.update({"createdAt": STAMP, "updatedAt": STAMP, "idField": self.id_field,
                    "dedupeFields": list(self.dedupe), "searchableFields": [list(s) for s in self.searchable]})
        if self.custom:
            out["relationships"] = list(self.relationships)
        out["fields"] = [f.describe() for f in self.fields]
        return out


def _f(name: str, display: str, dtype: str, length: int | None = None, updateable: bool = True) -> ObjField:
    return ObjField(name, display, dtype, length, updateable)


_TS = (_f("createdAt", "Created At", "datetime", updateable=False),
       _f("updatedAt", "Updated At", "datetime", updateable=False))

BUILTIN: tuple[ObjType, ...] = (
    ObjType("companies", "Company", "Company", "id", ("externalCompanyId",),
            (("externalCompanyId",), ("id",), ("company",)),
            (_f("id", "Id", "integer", updateable=False), _f("externalCompanyId", "External Company Id", "string", 100,
                                                             False),
             _f("company", "Company Name", "string", 255), _f("website", "Website", "url", 255),
             _f("mainPhone", "Main Phone", "phone", 255), _f("industry", "Industry", "string", 255),
             _f("annualRevenue", "Annual Revenue", "currency"), _f("numberOfEmployees", "Num Employees", "integer"),
             _f("billingCity", "Billing City", "string", 255), _f("billingCountry", "Billing Country", "string", 255),
             _f("externalSalesPersonId", "External Sales Person Id", "string", 100), *_TS),
            crm_owned=True),
    ObjType("opportunities", "Opportunity", "Opportunity", "marketoGUID", ("externalOpportunityId",),
            (("marketoGUID",), ("externalOpportunityId",), ("externalCompanyId",), ("externalSalesPersonId",)),
            (_f("marketoGUID", "Marketo GUID", "string", 36, False),
             _f("externalOpportunityId", "External Opportunity Id", "string", 50, False),
             _f("name", "Name", "string", 255), _f("description", "Description", "text"),
             _f("amount", "Amount", "currency"), _f("closeDate", "Close Date", "date"),
             _f("isClosed", "Closed", "boolean"), _f("isWon", "Won", "boolean"), _f("stage", "Stage", "string", 255),
             _f("type", "Type", "string", 255), _f("externalCompanyId", "External Company Id", "string", 100),
             _f("externalSalesPersonId", "External Sales Person Id", "string", 100), *_TS),
            crm_owned=True),
    ObjType("opportunities/roles", "Opportunity Role", "Opportunity Role", "marketoGUID",
            ("externalOpportunityId", "leadId", "role"),
            (("marketoGUID",), ("externalOpportunityId", "leadId", "role"), ("externalOpportunityId",), ("leadId",)),
            (_f("marketoGUID", "Marketo GUID", "string", 36, False),
             _f("externalOpportunityId", "External Opportunity Id", "string", 50, False),
             _f("leadId", "Lead Id", "integer", updateable=False), _f("role", "Role", "string", 255, False),
             _f("isPrimary", "Is Primary", "boolean"), *_TS),
            crm_owned=True,
            refs=(Ref("externalOpportunityId", "opportunities", "externalOpportunityId"), Ref("leadId", "lead", "id"))),
    ObjType("salespersons", "SalesPerson", "Sales Person", "id", ("externalSalesPersonId",),
            (("externalSalesPersonId",), ("id",), ("email",)),
            (_f("id", "Id", "integer", updateable=False),
             _f("externalSalesPersonId", "External Sales Person Id", "string", 100, False),
             _f("email", "Email", "email", 255), _f("firstName", "First Name", "string", 255),
             _f("lastName", "Last Name", "string", 255), _f("phone", "Phone", "phone", 255),
             _f("title", "Title", "string", 255), *_TS),
            crm_owned=True),
)


def load_custom_types(path: Path | None = None) -> list[ObjType]:
    path = path or Path(os.environ.get("MARKETO_SANDBOX_CUSTOM_OBJECTS", str(CONFIG)))
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for t in data.get("types", []):
        fields = [_f("marketoGUID", "Marketo GUID", "string", 36, False)]
        fields += [ObjField(f["name"], f.get("displayName", f["name"]), f["dataType"], f.get("length"),
                            bool(f.get("updateable", True))) for f in t["fields"]]
        out.append(ObjType(
            f"customobjects/{t['name']}", t["name"], t.get("displayName", t["name"]), "marketoGUID",
            tuple(t["dedupeFields"]), tuple(tuple(s) for s in t.get("searchableFields", [t["dedupeFields"]])),
            (*fields, *_TS), custom=True, description=t.get("description", ""),
            plural=t.get("pluralName", t.get("displayName", t["name"])),
            relationships=tuple(t.get("relationships", [])),
            refs=tuple(Ref(r["field"], "lead", r["relatedTo"].get("field", "id"))
                       for r in t.get("relationships", []) if r.get("relatedTo", {}).get("name") == "Lead"),
        ))
    return out


_NUM = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def coerce_value(field: ObjField, value: Any) -> Any:
    dtype = field.data_type
    if value is None or value == "":
        return None
    if dtype in ("float", "currency", "percent"):
        if isinstance(value, bool):
            raise type_error(value, dtype)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and _NUM.match(value):
            return float(value)
        raise type_error(value, dtype)
    if dtype == "date":
        if isinstance(value, str) and _DATE.match(value):
            return value
        raise type_error(value, dtype)
    if dtype == "datetime":
        if isinstance(value, str) and _DATETIME.match(value):
            return value
        raise type_error(value, dtype)
    base = "integer" if dtype == "link" and field.name.lower().endswith("id") else dtype
    if base == "link":
        base = "string"
    fd = FieldDef(0, field.name, field.display_name, base, field.length, not field.updateable, field.name)
    out = coerce(fd, value)
    return bool(out) if base == "boolean" and out is not None else out


class ObjectStore:
    def __init__(self, store: Store, custom: list[ObjType] | None = None) -> None:
        self.store = store
        types = [*BUILTIN, *(custom if custom is not None else load_custom_types())]
        self.types: dict[str, ObjType] = {t.path: t for t in types}
        self.custom_names = {t.name: t for t in types if t.custom}
        with store._lock:
            store._conn.executescript(links.OBJECTS_DDL)

    # ------------------------------------------------------------------ catalogue
    def has_type(self, entity: str) -> bool:
        return self._entity(entity) is not None

    def type_names(self) -> list[str]:
        return [*(t.path for t in BUILTIN), *self.custom_names]

    def _entity(self, entity: str) -> ObjType | None:
        aliases = {"company": "companies", "opportunity": "opportunities", "opportunityRole": "opportunities/roles",
                   "salesperson": "salespersons", "salesPerson": "salespersons"}
        entity = aliases.get(entity, entity)
        return self.types.get(entity) or self.custom_names.get(entity)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _dkey(t: ObjType, rec: dict[str, Any]) -> str:
        return links.dkey([rec.get(f) for f in t.dedupe])

    def _check_refs(self, t: ObjType, values: dict[str, Any]) -> None:
        """Skip a record whose reference fields name no existing lead / object (see module docstring)."""
        for ref in t.refs:
            value = values.get(ref.field)
            if value is None:
                continue
            if ref.target == "lead":
                if ref.column not in COLUMNS:
                    continue
                found = self.store._conn.execute(f'SELECT 1 FROM leads WHERE "{ref.column}" = ? LIMIT 1',
                                                 (value,)).fetchone()
                if found is None:
                    raise FieldValueError("1004", "Lead not found")
            elif not links.exists(self.store._conn, ref.target, value):
                raise FieldValueError("1013", "Object not found")

    @staticmethod
    def _render(t: ObjType, pk: int, guid: str, data: dict[str, Any], created: str, updated: str,
                fields: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        full = {**data, "createdAt": created, "updatedAt": updated,
                "id": pk if t.id_field == "id" else data.get("id"), "marketoGUID": guid}
        for name in fields:
            value = full.get(name)
            if value is not None:
                out[name] = value
        return out

    def default_fields(self, t: ObjType) -> list[str]:
        return [t.id_field, *t.dedupe, "createdAt", "updatedAt"]

    def _find(self, t: ObjType, key_field: str, value: Any) -> list[sqlite3.Row]:
        conn = self.store._conn
        if key_field == t.id_field:
            if t.id_field == "id":
                return conn.execute("SELECT * FROM objects WHERE type = ? AND pk = ?", (t.path, value)).fetchall()
            return conn.execute("SELECT * FROM objects WHERE type = ? AND guid = ?", (t.path, value)).fetchall()
        raise AssertionError(key_field)

    # ------------------------------------------------------------------ query
    def query(self, t: ObjType, filter_type: str, values: list[Any], fields: list[str], batch: int,
              after: int) -> tuple[list[dict[str, Any]], bool, int]:
        conn = self.store._conn
        if filter_type == "dedupeFields" or (len(t.dedupe) == 1 and filter_type == t.dedupe[0]):
            keys = [self._dkey(t, v) if isinstance(v, dict) else json.dumps([v]) for v in values]
            where, params = f"dkey IN ({','.join('?' * len(keys))})", keys
        elif filter_type == t.id_field:
            col = "pk" if t.id_field == "id" else "guid"
            where, params = f"{col} IN ({','.join('?' * len(values))})", values
        else:
            where = f"json_extract(data, '$.{filter_type}') IN ({','.join('?' * len(values))})"
            params = values
        sql = f"SELECT * FROM objects WHERE type = ? AND {where} AND pk > ? ORDER BY pk LIMIT ?"
        with self.store._lock:
            rows = conn.execute(sql, (t.path, *params, after, batch + 1)).fetchall()
        more = len(rows) > batch
        rows = rows[:batch]
        out = []
        for i, row in enumerate(rows):
            item = {"seq": i, **self._render(t, row["pk"], row["guid"], json.loads(row["data"]), row["createdAt"],
                                             row["updatedAt"], fields)}
            out.append(item)
        return out, more, (rows[-1]["pk"] if rows else after)

    # ------------------------------------------------------------------ sync / delete
    def sync(self, t: ObjType, action: str, dedupe_by: str, records: list[Any], crm_enabled: bool) -> list[dict]:
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        by_name = t.by_name
        with self.store._lock:
            self.store._begin()
            try:
                now = now_iso()
                for seq, rec in enumerate(records):
                    try:
                        results.append({"seq": seq, **self._sync_one(t, action, dedupe_by, rec, by_name, seen, now,
                                                                     crm_enabled)})
                    except FieldValueError as exc:
                        results.append({"seq": seq, "status": "skipped",
                                        "reasons": [{"code": exc.code, "message": exc.message}]})
                self.store._commit()
            except BaseException:
                self.store._rollback()
                raise
        return results

    def _sync_one(self, t: ObjType, action: str, dedupe_by: str, rec: Any, by_name: dict[str, ObjField],
                  seen: set[str], now: str, crm_enabled: bool) -> dict[str, Any]:
        if crm_enabled and t.crm_owned:
            raise FieldValueError("1018", "CRM Enabled")
        if not isinstance(rec, dict):
            raise FieldValueError("1003", "Invalid data")
        values: dict[str, Any] = {}
        for key, raw in rec.items():
            field = by_name.get(key)
            if field is None:
                raise FieldValueError("1006", f"Field '{key}' not found")
            if key in ("createdAt", "updatedAt", "marketoGUID") or (key == "id" and t.id_field == "id"):
                continue
            values[key] = coerce_value(field, raw)
        conn = self.store._conn
        if dedupe_by == "idField":
            ident = rec.get(t.id_field)
            if ident in (None, ""):
                raise FieldValueError("1003", f"Value for required field '{t.id_field}' not specified")
            marker = f"id:{ident}"
            rows = self._find(t, t.id_field, ident)
            if action == "createOnly":
                raise FieldValueError("1003", f"'{t.id_field}' cannot be used with action 'createOnly'")
        else:
            for name in t.dedupe:
                if values.get(name) in (None, ""):
                    raise FieldValueError("1003", f"Value for required field '{name}' not specified")
            dkey = self._dkey(t, values)
            marker = f"key:{dkey}"
            rows = conn.execute("SELECT * FROM objects WHERE type = ? AND dkey = ?", (t.path, dkey)).fetchall()
        if marker in seen:
            raise FieldValueError("1036", "Duplicate object in input")
        seen.add(marker)
        self._check_refs(t, values)
        if rows:
            if action == "createOnly":
                raise FieldValueError("1017", "Object already exists")
            row = rows[0]
            data = json.loads(row["data"])
            for key in list(values):
                if key in t.dedupe and dedupe_by != "idField":
                    continue
                if not by_name[key].updateable and data.get(key) not in (None, values[key]):
                    raise FieldValueError("1003", f"Field '{key}' is not updateable")
            data.update(values)
            conn.execute("UPDATE objects SET data = ?, dkey = ?, updatedAt = ? WHERE pk = ?",
                         (json.dumps(data), self._dkey(t, data), now, row["pk"]))
            ident_out = row["pk"] if t.id_field == "id" else row["guid"]
            return {t.id_field: ident_out, "status": "updated"}
        if action == "updateOnly" or dedupe_by == "idField":
            raise FieldValueError("1013", "Object not found")
        guid = str(uuid.uuid4())
        cur = conn.execute("INSERT INTO objects (type, guid, dkey, data, createdAt, updatedAt) VALUES (?,?,?,?,?,?)",
                           (t.path, guid, self._dkey(t, values), json.dumps(values), now, now))
        ident_out = int(cur.lastrowid or 0) if t.id_field == "id" else guid
        return {t.id_field: ident_out, "status": "created"}

    def delete(self, t: ObjType, delete_by: str, records: list[Any], crm_enabled: bool) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        conn = self.store._conn
        with self.store._lock:
            self.store._begin()
            try:
                for seq, rec in enumerate(records):
                    if crm_enabled and t.crm_owned:
                        results.append({"seq": seq, "status": "skipped",
                                        "reasons": [{"code": "1018", "message": "CRM Enabled"}]})
                        continue
                    if not isinstance(rec, dict):
                        results.append({"seq": seq, "status": "skipped",
                                        "reasons": [{"code": "1003", "message": "Invalid data"}]})
                        continue
                    if delete_by == "idField":
                        rows = self._find(t, t.id_field, rec.get(t.id_field))
                    else:
                        rows = conn.execute("SELECT * FROM objects WHERE type = ? AND dkey = ?",
                                            (t.path, self._dkey(t, rec))).fetchall()
                    if not rows:
                        results.append({"seq": seq, "status": "skipped",
                                        "reasons": [{"code": "1013", "message": "Object not found"}]})
                        continue
                    row = rows[0]
                    conn.execute("DELETE FROM objects WHERE pk = ?", (row["pk"],))
                    ident = row["pk"] if t.id_field == "id" else row["guid"]
                    results.append({"seq": seq, t.id_field: ident, "status": "deleted"})
                self.store._commit()
            except BaseException:
                self.store._rollback()
                raise
        return results

    # ------------------------------------------------------------------ sandbox control
    def reset(self) -> None:
        with self.store._lock:
            self.store._conn.execute("DELETE FROM objects")

    def counts(self) -> dict[str, int]:
        with self.store._lock:
            rows = self.store._conn.execute("SELECT type, COUNT(*) FROM objects GROUP BY type").fetchall()
        return {t: n for t, n in rows}

    def seed(self, entity: str, count: int, seed: int) -> int:
        """Deterministic synthetic records; dedupe values ``<field>-<i:07d>`` (lead links point at lead ids 1..)."""
        t = self._entity(entity)
        assert t is not None
        rng = random.Random(seed)
        now = now_iso()
        rows = []
        for i in range(count):
            data: dict[str, Any] = {}
            for f in t.fields:
                if f.name in ("id", "marketoGUID", "createdAt", "updatedAt"):
                    continue
                if f.name in t.dedupe and f.data_type in ("string", "text"):
                    data[f.name] = f"{f.name}-{i:07d}"
                elif f.name == "leadId" or (f.data_type == "link" and f.name.lower().endswith("id")):
                    data[f.name] = i + 1
                elif f.data_type == "email" or f.data_type == "link":
                    data[f.name] = f"person{i:05d}@example.com"
                elif f.data_type == "integer":
                    data[f.name] = rng.randrange(1, 1000)
                elif f.data_type in ("currency", "float", "percent"):
                    data[f.name] = round(rng.uniform(100, 100000), 2)
                elif f.data_type == "boolean":
                    data[f.name] = rng.random() < 0.5
                elif f.data_type == "date":
                    data[f.name] = f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
                else:
                    data[f.name] = f"{f.display_name} {rng.randrange(100000)}"
            rows.append((t.path, str(uuid.UUID(int=rng.getrandbits(128))), self._dkey(t, data), json.dumps(data),
                         now, now))
        with self.store._lock:
            self.store._begin()
            try:
                before = self.store._conn.total_changes
                self.store._conn.executemany(
                    "INSERT OR IGNORE INTO objects (type, guid, dkey, data, createdAt, updatedAt) "
                    "SELECT ?,?,?,?,?,? WHERE NOT EXISTS (SELECT 1 FROM objects WHERE type = ?1 AND dkey = ?3)", rows)
                made = self.store._conn.total_changes - before
                self.store._commit()
            except BaseException:
                self.store._rollback()
                raise
        return made
