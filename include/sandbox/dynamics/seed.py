"""Deterministic synthetic leads and contacts for tests and benchmarks.

Why: sync tests and load runs need many realistic rows fast and reproducibly. Row ``i`` always
gets the same primary key (uuid5 of seed, table and i) and the same e-mail
(``lead00042@example.com`` / ``contact00042@example.com``); names, phones, titles and companies are
drawn from ``random.Random(seed)``. Rows are written as the ordinary user ("Dana Seller"), the
stand-in for people editing records in Dynamics, with one executemany in one transaction, so
100k rows take a few seconds. Seeding the same ids again replaces those rows (new versions).
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from . import tables as t
from .records import now_utc
from .store import Store

_NS = uuid.UUID("3b0f6d55-8f0e-4f47-9a0e-7d6c1c7f2a10")
FIRST_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam",
               "Maya", "Noah", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen", "Yusuf")
LAST_NAMES = ("Diaz", "Okafor", "Schmidt", "Nguyen", "Rossi", "Kowalski", "Haddad", "Lindqvist", "Tanaka",
              "O'Neil", "Moreau", "Silva", "Novak", "Kaur", "Murphy", "Petrov", "Jensen", "Costa", "Abe", "Weber")
JOB_TITLES = ("Marketing Manager", "CTO", "Buyer", "Operations Lead", "Sales Director", "Engineer",
              "Procurement Officer", "CEO", "Analyst", "Office Manager")
COMPANIES = ("Contoso", "Fabrikam", "Northwind Traders", "Adventure Works", "Tailspin Toys", "Litware",
             "Proseware", "Wide World Importers", "Woodgrove Bank", "Alpine Ski House")


def _person(rng: random.Random) -> dict[str, Any]:
    return {
        "firstname": rng.choice(FIRST_NAMES),
        "lastname": rng.choice(LAST_NAMES),
        "telephone1": f"+1-555-{rng.randrange(100, 1000):03d}-{rng.randrange(0, 10000):04d}",
        "jobtitle": rng.choice(JOB_TITLES),
    }


def _rows(table: t.Table, count: int, rng: random.Random, seed: int, user_id: str,
          first_version: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    stamp = now_utc()
    columns = [c.name for c in table.columns]
    rows = []
    for i in range(count):
        values = _person(rng)
        values[table.primary_id] = str(uuid.uuid5(_NS, f"{seed}:{table.logical_name}:{i}"))
        values["emailaddress1"] = f"{table.logical_name}{i:05d}@example.com"
        if table.logical_name == "lead":
            values["companyname"] = rng.choice(COMPANIES)
            values["subject"] = "Interested in product"
            values["leadsourcecode"] = rng.choice((1, 2, 4, 8, 10))
        values["fullname"] = f"{values['firstname']} {values['lastname']}"
        values.update({
            "statecode": 0, "statuscode": 1, "ownerid": user_id, "createdby": user_id, "modifiedby": user_id,
            "createdon": stamp, "modifiedon": stamp, "versionnumber": first_version + i,
        })
        rows.append(tuple(values.get(c) for c in columns))
    return columns, rows


def seed(store: Store, leads: int, contacts: int, seed_value: int, user_id: str) -> dict[str, Any]:
    rng = random.Random(seed_value)
    with store.transaction():
        for logical, count in (("lead", leads), ("contact", contacts)):
            if count <= 0:
                continue
            table = store.tables[logical]
            columns, rows = _rows(table, count, rng, seed_value, user_id, store.allocate_versions(count))
            store.bulk_upsert(table, columns, rows)
    return {"ok": True, "leads": leads, "contacts": contacts}
