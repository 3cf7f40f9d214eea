"""Lead ↔ company and lead ↔ sales person links: what a lead read shows and what Sync Leads may write.

Documented behaviour reproduced (Companies, Sales Persons and Error Codes pages):
- a person belongs to the company whose ``externalCompanyId`` it carries; the company fields shown on
  the person (``company``, ``website``, ``mainPhone``, ``industry``, ``annualRevenue``,
  ``numberOfEmployees``, ``billingCity``, ``billingCountry``) are the company's, so a Sync Companies
  change is seen on all of its people at once (Get Leads by id/filter, ``_method=GET``, bulk export);
- Sync Leads may set ``externalCompanyId`` (that is how people are linked), but writing a company field
  on a person linked to a company skips the record with ``1021`` "Company update not allowed" (the
  documented text; its comment reads "Company update not allowed during syncLead");
- a person whose ``externalSalesPersonId`` names a sales person shows the Lead Owner fields
  (``leadOwnerFirstName``, ``leadOwnerLastName``, ``leadOwnerEmail``, ``leadOwnerPhone``, read-only)
  from that sales person's ``firstName``/``lastName``/``email``/``phone``.

Sandbox choices (unconfirmed):
- A person whose ``externalCompanyId`` names no existing company keeps (and may write) its own company
  fields, which are stored on the person. Why: real Marketo keeps a hidden company record per person
  anyway, and a sync can then write people and companies in either order — the link takes effect the
  moment a company with that key is created, and the person's own values show again if the company is
  deleted or the person is re-linked to a missing key. No company is created implicitly (it would
  appear in ``companies.json`` reads, which real Marketo does not document).
- ``1021`` applies when the record's effective ``externalCompanyId`` (the one it sends, else the stored
  one) names an existing company, whatever the values; the whole record is skipped, nothing is written.
- Sync Leads with an ``externalSalesPersonId`` that names no sales person skips the record with ``718``
  "ExternalSalesPersonID not found". The docs list 718 among the response-level codes and describe it
  for Sync Opportunities; the sandbox gives it per record so the other records of the batch still go
  through. Sending null/empty unlinks and is always allowed. Opportunities and companies do not check it.
- A company or sales person change does not log Change Data Value activities on its people and does not
  touch their ``updatedAt`` (the person's own fields did not change).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .fields import FieldValueError

COMPANY_FIELDS: tuple[str, ...] = (
    "company", "website", "mainPhone", "industry", "annualRevenue", "numberOfEmployees", "billingCity",
    "billingCountry",
)
# Lead Owner field → sales person field it shows.
OWNER_FIELDS: dict[str, str] = {
    "leadOwnerFirstName": "firstName",
    "leadOwnerLastName": "lastName",
    "leadOwnerEmail": "email",
    "leadOwnerPhone": "phone",
}
COMPANY_KEY = "externalCompanyId"
OWNER_KEY = "externalSalesPersonId"

# The generic object table (see objects.py); created by the lead store too, so lead reads can always join.
OBJECTS_DDL = """
CREATE TABLE IF NOT EXISTS objects (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    guid TEXT NOT NULL UNIQUE,
    dkey TEXT NOT NULL,
    data TEXT NOT NULL,
    createdAt TEXT NOT NULL,
    updatedAt TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_objects_key ON objects(type, dkey);
"""


def dkey(values: Sequence[Any]) -> str:
    """The stored dedupe key of an object (same form as ``ObjectStore._dkey``)."""
    return json.dumps(list(values), separators=(",", ":"))


def key_columns(fields: Iterable[str]) -> list[str]:
    """Link columns a read of ``fields`` needs besides the fields themselves."""
    names = set(fields)
    out = []
    if names & set(COMPANY_FIELDS):
        out.append(COMPANY_KEY)
    if names & set(OWNER_FIELDS):
        out.append(OWNER_KEY)
    return out


@dataclass
class Linked:
    """Companies and sales persons (by key) that some lead rows link to."""

    companies: dict[str, dict[str, Any]] = field(default_factory=dict)
    persons: dict[str, dict[str, Any]] = field(default_factory=dict)

    def value(self, row: Mapping[str, Any], name: str) -> Any:
        """The value a read shows for ``name`` of the lead ``row``."""
        if name in OWNER_FIELDS:
            person = self.persons.get(row[OWNER_KEY]) if row[OWNER_KEY] is not None else None
            return None if person is None else person.get(OWNER_FIELDS[name])
        if name in COMPANY_FIELDS and row[COMPANY_KEY] is not None:
            company = self.companies.get(row[COMPANY_KEY])
            if company is not None:
                return company.get(name)
        return row[name]


def _objects(conn: sqlite3.Connection, kind: str, key_name: str, keys: set[Any] | None) -> dict[str, dict[str, Any]]:
    if keys is None:
        rows = conn.execute("SELECT data FROM objects WHERE type = ?", (kind,)).fetchall()
    else:
        rows = []
        ordered = sorted(keys)
        for i in range(0, len(ordered), 500):
            chunk = [dkey([k]) for k in ordered[i:i + 500]]
            rows += conn.execute(f"SELECT data FROM objects WHERE type = ? AND dkey IN ({','.join('?' * len(chunk))})",
                                 (kind, *chunk)).fetchall()
    out = {}
    for (raw,) in rows:
        data = json.loads(raw)
        out[data.get(key_name)] = data
    return out


def load(conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]], fields: Iterable[str]) -> Linked:
    """The companies and sales persons that ``rows`` link to, as far as ``fields`` show them."""
    need = key_columns(fields)
    linked = Linked()
    if COMPANY_KEY in need:
        keys = {r[COMPANY_KEY] for r in rows if r[COMPANY_KEY] is not None}
        if keys:
            linked.companies = _objects(conn, "companies", COMPANY_KEY, keys)
    if OWNER_KEY in need:
        keys = {r[OWNER_KEY] for r in rows if r[OWNER_KEY] is not None}
        if keys:
            linked.persons = _objects(conn, "salespersons", OWNER_KEY, keys)
    return linked


def load_all(conn: sqlite3.Connection, fields: Iterable[str]) -> Linked:
    """Every company / sales person a read of ``fields`` may need (bulk export: one load per job)."""
    need = key_columns(fields)
    return Linked(
        companies=_objects(conn, "companies", COMPANY_KEY, None) if COMPANY_KEY in need else {},
        persons=_objects(conn, "salespersons", OWNER_KEY, None) if OWNER_KEY in need else {},
    )


def exists(conn: sqlite3.Connection, kind: str, key: Any) -> bool:
    """Whether an object of ``kind`` (``companies``, ``salespersons``, …) has the single-field key ``key``."""
    row = conn.execute("SELECT 1 FROM objects WHERE type = ? AND dkey = ? LIMIT 1", (kind, dkey([key]))).fetchone()
    return row is not None


def check_write(conn: sqlite3.Connection, values: Mapping[str, Any], row: Mapping[str, Any] | None) -> None:
    """Refuse a Sync Leads record that breaks a link rule (``row``: the lead it updates, if any)."""
    if any(name in values for name in COMPANY_FIELDS):
        key = values[COMPANY_KEY] if COMPANY_KEY in values else (row[COMPANY_KEY] if row is not None else None)
        if key is not None and exists(conn, "companies", key):
            raise FieldValueError("1021", "Company update not allowed")
    owner = values.get(OWNER_KEY)
    if owner is not None and not exists(conn, "salespersons", owner):
        raise FieldValueError("718", "ExternalSalesPersonID not found")
