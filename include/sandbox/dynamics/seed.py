"""Deterministic synthetic leads, contacts, accounts and opportunities for tests and benchmarks.

Why: sync tests and load runs need many realistic rows fast and reproducibly. Row ``i`` always
gets the same primary key (uuid5 of seed, table and i) and the same e-mail
(``lead00042@example.com`` / ``contact00042@example.com``); names, phones, titles and companies are
drawn from ``random.Random(seed)``. Rows are written as the ordinary user ("Dana Seller"), the
stand-in for people editing records in Dynamics, with one executemany in one transaction, so
100k rows take a few seconds. Seeding the same ids again replaces those rows (new versions).

Two request forms: the original ``{"leads": L, "contacts": C, "seed": S}`` and the per-table
``{"entity": "contact", "count": N, "seed": S, "start": 0, "as": "user"}``; for accounts also
``contacts_per_account`` / ``opportunities_per_account`` (children point at their account through
parentcustomerid / parentaccountid and customerid; with both and ``"opportunity_contact": true``, an
opportunity's parentcontactid is the first contact of its account; account i has accountnumber ``ACC{i:07d}``).
Rows are generated and written in chunks of 50,000 so a million rows never sit in memory at once.

The entity form also seeds ``systemuser`` and ``team`` rows (see ``seed_principals``) and custom
tables (values generated from the column types; their lookups point at existing target rows
round-robin in primary-key order when there are any, ``"link_to": "existing"`` insists on it and
``"link_to": "none"`` leaves them empty). Owned tables take ``"owners": "users"`` (or ``"round_robin"``: owners
round-robin over the seeded users) and ``"owner_teams": k`` (every k-th row owned by a seeded team);
lead/contact/account/opportunity take ``"synctomkto": true | false | null | "mixed"`` (mixed cycles
null, Yes, No by row index). Without these keys rows come out exactly as before.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from . import tables as t
from .records import now_utc
from .seed_principals import owner_picker, seeded_users, team_values, user_values
from .store import Store

_NS = uuid.UUID("3b0f6d55-8f0e-4f47-9a0e-7d6c1c7f2a10")
FIRST_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam",
               "Maya", "Noah", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen", "Yusuf")
LAST_NAMES = ("Diaz", "Okafor", "Schmidt", "Nguyen", "Rossi", "Kowalski", "Haddad", "Lindqvist", "Tanaka",
              "O'Neil", "Moreau", "Silva", "Novak", "Kaur", "Murphy", "Petrov", "Jensen", "Costa", "Abe", "Weber")
JOB_TITLES = ("Marketing Manager", "CTO", "Buyer", "Operations Lead", "Sales Director", "Engineer",
              "Procurement Officer", "CEO", "Analyst", "Office Manager")
CITIES = ("Seattle", "Berlin", "Lyon", "Osaka", "Toronto", "Austin", "Lisbon", "Oslo", "Dublin", "Madrid")
COMPANIES = ("Contoso", "Fabrikam", "Northwind Traders", "Adventure Works", "Tailspin Toys", "Litware",
             "Proseware", "Wide World Importers", "Woodgrove Bank", "Alpine Ski House")


CHUNK = 50_000
STANDARD = ("lead", "contact", "account", "opportunity")
PRINCIPALS = ("systemuser", "team")
SEEDABLE = (*STANDARD, *PRINCIPALS, *(tb.logical_name for tb in t.CUSTOM_TABLES))
_FORM_KEYS = {"entity", "count", "seed", "start", "contacts_per_account", "opportunities_per_account",
              "contact_start", "as", "owners", "owner_teams", "link_to", "synctomkto", "opportunity_contact"}
_SYNC_CYCLE = (None, 1, 0)


def _person(rng: random.Random) -> dict[str, Any]:
    return {
        "firstname": rng.choice(FIRST_NAMES),
        "lastname": rng.choice(LAST_NAMES),
        "telephone1": f"+1-555-{rng.randrange(100, 1000):03d}-{rng.randrange(0, 10000):04d}",
        "jobtitle": rng.choice(JOB_TITLES),
    }


def _row_id(seed: int, logical: str, i: int) -> str:
    return str(uuid.uuid5(_NS, f"{seed}:{logical}:{i}"))


def _custom_values(table: t.Table, i: int, rng: random.Random) -> dict[str, Any]:
    """Values for a custom table's own columns, from their types (lookups are left to ``link_to``)."""
    values: dict[str, Any] = {}
    for col in table.columns:
        if not col.custom or col.name == table.primary_id or col.is_lookup:
            continue
        if col.name == table.primary_name:
            values[col.name] = f"{table.display} {i:05d}"[: col.max_length]
        elif col.type == t.STRING:
            values[col.name] = f"{col.name}-{i:06d}"[-(col.max_length or 100):]
        elif col.type == t.MEMO:
            values[col.name] = f"Seeded {table.display.lower()} {i}."
        elif col.type == t.PICKLIST:
            values[col.name] = rng.choice(col.options).value
        elif col.type == t.BOOLEAN:
            values[col.name] = rng.randrange(2)
        elif col.type == t.INTEGER:
            low = int(col.min_value) if col.min_value is not None else 0
            values[col.name] = rng.randint(low, max(low, min(int(col.max_value or 1000), 1000)))
        elif col.type in (t.MONEY, t.DECIMAL, t.DOUBLE):
            low = max(col.min_value or 0, 0)
            values[col.name] = float(rng.randint(int(low), int(max(low, min(col.max_value or 100_000, 100_000)))))
        elif col.type == t.DATETIME:
            day = 738886 + rng.randrange(0, 730)  # 2024-01-01 + up to two years
            date = dt.date.fromordinal(day).isoformat()
            values[col.name] = date if col.behavior == "DateOnly" else f"{date}T12:00:00Z"
    return values


