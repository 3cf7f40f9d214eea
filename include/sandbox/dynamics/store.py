"""SQLite row store for the Dataverse sandbox: one file, WAL, schema derived from ``tables.py``.

Why: the sandbox must hold 100k+ rows per table and still answer page after page quickly, so
queries page with SQL (keyset conditions on the sort columns plus the primary key, never OFFSET)
and nothing loads a whole table into memory. It also keeps what change tracking needs: one global,
monotonically increasing ``versionnumber`` (like SQL Server's rowversion) bumped by every write,
and a tombstone per deleted row carrying the version of its deletion.

All access goes through one connection guarded by a re-entrant lock; ``transaction()`` nests with
SAVEPOINTs so a $batch change set can wrap several handler calls and roll them all back.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import tables as t

DB_FILE = "dynamics.sqlite3"
FIRST_VERSION = 1_000_000

_SQL_TYPES = {
    t.STRING: "TEXT COLLATE NOCASE",
    t.MEMO: "TEXT COLLATE NOCASE",
    t.UNIQUEIDENTIFIER: "TEXT",
    t.LOOKUP: "TEXT",
    t.OWNER: "TEXT",
    "Customer": "TEXT",
    t.DATETIME: "TEXT",
    t.INTEGER: "INTEGER",
    t.BIGINT: "INTEGER",
    t.PICKLIST: "INTEGER",
    t.STATE: "INTEGER",
    t.STATUS: "INTEGER",
    t.BOOLEAN: "INTEGER",
    "Decimal": "REAL",
    "Money": "REAL",
    "Double": "REAL",
}


def q(name: str) -> str:
    """Quote an identifier taken from the table definitions."""
    return '"' + name.replace('"', '""') + '"'


def keyset_after(order: Sequence[tuple[str, bool]], values: Sequence[Any]) -> tuple[str, list[Any]]:
    """SQL condition selecting rows strictly after ``values`` in ``order`` (SQLite: NULLs sort first)."""
    branches: list[str] = []
    params: list[Any] = []
    for i, (col, desc) in enumerate(order):
        parts: list[str] = []
        local: list[Any] = []
        for (prev, _), prev_value in zip(order[:i], values[:i], strict=True):
            parts.append(f"{q(prev)} IS ?")
            local.append(prev_value)
        value = values[i]
        if not desc:
            if value is None:
                parts.append(f"{q(col)} IS NOT NULL")
            else:
                parts.append(f"{q(col)} > ?")
                local.append(value)
        else:
            if value is None:
                continue  # NULLs come last in descending order: nothing sorts after them here
            parts.append(f"({q(col)} < ? OR {q(col)} IS NULL)")
            local.append(value)
        branches.append("(" + " AND ".join(parts) + ")")
        params.extend(local)
    return ("(" + " OR ".join(branches) + ")" if branches else "0"), params


class Store:
    def __init__(self, state_dir: Path, table_defs: Iterable[t.Table]) -> None:
        self.path = Path(state_dir) / DB_FILE
        self.tables = {d.logical_name: d for d in table_defs}
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "temp_store=MEMORY", "cache_size=-65536",
                       "busy_timeout=5000"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._create_schema()

    # ------------------------------------------------------------------ schema
    def _create_schema(self) -> None:
        c = self._conn
        c.execute("CREATE TABLE IF NOT EXISTS _counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        c.execute("INSERT OR IGNORE INTO _counter VALUES ('version', ?)", (FIRST_VERSION,))
        c.execute("INSERT OR IGNORE INTO _counter VALUES ('min_delta_version', 0)")
        c.execute(
            "CREATE TABLE IF NOT EXISTS _tombstone (entity TEXT NOT NULL, id TEXT NOT NULL, "
            "version INTEGER NOT NULL, deletedon TEXT NOT NULL, PRIMARY KEY (entity, id))"
        )
        c.execute("CREATE INDEX IF NOT EXISTS _tombstone_version ON _tombstone (entity, version)")
        for table in self.tables.values():
            cols = []
            for col in table.columns:
                sql_type = _SQL_TYPES.get(col.type, "TEXT")
                if col.name == table.primary_id:
                    sql_type += " PRIMARY KEY"
                cols.append(f"{q(col.name)} {sql_type}")
            c.execute(f"CREATE TABLE IF NOT EXISTS {q(table.logical_name)} ({', '.join(cols)})")
            existing = {r["name"] for r in c.execute(f"PRAGMA table_info({q(table.logical_name)})")}
            for col in table.columns:  # columns added to the definitions after the file was made
                if col.name not in existing:
                    c.execute(f"ALTER TABLE {q(table.logical_name)} ADD COLUMN {q(col.name)} "
                              f"{_SQL_TYPES.get(col.type, 'TEXT')}")
            for n, cols in enumerate(table.alternate_keys):
                c.execute(f"CREATE INDEX IF NOT EXISTS {q(f'ak_{table.logical_name}_{n}')} "
                          f"ON {q(table.logical_name)} ({', '.join(q(x) for x in cols)})")
            for name in table.indexes:
                c.execute(f"CREATE INDEX IF NOT EXISTS {q(f'ix_{table.logical_name}_{name}')} "
                          f"ON {q(table.logical_name)} ({q(name)})")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Atomic unit; nested calls become savepoints of the outer transaction."""
        with self._lock:
            depth = self._depth
            if depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
            else:
                self._conn.execute(f"SAVEPOINT sp{depth}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if depth == 0:
                    self._conn.execute("ROLLBACK")
                else:
                    self._conn.execute(f"ROLLBACK TO sp{depth}")
                    self._conn.execute(f"RELEASE sp{depth}")
                raise
            else:
                self._depth -= 1
                if depth == 0:
                    self._conn.execute("COMMIT")
                else:
                    self._conn.execute(f"RELEASE sp{depth}")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    # ------------------------------------------------------------------ versions
    def allocate_versions(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive row versions; return the first. Call inside a transaction."""
        with self._lock:
            row = self._conn.execute(
                "UPDATE _counter SET value = value + ? WHERE name = 'version' RETURNING value", (n,)
            ).fetchone()
            return int(row[0]) - n + 1

    def current_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT value FROM _counter WHERE name = 'version'").fetchone()[0])

    def min_delta_version(self) -> int:
        with self._lock:
            return int(self._conn.execute(
                "SELECT value FROM _counter WHERE name = 'min_delta_version'").fetchone()[0])

    # ------------------------------------------------------------------ rows
    def get(self, table: t.Table, row_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT * FROM {q(table.logical_name)} WHERE {q(table.primary_id)} = ?", (row_id,)
            ).fetchone()
            return dict(row) if row is not None else None

    def find_by(self, table: t.Table, values: dict[str, Any]) -> dict[str, Any] | None:
        """The row whose columns equal ``values`` (alternate-key lookups)."""
        names = list(values)
        with self._lock:
            row = self._conn.execute(
                f"SELECT * FROM {q(table.logical_name)} WHERE {' AND '.join(f'{q(n)} = ?' for n in names)} LIMIT 1",
                [values[n] for n in names]).fetchone()
            return dict(row) if row is not None else None

    def get_many(self, table: t.Table, ids: Iterable[str]) -> list[dict[str, Any]]:
        wanted = list(dict.fromkeys(i for i in ids if i))
        out: list[dict[str, Any]] = []
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                out += [dict(r) for r in self._conn.execute(
                    f"SELECT * FROM {q(table.logical_name)} WHERE {q(table.primary_id)} IN "
                    f"({','.join('?' * len(chunk))})", chunk)]
        return out

    def delete_where(self, table: t.Table, where: str, params: Sequence[Any], deleted_on: str) -> int:
        """Delete every row matching ``where`` (BulkDelete), leaving tombstones; return how many."""
        name, key = q(table.logical_name), q(table.primary_id)
        with self.transaction():
            ids = [r[0] for r in self._conn.execute(
                f"SELECT {key} FROM {name}" + (f" WHERE {where}" if where else ""), list(params))]
            if not ids:
                return 0
            first = self.allocate_versions(len(ids))
            self._conn.executemany("INSERT OR REPLACE INTO _tombstone VALUES (?, ?, ?, ?)",
                                   ((table.logical_name, i, first + n, deleted_on) for n, i in enumerate(ids)))
            self._conn.executemany(f"DELETE FROM {name} WHERE {key} = ?", ((i,) for i in ids))
            return len(ids)

    def insert(self, table: t.Table, row: dict[str, Any]) -> None:
        names = list(row)
        with self.transaction():
            self._conn.execute(
                f"INSERT INTO {q(table.logical_name)} ({', '.join(q(n) for n in names)}) "
                f"VALUES ({', '.join('?' * len(names))})",
                [row[n] for n in names],
            )
            self._conn.execute("DELETE FROM _tombstone WHERE entity = ? AND id = ?",
                               (table.logical_name, row[table.primary_id]))

    def update(self, table: t.Table, row_id: str, changes: dict[str, Any]) -> None:
        if not changes:
            return
        names = list(changes)
        with self.transaction():
            self._conn.execute(
                f"UPDATE {q(table.logical_name)} SET {', '.join(f'{q(n)} = ?' for n in names)} "
                f"WHERE {q(table.primary_id)} = ?",
                [changes[n] for n in names] + [row_id],
            )

    def delete(self, table: t.Table, row_id: str, version: int, deleted_on: str) -> None:
        with self.transaction():
            self._conn.execute(f"DELETE FROM {q(table.logical_name)} WHERE {q(table.primary_id)} = ?", (row_id,))
            self._conn.execute("INSERT OR REPLACE INTO _tombstone VALUES (?, ?, ?, ?)",
                               (table.logical_name, row_id, version, deleted_on))

    def bulk_upsert(self, table: t.Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Insert-or-replace many rows in one transaction (seeding)."""
        rows = list(rows)
        key_at = list(columns).index(table.primary_id)
        with self.transaction():
            self._conn.executemany(
                f"INSERT OR REPLACE INTO {q(table.logical_name)} ({', '.join(q(c) for c in columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                rows,
            )
            if self._conn.execute("SELECT 1 FROM _tombstone WHERE entity = ? LIMIT 1",
                                  (table.logical_name,)).fetchone():
                self._conn.executemany("DELETE FROM _tombstone WHERE entity = ? AND id = ?",
                                       ((table.logical_name, r[key_at]) for r in rows))

    def select(self, table: t.Table, where: str, params: Sequence[Any], order: Sequence[tuple[str, bool]],
               after: Sequence[Any] | None, limit: int) -> list[dict[str, Any]]:
        """One page of rows matching ``where`` in ``order`` strictly after the keyset ``after``."""
        conds = [f"({where})"] if where else []
        all_params = list(params)
        if after is not None:
            cond, extra = keyset_after(order, after)
            conds.append(cond)
            all_params.extend(extra)
        sql = f"SELECT * FROM {q(table.logical_name)}"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY " + ", ".join(f"{q(c)} {'DESC' if d else 'ASC'}" for c, d in order) + " LIMIT ?"
        all_params.append(limit)
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, all_params)]

    def count(self, table: t.Table, where: str, params: Sequence[Any], cap: int | None = None) -> int:
        inner = f"SELECT 1 FROM {q(table.logical_name)}" + (f" WHERE {where}" if where else "")
        args = list(params)
        if cap is not None:
            inner += " LIMIT ?"
            args.append(cap)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM ({inner})", args).fetchone()[0])

    def changed_rows(self, table: t.Table, since: int, until: int, after: int | None,
                     limit: int) -> list[dict[str, Any]]:
        """Rows whose version is in (since, until], ordered by version, after version ``after``."""
        low = max(since, after) if after is not None else since
        with self._lock:
            return [dict(r) for r in self._conn.execute(
                f"SELECT * FROM {q(table.logical_name)} WHERE versionnumber > ? AND versionnumber <= ? "
                "ORDER BY versionnumber LIMIT ?", (low, until, limit))]

    def tombstones(self, table: t.Table, since: int, until: int, after: int | None,
                   limit: int) -> list[dict[str, Any]]:
        low = max(since, after) if after is not None else since
        with self._lock:
            return [dict(r) for r in self._conn.execute(
                "SELECT id, version FROM _tombstone WHERE entity = ? AND version > ? AND version <= ? "
                "ORDER BY version LIMIT ?", (table.logical_name, low, until, limit))]

    def count_changes(self, table: t.Table, since: int, until: int) -> int:
        """Changed rows plus deletions with a version in (since, until]."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT COUNT(*) FROM {q(table.logical_name)} WHERE versionnumber > ? AND versionnumber <= ?",
                (since, until)).fetchone()[0]
            tombs = self._conn.execute(
                "SELECT COUNT(*) FROM _tombstone WHERE entity = ? AND version > ? AND version <= ?",
                (table.logical_name, since, until)).fetchone()[0]
            return int(rows) + int(tombs)

    def names(self, logical_name: str, ids: Iterable[str]) -> dict[str, str | None]:
        """Primary-name values for ids of one table (for lookup formatted values)."""
        table = self.tables.get(logical_name)
        wanted = list(dict.fromkeys(i for i in ids if i))
        if table is None or not wanted:
            return {}
        out: dict[str, str | None] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                for r in self._conn.execute(
                    f"SELECT {q(table.primary_id)}, {q(table.primary_name)} FROM {q(table.logical_name)} "
                    f"WHERE {q(table.primary_id)} IN ({','.join('?' * len(chunk))})", chunk):
                    out[r[0]] = r[1]
        return out

    def reset(self, logical_names: Iterable[str]) -> None:
        """Empty data tables and tombstones; delta tokens issued before now become expired."""
        with self.transaction():
            for name in logical_names:
                self._conn.execute(f"DELETE FROM {q(name)}")
            self._conn.execute("DELETE FROM _tombstone")
            floor = self.allocate_versions(1)
            self._conn.execute("UPDATE _counter SET value = ? WHERE name = 'min_delta_version'", (floor,))

    def tombstone_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM _tombstone").fetchone()[0])

    def table_count(self, logical_name: str) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {q(logical_name)}").fetchone()[0])
