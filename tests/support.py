"""Helpers several test modules share: reading the state store the way the assertions need it."""

from __future__ import annotations

from typing import Any

from dynamics_sync.state import StateStore, record_links


def link_rows(store: StateStore, entity: str, live_only: bool = False) -> list[Any]:
    """The entity's record_links rows in the order they were made (only those not deleted, if asked)."""
    query = record_links.select().where(record_links.c.entity == entity)
    if live_only:
        query = query.where(record_links.c.deleted_at.is_(None))
    with store.engine.connect() as conn:
        return list(conn.execute(query.order_by(record_links.c.id)))


def link_ids(store: StateStore, entity: str, live_only: bool = False) -> list[tuple[str, int]]:
    """(Dynamics id, Marketo id) of each of the entity's links, oldest first."""
    return [(r.dynamics_id, r.marketo_id) for r in link_rows(store, entity, live_only)]


def reseed(sandboxes: Any, leads: int, contacts: int, seed: int) -> None:
    """Both sandboxes emptied, Dynamics seeded, Marketo's limits as the session set them (a module before
    may have tightened them to test the limits): the start of a deployment test of its own."""
    sandboxes.post("dynamics", "/_sandbox/reset")
    sandboxes.post("marketo", "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": leads, "contacts": contacts, "seed": seed})
    sandboxes.post("marketo", "/_sandbox/limits", {"calls_per_20s": 100000, "daily_quota": 10_000_000})


def postgres_state(database: str) -> dict[str, Any]:
    """The state store as an operator defines it: a postgres connection naming its own database."""
    return {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": database}
