"""Seeded users and owner teams, and spreading seeded rows' ownership over them.

Why: a sync that maps Dynamics owners to Marketo fields (or filters by owner) must be tested with
records owned by many people and by teams, not only by the two application users. Seeded users are
ordinary interactive users of the root business unit (no ``applicationid``), numbered like the other
seeds: user ``i`` has id uuid5(seed, "systemuser", i) and e-mail ``user{i:05d}@example.com``. Seeded
teams are owner teams (teamtype 0) administered by a seeded user.

Round-robin order is stable: enabled seeded users by ``domainname`` (so by index), non-default owner
teams by ``name``; the two application users never receive seeded rows this way.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from .store import Store

USER_DOMAIN = "sandbox.onmicrosoft.com"


def user_values(i: int, rng: random.Random, first_names: tuple[str, ...], last_names: tuple[str, ...],
                business_unit_id: str | None) -> dict[str, Any]:
    first, last = rng.choice(first_names), rng.choice(last_names)
    return {"firstname": first, "lastname": last, "fullname": f"{first} {last}",
            "domainname": f"user{i:05d}@{USER_DOMAIN}", "internalemailaddress": f"user{i:05d}@example.com",
            "isdisabled": 0, "accessmode": 0, "businessunitid": business_unit_id}


def team_values(i: int, business_unit_id: str | None, administrators: list[str]) -> dict[str, Any]:
    return {"name": f"Team {i:05d}", "teamtype": 0, "isdefault": 0, "businessunitid": business_unit_id,
            "administratorid": administrators[i % len(administrators)],
            "description": f"Seeded owner team {i:05d}."}


def seeded_users(store: Store) -> list[str]:
    """Enabled interactive (non-application) users, in seed order."""
    with store.reading() as conn:
        return [r[0] for r in conn.execute(
            'SELECT "systemuserid" FROM "systemuser" WHERE "applicationid" IS NULL AND '
            'COALESCE("isdisabled", 0) = 0 ORDER BY "domainname", "systemuserid"')]


def owner_teams(store: Store) -> list[str]:
    """Seeded owner teams in name order; the default team when there are none."""
    with store.reading() as conn:
        rows = [r[0] for r in conn.execute(
            'SELECT "teamid" FROM "team" WHERE "teamtype" = 0 AND COALESCE("isdefault", 0) = 0 '
            'ORDER BY "name", "teamid"')]
        if not rows:
            rows = [r[0] for r in conn.execute('SELECT "teamid" FROM "team" WHERE "isdefault" = 1')]
    return rows


def owner_picker(store: Store, owners: str | None, every_kth_team: int) -> Callable[[int], str | None] | None:
    """``owner(i)`` for seeded row ``i``: users round-robin, every k-th row (i % k == k - 1) a team.

    ``None`` from ``owner(i)`` keeps the writer as owner (``owner_teams`` without ``owners``).
    """
    if not owners and not every_kth_team:
        return None
    users = seeded_users(store) if owners else []
    if owners and not users:
        raise ValueError("'owners' needs seeded users: seed {\"entity\": \"systemuser\", \"count\": N} first")
    teams = owner_teams(store) if every_kth_team else []
    if every_kth_team and not teams:
        raise ValueError("'owner_teams' needs an owner team")

    def owner(i: int) -> str | None:
        if every_kth_team and i % every_kth_team == every_kth_team - 1:
            return teams[(i // every_kth_team) % len(teams)]
        return users[i % len(users)] if users else None
    return owner
