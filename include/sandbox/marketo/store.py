"""SQLite persistence of the sandbox: leads and their activity log.

Why SQLite and why like this:
- One file (``state_dir/marketo.db``) in WAL mode survives restarts and stays fast at 100k+ leads:
  reads page with ``WHERE … AND id > ? ORDER BY id LIMIT ?`` and never load a whole table.
- Every API write records the activities real Marketo would log (12 New Lead, 13 Change Data Value —
  one per changed field —, 37 Delete Lead, 32 Merge Leads) in the same transaction as the change, so
  the change feeds (``activities.json``, ``leadchanges.json``, ``deletedleads.json``) are exact.
- Ids are AUTOINCREMENT: like Marketo, a lead or activity id is never reused, also not after
  ``/_sandbox/reset`` (old paging tokens stay meaningful).
- One connection guarded by a lock: requests run in worker threads, SQLite work is short, and the
  serialisation removes every write race (real Marketo can create duplicates under concurrent upserts;
  the sandbox does not reproduce that).
- Reads show linked company / sales person values and Sync Leads applies the link rules (1021, 718)
  through :mod:`links`; a state dir made by an older sandbox gets the new lead columns added on open.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import links
from .fields import (
    COLUMNS,
    FIELDS_BY_NAME,
    WRITABLE,
    FieldDef,
    FieldValueError,
    coerce,
    to_text,
    type_error,
)

SOURCE_WEB_SERVICE = "Web service API"
# How many activity ids one activities/leadchanges/deletedleads call scans at most. Real Marketo also
# scans the log in blocks and may answer fewer items than batchSize (even none) with moreResult true.
SCAN_IDS = 50_000

# Lookups and filters on these text fields ignore case, as Marketo's e-mail dedupe does (for the custom
# string fields this is an assumption).
_NOCASE = frozenset({"email", "msdynLeadId", "msdynContactId", "msdynType"})



def _column_def(name: str) -> str:
    return f'"{name}" TEXT COLLATE NOCASE' if name in _NOCASE else f'"{name}"'


_LEADS = f"""
CREATE TABLE IF NOT EXISTS leads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(_column_def(c) for c in COLUMNS if c != "id")}
);
"""
_SCHEMA = """
CREATE INDEX IF NOT EXISTS ix_leads_email ON leads(email);
CREATE INDEX IF NOT EXISTS ix_leads_updated ON leads(updatedAt);
CREATE INDEX IF NOT EXISTS ix_leads_msdyn_lead ON leads(msdynLeadId);
CREATE INDEX IF NOT EXISTS ix_leads_msdyn_contact ON leads(msdynContactId);
CREATE INDEX IF NOT EXISTS ix_leads_msdyn_type ON leads(msdynType);
CREATE INDEX IF NOT EXISTS ix_leads_ext_company ON leads(externalCompanyId);
CREATE INDEX IF NOT EXISTS ix_leads_ext_sales_person ON leads(externalSalesPersonId);
CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    leadId INTEGER NOT NULL,
    activityDate TEXT NOT NULL,
    activityTypeId INTEGER NOT NULL,
    primaryAttributeValueId INTEGER,
    primaryAttributeValue TEXT,
    fieldName TEXT,
    oldValue TEXT,
    newValue TEXT,
    reason TEXT,
    source TEXT,
    apiUser TEXT,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS ix_act_date ON activities(activityDate);
CREATE INDEX IF NOT EXISTS ix_act_type ON activities(activityTypeId, id);
CREATE INDEX IF NOT EXISTS ix_act_lead ON activities(leadId, id);
"""

_ACT_COLS = (
    "leadId, activityDate, activityTypeId, primaryAttributeValueId, primaryAttributeValue, "
    "fieldName, oldValue, newValue, reason, source, apiUser, extra"
)
_ACT_INSERT = f"INSERT INTO activities ({_ACT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"

ACTIONS = ("createOnly", "updateOnly", "createOrUpdate", "createDuplicate")


def now_iso() -> str:
    """Marketo's datetime form in replies: ``2024-05-01T09:31:49Z``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_of(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _q(name: str) -> str:
    return f'"{name}"'


