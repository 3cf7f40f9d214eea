"""The state store on SQLite and on PostgreSQL: links, per-side snapshots, one-transaction commits."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dynamics_sync.state import Activity, Link, RunContext, StateStore, metadata

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _postgres_reachable() -> bool:
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _empty_database(backend: str, tmp_path) -> Iterator[str]:
    """The URL of a database with no schema yet (a PostgreSQL schema of its own, dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if not _postgres_reachable():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable: this state-store test on PostgreSQL skipped")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[StateStore]:
    with _empty_database(request.param, tmp_path) as url:
        store = StateStore.from_url(url)
        yield store
        store.dispose()


CTX = RunContext("dag", "run-1", "task")


def test_commit_records_links_snapshots_activities_and_watermarks_together(store: StateStore):
    assert not store.is_populated()
    store.commit_load(
        CTX,
        links=[Link("lead", "d-1", 101, {"title": "A"}, {"title": "A", "phone": "9"})],
        activities=[Activity("collision_resolved", "lead", "marketo_to_dynamics", dynamics_id="d-1",
                             marketo_id=101, email="a@x.com", field="title", old_value="B", new_value="A")],
        summaries=[{"entity": "lead", "direction": "marketo_to_dynamics", "created": 0, "updated": 1,
                    "rejected": 0, "collisions": 1, "echoes": 0}],
        marks={("lead", "dynamics"): "https://x/leads?$deltatoken=1"},
    )
    link = store.links_by_dynamics("lead", ["d-1"])["d-1"]
    assert (link.marketo_id, link.dynamics_values, link.marketo_values) == (101, {"title": "A"},
                                                                            {"title": "A", "phone": "9"})
    assert store.links_by_marketo([101])[101].dynamics_id == "d-1"
    assert store.watermark("lead", "dynamics") == "https://x/leads?$deltatoken=1"
    [row] = store.activities(email="a@x.com")
    assert (row["run_id"], row["field"], row["old_value"], row["new_value"]) == ("run-1", "title", "B", "A")
    assert store.summaries("dag", "run-1")[0]["collisions"] == 1
    assert store.is_populated()


def test_snapshot_updates_merge_field_by_field(store: StateStore):
    store.commit_load(CTX, links=[Link("lead", "d-1", 101, {"title": "A", "phone": "1"},
                                             {"title": "A", "phone": "1"})])
    store.commit_load(CTX, links=[Link("lead", "d-1", 101, {"phone": "2"}, {"phone": "2"})])
    link = store.links_by_dynamics("lead", ["d-1"])["d-1"]
    assert link.dynamics_values == {"title": "A", "phone": "2"} == link.marketo_values


def test_a_failed_commit_leaves_nothing_behind(store: StateStore):
    store.commit_load(CTX, marks={("lead", "marketo"): "2024-01-01T00:00:00+00:00"})
    with pytest.raises(sa.exc.IntegrityError):
        store.commit_load(
            CTX,
            links=[Link("lead", "d-1", 7)],
            activities=[Activity("rejected_by_validation", "lead"), Activity(None, "lead")],  # no type: refused
            marks={("lead", "marketo"): "2030-01-01T00:00:00+00:00"},
        )
    assert store.watermark("lead", "marketo") == "2024-01-01T00:00:00+00:00"
    assert store.count_links() == 0 and store.activities() == []


def test_schema_is_created_idempotently(store: StateStore):
    store.create_schema()
    assert {"record_links", "snapshots", "watermarks", "activity_log", "run_summary"} <= set(metadata.tables)


def test_migrations_build_exactly_the_schema_the_code_declares(store: StateStore):
    """A change to the tables in state.py without an Alembic revision fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from dynamics_sync.state import VERSION_TABLE

    def ours(obj, name, type_, *_):
        return not (type_ == "table" and name == VERSION_TABLE)

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": ours, "compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_a_person_claimed_by_two_records_links_the_first_and_reports_the_second(store: StateStore):
    """A lead and a contact sharing an email, loaded by parallel tasks, never fail the commit."""
    store.commit_load(CTX, links=[Link("lead", "d-1", 7)])
    store.commit_load(CTX, links=[Link("contact", "c-1", 7), Link("contact", "c-2", 8)])
    assert store.links_by_marketo([7])[7].dynamics_id == "d-1"
    assert store.links_by_marketo([8])[8].dynamics_id == "c-2"
    [report] = store.activities(activity_type="already_linked")
    assert (report["dynamics_id"], report["marketo_id"]) == ("c-1", 7) and "lead d-1" in report["reason"]


def test_one_commit_decides_its_links_in_order(store: StateStore):
    """Within one commit a link sees the links decided before it: a person claimed twice goes to the first
    claim, and a person a link lets go of (a qualified lead's) is free for the link after it."""
    import datetime as dt

    store.commit_load(CTX, links=[Link("lead", "l-1", 5, {"a": 1}, {"a": 1})])
    released = Link("lead", "l-1", None, deleted_at=dt.datetime.now(dt.UTC), deleted_side="converted")
    store.commit_load(CTX, links=[
        released, Link("contact", "c-1", 5, {"b": 2}, {"b": 2}),  # takes over the lead's person
        Link("contact", "c-2", 9), Link("contact", "c-3", 9),  # the same new person twice: first wins
        Link("contact", "c-2", 9, {"x": 1}, {"x": 1}),  # and a second update of the same new link merges
    ])
    assert store.links_by_marketo([5])[5].dynamics_id == "c-1"
    lead = store.links_by_dynamics("lead", ["l-1"])["l-1"]
    assert (lead.marketo_id, lead.deleted_side, lead.dynamics_values) == (None, "converted", {"a": 1})
    assert store.links_by_marketo([9])[9].dynamics_id == "c-2"
    assert store.links_by_dynamics("contact", ["c-2"])["c-2"].dynamics_values == {"x": 1}
    assert "c-3" not in store.links_by_dynamics("contact", ["c-3"])
    [report] = store.activities(activity_type="already_linked")
    assert (report["dynamics_id"], report["marketo_id"]) == ("c-3", 9)


def test_one_run_at_a_time_per_entity(store: StateStore):
    import datetime as dt

    from dynamics_sync.state import EntityLocked

    a, b = RunContext("dag", "run-a"), RunContext("dag", "run-b")
    store.acquire_lock("lead", a, dt.timedelta(hours=1))
    store.acquire_lock("lead", a, dt.timedelta(hours=1))  # a retried task of the same run
    store.acquire_lock("contact", b, dt.timedelta(hours=1))  # another entity is free
    with pytest.raises(EntityLocked, match="run-a"):
        store.acquire_lock("lead", b, dt.timedelta(hours=1))
    store.commit_load(a, release="lead")
    store.acquire_lock("lead", b, dt.timedelta(seconds=-1))  # free again; b's lock is already expired
    store.acquire_lock("lead", a, dt.timedelta(hours=1))  # so a crashed run's lock does not block forever
    assert store.lock_holder("lead") == "run-a"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrading_an_existing_store_keeps_its_rows(backend: str, tmp_path) -> None:
    """A store created by an older release (revision 0006) is upgraded in place by the first task that opens it."""
    with _empty_database(backend, tmp_path) as url:
        _upgrade_from_0006(url)


def _upgrade_from_0006(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from dynamics_sync.state import MIGRATIONS

    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0006")
        conn.execute(sa.text(
            "INSERT INTO record_links (entity, dynamics_id, marketo_id, marketo_object, created_at, updated_at, "
            "sync_paused) VALUES ('lead', 'd-1', 11, 'leads', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, false)"))
        conn.execute(sa.text(
            "INSERT INTO activity_log (logged_at, entity, dynamics_id, activity_type, reason) "
            "VALUES (CURRENT_TIMESTAMP, 'lead', 'd-1', 'rejected_by_validation', 'lastname is required')"))
    engine.dispose()
    store = StateStore.from_url(url)  # what every task does: brings the schema to head
    try:
        assert store.links_by_dynamics("lead", ["d-1"])["d-1"].marketo_id == 11
        [failure] = store.open_failures(entity="lead")
        assert failure["reason"] == "lastname is required" and failure["resolution"] is None
    finally:
        store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_tasks_opening_a_new_store_at_once_migrate_it_one_at_a_time(backend: str, tmp_path) -> None:
    """A copy's extracts start together and each opens the store: on a new store (or a newer release)
    one runs the migration and the others find the schema current, instead of failing on "table
    already exists" and waiting out a retry."""
    import threading

    with _empty_database(backend, tmp_path) as url:
        start, errors = threading.Barrier(6), []

        def open_store() -> None:
            store = StateStore(sa.create_engine(url))
            start.wait()
            try:
                store.create_schema()
            except Exception as exc:  # the failure this test is about
                errors.append(repr(exc)[:300])
            finally:
                store.dispose()

        threads = [threading.Thread(target=open_store) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a migration never finished"
        assert errors == []
        store = StateStore.from_url(url)
        assert store.links_by_dynamics("lead", ["d-1"]) == {}
        store.dispose()