def _values(table: t.Table, i: int, rng: random.Random, seed: int) -> dict[str, Any]:
    """Generated business columns of row ``i`` of ``table``."""
    logical = table.logical_name
    if table.custom:
        values = _custom_values(table, i, rng)
    elif logical in PRINCIPALS:
        values = {}  # filled by the seed_principals callbacks
    elif logical in ("lead", "contact"):
        values = _person(rng)
        values["emailaddress1"] = f"{logical}{i:05d}@example.com"
        if logical == "lead":
            values["companyname"] = rng.choice(COMPANIES)
            values["subject"] = "Interested in product"
            values["leadsourcecode"] = rng.choice((1, 2, 4, 8, 10))
        values["fullname"] = f"{values['firstname']} {values['lastname']}"
    elif logical == "account":
        company = rng.choice(COMPANIES)
        values = {"name": f"{company} {i:05d}", "accountnumber": f"ACC{i:07d}",
                  "emailaddress1": f"account{i:05d}@example.com", "address1_city": rng.choice(CITIES),
                  "telephone1": f"+1-555-{rng.randrange(100, 1000):03d}-{rng.randrange(0, 10000):04d}",
                  "industrycode": rng.choice((1, 6, 7, 16, 33)), "numberofemployees": rng.randrange(1, 5000),
                  "revenue": float(rng.randrange(10, 100_000) * 1000)}
    else:  # opportunity
        values = {"name": f"Opportunity {i:05d}", "estimatedvalue": float(rng.randrange(1, 500) * 1000),
                  "closeprobability": rng.randrange(0, 101)}
    values[table.primary_id] = _row_id(seed, logical, i)
    return values


def _stamp(values: dict[str, Any], user_id: str, stamp: str, version: int, table: t.Table) -> None:
    values.update({"ownerid": user_id, "createdby": user_id, "modifiedby": user_id, "createdon": stamp,
                   "modifiedon": stamp, "versionnumber": version})
    if table.column("statecode") is not None:
        values.setdefault("statecode", 0)
        values.setdefault("statuscode", 1)


