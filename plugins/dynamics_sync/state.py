"""The state store: links, last-synced snapshots, watermarks, the activity log and run summaries.

SQLAlchemy on an Airflow connection (SQLite file by default, PostgreSQL in production). Everything a load
step learned is written by `commit_load` in one transaction, together with the watermarks it advances, so
a watermark can never move past a record that was neither loaded nor logged: a crash before the commit
leaves the old watermark, and the next run redoes the work (the loads are idempotent upserts).

Snapshots are kept per side (the values last written to or read from Dynamics, and from Marketo) because
the two sides may legitimately differ (a Marketo-only value the initial copy did not overwrite); comparing
each side with its own snapshot is what recognises the sync's own writes as echoes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    false,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from dynamics_sync.errors import EntityLocked

STATE_CONN_ID = "dynamics_sync_state"
# activity_log types meaning "this record did not sync": what users are alerted to, replay retries and
# the Sync page counts as open failures.
RECORD_FAILURES = frozenset({"rejected_by_validation", "refused_by_dynamics", "refused_by_marketo",
                             "ambiguous_match", "already_linked"})
VERSION_TABLE = "dynamics_sync_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
metadata = MetaData()

record_links = Table(
    "record_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entity", String(64), nullable=False),
    Column("dynamics_id", String(64), nullable=False),
    # A person's Marketo id; null for Marketo objects, which are addressed by their dedupe key (our Dynamics id).
    Column("marketo_id", BigInteger),
    Column("marketo_object", String(64), nullable=False, server_default="leads"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Set when the Dynamics record was deleted: the link is kept so the deletion sticks.
    Column("deleted_at", DateTime(timezone=True)),
    # "dynamics" or "marketo": where the record disappeared; "converted": a lead qualified into a contact.
    Column("deleted_side", String(16)),
    # The Dynamics sync filter (new_synctomkto) is No: nothing moves until it turns back to Yes.
    Column("sync_paused", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("entity", "dynamics_id", name="uq_links_entity_dynamics"),
    # One Marketo person mirrors one Dynamics record, whichever entity it is.
    UniqueConstraint("marketo_id", name="uq_links_marketo"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("link_id", Integer, ForeignKey("record_links.id", ondelete="CASCADE"), primary_key=True),
    Column("dynamics_values", JSON, nullable=False),
    Column("marketo_values", JSON, nullable=False),
    Column("synced_at", DateTime(timezone=True), nullable=False),
    Column("run_id", String(250)),
)

watermarks = Table(
    "watermarks",
    metadata,
    Column("entity", String(64), primary_key=True),
    Column("side", String(16), primary_key=True),
    Column("value", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("run_id", String(250)),
)

activity_log = Table(
    "activity_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("logged_at", DateTime(timezone=True), nullable=False),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("task_id", String(250)),
    Column("entity", String(64)),
    Column("direction", String(32)),
    Column("dynamics_id", String(64)),
    Column("marketo_id", BigInteger),
    Column("email", String(320)),
    Column("activity_type", String(64), nullable=False),
    Column("field", String(128)),
    Column("old_value", Text),
    Column("new_value", Text),
    Column("reason", Text),
    # A failure replayed by dynamics_replay: when, with which outcome ("resolved", or "still_failing": the
    # replay run logged it again as a new open row), by which run. Open failures have no resolved_at.
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolution", String(32)),
    Column("resolved_by_run", String(250)),
    Index("ix_activity_email", "email"),
    Index("ix_activity_dynamics_id", "dynamics_id"),
    Index("ix_activity_marketo_id", "marketo_id"),
    Index("ix_activity_run", "dag_id", "run_id"),
)

entity_locks = Table(
    "entity_locks",
    metadata,
    Column("entity", String(64), primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

run_summary = Table(
    "run_summary",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("direction", String(32), nullable=False),
    Column("created", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("collisions", Integer, nullable=False, default=0),
    Column("echoes", Integer, nullable=False, default=0),
    # Every schema change here needs an Alembic revision in migrations/versions (tests compare the two).
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Index("ix_summary_run", "dag_id", "run_id"),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Link:
    """A Dynamics record and its Marketo person, with each side's snapshot values.

    Read from the store it carries its row id and full snapshots; passed to commit_load it is a link to
    create or keep, and only the snapshot fields it names are overwritten.
    """

    entity: str
    dynamics_id: str
    marketo_id: int | None
    dynamics_values: dict[str, Any] = field(default_factory=dict)
    marketo_values: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    deleted_at: dt.datetime | None = None
    deleted_side: str | None = None
    marketo_object: str = "leads"
    paused: bool | None = None  # read: the sync filter keeps it out; written: None leaves it as it is


@dataclass
class Activity:
    """One row of activity_log: something the sync decided, or could not do, and why."""

    activity_type: str
    entity: str | None = None
    direction: str | None = None
    dynamics_id: str | None = None
    marketo_id: int | None = None
    email: str | None = None
    field: str | None = None
    old_value: Any = None
    new_value: Any = None
    reason: str | None = None


@dataclass
class RunContext:
    """Where a state-store write came from, stamped on every activity and summary row."""

    dag_id: str
    run_id: str
    task_id: str | None = None


def sqlalchemy_url(conn: Any) -> str:
    """Build a SQLAlchemy URL from an Airflow connection (sqlite, postgres, or extra.sqlalchemy_url)."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        if not conn.host:
            raise ValueError(f"state store connection {conn.conn_id!r} (sqlite) needs the file path as host")
        return f"sqlite:///{conn.host}"
    if conn_type in ("postgres", "postgresql"):
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or "127.0.0.1",
            port=conn.port or 5432,
            database=conn.schema or None,
        ).render_as_string(hide_password=False)
    raise ValueError(
        f"state store connection {conn.conn_id!r} has type {conn_type!r}; use sqlite, postgres, "
        "or set extra.sqlalchemy_url"
    )


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# Every task of a run opens the store, and a sync's extracts start at once: on a new store (or after an
# upgrade) they would all run the same migration, and all but one fail on "table already exists". One
# migrates at a time; the others then find the schema current. PostgreSQL: an advisory lock in the
# migration's transaction; SQLite: an exclusive lock on a file beside the database.
MIGRATION_LOCK_KEY = 0x6D6B746F  # any constant that no other application on the database uses