def lead_name(row: sqlite3.Row | dict[str, Any]) -> str:
    first = row["firstName"] or ""
    last = row["lastName"] or ""
    return f"{first} {last}".strip() or (row["email"] or "")


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the API user's e-mail ends up in the activities' ``API User`` attribute."""

    api_user: str
    source: str = SOURCE_WEB_SERVICE
    reason: str = SOURCE_WEB_SERVICE


class LeadNotFound(Exception):
    pass


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA temp_store=MEMORY")
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.executescript(_LEADS)
            have = {r[1] for r in self._conn.execute("PRAGMA table_info(leads)")}
            for name in COLUMNS:
                if name not in have:
                    self._conn.execute(f"ALTER TABLE leads ADD COLUMN {_column_def(name)}")
            self._conn.executescript(_SCHEMA)
            self._conn.executescript(links.OBJECTS_DDL)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ transactions
    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    # ------------------------------------------------------------------ reads
    def count_activities(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM activities").fetchone()[0])

    def count_leads(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM leads").fetchone()[0])

    def get_lead(self, lead_id: int, fields: Sequence[str]) -> dict[str, Any] | None:
        cols = select_cols(fields)
        with self._lock:
            row = self._conn.execute(f"SELECT {cols} FROM leads WHERE id = ?", (lead_id,)).fetchone()
            if row is None:
                return None
            linked = links.load(self._conn, [row], fields)
        return render_lead(row, fields, linked)

    def count_matches(self, field: str, values: Sequence[Any], cap: int) -> int:
        marks = ",".join("?" * len(values))
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM leads WHERE {_q(field)} IN ({marks}) LIMIT ?)"
        with self._lock:
            return int(self._conn.execute(sql, (*values, cap)).fetchone()[0])

    def query_leads(
        self, field: str, values: Sequence[Any], fields: Sequence[str], batch: int, after_id: int
    ) -> tuple[list[dict[str, Any]], bool, int]:
        """One page of Get Leads by Filter Type: (records, more, last id)."""
        marks = ",".join("?" * len(values))
        sql = (
            f"SELECT {select_cols(fields)} FROM leads WHERE {_q(field)} IN ({marks}) AND id > ? "
            "ORDER BY id LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*values, after_id, batch + 1)).fetchall()
            more = len(rows) > batch
            rows = rows[:batch]
            linked = links.load(self._conn, rows, fields)
        last = rows[-1]["id"] if rows else after_id
        return [render_lead(r, fields, linked) for r in rows], more, last

    # ------------------------------------------------------------------ sync
    def sync_leads(
        self, action: str, lookup_field: str, records: Sequence[Any], partition: str | None, actor: Actor
    ) -> list[dict[str, Any]]:
        """Sync Leads: one result item per input record, in input order."""
        results: list[dict[str, Any]] = []
        with self._lock:
            self._begin()
            try:
                now = now_iso()
                for rec in records:
                    try:
                        results.append(self._sync_one(action, lookup_field, rec, partition, actor, now))
                    except FieldValueError as exc:
                        results.append(skipped(exc.code, exc.message))
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return results

    def _sync_one(
        self, action: str, lookup_field: str, rec: Any, partition: str | None, actor: Actor, now: str
    ) -> dict[str, Any]:
        if not isinstance(rec, dict):
            raise FieldValueError("1003", "Invalid data")
        for key in rec:
            if key not in FIELDS_BY_NAME:
                raise FieldValueError("1006", f"Field '{key}' not found")
        values: dict[str, Any] = {}
        for key, raw in rec.items():
            field = FIELDS_BY_NAME[key]
            if key == "id":
                if action != "updateOnly":
                    raise FieldValueError(
                        "1003", f"Invalid data: 'id' is only allowed with action 'updateOnly', not '{action}'"
                    )
                continue
            if key not in WRITABLE:
                raise FieldValueError("1003", f"Invalid data: field '{key}' is read-only")
            values[key] = coerce(field, raw)
        if partition not in (None, "", "Default") and action != "updateOnly":
            raise FieldValueError("1008", f"Access denied to partition '{partition}'")

        if action == "createDuplicate":
            links.check_write(self._conn, values, None)
            return {"id": self._insert(values, actor, now), "status": "created"}

        raw_key = rec.get(lookup_field)
        key_value = coerce(FIELDS_BY_NAME[lookup_field], raw_key) if raw_key is not None else None
        if key_value is None:
            raise FieldValueError("1003", f"Value for lookup field '{lookup_field}' not specified")
        matches = self._conn.execute(
            f"SELECT * FROM leads WHERE {_q(lookup_field)} = ? ORDER BY id LIMIT 2", (key_value,)
        ).fetchall()
        if action == "createOnly":
            if matches:
                raise FieldValueError("1005", "Lead already exists")
            links.check_write(self._conn, values, None)
            return {"id": self._insert(values, actor, now), "status": "created"}
        if not matches:
            if action == "updateOnly":
                raise FieldValueError("1004", "Lead not found")
            links.check_write(self._conn, values, None)
            return {"id": self._insert(values, actor, now), "status": "created"}
        if len(matches) > 1:
            raise FieldValueError("1007", "Multiple leads match the lookup criteria")
        row = matches[0]
        links.check_write(self._conn, values, row)
        self._update(row, values, actor, now, actor.reason)
        return {"id": row["id"], "status": "updated"}

    def _insert(self, values: dict[str, Any], actor: Actor, now: str) -> int:
        cols = [*values.keys(), "createdAt", "updatedAt"]
        params = [*values.values(), now, now]
        cur = self._conn.execute(
            f"INSERT INTO leads ({','.join(_q(c) for c in cols)}) VALUES ({','.join('?' * len(cols))})", params
        )
        lead_id = int(cur.lastrowid or 0)
        name = lead_name({k: values.get(k) for k in ("firstName", "lastName", "email")})
        extra = json.dumps({"Created Date": now[:10], "Source Type": actor.source})
        self._conn.execute(
            _ACT_INSERT,
            (lead_id, now, 12, lead_id, name, None, None, None, None, actor.source, actor.api_user, extra),
        )
        return lead_id

    def _update(self, row: sqlite3.Row, values: dict[str, Any], actor: Actor, now: str, reason: str) -> list[str]:
        changed = {k: v for k, v in values.items() if row[k] != v}
        if not changed:
            return []
        sets = ",".join(f"{_q(k)} = ?" for k in changed)
        self._conn.execute(f"UPDATE leads SET {sets}, updatedAt = ? WHERE id = ?", (*changed.values(), now, row["id"]))
        acts = []
        for key, new in changed.items():
            field = FIELDS_BY_NAME[key]
            acts.append(
                (
                    row["id"], now, 13, field.id, field.display_name, key,
                    to_text(field, row[key]), to_text(field, new), reason, actor.source, actor.api_user, None,
                )
            )
        self._conn.executemany(_ACT_INSERT, acts)
        return list(changed)

    # ------------------------------------------------------------------ delete / merge
    def delete_leads(self, ids: Sequence[Any], actor: Actor) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        with self._lock:
            self._begin()
            try:
                now = now_iso()
                for raw in ids:
                    if isinstance(raw, bool) or not isinstance(raw, int):
                        item = skipped("1001", str(type_error(raw, "integer")))
                        if raw is not None:
                            item = {"id": raw, **item}
                        results.append(item)
                        continue
                    row = self._conn.execute("SELECT * FROM leads WHERE id = ?", (raw,)).fetchone()
                    if row is None:
                        results.append({"id": raw, **skipped("1004", "Lead not found")})
                        continue
                    self._conn.execute("DELETE FROM leads WHERE id = ?", (raw,))
                    self._conn.execute(
                        _ACT_INSERT,
                        (raw, now, 37, raw, lead_name(row), None, None, None, None, actor.source, actor.api_user, None),
                    )
                    results.append({"id": raw, "status": "deleted"})
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return results

    def merge_leads(self, winner_id: int, loser_ids: Sequence[int], actor: Actor) -> None:
        """Merge Leads: empty winner fields take the first loser's value; losers go away.

        Sandbox model (unconfirmed details): one 13 activity per filled field with Reason "Merge Leads",
        the losers' activities move to the winner, one 32 Merge Leads activity on the winner, and no
        37 Delete Lead for the losers.
        """
        with self._lock:
            self._begin()
            try:
                now = now_iso()
                winner = self._conn.execute("SELECT * FROM leads WHERE id = ?", (winner_id,)).fetchone()
                if winner is None:
                    raise LeadNotFound(winner_id)
                losers = []
                for lid in loser_ids:
                    row = self._conn.execute("SELECT * FROM leads WHERE id = ?", (lid,)).fetchone()
                    if row is None:
                        raise LeadNotFound(lid)
                    losers.append(row)
                fill: dict[str, Any] = {}
                for name in WRITABLE:
                    if winner[name] is None:
                        for loser in losers:
                            if loser[name] is not None:
                                fill[name] = loser[name]
                                break
                self._update(winner, fill, actor, now, "Merge Leads")
                marks = ",".join("?" * len(loser_ids))
                self._conn.execute(
                    f"UPDATE activities SET leadId = ? WHERE leadId IN ({marks})", (winner_id, *loser_ids)
                )
                self._conn.execute(f"DELETE FROM leads WHERE id IN ({marks})", tuple(loser_ids))
                extra = json.dumps(
                    {
                        "Merge IDs": "[" + ",".join(str(i) for i in loser_ids) + "]",
                        "Merge Source": actor.source,
                        "Merged in Sales": False,
                        "Master Updated": bool(fill),
                    }
                )
                self._conn.execute(
                    _ACT_INSERT,
                    (
                        winner_id, now, 32, winner_id, lead_name(winner),
                        None, None, None, None, actor.source, actor.api_user, extra,
                    ),
                )
                self._commit()
            except BaseException:
                self._rollback()
                raise

    # ------------------------------------------------------------------ activity log
    def activities_page(
        self,
        since: str,
        pos: int,
        *,
        batch: int,
        type_ids: Iterable[int] | None = None,
        change_fields: Sequence[str] | None = None,
        lead_ids: Sequence[int] | None = None,
    ) -> tuple[list[sqlite3.Row], int, bool]:
        """One page of the activity log after position ``pos`` and at/after ``since``.

        ``change_fields`` selects the leadchanges view (12, and 13 for these fields), else ``type_ids``.
        Returns (rows, next position, moreResult).
        """
        with self._lock:
            max_id = int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM activities").fetchone()[0])
            # ids grow with activityDate (both are assigned under the lock), so the earliest row at/after
            # ``since`` in the date index is also the lowest id there
            first = self._conn.execute(
                "SELECT id FROM activities WHERE activityDate >= ? ORDER BY activityDate, id LIMIT 1", (since,)
            ).fetchone()
            start = max(pos, max_id) if first is None else max(pos, int(first[0]) - 1)
            hi = start + SCAN_IDS
            where = ["id > ?", "id <= ?", "+activityDate >= ?"]
            params: list[Any] = [start, hi, since]
            if change_fields is not None:
                marks = ",".join("?" * len(change_fields)) or "NULL"
                where.append(f"(activityTypeId = 12 OR (activityTypeId = 13 AND fieldName IN ({marks})))")
                params.extend(change_fields)
            else:
                types = sorted(set(type_ids or ()))
                where.append(f"activityTypeId IN ({','.join('?' * len(types)) or 'NULL'})")
                params.extend(types)
            if lead_ids:
                where.append(f"+leadId IN ({','.join('?' * len(lead_ids))})")
                params.extend(lead_ids)
            sql = f"SELECT * FROM activities WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
            rows = self._conn.execute(sql, (*params, batch + 1)).fetchall()
        if len(rows) > batch:
            rows = rows[:batch]
            return rows, int(rows[-1]["id"]), True
        nxt = min(hi, max_id) if max_id > start else start
        return rows, nxt, nxt < max_id

    # ------------------------------------------------------------------ sandbox control
    def reset(self) -> None:
        with self._lock:
            self._begin()
            try:
                self._conn.execute("DELETE FROM leads")
                self._conn.execute("DELETE FROM activities")
                self._commit()
            except BaseException:
                self._rollback()
                raise

    def seed(self, people: Iterable[Sequence[Any]], seed_columns: Sequence[str], api_user: str) -> tuple[int, int]:
        """Bulk-insert people (skipping e-mails that already exist) plus their New Lead activities."""
        cols = [*seed_columns, "createdAt", "updatedAt"]
        email_idx = list(seed_columns).index("email")
        sql = (
            f"INSERT INTO leads ({','.join(_q(c) for c in cols)}) SELECT {','.join('?' * len(cols))} "
            "WHERE NOT EXISTS (SELECT 1 FROM leads WHERE email = ?)"
        )
        total = 0
        created = 0
        with self._lock:
            self._begin()
            try:
                now = now_iso()
                extra = json.dumps({"Created Date": now[:10], "Source Type": SOURCE_WEB_SERVICE})
                before = int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM leads").fetchone()[0])
                seq = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'leads'").fetchone()
                if seq is not None:
                    before = max(before, int(seq[0]))
                changes_before = self._conn.total_changes
                chunk: list[tuple[Any, ...]] = []
                for p in people:
                    chunk.append((*p, now, now, p[email_idx]))
                    if len(chunk) >= 20_000:
                        self._conn.executemany(sql, chunk)
                        total += len(chunk)
                        chunk = []
                if chunk:
                    self._conn.executemany(sql, chunk)
                    total += len(chunk)
                created = self._conn.total_changes - changes_before
                self._conn.execute(
                    f"INSERT INTO activities ({_ACT_COLS}) "
                    "SELECT id, ?, 12, id, TRIM(COALESCE(firstName, '') || ' ' || COALESCE(lastName, '')), "
                    "NULL, NULL, NULL, NULL, ?, ?, ? FROM leads WHERE id > ? ORDER BY id",
                    (now, SOURCE_WEB_SERVICE, api_user, extra, before),
                )
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return created, total - created


def skipped(code: str, message: str) -> dict[str, Any]:
    return {"status": "skipped", "reasons": [{"code": code, "message": message}]}


def select_cols(fields: Sequence[str]) -> str:
    """Columns a read of ``fields`` selects: ``id``, the stored fields and the link keys it needs."""
    names = ["id"]
    for name in [*fields, *links.key_columns(fields)]:
        if name not in names and FIELDS_BY_NAME[name].stored:
            names.append(name)
    return ",".join(_q(n) for n in names)


def render_lead(row: sqlite3.Row, fields: Sequence[str], linked: links.Linked | None = None) -> dict[str, Any]:
    """A lead record: ``id`` first, then the requested fields (company / Lead Owner fields from the
    linked objects); null values are left out (docs: a requested field that is not returned is null)."""
    linked = linked or links.Linked()
    out: dict[str, Any] = {"id": row["id"]}
    for name in fields:
        if name == "id":
            continue
        value = linked.value(row, name)
        if value is None:
            continue
        field: FieldDef = FIELDS_BY_NAME[name]
        out[name] = bool(value) if field.data_type == "boolean" else value
    return out