def _insert(store: Store, table: t.Table, count: int, rng: random.Random, seed_value: int, user_id: str,
            start: int = 0, extra: Any = None, options: dict[str, Any] | None = None) -> None:
    """Write ``count`` rows in chunks (bounded memory); ``extra(i, values)`` may add columns.

    ``options`` carries the optional per-row rules of the entity form: ``owner(i)`` and ``synctomkto``.
    """
    options = options or {}
    owner = options.get("owner") if table.column("ownerid") is not None else None
    sync = options.get("synctomkto", "unset") if table.column("new_synctomkto") is not None else "unset"
    first = store.allocate_versions(count) if count else 0
    stamp = now_utc()
    columns = [c.name for c in table.columns]
    for offset in range(0, count, CHUNK):
        rows = []
        for n in range(offset, min(count, offset + CHUNK)):
            i = start + n
            values = _values(table, i, rng, seed_value)
            if extra is not None:
                extra(i, values)
            _stamp(values, user_id, stamp, first + n, table)
            if owner is not None:
                values["ownerid"] = owner(i) or user_id
            if sync != "unset":
                values["new_synctomkto"] = _SYNC_CYCLE[i % 3] if sync == "mixed" else (
                    None if sync is None else int(sync))
            rows.append(tuple(values.get(c) for c in columns))
        store.bulk_upsert(table, columns, rows)


def parse_entity_form(body: dict[str, Any], max_rows: int) -> dict[str, Any]:
    """Check ``{"entity": "contact", "count": N, "seed": S, ...}``; return the normalised plan."""
    unknown = set(body) - _FORM_KEYS
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    entity = body.get("entity")
    if entity not in SEEDABLE:
        raise ValueError(f"'entity' must be one of {', '.join(SEEDABLE)}")
    plan: dict[str, Any] = {"entity": entity}
    for key, default, high in (("count", None, max_rows), ("seed", 42, None), ("start", 0, None),
                               ("contacts_per_account", 0, 100), ("opportunities_per_account", 0, 100),
                               ("contact_start", 0, None)):
        value = body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or (key != "seed" and value < 0) or \
                (high is not None and value > high):
            raise ValueError(f"'{key}' must be an integer" + (f" 0..{high}" if high is not None else ""))
        plan[key] = value
    if entity != "account" and (plan["contacts_per_account"] or plan["opportunities_per_account"]):
        raise ValueError("contacts_per_account / opportunities_per_account need entity 'account'")
    plan["opportunity_contact"] = body.get("opportunity_contact", False)
    if not isinstance(plan["opportunity_contact"], bool) or (plan["opportunity_contact"] and not (
            plan["contacts_per_account"] and plan["opportunities_per_account"])):
        raise ValueError("'opportunity_contact' must be a boolean, and true needs contacts_per_account and "
                         "opportunities_per_account")
    related = plan["count"] * (1 + plan["contacts_per_account"] + plan["opportunities_per_account"])
    if related > max_rows:
        raise ValueError(f"at most {max_rows} rows per call")
    who = body.get("as", "user")
    if who not in ("user", "sync"):
        raise ValueError("'as' must be 'user' or 'sync'")
    plan["as"] = who
    _parse_options(body, plan)
    return plan


def _parse_options(body: dict[str, Any], plan: dict[str, Any]) -> None:
    """The optional keys: owners, owner_teams, link_to, synctomkto."""
    entity = plan["entity"]
    owned = entity not in PRINCIPALS
    owners = body.get("owners")
    if owners is not None and (owners not in ("users", "round_robin") or not owned):
        raise ValueError("'owners' must be 'users' or 'round_robin', for a user-owned table")
    plan["owners"] = owners
    teams = body.get("owner_teams", 0)
    if isinstance(teams, bool) or not isinstance(teams, int) or teams < 0 or (teams and not owned):
        raise ValueError("'owner_teams' must be an integer k >= 0 (every k-th row owned by a team), "
                         "for a user-owned table")
    plan["owner_teams"] = teams
    link_to = body.get("link_to", "auto")
    if link_to not in ("auto", "none", "existing") or (link_to == "existing" and entity not in _custom_names()):
        raise ValueError("'link_to' must be 'existing', 'none' or 'auto' (the default), for a custom table")
    plan["link_to"] = link_to
    if "synctomkto" in body:
        sync = body["synctomkto"]
        if entity not in STANDARD or not (sync is None or isinstance(sync, bool) or sync == "mixed"):
            raise ValueError("'synctomkto' must be true, false, null or 'mixed', for lead/contact/account/"
                             "opportunity")
        plan["synctomkto"] = sync


def _custom_names() -> set[str]:
    return {tb.logical_name for tb in t.CUSTOM_TABLES}