@contextlib.contextmanager
def _one_migrator(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class StateStore:
    """Typed access to the state tables; one instance per task, thin over one Engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> StateStore:
        engine = create_engine(url, future=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _on_sqlite_connect)
        store = cls(engine)
        if url not in _MIGRATED:  # once per process and database, not on every task's every step
            store.create_schema()
            _MIGRATED.add(url)
        return store

    @classmethod
    def from_connection(cls, conn_id: str = STATE_CONN_ID) -> StateStore:
        from airflow.sdk import BaseHook

        return cls.from_url(sqlalchemy_url(BaseHook.get_connection(conn_id)))

    def create_schema(self) -> None:
        """Bring the schema to the latest Alembic revision (a no-op when it is current)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with _one_migrator(self.engine), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # held until this transaction ends
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- reads -------------------------------------------------------------------------------------

    def is_populated(self, entity: str | None = None) -> bool:
        """Whether any link or watermark exists (for `entity`, or at all)."""
        links_query = select(func.count()).select_from(record_links)
        marks_query = select(func.count()).select_from(watermarks)
        if entity is not None:
            links_query = links_query.where(record_links.c.entity == entity)
            marks_query = marks_query.where(watermarks.c.entity == entity)
        with self.engine.connect() as conn:
            return bool(conn.execute(links_query).scalar_one() or conn.execute(marks_query).scalar_one())

    def links_by_dynamics(self, entity: str, dynamics_ids: Iterable[str]) -> dict[str, Link]:
        return {
            link.dynamics_id: link
            for link in self._links(record_links.c.entity == entity, record_links.c.dynamics_id, dynamics_ids)
        }

    def links_by_marketo(self, marketo_ids: Iterable[int]) -> dict[int, Link]:
        """The link of each person, of any entity.

        A person can carry more than one link: a lead qualified into a contact keeps its closed lead link
        beside the contact's, and a person merged away keeps its stopped one. The live link is the
        person's; among closed ones, the newest.
        """
        found: dict[int, Link] = {}
        for link in self._links(None, record_links.c.marketo_id, marketo_ids):
            held = found.get(link.marketo_id)
            if held is None or (held.deleted_at is None, held.id or 0) < (link.deleted_at is None, link.id or 0):
                found[link.marketo_id] = link
        return found

    def _links(self, where: Any, column: Any, keys: Iterable[Any]) -> Iterator[Link]:
        keys = list(dict.fromkeys(keys))
        query = select(record_links, snapshots.c.dynamics_values, snapshots.c.marketo_values).outerjoin(
            snapshots, snapshots.c.link_id == record_links.c.id
        )
        if where is not None:
            query = query.where(where)
        with self.engine.connect() as conn:
            for chunk in _chunks(keys, 500):
                for row in conn.execute(query.where(column.in_(chunk))):
                    yield Link(
                        id=row.id,
                        entity=row.entity,
                        dynamics_id=row.dynamics_id,
                        marketo_id=row.marketo_id,
                        dynamics_values=row.dynamics_values or {},
                        marketo_values=row.marketo_values or {},
                        deleted_at=row.deleted_at,
                        deleted_side=row.deleted_side,
                        marketo_object=row.marketo_object,
                        paused=bool(row.sync_paused),
                    )

    def live_dynamics_ids(self, entity: str) -> list[str]:
        """The Dynamics ids of the entity's links whose record is not known to be deleted (or converted)."""
        query = select(record_links.c.dynamics_id).where(record_links.c.entity == entity,
                                                         record_links.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def count_links(self, entity: str | None = None) -> int:
        query = select(func.count()).select_from(record_links)
        if entity:
            query = query.where(record_links.c.entity == entity)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def watermark(self, entity: str, side: str) -> str | None:
        value, _ = self.watermark_row(entity, side)
        return value

    def watermark_row(self, entity: str, side: str) -> tuple[str | None, dt.datetime | None]:
        """The watermark's value and when it was last advanced (None, None if never)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(watermarks.c.value, watermarks.c.updated_at).where(
                    watermarks.c.entity == entity, watermarks.c.side == side
                )
            ).first()
        if row is None:
            return None, None
        return row.value, _aware(row.updated_at) if row.updated_at else None

    def activities(self, **where: Any) -> list[dict[str, Any]]:
        """Activity rows matching column=value filters, oldest first (e.g. email=..., run_id=...)."""
        query = select(activity_log).order_by(activity_log.c.id)
        for column, value in where.items():
            query = query.where(activity_log.c[column] == value)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def open_failures(self, entity: str | None = None, run_id: str | None = None,
                      since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Failure rows (RECORD_FAILURES) not resolved yet, oldest first, narrowed by entity, run and time."""
        query = select(activity_log).where(activity_log.c.activity_type.in_(sorted(RECORD_FAILURES)),
                                           activity_log.c.resolved_at.is_(None)).order_by(activity_log.c.id)
        if entity:
            query = query.where(activity_log.c.entity == entity)
        if run_id:
            query = query.where(activity_log.c.run_id == run_id)
        if since:
            query = query.where(activity_log.c.logged_at >= since)
        if until:
            query = query.where(activity_log.c.logged_at < until)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def resolve_failures(self, outcomes: dict[int, str], run_id: str) -> None:
        """Record a replay's outcome per failure row and close it.

        "resolved": the record synced. "still_failing": it failed again, and the replay run logged the new
        failure (with today's reason) as an open row of its own, which a later replay picks up.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            for row_id, outcome in outcomes.items():
                values = {"resolution": outcome, "resolved_by_run": run_id, "resolved_at": now}
                conn.execute(activity_log.update().where(activity_log.c.id == row_id).values(**values))

    def summaries(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        query = (
            select(run_summary)
            .where(run_summary.c.dag_id == dag_id, run_summary.c.run_id == run_id)
            .order_by(run_summary.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # ---- the per-entity lock ------------------------------------------------------------------------

    def acquire_lock(self, entity: str, ctx: RunContext, ttl: dt.timedelta) -> None:
        """Take the entity for this run, or raise EntityLocked naming the run that holds it.

        The same run may take it again (a retried task); a lock whose run died expires after `ttl`.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            held = conn.execute(select(entity_locks).where(entity_locks.c.entity == entity)).first()
            if held is not None and held.run_id != ctx.run_id and _aware(held.expires_at) > now:
                raise EntityLocked(
                    f"{entity} is being synced by {held.dag_id} run {held.run_id} (since "
                    f"{_aware(held.acquired_at):%Y-%m-%d %H:%M:%S} UTC; the lock expires "
                    f"{_aware(held.expires_at):%H:%M:%S} UTC)"
                )
            row = {"entity": entity, "dag_id": ctx.dag_id, "run_id": ctx.run_id, "acquired_at": now,
                   "expires_at": now + ttl}
            _upsert(conn, entity_locks, row, keys=["entity"])

    def release_lock(self, entity: str, run_id: str) -> None:
        """Free the entity if this run holds it (a no-op otherwise)."""
        with self.engine.begin() as conn:
            conn.execute(entity_locks.delete().where(entity_locks.c.entity == entity, entity_locks.c.run_id == run_id))

    def lock_holder(self, entity: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(entity_locks.c.run_id).where(entity_locks.c.entity == entity)).scalar()

    # ---- writes ------------------------------------------------------------------------------------

    def commit_load(
        self,
        ctx: RunContext,
        *,
        links: Sequence[Link] = (),
        activities: Sequence[Activity] = (),
        summaries: Sequence[dict[str, Any]] = (),
        marks: dict[tuple[str, str], str | None] | None = None,
        release: str | None = None,
    ) -> None:
        """Record everything one load step did, advance its watermarks and release its entity lock, at once."""
        now = utcnow()
        activities = list(activities)
        with self.engine.begin() as conn:
            activities += self._upsert_links(conn, links, ctx, now)
            if activities:
                conn.execute(
                    activity_log.insert(),
                    [
                        {
                            **{k: v for k, v in vars(a).items() if k not in ("old_value", "new_value")},
                            "old_value": as_text(a.old_value),
                            "new_value": as_text(a.new_value),
                            "logged_at": now,
                            "dag_id": ctx.dag_id,
                            "run_id": ctx.run_id,
                            "task_id": ctx.task_id,
                        }
                        for a in activities
                    ],
                )
            if summaries:
                conn.execute(
                    run_summary.insert(),
                    [{**s, "dag_id": ctx.dag_id, "run_id": ctx.run_id, "finished_at": now} for s in summaries],
                )
            if release is not None:
                conn.execute(entity_locks.delete().where(
                    entity_locks.c.entity == release, entity_locks.c.run_id == ctx.run_id
                ))  # the same statement as release_lock, inside this transaction
            for (entity, side), value in (marks or {}).items():
                _upsert(
                    conn,
                    watermarks,
                    {"entity": entity, "side": side, "value": value, "updated_at": now, "run_id": ctx.run_id},
                    keys=["entity", "side"],
                )

    def _upsert_links(self, conn: Any, updates: Sequence[Link], ctx: RunContext, now: dt.datetime) -> list[Activity]:
        """Create or refresh links in a few set-based statements; a person already linked to another record is
        reported, not relinked.

        Two records can race for one Marketo person (a lead and a contact sharing an email, loaded by
        parallel tasks); the first link wins and the other becomes an activity row, so the commit never
        fails on the one-person-one-record rule and the rest of the batch is kept. The links are decided in
        list order against the store as it is plus the links decided before them, exactly as if each were
        written one by one, but the store is read once per 500 keys and written in bulk: a load of 100,000
        records holds the write lock for seconds, not minutes (SQLite lets one writer in at a time).
        """
        if not updates:
            return []
        mids = [u.marketo_id for u in updates if u.marketo_id is not None]
        owner: dict[int, tuple[str, str]] = {}
        for chunk in _chunks(list(dict.fromkeys(mids)), 500):
            query = select(record_links.c.marketo_id, record_links.c.entity, record_links.c.dynamics_id)
            owner.update({r.marketo_id: (r.entity, r.dynamics_id)
                          for r in conn.execute(query.where(record_links.c.marketo_id.in_(chunk)))})
        current: dict[tuple[str, str], dict[str, Any]] = {}  # (entity, dynamics_id) -> the row as it will be
        by_entity: dict[str, list[str]] = {}
        for u in updates:
            by_entity.setdefault(u.entity, []).append(u.dynamics_id)
        for entity, ids in by_entity.items():
            for chunk in _chunks(list(dict.fromkeys(ids)), 500):
                query = (
                    select(record_links.c.id, record_links.c.dynamics_id, record_links.c.marketo_id,
                           record_links.c.deleted_at, record_links.c.deleted_side, record_links.c.sync_paused,
                           snapshots.c.dynamics_values, snapshots.c.marketo_values)
                    .outerjoin(snapshots, snapshots.c.link_id == record_links.c.id)
                    .where(record_links.c.entity == entity, record_links.c.dynamics_id.in_(chunk))
                )
                for r in conn.execute(query):
                    current[(entity, r.dynamics_id)] = {
                        "id": r.id, "marketo_id": r.marketo_id, "deleted_at": r.deleted_at,
                        "deleted_side": r.deleted_side, "sync_paused": bool(r.sync_paused),
                        "dyn": dict(r.dynamics_values or {}), "mkto": dict(r.marketo_values or {}), "new": False,
                    }
        conflicts: list[Activity] = []
        touched: dict[tuple[str, str], None] = {}
        for u in updates:
            key = (u.entity, u.dynamics_id)
            held = owner.get(u.marketo_id) if u.marketo_id is not None else None
            if held is not None and held != key:
                conflicts.append(Activity(
                    "already_linked", u.entity, "dynamics_to_marketo", dynamics_id=u.dynamics_id,
                    marketo_id=u.marketo_id,
                    reason=f"Marketo person {u.marketo_id} is already linked to {held[0]} {held[1]}; not linked again",
                ))
                continue
            row = current.get(key)
            if row is None:
                row = current[key] = {
                    "id": None, "marketo_id": u.marketo_id, "deleted_at": u.deleted_at, "deleted_side": u.deleted_side,
                    "sync_paused": bool(u.paused), "marketo_object": u.marketo_object,
                    "dyn": dict(u.dynamics_values), "mkto": dict(u.marketo_values), "new": True,
                }
            else:
                if row["marketo_id"] is not None and owner.get(row["marketo_id"]) == key:
                    del owner[row["marketo_id"]]  # the person this link lets go of is free for the next one
                row["marketo_id"] = u.marketo_id
                if u.deleted_at:
                    row["deleted_at"], row["deleted_side"] = u.deleted_at, u.deleted_side
                if u.paused is not None:
                    row["sync_paused"] = u.paused
                row["dyn"] = {**row["dyn"], **u.dynamics_values}
                row["mkto"] = {**row["mkto"], **u.marketo_values}
            if u.marketo_id is not None:
                owner[u.marketo_id] = key
            touched[key] = None
        rows = [(key, current[key]) for key in touched]
        changed = [r for _, r in rows if not r["new"]]
        if changed:  # first, so the people they let go of are free for the new links below
            conn.execute(
                record_links.update().where(record_links.c.id == bindparam("b_id")).values(
                    marketo_id=bindparam("b_marketo_id"), updated_at=now, deleted_at=bindparam("b_deleted_at"),
                    deleted_side=bindparam("b_deleted_side"), sync_paused=bindparam("b_sync_paused")),
                [{"b_id": r["id"], "b_marketo_id": r["marketo_id"], "b_deleted_at": r["deleted_at"],
                  "b_deleted_side": r["deleted_side"], "b_sync_paused": r["sync_paused"]} for r in changed],
            )
        new = [(key, r) for key, r in rows if r["new"]]
        if new:
            conn.execute(record_links.insert(), [
                {"entity": key[0], "dynamics_id": key[1], "marketo_id": r["marketo_id"], "created_at": now,
                 "updated_at": now, "deleted_at": r["deleted_at"], "deleted_side": r["deleted_side"],
                 "marketo_object": r["marketo_object"], "sync_paused": r["sync_paused"]}
                for key, r in new
            ])
            for entity in {key[0] for key, _ in new}:
                ids = [key[1] for key, _ in new if key[0] == entity]
                for chunk in _chunks(ids, 500):
                    query = select(record_links.c.id, record_links.c.dynamics_id).where(
                        record_links.c.entity == entity, record_links.c.dynamics_id.in_(chunk))
                    for r in conn.execute(query):
                        current[(entity, r.dynamics_id)]["id"] = r.id
        _upsert_many(conn, snapshots, [
            {"link_id": r["id"], "dynamics_values": r["dyn"], "marketo_values": r["mkto"], "synced_at": now,
             "run_id": ctx.run_id}
            for _, r in rows
        ], keys=["link_id"])
        return conflicts


_MIGRATED: set[str] = set()


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back without their zone; the store only ever writes UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _upsert(conn: Any, table: Table, row: dict[str, Any], keys: list[str]) -> None:
    _upsert_many(conn, table, [row], keys)


def _upsert_many(conn: Any, table: Table, rows: Sequence[dict[str, Any]], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE of every row, as one executemany (the rows share their columns)."""
    if not rows:
        return
    dialect = conn.engine.dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"state store dialect {dialect!r} is not supported")
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={k: stmt.excluded[k] for k in rows[0] if k not in keys}
    )
    conn.execute(stmt, list(rows))


def as_text(value: Any) -> str | None:
    """How activity_log stores a value: as text, None kept as null."""
    return None if value is None else str(value)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