def _existing_links(store: Store, table: t.Table, count: int, required: bool) -> dict[str, list[str]]:
    """Existing target ids (primary-key order) for each custom lookup column (``link_to``)."""
    out: dict[str, list[str]] = {}
    for col in table.columns:
        if not (col.custom and col.is_lookup):
            continue
        target = store.tables.get(col.targets[0]) if col.targets else None
        if target is None:
            continue
        ids = [r[target.primary_id] for r in store.select(target, "", [], [(target.primary_id, False)], None,
                                                             max(count, 1))]
        if not ids and required:
            raise ValueError(f"'link_to': 'existing' needs existing {target.logical_name} rows for {col.name}")
        if ids:
            out[col.name] = ids
    return out


def _link_extra(links: dict[str, list[str]]) -> Any:
    def extra(i: int, values: dict[str, Any]) -> None:
        values.update({name: ids[i % len(ids)] for name, ids in links.items()})
    return extra


def _principal_extra(store: Store, entity: str, rng: random.Random, business_unit_id: str | None,
                     writer: str) -> Any:
    """The ``extra`` callback that fills a seeded user or team."""
    if entity == "systemuser":
        def user(i: int, values: dict[str, Any]) -> None:
            values.update(user_values(i, rng, FIRST_NAMES, LAST_NAMES, business_unit_id))
        return user
    admins = seeded_users(store) or [writer]

    def team(i: int, values: dict[str, Any]) -> None:
        values.update(team_values(i, business_unit_id, admins))
    return team


def seed_entity(store: Store, plan: dict[str, Any], user_id: str, sync_user_id: str | None = None,
                business_unit_id: str | None = None) -> dict[str, Any]:
    """Seed one table (accounts optionally with related contacts and opportunities), deterministically.

    Raises ValueError when an option cannot be met (no seeded users for ``owners``, no rows to link to).
    """
    writer = sync_user_id if plan["as"] == "sync" and sync_user_id else user_id
    seed_value, count, start = plan["seed"], plan["count"], plan["start"]
    rng = random.Random(f"{seed_value}:{plan['entity']}:{start}")
    entity = plan["entity"]
    result: dict[str, Any] = {"ok": True, "entity": entity, "count": count}
    options: dict[str, Any] = {"owner": owner_picker(store, plan.get("owners"), plan.get("owner_teams", 0))}
    if "synctomkto" in plan:
        options["synctomkto"] = plan["synctomkto"]
    with store.transaction():
        table = store.tables[entity]
        extra = None
        if entity in PRINCIPALS:
            extra = _principal_extra(store, entity, rng, business_unit_id, writer)
        elif table.custom and plan.get("link_to", "auto") != "none":
            extra = _link_extra(_existing_links(store, table, count, plan.get("link_to") == "existing"))
        _insert(store, table, count, rng, seed_value, writer, start, extra, options)
        per_contact, per_opp = plan["contacts_per_account"], plan["opportunities_per_account"]
        if entity == "account" and per_contact:
            def contact_parent(i: int, values: dict[str, Any]) -> None:
                values["parentcustomerid"] = _row_id(seed_value, "account", start + (i - plan["contact_start"])
                                                     // per_contact)
            _insert(store, store.tables["contact"], count * per_contact, rng, seed_value, writer,
                    plan["contact_start"], contact_parent, options)
            result["contacts"] = count * per_contact
        if entity == "account" and per_opp:
            def opp_parent(i: int, values: dict[str, Any]) -> None:
                account = _row_id(seed_value, "account", i // per_opp)
                values["parentaccountid"] = values["customerid"] = account
                if plan["opportunity_contact"]:  # the deal's contact: the first contact of its account
                    index = plan["contact_start"] + (i // per_opp - start) * per_contact
                    values["parentcontactid"] = _row_id(seed_value, "contact", index)
            _insert(store, store.tables["opportunity"], count * per_opp, rng, seed_value, writer,
                    start * per_opp, opp_parent, options)
            result["opportunities"] = count * per_opp
    return result


def seed(store: Store, leads: int, contacts: int, seed_value: int, user_id: str) -> dict[str, Any]:
    rng = random.Random(seed_value)
    with store.transaction():
        for logical, count in (("lead", leads), ("contact", contacts)):
            if count > 0:
                _insert(store, store.tables[logical], count, rng, seed_value, user_id)
    return {"ok": True, "leads": leads, "contacts": contacts}
